"""The kernel object: boot (init/main.c + arch/i386/kernel/setup.c), the
subsystems, and the glue the machine drives.

Boot sequence (boot())
  1. Split RAM into lowmem/highmem (mem=, highmem=), build the physical
     layout: GDT at 0x1000, the kernel image at 1 MiB (at most 1 MiB),
     then a boot allocator from 2 MiB for swapper_pg_dir, the fixmap and
     PKMAP page tables, mem_map, the zero page.
  2. swapper_pg_dir maps lowmem 1:1 at PAGE_OFFSET with 4 MiB pages (PSE,
     as 2.4 does on a PPro+), plus the PKMAP and fixmap page tables that
     every mm shares.
  3. Assemble asm/kernel/*.S with this boot's constants (NR_CPUS,
     LAST_PKMAP, struct offsets ...), copy the image in, turn paging on
     on every CPU, count every invlpg / mov cr3 of the image.
  4. The buddy allocator over what is left, kmalloc, the idle tasks, the
     timers and the disk.

The kernel is the machine's driver: step() runs the engine, finished() says
whether the workload is done, stalled() runs the deadlock detector when no
CPU has anything to do.
"""
import os

from vm import x86
from vm.asm import assemble_files, AsmError
from vm.machine import Machine
from vm.policy import make_policy
from vm.symbols import Symbolizer
from vm.tlb import parse_geometry

from . import layout, page_alloc as gfp
from .binfmt import Binfmt
from .blockdev import BlockDev
from .bug import KernelBug
from .checks import Checks
from .costs import COSTS, MODEL_COSTS, make_costs, make_model_costs
from .entry import Engine, KRET_VECTOR, KSVC_VECTOR, PT_REGS_SIZE
from .exit import Exit
from .faults import Faults
from .filemap import Filemap
from .fpu import Fpu
from .exec import BPRM_KDS, BPRM_P, BPRM_PAGE, Exec
from .fork import Fork
from .pipe import Pipes
from .fs import Vfs
from .irq import (CALL_FUNCTION_VECTOR, DISK_VECTOR, INVALIDATE_TLB_VECTOR,
                  Interrupts, LOCAL_TIMER_VECTOR)
from .layout import PAGE_OFFSET, PAGE_SIZE
from .oracle import Oracle
from .memory import MM_CPU_VM_MASK, MM_PAGE_TABLE_LOCK, MM_PGD, MM_SIZE, MM_USERS, MemoryManager
from .page_alloc import ALLOC_SLOWPATH, PAGE_WORDS, W_COUNT, PageAlloc, memmap_extent
from .rmap import Rmap
from .schema import Bool, Choice, Int, OneOf, SchemaError, Size, Str
from .vmstat import VmStat
from .highmem import Highmem, PKMAP_WAIT_ID
from .sched import (IRQ_MASK, Scheduler, TI_CPU, TI_FLAGS, TI_KMAP_IDX, TI_KMAP_PTEVAL, TI_TLS_ARRAY,
                    TI_FPU_INITIALIZED, TI_FPU_LAST_CPU, TI_FPU_STATE,
                    TI_PAGEFAULT_DISABLED, TI_PREEMPT_COUNT, TIF_NEED_RESCHED, WaitQueue)
from .services import SERVICES, Services
from .signal import Signals
from .slab import Slab
from .swap import Swap
from .syscalls import Syscalls
from .tls import Tls
from .task import Charge, Frame, Guest, TASK_RUNNING, TASK_UNINTERRUPTIBLE
from .traps import Traps
from .vmscan import VMScan
from .write_paths import WritePaths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASM_DIR = os.path.join(ROOT, 'asm')
KERNEL_SOURCES = ('entry.S', 'lib.S', 'tlb.S', 'highmem.S', 'uaccess.S', 'switch.S', 'memory.S', 'exec.S')
KERNEL_MAX_SIZE = 1 << 20
BOOT_ALLOC_START = 2 << 20
PAGE_KERNEL = x86.PTE_P | x86.PTE_W | x86.PTE_A | x86.PTE_D    # __PAGE_KERNEL

MiB = 1 << 20

# Boot options: name -> (default, allowed values or a type).
BOOT_OPTIONS = {
    'cpus': (1, int), 'mem': (128 * MiB, int), 'highmem': (None, int), 'seed': (0, int),
    'quantum': (1000, int), 'schedule': ('rr', ('rr', 'random')),
    'pkmap': (1024, int), 'atomic_fault': ('fixup', ('fixup', 'sleep')),
    'preempt': ('none', ('none', 'full')), 'debug_highmem': (False, bool),
    'disk_latency': (100_000, int), 'ipi_latency': (200, int), 'tick': (1_000_000, int),
    'timeslice': (100_000, int),
    'swap': (64 * MiB, int), 'disk_blocks': (65536, int),
    'fs_extent': (4 * MiB, int),
    'write_path': ('atomic_fallback', ('kmap', 'dont_unmap', 'gup_pin', 'atomic_fallback',
                                       'perform_write', 'kmap_local')),
    'read_path': ('atomic', ('kmap', 'atomic')),
    'design': (None, ('mainline-2.4.18', 'akpm-kmap')),
    'copy_strings': ('kmap', ('kmap', 'kmapped_page')),
    'mmap_sem_in_write': ('none', ('none', 'read')),
    'reclaim': ('rmap', ('rmap', 'swap_out')),
    'oom_policy': ('kill', ('kill', 'loop')),
    'max_cycles': (None, int),
    'watchdog': (20_000_000, int),
    # the TLB: QEMU's soft TLB, or the modelled one (vm/tlb.py) with a geometry
    'tlb': ('qemu', ('qemu', 'p3')), 'tlb_geometry': ('p3', str),
    # cpu_has_pge (global pages, CR4.PGE): default on with tlb=p3; QEMU's own
    # TLB drops global entries on a CR3 load, so there it only costs instructions
    'pge': (None, bool),
    # count cache-line transfers of the shared kernel words (vm/lines.py)
    'lines': (True, bool),
    # flush_all_zero_pkmaps: 'all' = flush_tlb_all (2.4: IPIs, every CPU);
    # 'local' = this CPU only, trusting the others' next CR3 load (a wrong
    # shortcut: global pkmap entries survive a CR3 load, scenarios/stale-pkmap)
    'pkmap_flush': ('all', ('all', 'local')),
    'max_tasks': (None, int),
}


