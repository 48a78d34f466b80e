"""Address spaces: mm_struct, VMAs, page tables in guest RAM, page faults.

Mirrors mm/memory.c, mm/mmap.c and arch/i386/mm/fault.c of 2.4/2.5.

What this file owns
  - MM (mm_struct) and VMA (vm_area_struct).  The part of mm_struct that
    guest asm reads lives in lowmem (GUEST_MM layout below): the pgd, the
    cpu_vm_mask the TLB shootdown code reads, page_table_lock, and
    dont_unmap_pages (Andrew Morton's pin counter from the thread).
  - Page tables: non-PAE two-level tables in lowmem, one page directory per
    mm whose kernel half (PDEs 768..1023) is copied from swapper_pg_dir, so
    the PKMAP and fixmap page tables are shared by every mm, as in Linux.
    Python writes PTEs (allowed: page tables are kernel data in lowmem); the
    emulated MMU sets their A and D bits.
  - do_page_fault and handle_mm_fault: demand-zero pages (the zero page on
    a read, a fresh GFP_HIGHUSER page cleared by guest code on a write),
    nopage for file-backed VMAs, copy-on-write, and (with swap) swap-in.

Locks and rules
  - mm.mmap_sem (rwsem) is held for reading across a fault, for writing
    across mmap/munmap.  Python steps are atomic, so page_table_lock is
    taken only where guest code or a sleep could interleave.
  - Every PTE change that another CPU may cache is followed by the flush
    Linux would do (flush_tlb_page / flush_tlb_range = flush_tlb_mm on i386),
    which is guest code sending IPIs to the CPUs in mm->cpu_vm_mask.
  - A user access to a kernel address or an unmapped one kills the task
    (SIGSEGV, reported); a kernel access to a bad user address returns
    through the exception-table fixup; anything else in the kernel is an
    Oops.
"""
from vm import x86

from .bug import KernelBug
from .locking import RWSemaphore, SpinLock
from .page_alloc import ALLOC_SLOWPATH, GFP_HIGHUSER
from .task import Charge, Guest

EINVAL, ENOMEM = 22, 12

PAGE = 4096

VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_GROWSDOWN = 0x100
VM_LOCKED = 0x2000

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_POPULATE = 0x8000              # 2.5.46: fault the whole mapping in at mmap time

# Guest mm_struct (the part asm reads), 32 bytes from kmalloc.
MM_PGD = 0
MM_CPU_VM_MASK = 4
MM_PAGE_TABLE_LOCK = 8
MM_DONT_UNMAP = 12
MM_USERS = 16
MM_RSS = 20
MM_SIZE = 32

TASK_UNMAPPED_BASE = 0x40000000     # where mmap(NULL, ...) starts looking (2.4)

# handle_mm_fault results (2.4: 1 minor, 2 major, 0 SIGBUS, -1 OOM).
VM_FAULT_OOM = -1
VM_FAULT_SIGBUS = 0
VM_FAULT_MINOR = 1
VM_FAULT_MAJOR = 2


class VMA:
    """vm_area_struct: [start, end), flags VM_*, and for a file mapping the
    file (an object with nopage()) and the page offset."""

    def __init__(self, mm, start, end, flags, file=None, pgoff=0, name=''):
        self.mm, self.start, self.end, self.flags = mm, start, end, flags
        self.file, self.pgoff, self.name = file, pgoff, name

    def __repr__(self):
        f = ''.join(c if self.flags & b else '-' for c, b in
                    (('r', VM_READ), ('w', VM_WRITE), ('x', VM_EXEC)))
        s = 's' if self.flags & VM_SHARED else 'p'
        return f'{self.start:08x}-{self.end:08x} {f}{s} {self.name}'


