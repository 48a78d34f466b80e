"""The i386 (non-PAE) kernel address-space layout, as in Linux 2.5/2.6.

    4 GiB  +--------------------------+ 0xFFFFFFFF
           | fixmap (grows down from  | FIXADDR_TOP = 0xFFFFF000
           |  FIXADDR_TOP): kmap_atomic| FIX_KMAP_BEGIN.. = KM_TYPE_NR*NR_CPUS slots
           +--------------------------+ 0xFFC00000 (one page table)
           | PKMAP: LAST_PKMAP slots   | PKMAP_BASE = 0xFF800000 for 1024 slots
           +--------------------------+
           | (vmalloc, unused here)    |
           +--------------------------+ PAGE_OFFSET + lowmem size
           | lowmem: all of ZONE_DMA   |
           | and ZONE_NORMAL, mapped   |
           | 1:1 (va = pa + PAGE_OFFSET)|
    3 GiB  +--------------------------+ PAGE_OFFSET = 0xC0000000
           | user space                | programs at 0x08048000
    0      +--------------------------+

Lowmem is at most MAXMEM = 896 MiB (4G - PAGE_OFFSET - VMALLOC_RESERVE); the
rest of RAM is ZONE_HIGHMEM and has no permanent kernel mapping.  ZONE_DMA
is the first 16 MiB.  Boot option highmem=N forces N bytes of highmem even
on a small machine (so 128 MiB of RAM can have 96 MiB of highmem).

Physical memory map at boot (all in lowmem):
    0x00000000  reserved (real mode, BIOS): the first page is never handed out
    0x00001000  cpu_gdt_table[NR_CPUS]: one GDT per CPU (2.6), CPU_GDT_SIZE
                bytes apart; entries 6-8 are the running task's TLS (load_TLS)
    0x00100000  kernel image (text+data), then page tables, mem_map, per-CPU
                areas, allocated by the boot allocator (minikernel/boot.py).
"""
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MiB = 1 << 20

PAGE_OFFSET = 0xC0000000
VMALLOC_RESERVE = 128 * MiB
MAXMEM = (1 << 32) - PAGE_OFFSET - VMALLOC_RESERVE      # 896 MiB
MAX_DMA_ADDRESS = 16 * MiB

FIXADDR_TOP = 0xFFFFF000
FIXMAP_PT_BASE = 0xFFC00000       # the one page table that maps the fixmap
KM_TYPE_NR = 9                    # 2.5.25's km_type count
KM_TYPES = ('KM_BOUNCE_READ', 'KM_SKB_SUNRPC_DATA', 'KM_SKB_DATA_SOFTIRQ', 'KM_USER0',
            'KM_USER1', 'KM_BIO_SRC_IRQ', 'KM_BIO_DST_IRQ', 'KM_PTE0', 'KM_PTE1')
KM_USER0 = 3
KM_USER1 = 4
FIX_KMAP_BEGIN = 1                # slot 0 is FIX_HOLE, as in Linux
KM_MAX_IDX = 16                   # kmap_local: slots per CPU (v5.11)

GDT_PHYS = 0x1000                 # cpu_gdt_table[0]; CPU n's GDT is CPU_GDT_SIZE * n further
GDT_ENTRY_TLS_MIN = 6             # 2.6's asm-i386/segment.h: TLS entries 6..8
GDT_ENTRY_TLS_ENTRIES = 3
GDT_ENTRY_TLS_MAX = GDT_ENTRY_TLS_MIN + GDT_ENTRY_TLS_ENTRIES - 1
GDT_ENTRIES = GDT_ENTRY_TLS_MAX + 1
CPU_GDT_SHIFT = 7
CPU_GDT_SIZE = 1 << CPU_GDT_SHIFT  # 16 descriptor slots per CPU: 32 CPUs fill the page
KERNEL_PHYS = 0x100000
KERNEL_VIRT = PAGE_OFFSET + KERNEL_PHYS
USER_TEXT = 0x08048000
USER_STACK_TOP = 0xC0000000      # user stacks grow down from the top of user space

THREAD_SIZE = 8192                # kernel stack with thread_info at its bottom


def fix_to_virt(idx):
    """__fix_to_virt(x) = FIXADDR_TOP - (x << PAGE_SHIFT)."""
    return FIXADDR_TOP - (idx << PAGE_SHIFT)


def pkmap_base(last_pkmap):
    """PKMAP_BASE for a pool of `last_pkmap` slots: right below the fixmap's
    page table, aligned down to a page-table boundary (4 MiB)."""
    return (FIXMAP_PT_BASE - last_pkmap * PAGE_SIZE) & ~((4 * MiB) - 1) & 0xFFFFFFFF


def pa(va):
    """__pa(): a lowmem virtual address to its physical address."""
    return va - PAGE_OFFSET


def va(pa_):
    """__va(): a lowmem physical address to its virtual address."""
    return pa_ + PAGE_OFFSET


def split_memory(ram, mem=None, highmem=None):
    """Sizes of (lowmem, highmem) in bytes for `ram` bytes of RAM and the boot
    options mem= (cap RAM) and highmem= (force this much highmem).

    Mirrors arch/i386/kernel/setup.c (2.4/2.5): lowmem is at most MAXMEM;
    highmem=N takes N bytes off the top of RAM even if RAM fits in lowmem.
    """
    total = ram if mem is None else min(ram, mem)
    total &= ~(PAGE_SIZE - 1)
    if highmem is not None:
        highmem &= ~(PAGE_SIZE - 1)
        if highmem > total - 4 * MiB:
            raise ValueError(f'highmem={highmem >> 20}M leaves less than 4 MiB of lowmem '
                             f'(RAM {total >> 20}M)')
        low = min(total - highmem, MAXMEM)
    else:
        low = min(total, MAXMEM)
    return low, total - low