class TlbGeometry(Str):
    """tlb_geometry: 'p3', 'unlimited' or entries,ways per TLB array (vm/tlb.py parse_geometry)."""
    meaning = "the modelled TLB's arrays: p3, unlimited, or I,IW,D,DW[,I4M,I4MW,D4M,D4MW]"

    def __init__(self):
        super().__init__(max_len=80, meaning=self.meaning)

    def allowed(self):
        return "'p3', 'unlimited', or entries,ways of the ITLB and DTLB [and their 4 MiB arrays]"

    def check(self, value, where):
        value = super().check(value, where)
        try:
            parse_geometry(value)
        except ValueError as e:
            raise SchemaError(f'{where}: {e}') from None
        return value


# Boot options: name -> the spec of its values (type, range, meaning):
# minikernel/schema.py.  Every option any input names (scenario, plan,
# --set) is checked here before anything boots.
BOOT_SCHEMA = {
    'cpus': Int(1, 32, 'CPUs'),
    'mem': Size(4 * MiB, 3 << 30, 'RAM'),
    'highmem': Size(0, 3 << 30, "Linux's highmem=: this much of mem is ZONE_HIGHMEM"),
    'seed': Int(0, (1 << 63) - 1, 'the machine\'s one random generator'),
    'quantum': Int(1, 1_000_000, 'instructions a CPU runs before the schedule policy picks again'),
    'schedule': Choice(('rr', 'random'), 'the interleaving of the CPUs'),
    'pkmap': Choice((16, 32, 64, 128, 256, 512, 1024, 2048, 4096), 'LAST_PKMAP'),
    'atomic_fault': Choice(('fixup', 'sleep'), 'what do_page_fault does in atomic context'),
    'preempt': Choice(('none', 'full'), 'kernel preemption'),
    'debug_highmem': Bool('HIGHMEM_DEBUG checks'),
    'disk_latency': Int(0, 1_000_000_000, 'cycles a disk request takes'),
    'ipi_latency': Int(0, 10_000_000, 'cycles an IPI takes'),
    'tick': Int(1000, 1_000_000_000, 'cycles between timer interrupts'),
    'timeslice': Int(1000, 10_000_000_000, 'cycles a task runs before the tick preempts it'),
    'swap': Size(0, 1 << 30, 'the swap area (0: none)'),
    'disk_blocks': Int(1024, 1 << 20, 'the disk size in 4 KiB blocks'),
    'write_path': Choice(('kmap', 'dont_unmap', 'gup_pin', 'atomic_fallback', 'perform_write',
                          'kmap_local'), 'the write design'),
    'read_path': Choice(('kmap', 'atomic'), 'file_read_actor'),
    'copy_strings': Choice(('kmap', 'kmapped_page'),
                           "exec's argument copy: kmap per string piece (2.4.18) or per page (akpm)"),
    'design': Choice(('mainline-2.4.18', 'akpm-kmap'),
                     'a named patch set: mainline-2.4.18 or akpm-kmap (Andrew\'s kmap patches)'),
    'fs_extent': Size(4096, 128 * MiB, 'the disk extent of a file open(O_CREAT) makes, and its growth'),
    'mmap_sem_in_write': Choice(('none', 'read'), 'hold mmap_sem across the copy'),
    'reclaim': Choice(('rmap', 'swap_out'), 'page reclaim'),
    'oom_policy': Choice(('kill', 'loop'), 'the allocator out of memory'),
    'max_cycles': Int(1, 10 ** 13, 'end the run (outcome timeout)'),
    'watchdog': OneOf(Choice((0,)), Int(1000, 10 ** 13),
                      meaning='soft-lockup threshold in cycles (0: off)'),
    'tlb': Choice(('qemu', 'p3'), "the TLB: QEMU's soft TLB, or the modelled P6 TLB (vm/tlb.py)"),
    'tlb_geometry': TlbGeometry(),
    'pge': Bool('cpu_has_pge: global pages, CR4.PGE (default: on with tlb=p3)'),
    'lines': Bool('count cache-line transfers of the shared kernel words (vm/lines.py)'),
    'pkmap_flush': Choice(('all', 'local'), "flush_all_zero_pkmaps: every CPU's TLB (2.4), or "
                          "only this CPU's (a wrong shortcut, scenarios/stale-pkmap)"),
    'max_tasks': Int(2, 1 << 16, "processes and threads fork may create (fork_init's max_threads; "
                                 "default mempages / 16): fork returns EAGAIN at it"),
}
COST_SPEC = Int(0, 100_000_000, 'cycles charged for one kernel step (minikernel/costs.py)')
MODEL_SPEC = Int(0, 100_000_000, 'unit cost in cycles of a counted event (minikernel/costs.py MODEL_COSTS)')


def option_spec(name):
    """The spec of boot option `name` (cost.NAME included), or None."""
    if name.startswith('cost.'):
        return COST_SPEC if name[5:] in COSTS else None
    if name.startswith('model.'):
        return MODEL_SPEC if name[6:] in MODEL_COSTS else None
    return BOOT_SCHEMA.get(name)


def check_option(name, value, where=None):
    """A boot option's value, normalised (sizes to bytes); SchemaError (one
    line) if the name is unknown or the value is not allowed."""
    where = where or f'boot option {name}'
    spec = option_spec(name)
    if value is None and name in BOOT_OPTIONS and BOOT_OPTIONS[name][0] is None:
        return None                   # the default of highmem, max_cycles
    if spec is None:
        raise SchemaError(f'{where}: unknown option (allowed: '
                          f'{", ".join(sorted(BOOT_SCHEMA))}, cost.NAME with NAME one of '
                          f'{", ".join(sorted(COSTS))}, model.NAME with NAME one of {", ".join(sorted(MODEL_COSTS))})')
    return spec.check(value, where)