class MM:
    """mm_struct."""

    def __init__(self, kernel, guest_va, pgd_pfn):
        self.k = kernel
        self.guest = guest_va                 # va of the guest mm_struct
        self.pgd_pfn = pgd_pfn
        self.pgd_pa = pgd_pfn << 12
        self.vmas = []                        # sorted by start
        self.mmap_sem = RWSemaphore(kernel, f'mmap_sem@{guest_va:#x}')
        self.page_table_lock = SpinLock(kernel, f'page_table_lock@{guest_va:#x}',
                                        guest_va + MM_PAGE_TABLE_LOCK)
        self.users = 1
        self.rss = 0
        self.pt_pages = {}                    # pde index -> pfn of the user page table
        self.program = None                   # the image its text comes from
        self.start_brk = self.brk = 0         # the heap (ELF programs: after the bss)
        self.swap_address = 0                 # swap_out's cursor (2.4)

    def _gw(self, off):
        return self.guest - self.k.PAGE_OFFSET + off

    @property
    def dont_unmap_pages(self):
        # An aligned word of the guest mm_struct (kmalloc): read through the
        # machine's 32-bit view of RAM (reclaim reads it once per PTE).
        return self.k.machine.ram_words[(self.guest - self.k.PAGE_OFFSET + MM_DONT_UNMAP) >> 2]

    @property
    def cpu_vm_mask(self):
        return self.k.machine.read32(self._gw(MM_CPU_VM_MASK))

    def find_vma(self, addr):
        """find_vma(): the first VMA with end > addr (or None)."""
        for v in self.vmas:
            if v.end > addr:
                return v
        return None

    def insert_vma(self, vma):
        self.vmas.append(vma)
        self.vmas.sort(key=lambda v: v.start)


