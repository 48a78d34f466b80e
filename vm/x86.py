"""x86-32 architectural constants and helpers the emulated machine needs.

Only what the hardware defines: page-table entry bits, EFLAGS bits, segment
descriptors, the non-PAE two-level page walk and the page-fault error code.
Nothing here knows about Linux; the selector numbers are simply the GDT
layout this machine boots with (the same slots Linux 2.4 uses, so traces
read familiarly).
"""
import struct

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFFFFFF

# Page-table entry bits (non-PAE, 4 KiB pages).
PTE_P = 0x001     # present
PTE_W = 0x002     # writable
PTE_U = 0x004     # user accessible
PTE_PWT = 0x008
PTE_PCD = 0x010
PTE_A = 0x020     # accessed: set by the MMU on any access
PTE_D = 0x040     # dirty: set by the MMU on a write
PTE_PS = 0x080    # 4 MiB page (in a PDE)
PTE_G = 0x100     # global (PGE): not modelled by QEMU's soft TLB, see docs
PTE_FRAME = 0xFFFFF000

# Page-fault error code bits.
PF_P = 0x1        # 0: not present, 1: protection violation
PF_W = 0x2        # the access was a write
PF_U = 0x4        # the access came from CPL 3

# EFLAGS.
EFLAGS_CF = 0x001
EFLAGS_RESERVED = 0x002   # always 1
EFLAGS_ZF = 0x040
EFLAGS_IF = 0x200
EFLAGS_DF = 0x400

# Control registers.
CR0_PE = 0x00000001
CR0_MP = 0x00000002      # monitor coprocessor: wait/fwait honour TS
CR0_TS = 0x00000008      # task switched: the next x87/SSE instruction raises #NM
CR0_ET = 0x00000010
CR0_NE = 0x00000020      # x87 errors as #MF (native), not IRQ13
CR0_WP = 0x00010000
CR0_PG = 0x80000000
CR4_PSE = 0x10
CR4_PGE = 0x80
CR4_OSFXSR = 0x200       # the OS saves SSE state with fxsave: SSE instructions allowed
CR4_OSXMMEXCPT = 0x400   # the OS handles #XM (unmasked SSE exceptions)

# Exception vectors.
VEC_DE = 0
VEC_UD = 6
VEC_DF = 8
VEC_GP = 13
VEC_PF = 14

# GDT layout this machine boots with (Linux 2.4's slots).  An OS may want
# more entries (flat_gdt pads them with null descriptors).
GDT_ENTRIES = 6
KERNEL_CS = 0x10
KERNEL_DS = 0x18
USER_CS = 0x23
USER_DS = 0x2B


def descriptor(base, limit, access, flags):
    """One 8-byte segment descriptor (limit in 4 KiB units when flags has G)."""
    return struct.pack('<HHBBBB', limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF,
                       access, ((limit >> 16) & 0xF) | (flags << 4), (base >> 24) & 0xFF)


def flat_gdt(entries=GDT_ENTRIES):
    """The boot GDT: null, unused, kernel code/data (DPL 0), user code/data
    (DPL 3), then null descriptors up to `entries`.

    All four segments are flat 4 GiB (base 0, limit 0xFFFFF pages, 32-bit).
    """
    flat = 0xFFFFF
    if entries < GDT_ENTRIES:
        raise ValueError(f'a GDT needs at least {GDT_ENTRIES} entries')
    return b''.join([
        bytes(8),
        bytes(8),
        descriptor(0, flat, 0x9A, 0xC),   # KERNEL_CS: present, DPL0, code r/x
        descriptor(0, flat, 0x92, 0xC),   # KERNEL_DS: present, DPL0, data r/w
        descriptor(0, flat, 0xFA, 0xC),   # USER_CS: present, DPL3, code r/x
        descriptor(0, flat, 0xF2, 0xC),   # USER_DS: present, DPL3, data r/w
    ] + [bytes(8)] * (entries - GDT_ENTRIES))


def pde_index(va):
    return (va >> 22) & 0x3FF


def pte_index(va):
    return (va >> 12) & 0x3FF


def walk(ram, cr3, va):
    """Walk the two-level page tables in `ram` (a buffer of guest physical
    memory) for virtual address `va`.

    Returns (pde, pte, pte_phys): the entries read and the physical address
    of the PTE (None when the PDE is not present; pte is then 0).  Reads
    only; the A/D bits are the emulated MMU's business.
    """
    pde = struct.unpack_from('<I', ram, (cr3 & PTE_FRAME) + pde_index(va) * 4)[0]
    if not pde & PTE_P:
        return pde, 0, None
    if pde & PTE_PS:
        return pde, pde, None
    pte_phys = (pde & PTE_FRAME) + pte_index(va) * 4
    if pte_phys + 4 > len(ram):
        return pde, 0, None
    return pde, struct.unpack_from('<I', ram, pte_phys)[0], pte_phys


def translate(ram, cr3, va):
    """Virtual -> physical through the page tables, or None if not present."""
    pde, pte, _ = walk(ram, cr3, va)
    if not pde & PTE_P or not pte & PTE_P:
        return None
    if pde & PTE_PS:
        return (pde & 0xFFC00000) | (va & 0x3FFFFF)
    return (pte & PTE_FRAME) | (va & 0xFFF)