# Named designs: one boot option that stands for a whole patch set, so one
# sweep compares them (`design = "akpm-kmap"` in a [sweep] or [[variant]]).
# Each sets the options below; naming one of them as well, to another value,
# is an error.  copy_strings (exec) stays on kmap in both: Andrew left it
# on kmap (it may sleep), but kmapped each argument page once.
DESIGNS = {
    # 2.4.18: file_read_actor and generic_file_write kmap the page cache
    # page; do_page_fault has no in_atomic() test.
    'mainline-2.4.18': {'write_path': 'kmap', 'read_path': 'kmap', 'atomic_fault': 'sleep',
                        'copy_strings': 'kmap'},
    # Andrew Morton's kmap patches: kmap_atomic + an atomic copy with a kmap
    # fallback on both copies and the fault handler's in_atomic() fixup, as
    # merged in 2.5.32-34 (Sep 2002, <3D771064.B1E989C7@zip.com.au> for the
    # read side); copy_strings stays on kmap but kmaps each argument page
    # once (kmapped_page, in his July set <3D2BC6DB.B60E010D@zip.com.au>).
    'akpm-kmap': {'write_path': 'atomic_fallback', 'read_path': 'atomic', 'atomic_fault': 'fixup',
                  'copy_strings': 'kmapped_page'},
}
DESIGN_TITLES = {'mainline-2.4.18': '2.4.18 mainline', 'akpm-kmap': "Andrew's kmap patches"}


def apply_design(cfg, given):
    """Expand boot option `design` into the options it sets (in cfg);
    SchemaError (a ValueError, one line) if `given` sets one of them to
    another value."""
    name = cfg.get('design')
    if name is None:
        return cfg
    for key, value in DESIGNS[name].items():
        if key in given and given[key] != value:
            raise SchemaError(f'boot option design={name} sets {key}={value}; '
                             f'{key}={given[key]!r} contradicts it (give one or the other)')
        cfg[key] = value
    return cfg


def parse_config(options):
    """Boot options with defaults; SchemaError (a ValueError, one line) on
    a bad one."""
    cfg = {}
    costs = {}
    model = {}
    for name, value in (options or {}).items():
        value = check_option(name, value)
        if name.startswith('cost.'):
            costs[name[5:]] = value
            continue
        if name.startswith('model.'):
            model[name[6:]] = value
            continue
        cfg[name] = value
    for name, (default, _) in BOOT_OPTIONS.items():
        cfg.setdefault(name, default)
    apply_design(cfg, options or {})
    if cfg['highmem'] is not None and cfg['highmem'] > cfg['mem']:
        raise SchemaError(f"boot option highmem={cfg['highmem']}: more than mem={cfg['mem']}")
    cfg['model_costs'] = make_model_costs(model)
    if cfg['pge'] is None:
        cfg['pge'] = cfg['tlb'] == 'p3'
    if cfg['fs_extent'] % 4096:
        raise SchemaError(f"boot option fs_extent={cfg['fs_extent']}: a multiple of 4K")
    return cfg, make_costs(costs)