class MemoryManager:
    """The mm subsystem of one kernel (k.mm)."""

    def __init__(self, kernel):
        self.k = kernel
        self.ram = kernel.machine.ram
        self.counters = dict(page_faults=0, user_faults=0, kernel_faults=0, minor_faults=0,
                             major_faults=0, cow_faults=0, cow_pages_copied=0, cow_reuses=0, zero_page_maps=0,
                             anon_pages=0, exception_fixups=0, segv_kills=0, oopses=0,
                             tlb_flush_page=0, tlb_flush_mm=0, pt_pages=0)
        self.zero_pfn = None

    # ---- page-table primitives (Python writes, guest MMU reads) ----------

    # PTEs and PDEs are aligned words: they are read and written through
    # the machine's 32-bit view of RAM (Machine.ram_words, the same bytes).

    def read_pte(self, pa):
        return self.k.machine.ram_words[pa >> 2]

    def write_pte(self, pa, value):
        self.k.machine.ram_words[pa >> 2] = value & 0xFFFFFFFF

    def pte_offset(self, mm, addr):
        """The physical address of addr's PTE, or None if no page table."""
        pde = self.k.machine.ram_words[(mm.pgd_pa >> 2) + ((addr >> 22) & 0x3FF)]   # pde_index
        if not pde & x86.PTE_P:
            return None
        return (pde & x86.PTE_FRAME) + ((addr >> 12) & 0x3FF) * 4                # pte_index

    def pte_alloc(self, mm, addr):
        """pte_alloc(): the PTE's physical address, allocating a zeroed page
        table from lowmem (GFP_KERNEL) if needed; None if out of memory."""
        pa = self.pte_offset(mm, addr)
        if pa is not None:
            return pa
        pfn = self.k.page_alloc.alloc_pages_fast(self.k.gfp.GFP_KERNEL, 0)
        if pfn is None:
            return None
        self.ram[pfn << 12:(pfn + 1) << 12] = bytes(PAGE)
        idx = x86.pde_index(addr)
        mm.pt_pages[idx] = pfn
        self.write_pte(mm.pgd_pa + idx * 4, (pfn << 12) | x86.PTE_P | x86.PTE_W | x86.PTE_U)
        self.counters['pt_pages'] += 1
        return (pfn << 12) + x86.pte_index(addr) * 4

    # ---- mm lifetime ------------------------------------------------------

    def mm_alloc(self):
        """mm_alloc() + pgd_alloc(): a new mm with the kernel PDEs copied."""
        k = self.k
        pgd = k.page_alloc.alloc_pages_fast(k.gfp.GFP_KERNEL, 0)
        if pgd is None:
            return None
        kpgd = k.swapper_pg_dir_pa
        self.ram[pgd << 12:(pgd << 12) + 3072] = bytes(3072)
        self.ram[(pgd << 12) + 3072:(pgd + 1) << 12] = self.ram[kpgd + 3072:kpgd + PAGE]
        guest = k.slab.kmalloc(MM_SIZE, 'mm_struct')
        mm = MM(k, guest, pgd)
        k.machine.write(guest - k.PAGE_OFFSET, bytes(MM_SIZE))
        k.machine.write32(guest - k.PAGE_OFFSET + MM_PGD, k.PAGE_OFFSET + (pgd << 12))
        k.machine.write32(guest - k.PAGE_OFFSET + MM_USERS, 1)
        k.mms.append(mm)
        return mm

    def exit_mmap(self, task, mm):
        """exit_mmap(): unmap everything, free page tables, pgd and mm.
        Generator (the flush runs guest code)."""
        for vma in list(mm.vmas):
            yield from self.zap_range(task, mm, vma.start, vma.end, flush=False)
        mm.vmas = []
        yield from self.flush_tlb_mm(task, mm)
        pa = self.k.page_alloc
        for idx, pfn in list(mm.pt_pages.items()):
            self.write_pte(mm.pgd_pa + idx * 4, 0)
            pa.free_pages(pfn, 0)
        mm.pt_pages.clear()
        if mm in self.k.mms:
            self.k.mms.remove(mm)
        self.k.mm_free_deferred.append(mm)

    # ---- VMAs: mmap / munmap ----------------------------------------------

    def get_unmapped_area(self, mm, length):
        addr = TASK_UNMAPPED_BASE
        for v in mm.vmas:
            if v.end <= addr:
                continue
            if v.start >= addr + length:
                break
            addr = v.end
        if addr + length > self.k.PAGE_OFFSET:
            return None
        return addr

    def do_mmap(self, task, mm, addr, length, prot, flags, file=None, pgoff=0, name=''):
        """do_mmap_pgoff() (2.5 mm/mmap.c): map [addr, addr+length); returns
        the address or a negative errno.  Generator (MAP_FIXED over a
        mapping unmaps it).  The range checks are Linux's: len > TASK_SIZE
        or a pgoff that wraps: EINVAL; MAP_FIXED (get_unmapped_area): addr >
        TASK_SIZE - len: ENOMEM, addr not page aligned: EINVAL."""
        task_size = self.k.PAGE_OFFSET                       # TASK_SIZE
        length = (length + PAGE - 1) & ~(PAGE - 1)
        if length == 0 or length > task_size:
            return -EINVAL
        if pgoff + (length >> 12) >= 1 << 32:                # offset overflow
            return -EINVAL
        if flags & MAP_FIXED:
            if addr > task_size - length:
                return -ENOMEM
            if addr & (PAGE - 1):
                return -EINVAL
            yield from self.do_munmap(task, mm, addr, length)
        else:
            addr = self.get_unmapped_area(mm, length)
            if addr is None:
                return -12
        vflags = ((VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0)
                  | (VM_EXEC if prot & PROT_EXEC else 0) | (VM_SHARED if flags & MAP_SHARED else 0))
        vma = VMA(mm, addr, addr + length, vflags, file, pgoff, name)
        mm.insert_vma(vma)
        if flags & MAP_POPULATE:
            yield from self.make_pages_present(task, mm, vma)
        return addr

    def do_mprotect(self, task, mm, start, length, prot):
        """sys_mprotect() / mprotect_fixup() (mm/mprotect.c 2.4.18), mmap_sem
        held for writing: every page of [start, start+len) must be mapped
        (ENOMEM otherwise); the VMAs are split at the ends, given the new
        protection, and merged with equal neighbours; the present PTEs are
        changed (change_protection: W cleared when the VMA loses write, U
        cleared for PROT_NONE, as _PAGE_PROTNONE keeps the page but no user
        access; a gained write is left to the next fault, do_wp_page), then
        the TLBs flushed (flush_tlb_range = flush_tlb_mm on i386).
        Generator -> 0 or -errno."""
        if start & (PAGE - 1) or prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
            return -22
        length = (length + PAGE - 1) & ~(PAGE - 1)
        end = start + length
        if end < start or end > self.k.PAGE_OFFSET:
            return -12
        if end == start:
            return 0
        addr = start
        for v in mm.vmas:                                 # the range must be fully mapped
            if v.end <= addr or v.start >= end:
                continue
            if v.start > addr:
                return -12
            addr = v.end
        if addr < end:
            return -12
        newbits = ((VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0)
                   | (VM_EXEC if prot & PROT_EXEC else 0))
        for v in mm.vmas:
            if v.file is not None and v.flags & VM_SHARED and prot & PROT_WRITE \
                    and v.start < end and v.end > start and not getattr(v.file, 'writable', True):
                return -13                                # EACCES: shared mapping of a read-only fd
        keep = []
        for v in mm.vmas:
            if v.end <= start or v.start >= end:
                keep.append(v)
                continue
            lo, hi = max(v.start, start), min(v.end, end)
            if v.start < lo:
                keep.append(VMA(mm, v.start, lo, v.flags, v.file, v.pgoff, v.name))
            mid_flags = (v.flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | newbits
            keep.append(VMA(mm, lo, hi, mid_flags, v.file, v.pgoff + ((lo - v.start) >> 12), v.name))
            if hi < v.end:
                keep.append(VMA(mm, hi, v.end, v.flags, v.file, v.pgoff + ((hi - v.start) >> 12),
                                v.name))
        mm.vmas = self._merge_vmas(sorted(keep, key=lambda v: v.start))
        changed = 0
        for va in range(start, end, PAGE):
            pa = self.pte_offset(mm, va)
            if pa is None:
                continue
            pte = self.read_pte(pa)
            if not pte & x86.PTE_P:
                continue
            new = pte
            if not newbits & VM_WRITE:
                new &= ~x86.PTE_W
            new = (new | x86.PTE_U) if newbits else (new & ~x86.PTE_U)
            if new != pte:
                self.write_pte(pa, new)
                changed += 1
        self.counters['mprotect_ptes'] = self.counters.get('mprotect_ptes', 0) + changed
        if changed:
            yield Charge(self.k.costs['pte_update'] * changed)
            yield from self.flush_tlb_mm(task, mm)
        return 0

    @staticmethod
    def _merge_vmas(vmas):
        """vma_merge(): neighbours with the same flags and file, touching,
        with contiguous file offsets, become one VMA."""
        out = []
        for v in vmas:
            p = out[-1] if out else None
            if (p is not None and p.end == v.start and p.flags == v.flags and p.file is v.file
                    and p.name == v.name
                    and (v.file is None or p.pgoff + ((p.end - p.start) >> 12) == v.pgoff)):
                p.end = v.end
                continue
            out.append(v)
        return out

    def make_pages_present(self, task, mm, vma):
        """make_pages_present() (2.5.46 MAP_POPULATE, mlock): fault every
        page of the VMA in, as a read (a write for a private writable one).
        mmap_sem held.  Generator.  Stops early, as get_user_pages does on a
        fatal signal, when the task has been killed (the OOM killer) or the
        run is over (max_cycles, the host timeout): a huge MAP_POPULATE
        costs simulated time page by page and cannot outlive the run."""
        write = bool(vma.flags & VM_WRITE) and not vma.flags & VM_SHARED
        machine = self.k.machine
        for va in range(vma.start, vma.end, PAGE):
            limit = self.k.config['max_cycles']
            if task.killed_by is not None or machine.stopped is not None \
                    or limit is not None and machine.time(task.cpu) >= limit:
                break
            r = yield from self.handle_mm_fault(task, mm, vma, va, write)
            if r <= 0:
                break

    def do_munmap(self, task, mm, addr, length):
        """do_munmap() (2.5 mm/mmap.c): split/remove VMAs over the range,
        zap its PTEs, flush the TLBs of every CPU that may cache them.
        Returns 0 or -EINVAL: start not page aligned, start > TASK_SIZE,
        len > TASK_SIZE - start (which also catches a range that wraps),
        or len 0 once page aligned.  Generator."""
        task_size = self.k.PAGE_OFFSET                       # TASK_SIZE
        if addr & (PAGE - 1) or addr > task_size or length > task_size - addr:
            return -EINVAL
        length = (length + PAGE - 1) & ~(PAGE - 1)
        if length == 0:
            return -EINVAL
        end = addr + length
        keep = []
        hit = False
        for v in mm.vmas:
            if v.end <= addr or v.start >= end:
                keep.append(v)
                continue
            hit = True
            if v.start < addr:
                keep.append(VMA(mm, v.start, addr, v.flags, v.file, v.pgoff, v.name))
            if v.end > end:
                off = (end - v.start) >> 12
                keep.append(VMA(mm, end, v.end, v.flags, v.file, v.pgoff + off, v.name))
        mm.vmas = sorted(keep, key=lambda v: v.start)
        if hit:
            yield from self.zap_range(task, mm, addr, end, flush=True)
        return 0

    def zap_range(self, task, mm, start, end, flush):
        """zap_page_range(): clear the PTEs, drop the pages; then
        flush_tlb_range (= flush_tlb_mm on i386 2.4).  Generator."""
        k = self.k
        words = k.machine.ram_words                  # read_pte / write_pte
        zapped = 0
        va = start
        while va < end:                              # one page table at a time
            nxt = min((va | 0x3FFFFF) + 1, end)
            pa = self.pte_offset(mm, va)
            if pa is None:
                va = nxt
                continue
            while va < nxt:
                pte = words[pa >> 2]
                if pte != 0:
                    words[pa >> 2] = 0
                    zapped += 1
                    if pte & x86.PTE_P:
                        k.unmap_page_pte(mm, va, pte)
                    else:
                        k.swap_pte_dropped(pte)
                va += PAGE
                pa += 4
        if zapped:
            self.k.trace_event('pte_zap', task=task, start=start, end=end, ptes=zapped)
            yield Charge(self.k.costs['pte_update'] * zapped)
            if flush:
                yield from self.flush_tlb_mm(task, mm)

    def unmap_file_range(self, task, inode, first):
        """vmtruncate_list() (2.4.18) over every mm: zap the PTEs of each VMA
        of `inode` from file page `first` on (private COW copies too), with
        the TLB flushes.  Generator."""
        for mm in list(self.k.mms):
            for vma in list(mm.vmas):
                if getattr(vma.file, 'inode', None) is not inode:
                    continue
                start = vma.start + max(0, first - vma.pgoff) * PAGE
                if start < vma.end:
                    yield from self.zap_range(task, mm, start, vma.end, flush=True)

    # ---- fork ----------------------------------------------------------------

    def copy_page_range(self, task, dst, src, vma):
        """copy_page_range() (2.4.18, with 2.5.27's page_add_rmap): copy the
        PTEs of `vma` from `src` to `dst`.  A private mapping's writable PTEs
        are write-protected in both (copy on write: do_wp_page breaks the
        sharing on the first write); a shared mapping's child PTE is clean;
        every child PTE is old.  A swap PTE is copied with swap_duplicate; a
        present page gets a reference and a reverse mapping (a pte_chain
        under reclaim=rmap).  The zero page is PageReserved: copied as is.
        Both page_table_locks are held in Linux; here the loop is one
        Python step.  The caller flushes the parent's TLBs (flush_tlb_mm).
        Generator -> 0, or -ENOMEM when a page table cannot be allocated."""
        k = self.k
        cow = not vma.flags & VM_SHARED
        copied = 0
        va = vma.start
        r = 0
        while va < vma.end:
            src_pa = self.pte_offset(src, va)
            if src_pa is None:
                va = (va | 0x3FFFFF) + 1
                continue
            pte = self.read_pte(src_pa)
            if pte:
                dst_pa = self.pte_alloc(dst, va)
                if dst_pa is None:
                    r = -12
                    break
                copied += 1
                if not pte & x86.PTE_P:
                    k.swap.swap_duplicate(pte & ~1)
                    k.fork.counters['fork_swap_ptes'] += 1
                    self.write_pte(dst_pa, pte)
                elif pte >> 12 == self.zero_pfn:
                    self.write_pte(dst_pa, pte)
                else:
                    if cow and pte & x86.PTE_W:
                        pte &= ~x86.PTE_W                   # ptep_set_wrprotect(src_pte)
                        self.write_pte(src_pa, pte)
                    child = pte & ~x86.PTE_A                # pte_mkold
                    if vma.flags & VM_SHARED:
                        child &= ~x86.PTE_D                 # pte_mkclean
                    pfn = pte >> 12
                    k.page_ref(pfn)
                    self.write_pte(dst_pa, child)
                    k.rmap.page_add_rmap(pfn, dst, va, dst_pa,
                                         anon=k.filemap.page_mapping(pfn) is None)
                    dst.rss += 1
            va += PAGE
        k.fork.counters['fork_ptes_copied'] += copied
        if copied:
            yield Charge(k.costs['pte_update'] * copied)
        return r

    # ---- TLB flushes for user mappings (guest code, IPIs) -----------------

    def flush_tlb_page(self, task, mm, va):
        """flush_tlb_page(): invlpg here if mm is live here, IPIs to the other
        CPUs in mm->cpu_vm_mask.  Generator."""
        self.counters['tlb_flush_page'] += 1
        yield Guest('flush_tlb_page', mm.guest, va)

    def flush_tlb_mm(self, task, mm):
        self.counters['tlb_flush_mm'] += 1
        yield Guest('flush_tlb_mm', mm.guest)

    # ---- the page-fault handler -------------------------------------------

    def do_page_fault(self, task, address, error, eip, regs=None):
        """do_page_fault() of arch/i386/mm/fault.c (2.5.34).  Generator.

        Returns None to retry the faulting instruction, or a fixup EIP (for
        a kernel-mode fault with an exception-table entry).  With
        atomic_fault=fixup (2.5.32+), a fault in atomic context (preempt
        count > 0) goes straight to no_context, so copy_*_user comes back
        short; with atomic_fault=sleep (2002 mainline) it is handled like any
        other fault and may sleep inside kmap_atomic."""
        k = self.k
        user = bool(error & x86.PF_U)
        write = bool(error & x86.PF_W)
        self.counters['page_faults'] += 1
        self.counters['user_faults' if user else 'kernel_faults'] += 1
        k.machine.charge(task.cpu, k.costs['fault_entry'])      # = yield Charge(...)
        if k.tracer is not None or k.point_hook is not None:     # someone listens
            k.trace_event('page_fault', task=task, address=address, error=error, eip=eip)
        mm = task.mm
        if address >= k.PAGE_OFFSET:
            return (yield from self._bad_area(task, address, error, eip, user))
        if not user and (mm is None or k.sched.pagefault_disabled(task)
                         or (k.config['atomic_fault'] == 'fixup' and k.sched.in_atomic(task))):
            return (yield from self._no_context(task, address, error, eip))
        sem = mm.mmap_sem
        if not sem.down_read_fast(task):        # down_read(): sleeps only if contended
            yield from sem.down_read_slow(task)
        vma = mm.find_vma(address)
        if vma is None or vma.start > address or not self._access_ok(vma, write, error):
            mm.mmap_sem.up_read(task)
            return (yield from self._bad_area(task, address, error, eip, user))
        result = yield from self.handle_mm_fault(task, mm, vma, address, write)
        sem.up_read(task)
        if result == VM_FAULT_OOM:
            return (yield from self._fault_oom(task, address, eip, user))
        if result == VM_FAULT_SIGBUS:
            return (yield from self._bad_area(task, address, error, eip, user, 'SIGBUS'))
        self.counters['major_faults' if result == VM_FAULT_MAJOR else 'minor_faults'] += 1
        if k.tracer is not None or k.point_hook is not None:
            k.trace_event('fault_resolved', task=task, address=address,
                          how='major (retry)' if result == VM_FAULT_MAJOR else 'minor (retry)')
        return None

    def _access_ok(self, vma, write, error):
        if write:
            return bool(vma.flags & VM_WRITE)
        if error & x86.PF_P:            # read of a present page: protection
            return False
        return bool(vma.flags & (VM_READ | VM_EXEC))

    def _bad_area(self, task, address, error, eip, user, sig='SIGSEGV'):
        """bad_area: SIGSEGV for user mode, no_context for the kernel."""
        if user:
            self.counters['segv_kills'] += 1
            why = ('protection' if error & x86.PF_P else 'not present') + \
                  (', write' if error & x86.PF_W else ', read')
            self.k.kill_task(task, sig, f'{sig} at {self.k.describe_user(task, eip)} '
                                        f'accessing {address:#010x} ({why})')
            return None
        return (yield from self._no_context(task, address, error, eip))

    def _no_context(self, task, address, error, eip):
        """no_context: the exception-table fixup, or an Oops (the task dies)."""
        fixup = self.k.search_exception_tables(eip)
        if fixup is not None:
            self.counters['exception_fixups'] += 1
            self.k.trace_event('fixup', task=task, eip=eip, fixup=fixup, address=address)
            return fixup
        self.counters['oopses'] += 1
        self.k.oops(task, f'Unable to handle kernel paging request at virtual address '
                          f'{address:08x} (error {error:#x}) at {self.k.describe(eip)}')
        yield from self.k.exit.do_exit(task, -1)

    def _fault_oom(self, task, address, eip, user):
        """out_of_memory in the fault path (2.4: 'VM: killing process')."""
        self.k.kill_task(task, 'SIGKILL', f'out of memory in page fault at {address:#010x}')
        return None
        yield

    def handle_mm_fault(self, task, mm, vma, address, write):
        """handle_mm_fault() / handle_pte_fault().  Generator -> VM_FAULT_*."""
        k = self.k
        k.machine.charge(task.cpu, k.costs['pte_walk'])         # = yield Charge(...)
        pte_pa = self.pte_alloc(mm, address)
        if pte_pa is None:
            return VM_FAULT_OOM
        pte = k.machine.ram_words[pte_pa >> 2]                  # read_pte
        if not pte & x86.PTE_P:
            if pte == 0:
                if vma.file is not None:
                    return (yield from self.do_no_page(task, mm, vma, address, write, pte_pa))
                return (yield from self.do_anonymous_page(task, mm, vma, address, write, pte_pa))
            return (yield from k.swap.do_swap_page(task, mm, vma, address, pte_pa, pte, write))
        if write and not pte & x86.PTE_W:
            return (yield from self.do_wp_page(task, mm, vma, address, pte_pa, pte))
        # Spurious (another CPU or thread mapped it meanwhile): young/dirty.
        self.write_pte(pte_pa, pte | x86.PTE_A | (x86.PTE_D if write else 0))
        return VM_FAULT_MINOR

    def _user_pte(self, pfn, writable, dirty):
        """mk_pte(page, vm_page_prot), pte_mkyoung; pte_mkwrite(pte_mkdirty())
        only on a write fault: a writable mapping faulted for reading gets W
        without D, and the MMU sets D on the first store (2.4 do_no_page)."""
        flags = x86.PTE_P | x86.PTE_U | x86.PTE_A
        if writable:
            flags |= x86.PTE_W
        if dirty:
            flags |= x86.PTE_D
        return (pfn << 12) | flags

    def do_anonymous_page(self, task, mm, vma, address, write, pte_pa):
        """do_anonymous_page(): a read maps the zero page read-only; a write
        gets a fresh GFP_HIGHUSER page, cleared by guest code through
        kmap_atomic (clear_user_highpage)."""
        k = self.k
        va = address & ~(PAGE - 1)
        if not write:
            k.page_ref(self.zero_pfn)
            self.write_pte(pte_pa, (self.zero_pfn << 12) | x86.PTE_P | x86.PTE_U | x86.PTE_A)
            self.counters['zero_page_maps'] += 1
            return VM_FAULT_MINOR
        pfn = k.alloc_page_fast(task, GFP_HIGHUSER)        # alloc_page(): sleeps only
        if pfn == ALLOC_SLOWPATH:                           # in its slow path
            pfn = yield from k.vmscan.alloc_pages_slow(task, GFP_HIGHUSER, 0)
        if pfn is None:
            return VM_FAULT_OOM
        yield Guest('clear_user_highpage', k.page_to_guest(pfn), va)
        words = k.machine.ram_words                         # read_pte / write_pte
        if words[pte_pa >> 2] != 0:              # raced while we slept
            k.put_page(pfn)
            return VM_FAULT_MINOR
        words[pte_pa >> 2] = self._user_pte(pfn, True, True)
        k.page_add_anon(pfn, mm, va, pte_pa)
        self.counters['anon_pages'] += 1
        return VM_FAULT_MINOR

    def do_no_page(self, task, mm, vma, address, write, pte_pa):
        """do_no_page(): ask the file's nopage for the page; a private write
        gets its own copy (break COW now, as 2.4 does)."""
        k = self.k
        va = address & ~(PAGE - 1)
        pgoff = vma.pgoff + ((va - vma.start) >> 12)
        pfn, major = yield from vma.file.nopage(task, vma, pgoff)
        if pfn is None:
            return VM_FAULT_SIGBUS if major is None else VM_FAULT_OOM
        if write and not vma.flags & VM_SHARED:
            new = yield from k.alloc_page(task, k.gfp.GFP_HIGHUSER)
            if new is None:
                k.put_page(pfn)
                return VM_FAULT_OOM
            yield Guest('copy_user_highpage', k.page_to_guest(new), k.page_to_guest(pfn), va)
            k.put_page(pfn)
            pfn = new
        if self.read_pte(pte_pa) != 0:
            k.put_page(pfn)
            return VM_FAULT_MINOR
        writable = write or (vma.flags & VM_SHARED and vma.flags & VM_WRITE)
        self.write_pte(pte_pa, self._user_pte(pfn, writable, write))
        k.page_add_file(pfn, mm, va, pte_pa, vma)
        if vma.flags & VM_EXEC:
            k.code_page_mapped(pfn)
        return VM_FAULT_MAJOR if major else VM_FAULT_MINOR

    def do_wp_page(self, task, mm, vma, address, pte_pa, pte):
        """do_wp_page(): copy on write (or reuse the page if we are its only
        user), then flush the old translation everywhere it may be cached."""
        k = self.k
        va = address & ~(PAGE - 1)
        old = pte >> 12
        self.counters['cow_faults'] += 1
        if old != self.zero_pfn and k.can_reuse_page(old):
            self.counters['cow_reuses'] += 1
            self.write_pte(pte_pa, pte | x86.PTE_W | x86.PTE_D | x86.PTE_A)
            yield from self.flush_tlb_page(task, mm, va)
            return VM_FAULT_MINOR
        new = yield from k.alloc_page(task, k.gfp.GFP_HIGHUSER)
        if new is None:
            return VM_FAULT_OOM
        self.counters['cow_pages_copied'] += 1
        if old == self.zero_pfn:
            yield Guest('clear_user_highpage', k.page_to_guest(new), va)
        else:
            yield Guest('copy_user_highpage', k.page_to_guest(new), k.page_to_guest(old), va)
        if self.read_pte(pte_pa) != pte:
            k.put_page(new)
            return VM_FAULT_MINOR
        self.write_pte(pte_pa, self._user_pte(new, True, True))
        k.unmap_page_pte(mm, va, pte)
        k.page_add_anon(new, mm, va, pte_pa)
        yield from self.flush_tlb_page(task, mm, va)
        return VM_FAULT_MINOR