class Kernel:
    PAGE_OFFSET = PAGE_OFFSET
    # vm.Machine's run-ahead (1 CPU): task_exited calls end_run_ahead when
    # finished() may turn true; the engine reads the moved step end
    run_ahead = True

    def __init__(self, options=None, programs=None, spares=None, spares_key=None):
        """spares, spares_key: build the machine on the hardware of an earlier
        one booted with the same key (vm/spares.py; kmaplab/explore.py)."""
        self.config, self.costs = parse_config(options)
        self._spares = (spares, spares_key)
        self.reports = []                 # what happened: bugs, oopses, kills, deadlocks
        self.console = []                 # (time, cpu, pid, text)
        self.events = []                  # trace events, when tracing is on
        self.tracer = None
        self.point_hook = None            # schedule exploration: fn(event, task, fields) (kmaplab/explore.py)
        self.mms = []
        self.mm_free_deferred = []
        self.timers = []                  # (time, seq, task) sleeping with a timeout
        self.workload = []                # the tasks whose exit ends the run
        self._after = {}                  # task -> tasks to start when it exits
        self._alive_cache = None          # [len(workload), how many are alive]
        self._workload_set = set()        # the same tasks, for O(1) membership
        self.boot_log = []
        self._boot(programs or {})

    # ---- boot -------------------------------------------------------------

    def _boot(self, programs):
        c = self.config
        self.machine = m = Machine(cpus=c['cpus'], ram=c['mem'], seed=c['seed'],
                                   policy=make_policy(c['schedule'], c['quantum']),
                                   ipi_latency=c['ipi_latency'], tlb=c['tlb'],
                                   tlb_geometry=c['tlb_geometry'], spares=self._spares[0],
                                   spares_key=self._spares[1])
        # 2.4 with cpu_has_pge: PAGE_KERNEL is global (MAKE_GLOBAL), so are
        # the direct map's 4 MiB PDEs (pagetable_init) and kmap_prot
        self.page_kernel = PAGE_KERNEL | (x86.PTE_G if c['pge'] else 0)
        self.mmu_cr4_features = (x86.CR4_PSE | x86.CR4_OSFXSR | x86.CR4_OSXMMEXCPT
                                 | (x86.CR4_PGE if c['pge'] else 0))
        low, high = layout.split_memory(c['mem'], highmem=c['highmem'])
        low &= ~(4 * MiB - 1)               # the direct map uses 4 MiB pages
        high = c['mem'] - low if c['highmem'] is not None or low < c['mem'] else high
        high = min(high, c['mem'] - low)
        self.lowmem, self.highmem = low, high
        self._boot_next = BOOT_ALLOC_START
        self.swapper_pg_dir_pa = self._boot_alloc(PAGE_SIZE)
        self.fixmap_pt_pa = self._boot_alloc(PAGE_SIZE)
        self.last_pkmap = c['pkmap']
        self.pkmap_base = layout.pkmap_base(self.last_pkmap)
        self.pkmap_pt_pa = self._boot_alloc(PAGE_SIZE * max(1, self.last_pkmap // 1024))
        self.zero_page_pa = self._boot_alloc(PAGE_SIZE)
        self.ti_boot_pa = self._boot_alloc(2 * PAGE_SIZE)       # the boot stack
        nr_pages = (low + high) >> 12
        memmap_pa, memmap_size = memmap_extent(nr_pages, low, self._boot_next)
        if memmap_pa < self._boot_next:
            raise ValueError('mem_map overlaps the boot allocations')
        self._build_page_tables(low)
        self._load_gdt()
        self.image = self._assemble_kernel(memmap_pa + PAGE_OFFSET, low >> 12)
        self.symbolizer = Symbolizer([self.image])
        m.write(layout.KERNEL_PHYS, self.image.code)
        m.keep_code(layout.KERNEL_PHYS, len(self.image.code))   # the same at the next boot
        self._boot_cpus()
        reserved = [(0, self._boot_next >> 12)]
        self.page_alloc = PageAlloc(m.ram, c['mem'], memmap_pa, low, high, reserved)
        self.gfp = gfp
        self.highstart_pfn = low >> 12
        self._poke('highmem_start_page', self.page_alloc.memmap_virt + 32 * self.highstart_pfn)
        self._poke('debug_highmem', 1 if c['debug_highmem'] else 0)
        self._poke('pkmap_flush_local', 1 if c['pkmap_flush'] == 'local' else 0)
        self._poke('copy_strings_kmapped', 1 if c['copy_strings'] == 'kmapped_page' else 0)
        self._poke('cpu_online_map', (1 << c['cpus']) - 1)
        self._poke('nr_online_cpus', c['cpus'])
        self._poke('cpu_has_pge', 1 if c['pge'] else 0)
        self._poke('mmu_cr4_features', self.mmu_cr4_features)
        self.disk = m.add_disk(c['disk_blocks'], c['disk_latency'], DISK_VECTOR)
        self._disk_next = 0
        self._init_subsystems()
        self._watch_lines()
        self._init_idle_tasks()
        self.vmscan.start_kswapd(0)
        self.tick_period = c['tick']
        m.add_timers(c['tick'], LOCAL_TIMER_VECTOR)
        for name, image in programs.items():
            self.binfmt.install(name, image)
        self._banner()

    def _boot_alloc(self, size):
        pa = self._boot_next
        self._boot_next += (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if self._boot_next > 16 * MiB:
            raise ValueError('boot allocations do not fit in the first 16 MiB')
        return pa

    def _build_page_tables(self, low):
        """swapper_pg_dir: lowmem with PSE pages, the PKMAP and fixmap PTs."""
        m = self.machine
        pgd = self.swapper_pg_dir_pa
        for i in range(low // (4 * MiB)):
            m.write32(pgd + (768 + i) * 4, (i * 4 * MiB) | self.page_kernel | x86.PTE_PS)
        for i in range(max(1, self.last_pkmap // 1024)):
            m.write32(pgd + x86.pde_index(self.pkmap_base + i * 4 * MiB) * 4,
                      (self.pkmap_pt_pa + i * PAGE_SIZE) | x86.PTE_P | x86.PTE_W)
        m.write32(pgd + x86.pde_index(layout.FIXMAP_PT_BASE) * 4,
                  self.fixmap_pt_pa | x86.PTE_P | x86.PTE_W)

    def _load_gdt(self):
        """cpu_gdt_table[NR_CPUS] (2.6): one GDT per CPU, so that two CPUs
        running tasks with different TLS never share entries 6-8."""
        for i in range(self.config['cpus']):
            self.machine.write(layout.GDT_PHYS + i * layout.CPU_GDT_SIZE, x86.flat_gdt(layout.GDT_ENTRIES))

    def kernel_defines(self, memmap_va, highstart_pfn):
        """The constants the kernel asm is assembled with (one boot's)."""
        c = self.config
        kmap_pte_va = PAGE_OFFSET + self.fixmap_pt_pa + (1023 - layout.FIX_KMAP_BEGIN) * 4
        local_begin = layout.FIX_KMAP_BEGIN + layout.KM_TYPE_NR * c['cpus']
        local_pte_va = PAGE_OFFSET + self.fixmap_pt_pa + (1023 - local_begin) * 4
        local_last = local_begin + layout.KM_MAX_IDX * c['cpus'] - 1
        d = dict(PAGE_OFFSET=PAGE_OFFSET, NR_CPUS=c['cpus'], LAST_PKMAP=self.last_pkmap,
                 LAST_PKMAP_MASK=self.last_pkmap - 1, PKMAP_BASE=self.pkmap_base,
                 PKMAP_PTE=PAGE_OFFSET + self.pkmap_pt_pa, MEM_MAP_VA=memmap_va,
                 FIXADDR_START=layout.FIXMAP_PT_BASE, KM_TYPE_NR=layout.KM_TYPE_NR,
                 KM_USER0=layout.KM_USER0, KM_USER1=layout.KM_USER1, KM_MAX_IDX=layout.KM_MAX_IDX,
                 KMAP_PTE=kmap_pte_va, KMAP_PROT=self.page_kernel,
                 KMAP_VADDR0=layout.fix_to_virt(layout.FIX_KMAP_BEGIN),
                 KMAP_LOCAL_PTE=local_pte_va, KMAP_LOCAL_VADDR0=layout.fix_to_virt(local_begin),
                 KMAP_LOCAL_VADDR_LO=layout.fix_to_virt(local_last),
                 PG_VIRTUAL=gfp.PG_VIRTUAL_OFF, PKMAP_WAIT_ID=PKMAP_WAIT_ID,
                 _TIF_NEED_RESCHED=1 << TIF_NEED_RESCHED,
                 SWAPPER_PG_DIR_PA=self.swapper_pg_dir_pa,
                 TI_CPU=TI_CPU, TI_FLAGS=TI_FLAGS, TI_PREEMPT_COUNT=TI_PREEMPT_COUNT, IRQ_MASK=IRQ_MASK,
                 TI_PAGEFAULT_DISABLED=TI_PAGEFAULT_DISABLED,
                 TI_KMAP_IDX=TI_KMAP_IDX, TI_KMAP_PTEVAL=TI_KMAP_PTEVAL,
                 TI_TLS_ARRAY=TI_TLS_ARRAY, TI_FPU_INITIALIZED=TI_FPU_INITIALIZED,
                 TI_FPU_LAST_CPU=TI_FPU_LAST_CPU, TI_FPU_STATE=TI_FPU_STATE, CPU_GDT_TABLE=PAGE_OFFSET + layout.GDT_PHYS,
                 CPU_GDT_SHIFT=layout.CPU_GDT_SHIFT, GDT_ENTRY_TLS_MIN=layout.GDT_ENTRY_TLS_MIN,
                 MM_PGD=MM_PGD, MM_CPU_VM_MASK=MM_CPU_VM_MASK, MM_PAGE_TABLE_LOCK=MM_PAGE_TABLE_LOCK,
                 PG_COUNT=gfp.PG_COUNT_OFF, PAGE_STRUCT_SIZE=gfp.PAGE_STRUCT_SIZE,
                 KRET_VECTOR=KRET_VECTOR, KSVC_VECTOR=KSVC_VECTOR,
                 INVALIDATE_TLB_VECTOR=INVALIDATE_TLB_VECTOR,
                 CALL_FUNCTION_VECTOR=CALL_FUNCTION_VECTOR, PT_REGS_SIZE=PT_REGS_SIZE,
                 BPRM_P=BPRM_P, BPRM_KDS=BPRM_KDS, BPRM_PAGE=BPRM_PAGE)
        d.update(SERVICES)
        return d

    def _assemble_kernel(self, memmap_va, highstart_pfn):
        paths = [os.path.join(ASM_DIR, 'kernel', f) for f in KERNEL_SOURCES]
        image = assemble_files(paths, layout.KERNEL_VIRT,
                               self.kernel_defines(memmap_va, highstart_pfn), root=ROOT)
        if image.size > KERNEL_MAX_SIZE:
            raise ValueError(f'kernel image is {image.size} bytes, more than {KERNEL_MAX_SIZE}')
        return image

    def _boot_cpus(self):
        img = self.image
        self._user_image = [None] * len(self.machine.cpus)
        boot_esp = PAGE_OFFSET + self.ti_boot_pa + 2 * PAGE_SIZE - 16
        for cpu in self.machine.cpus:
            # CR4 (mmu_cr4_features): PSE for the direct map, PGE with
            # cpu_has_pge; OSFXSR and OSXMMEXCPT as 2.4's identify_cpu sets
            # them on a CPU with SSE (fxsave/fxrstor are how FPU state is
            # switched, minikernel/fpu.py).
            cpu.boot(self.swapper_pg_dir_pa, PAGE_OFFSET + layout.GDT_PHYS + cpu.index * layout.CPU_GDT_SIZE,
                     8 * layout.GDT_ENTRIES, boot_esp, cr4=self.mmu_cr4_features)
            cpu.set_code_region(0, img.base, img.size, img.insn_bitmap)
            cpu.watch_tlb_events(img)
            cpu.watch_sti(img)
            for kind in ('invlpg', 'mov_cr3'):
                for addr in img.specials.get(kind, ()):
                    cpu.count_at(addr, kind)
            for name, (lo, hi) in img.ranges.items():
                cpu.add_range(name, lo, hi)

    # The shared kernel words whose cache lines the thread argued about, by
    # group: (group, first symbol, end symbol or size).  Each range is the
    # words from the first symbol up to the end (vm/lines.py counts the
    # lines moving between CPUs).
    LINE_GROUPS = (
        ('kmap_lock', 'kmap_lock', 'pkmap_count'),       # + last_pkmap_nr, pkmap_map_wait
        ('tlbstate', 'cpu_tlbstate', 'call_lock'),       # + flush_cpumask/mm/va, tlbstate_lock
        ('call_data', 'call_lock', 'cpu_online_map'),    # call_lock, call_data_*
    )

    def _watch_lines(self):
        """Boot option lines: count line transfers of kmap_lock, pkmap_count,
        the pkmap and fixmap page tables, tlbstate and the flush mask,
        call_data, and struct page (page->count, page->flags).  mmap_sem and
        the run-queue locks are Python objects (no guest word), and
        mm->page_table_lock lives in each mm: not watched."""
        if not self.config['lines']:
            self.lines = None
            return
        self.lines = lines = self.machine.watch_lines()
        sym = self.image.symbols
        for group, first, end in self.LINE_GROUPS:
            lines.watch(group, sym[first] - PAGE_OFFSET, sym[end] - sym[first])
        lines.watch('pkmap_count', sym['pkmap_count'] - PAGE_OFFSET, 4 * self.last_pkmap)
        lines.watch('pkmap_pte', self.pkmap_pt_pa, 4 * self.last_pkmap)
        lines.watch('fixmap_pte', self.fixmap_pt_pa, PAGE_SIZE)
        pa = self.page_alloc.memmap_virt - PAGE_OFFSET
        lines.watch('mem_map', pa, self.page_alloc.nr_pages * gfp.PAGE_STRUCT_SIZE)

    def _poke(self, symbol, value):
        self.machine.write32(self.image.symbols[symbol] - PAGE_OFFSET, value)

    def _init_subsystems(self):
        self.faults = Faults(self)
        self.slab = Slab(self)
        self.sched = Scheduler(self, self.config['cpus'])
        self.engine = Engine(self)
        self.mm = MemoryManager(self)
        self.mm.zero_pfn = self.zero_page_pa >> 12
        self.rmap = Rmap(self)
        self.irq = Interrupts(self)
        self.traps = Traps(self)
        self.services = Services(self)
        self.tls = Tls(self)
        self.fpu = Fpu(self)
        self.signals = Signals(self)
        self.syscalls = Syscalls(self)
        self.exit = Exit(self)
        self.fork = Fork(self)
        self.exec = Exec(self)
        self.pipes = Pipes(self)
        self.binfmt = Binfmt(self)
        self.checks = Checks(self)
        self.highmem = Highmem(self)
        self.vmstat = VmStat(self)
        self.blockdev = BlockDev(self, self.disk)
        self.filemap = Filemap(self)
        self.oracle = Oracle(self)
        self.vfs = Vfs(self)
        self.write_paths = WritePaths(self)
        swap_blocks = max(2, self.config['swap'] // PAGE_SIZE)
        if swap_blocks > self.disk.nblocks - self._disk_next:
            raise SchemaError(f"boot option swap={self.config['swap'] >> 20}M: needs {swap_blocks} "
                              f"disk blocks, the disk has {self.disk.nblocks - self._disk_next} "
                              f"(disk_blocks={self.disk.nblocks}: raise it, or lower swap)")
        self.swap = Swap(self, self.config['swap'])
        self.vmscan = VMScan(self)
        self.init_mm_guest = self.slab.kmalloc(MM_SIZE, 'mm_struct')
        self.machine.write(self.init_mm_guest - PAGE_OFFSET, bytes(MM_SIZE))
        self.machine.write32(self.init_mm_guest - PAGE_OFFSET + MM_PGD,
                             PAGE_OFFSET + self.swapper_pg_dir_pa)
        self.machine.write32(self.init_mm_guest - PAGE_OFFSET + MM_USERS, 1)
        tlbstate = self.image.symbols['cpu_tlbstate'] - PAGE_OFFSET
        for i in range(self.config['cpus']):
            self.machine.write32(tlbstate + 8 * i, self.init_mm_guest)
            self.machine.write32(tlbstate + 8 * i + 4, 2)           # TLBSTATE_LAZY

    def _init_idle_tasks(self):
        sched = self.sched
        for i in range(self.config['cpus']):
            idle = sched.new_task(f'swapper/{i}', None, i, idle=True)
            idle.active_mm = _InitMM(self.init_mm_guest)
            idle.frames.append(Frame(self._cpu_idle(idle), 'main'))
            sched.idle[i] = idle
            sched.current[i] = idle

    def _cpu_idle(self, task):
        """cpu_idle(): halt until an interrupt; schedule when asked.  Never
        returns."""
        while True:
            if self.sched.need_resched(task) or self.sched.rq[task.cpu]:
                yield from self.sched.schedule(task)
                continue
            # Interrupts off from the check above to the hlt, as 2.5's
            # default_idle (local_irq_disable; if (!need_resched())
            # safe_halt()): a wake-up from another CPU in between is taken
            # in the hlt, not before it (and lost).
            yield Guest('cpu_idle_halt', irqs=False)

    def _banner(self):
        c = self.config
        self.boot_log = [f'kmaplab: Linux-2.5-like i386 SMP kernel, {c["cpus"]} CPU(s), '
                         f'{c["mem"] >> 20} MB RAM, seed {c["seed"]}']
        self.boot_log += self.page_alloc.describe()
        self.boot_log.append(f'PKMAP: {self.last_pkmap} slots at {self.pkmap_base:#010x}, '
                             f'fixmap kmap_atomic slots at {layout.fix_to_virt(layout.FIX_KMAP_BEGIN):#010x}')
        self.boot_log.append(f'Kernel image: {self.image.size} bytes at {self.image.base:#010x}, '
                             f'{len(self.image.extable)} exception table entries')
        self.boot_log.append('Boot options: ' + ' '.join(f'{k}={v}' for k, v in sorted(c.items())
                                                         if v is not None))

    # ---- the driver interface -------------------------------------------

    def step(self, cpu, budget):
        self.engine.step(cpu, budget)

    def finished(self):
        """The workload is done: every task it counts has exited."""
        return bool(self.workload) and self._workload_alive() == 0

    def _workload_alive(self):
        """How many workload tasks are alive: O(1), kept by add_workload and
        task_exited (recounted only if someone appended to self.workload
        directly)."""
        n = self._alive_cache
        if n is None or n[0] != len(self.workload):
            self._workload_set = set(self.workload)
            n = self._alive_cache = [len(self.workload), sum(t.alive for t in self.workload)]
        return n[1]

    def in_workload(self, task):
        """Does `task` count in the workload?  O(1)."""
        self._workload_alive()                      # refreshes the set after direct appends
        return task in self._workload_set

    def add_workload(self, task):
        """Count `task` in the workload (its exit helps end the run): O(1)."""
        self._workload_alive()
        self.workload.append(task)
        self._workload_set.add(task)
        self._alive_cache[0] += 1
        self._alive_cache[1] += 1

    def stalled(self):
        """Every CPU idle and no event but the ticks: either a timer will
        wake someone, or this is a deadlock (reported with the wait-for
        graph)."""
        if self.timers:
            return None
        return self.checks.deadlock()

    def run(self, max_cycles=None):
        """Run until the workload is done, a deadlock, or the cycle limit.
        A broken kernel invariant (KernelBug) ends the run as a reported BUG."""
        limit = max_cycles if max_cycles is not None else self.config['max_cycles']
        try:
            return self.machine.run(self, limit)
        except KernelBug as e:
            self.report('bug', f'kernel BUG: {e.message}')
            return 'kernel bug'

    def finish(self):
        """End of run: the frame-accounting check (and, with files and swap,
        writeback and the data oracle)."""
        self.vfs.finish()
        try:
            self.page_alloc.check()
        except KernelBug as e:
            self.report('bug', f'frame accounting: {e.message}')
        self.checks.finish()

    def subsystems(self):
        return [s for s in (self.page_alloc, self.sched, self.mm, self.rmap, self.irq, self.highmem,
                            self.services, self.slab, self.blockdev, self.checks, self.vfs, self.write_paths,
                            self.swap, self.vmscan, self.syscalls, self.faults, self.fork, self.exec, self.pipes,
                            self.signals, self.exit) if s is not None]

    # ---- reporting and symbols -------------------------------------------

    def report(self, kind, message, task=None, **extra):
        cpu = task.cpu if task is not None else None
        t = self.machine.time(cpu) if cpu is not None else self.machine.now()
        rec = dict(kind=kind, message=message, time=t, cpu=cpu,
                   task=f'{task.name}/{task.pid}' if task is not None else None, **extra)
        self.reports.append(rec)
        self.trace_event('report', task=task, kind=kind, message=message)
        return rec

    def oops(self, task, message, report=True):
        return self.report('oops', f'Oops: {message} ({task.name}/{task.pid} on CPU{task.cpu})',
                           task=task)

    def kill_task(self, task, sig, message, oom=False, kind='kill'):
        """force_sig(): the task dies at its next return to user mode; a
        task in an interruptible sleep (wait4, a pipe) is woken for it.
        kind='signal': a signal another task sent (kill(2), SIGPIPE): not a
        finding of the run."""
        if task.killed_by is None:
            task.killed_by = (sig, message)
            self.report(kind, f'{task.name}/{task.pid} killed: {message}', task=task, signal=sig,
                        oom=oom)
            if task.interruptible:
                self.sched.wake_up_process(task)

    def symbol(self, name):
        try:
            return self.image.symbols[name]
        except KeyError:
            raise KernelBug(f'no kernel symbol {name!r}') from None

    def describe(self, addr):
        if addr is None:
            return '?'
        if addr >= PAGE_OFFSET:
            return self.symbolizer.describe(addr)
        return f'user {addr:#010x}'

    def describe_user(self, task, eip):
        prog = task.mm.program if task.mm is not None else None
        if prog is not None and prog.image.contains(eip):
            where = Symbolizer([prog.image]).describe(eip)
            return f'{where} ({prog.name})' if getattr(prog, 'elf', False) else where
        return f'{eip:#010x}'

    def search_exception_tables(self, eip):
        return self.image.extable.get(eip)

    def trace_event(self, event, task=None, **fields):
        if self.tracer is not None:
            self.tracer.event(event, task, fields)
        if self.point_hook is not None:           # a scheduling point (kmaplab/explore.py)
            self.point_hook(event, task, fields)

    def console_write(self, task, data):
        task.console += data
        self.console.append((self.machine.time(task.cpu), task.cpu, task.pid,
                             bytes(data).decode('latin-1')))

    # ---- pages ------------------------------------------------------------

    def page_to_guest(self, pfn):
        """struct page * (the kernel virtual address of its mem_map entry)."""
        return self.page_alloc.pfn_to_page(pfn)

    def page_ref(self, pfn):
        self.page_alloc.get_page(pfn)

    def put_page(self, pfn):
        """put_page(): the last reference takes the page off the LRU first
        (2.5 __page_cache_release)."""
        pa = self.page_alloc
        if pa.page_words_signed[pfn * PAGE_WORDS + W_COUNT] == 1 and self.vmscan is not None:
            self.vmscan.lru_del(pfn)                      # (page_count(pfn) == 1)
        pa.put_page(pfn)

    def lru_cache_add(self, pfn):
        if self.vmscan is not None:
            self.vmscan.lru_cache_add(pfn)

    def alloc_page(self, task, gfp_mask, order=0):
        """alloc_pages(): the fast path, then (with reclaim) the slow path.
        Generator -> pfn or None.  May sleep."""
        pfn = self.alloc_page_fast(task, gfp_mask, order)
        if pfn == ALLOC_SLOWPATH:
            pfn = yield from self.vmscan.alloc_pages_slow(task, gfp_mask, order)
        return pfn

    def alloc_page_fast(self, task, gfp_mask, order=0):
        """alloc_page() up to its slow path, without a generator (the page
        fault's allocation): the cost, fault injection, the fast path.
        -> pfn, None (no page), or ALLOC_SLOWPATH: the fast path failed and
        reclaim may find one; the caller goes on with `yield from
        k.vmscan.alloc_pages_slow(task, gfp_mask, order)` (may sleep), as
        alloc_page() does.  Never sleeps."""
        self.machine.charge(task.cpu, self.costs['page_alloc'])   # = yield Charge(...)
        if self.faults.alloc_hooks and self.faults.should_fail_alloc_page(task, gfp_mask, order):
            return None
        pfn = self.page_alloc.alloc_pages_fast(gfp_mask, order)
        if pfn is None and self.vmscan is not None:
            return ALLOC_SLOWPATH
        return pfn

    def page_add_anon(self, pfn, mm, va, pte_pa):
        """A PTE now maps an anonymous page: rmap, rss, and the LRU."""
        self.rmap.page_add_rmap(pfn, mm, va, pte_pa, anon=True)
        mm.rss += 1
        if self.vmscan is not None:                       # lru_cache_add
            self.vmscan.lru_cache_add(pfn)

    def page_add_file(self, pfn, mm, va, pte_pa, vma):
        self.rmap.page_add_rmap(pfn, mm, va, pte_pa, anon=False)
        mm.rss += 1
        self.lru_cache_add(pfn)

    def unmap_page_pte(self, mm, va, pte):
        """A PTE mapping a page went away: page_remove_rmap + the reference
        the PTE held."""
        pfn = pte >> 12
        if pfn == self.mm.zero_pfn:
            return
        if pte & x86.PTE_D:
            self.rmap.pte_dirty(pfn)
        self.rmap.page_remove_rmap(pfn, mm, va)
        mm.rss -= 1
        self.put_page(pfn)

    def can_reuse_page(self, pfn):
        """do_wp_page's test (2.4 can_share_swap_page): only our PTE holds
        the page; a swap-cache page whose slot nobody else uses leaves the
        swap cache and is reused."""
        count = self.page_alloc.page_count(pfn)
        if not self.rmap.in_swap_cache(pfn):
            return count == 1 and self.rmap.mapcount(pfn) == 1
        if count == 2 and self.swap is not None and self.swap._exclusive(pfn):
            self.swap.delete_from_swap_cache(pfn)
            return True
        return False

    def swap_pte_dropped(self, pte):
        if self.swap is not None:
            self.swap.swap_free_entry(pte)

    def code_page_mapped(self, pfn):
        """A frame now holds user code: drop stale translations of it on
        every CPU (each Unicorn instance has its own code cache, and a
        store or DMA elsewhere does not reach it).  Only that frame's:
        other frames' translations are not stale because of this one."""
        pa = pfn << 12
        for cpu in self.machine.cpus:
            cpu.invalidate_code(pa, 4096)

    # ---- tasks ------------------------------------------------------------

    def task_kbuf(self, task):
        """A lowmem page for copying syscall arguments (kernel data)."""
        if task.kbuf_pfn is None:
            task.kbuf_pfn = self.page_alloc.alloc_pages_fast(gfp.GFP_KERNEL, 0)
            if task.kbuf_pfn is None:
                raise KernelBug('out of lowmem for a syscall buffer')
        return PAGE_OFFSET + (task.kbuf_pfn << 12)

    def spawn(self, name, program, args=(), cpu=0, start=0, share_mm_with=None, workload=True,
              after=None):
        """Create a user task running `program` (installed on the disk) on
        `cpu`, made runnable at simulated time `start`.  With share_mm_with,
        it is a thread of that task (CLONE_VM) starting at _start."""
        prog = self.binfmt.programs[program]
        stack_top = layout.USER_STACK_TOP
        if share_mm_with is not None:
            mm = share_mm_with.mm
            mm.users += 1
            stack_top = self.binfmt.thread_stack(mm)
        else:
            mm = self.mm.mm_alloc()
            if mm is None:
                raise ValueError('out of lowmem at spawn')
            self.binfmt.setup_mm(mm, prog)
        task = self.sched.new_task(name, mm, cpu)
        self.fpu.init(task)                     # fpu__clear() at exec
        self.vfs.files_init(task, share_mm_with)
        if share_mm_with is not None:
            task.tgid = share_mm_with.tgid
        task.program = prog
        task.frames.append(Frame(self.traps.from_user(task, self.binfmt.start_user(task, list(args), stack_top),
                                                      'exec'), 'exec'))
        if workload:
            self.add_workload(task)
        self._start_task(task, start, after)
        return task

    def spawn_exec(self, name, path, argv, envp=(), cpu=0, start=0, workload=True, after=None):
        """Create a user task that execs the ELF file `path` of the lab's
        filesystem with `argv` and `envp` on `cpu` at simulated time
        `start`.  ValueError (one line) if the file is missing or not a
        runnable static i386 ELF (binfmt.ElfError says why)."""
        inode = self.vfs.lookup(path)
        if inode is None:
            raise ValueError(f'exec {path}: no such file')
        prog = self.binfmt.elf_program(inode)          # ElfError is a ValueError
        if prog is None:
            raise ValueError(f'exec {path}: not an executable shipped with the disk image')
        mm = self.mm.mm_alloc()
        if mm is None:
            raise ValueError('out of lowmem at spawn')
        task = self.sched.new_task(name, mm, cpu)
        self.fpu.init(task)                     # fpu__clear() at exec (an execve of a running
        self.vfs.files_init(task)               # task: yield from fpu.clear(task))
        task.program = prog

        def exec_first():
            err = yield from self.binfmt.load_elf_binary(task, inode, list(argv), list(envp), path)
            if err:
                self.kill_task(task, 'SIGKILL', f'exec {path} failed ({err})')
        task.frames.append(Frame(self.traps.from_user(task, exec_first(), 'exec'), 'exec'))
        if workload:
            self.add_workload(task)
        self._start_task(task, start, after)
        return task

    def _start_task(self, task, start, after):
        """Make `task` runnable at `start`, or when `after` has exited."""
        if after is None:
            self.machine.schedule(start, self.sched.start, task)
        else:
            self._after.setdefault(after, []).append(task)

    def kernel_thread(self, name, cpu, body, mm=None, start=0, workload=True):
        """A kernel thread on `cpu` running the generator function
        body(task), then exiting.  With `mm`, it runs on that address space
        (use_mm(), as AIO's kernel threads do), so it can touch user memory."""
        task = self.sched.new_task(name, mm, cpu)
        if mm is not None:
            mm.users += 1

        def main():
            value = yield from body(task)
            yield from self.exit.do_exit(task, value if isinstance(value, int) else 0)
        task.frames.append(Frame(main(), 'main'))
        if workload:
            self.add_workload(task)
        self.machine.schedule(start, self.sched.start, task)
        return task

    def clone_thread(self, parent, newsp):
        """clone(CLONE_VM): a thread on the parent's CPU that returns 0."""
        child = self.sched.new_task(parent.name + '-thread', parent.mm, parent.cpu)
        parent.mm.users += 1
        child.tgid = parent.tgid
        child.program = parent.program
        self.vfs.files_init(child, parent)
        self.tls.copy_thread(parent, child)
        regs = dict(parent.uregs, eax=0)
        if newsp:
            regs['esp'] = newsp
        child.uregs = regs

        def ret_from_fork():
            return 0
            yield
        child.frames.append(Frame(self.traps.from_user(child, ret_from_fork(), 'syscall'), 'syscall'))
        if self.in_workload(parent):
            self.add_workload(child)
        self.sched.start(child)
        return child

    def task_exited(self, task):
        if self._alive_cache is not None and task in self._workload_set:
            self._alive_cache[1] -= 1
            self.machine.end_run_ahead()        # finished() may be true now (run_ahead's promise)
        for waiter in self._after.pop(task, ()):          # [[task]] after = ...
            self.machine.schedule(self.machine.time(task.cpu), self.sched.start, waiter)
        self.reap_mms()

    def reap_mms(self):
        """mmdrop(): free guest mm_structs no CPU refers to any more."""
        tlbstate = self.image.symbols['cpu_tlbstate'] - PAGE_OFFSET
        live = {self.machine.read32(tlbstate + 8 * i) for i in range(self.config['cpus'])}
        keep = []
        for mm in self.mm_free_deferred:
            if mm.guest in live or mm.cpu_vm_mask:
                keep.append(mm)
            else:
                self.slab.kfree(mm.guest)
                self.page_alloc.free_pages(mm.pgd_pfn, 0)
        self.mm_free_deferred = keep

    def set_user_code(self, cpu, task):
        """Point the CPU's instruction counter at the task's program image
        (a kernel thread keeps whatever user image was there: it runs none)."""
        prog = task.program
        if prog is None or self._user_image[cpu.index] is prog.image:
            return
        img = prog.image
        cpu.set_code_region(1, img.base, img.size, img.insn_bitmap)
        self._user_image[cpu.index] = img

    def sleep_for(self, task, cycles):
        """schedule_timeout(): sleep `cycles` of simulated time.  Generator."""
        wq = WaitQueue(f'timer {task.pid}')
        state = {'fired': False}
        entry = (self.machine.time(task.cpu) + cycles, task)
        self.timers.append(entry)

        def fire():
            state['fired'] = True
            if entry in self.timers:
                self.timers.remove(entry)
            self.sched.wake_up(wq)
        self.machine.schedule(entry[0], fire)
        yield from self.sched.wait_event(task, wq, lambda: state['fired'], what=('timer', entry[0]))

    def run_timers(self):
        """Timers are machine events (they fire on time whatever the CPU
        does); the tick has nothing more to run."""

    def alloc_boot_blocks(self, n):
        block = self._disk_next
        self._disk_next += n
        return block

    def files_exit(self, task):
        if self.vfs is not None:
            yield from self.vfs.files_exit(task)


class _InitMM:
    """init_mm as an idle task's active_mm: only its guest address matters."""

    def __init__(self, guest):
        self.guest = guest
        self.program = None
