"""`kmaplab run SCENARIO --gdb [HOST:]PORT`: one variant under gdb.

What this file owns
  - Attaching vm/gdbstub.py's server to a booted kernel before its first
    guest instruction, the ELF files gdb loads (kmaplab/image.py), and the
    lab's `monitor` commands: tasks, runqueues, pkmap, fixmap, counters,
    where.
  - How a run under gdb ends: the run's own report, as without gdb; `kill`
    ends it early (outcome `killed`, with a report saying gdb killed it);
    if gdb disconnects or detaches, the run goes on to its end and report.

Rules
  - Read-only views of the kernel: a monitor command never changes state.
  - The schedule is the one without gdb (vm/debug.py explains why); the
    tests compare the counters.
"""
import sys

from vm.gdbstub import GdbError, GdbServer

from minikernel import layout
from minikernel.layout import PAGE_OFFSET

from . import image as image_mod
from .options import out_dir
from .runner import collect_counters, run_variant


def parse_address(text):
    """'[HOST:]PORT' -> (host, port); ValueError with a one-line reason."""
    host, _, port = text.rpartition(':')
    host = host or '127.0.0.1'
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'--gdb {text!r}: expected [HOST:]PORT, e.g. 1234 or localhost:1234')
    return host, int(port)


class Lab:
    """The monitor commands over one kernel (read-only)."""

    def __init__(self, k):
        self.k = k

    def commands(self):
        return {'tasks': self.tasks, 'runqueues': self.runqueues, 'pkmap': self.pkmap,
                'fixmap': self.fixmap, 'counters': self.counters, 'where': self.where}

    def _task(self, t):
        if t is None:
            return '-'
        mode = 'user' if t.in_user else 'kernel'
        return f'{t.name}/{t.pid} [{t.state} {mode}]'

    def thread_info(self, cpu):
        t = self.k.sched.current[cpu]
        return f'CPU{cpu} {self._task(t)}' if t is not None else f'CPU{cpu}'

    def tasks(self, args):
        """current task per CPU, then every task (state, cr3 of its mm, preempt_count)"""
        s = self.k.sched
        out = [f'CPU {i}: current {self._task(t)}' for i, t in enumerate(s.current)]
        for t in sorted(s.tasks.values(), key=lambda t: t.pid):
            if not t.alive:
                out.append(f'  pid {t.pid:3} {t.name:14} cpu {t.cpu} state {t.state} (exited)')
                continue
            wait = f' waits on {t.waiting_on}' if t.waiting_on else ''
            mm = f' cr3 {t.mm.pgd_pa:#x}' if t.mm is not None else ''
            out.append(f'  pid {t.pid:3} {t.name:14} cpu {t.cpu} state {t.state}{mm} '
                       f'preempt_count {s.preempt_count(t):#x}{wait}')
        return '\n'.join(out)

    def runqueues(self, args):
        """each CPU's run queue, in order"""
        s = self.k.sched
        return '\n'.join(f'CPU {i}: ' + (' '.join(f'{t.name}/{t.pid}' for t in rq) or '(empty)')
                         for i, rq in enumerate(s.rq))

    def pkmap(self, args):
        """the pkmap pool: slots in use, counts, pages, sleepers"""
        h, k = self.k.highmem, self.k
        mapped, used, out = 0, 0, []
        for nr in range(k.last_pkmap):
            count, pte = h.pkmap_count(nr), h.pkmap_pte(nr)
            if count or pte & 1:
                mapped += count >= 1
                used += count >= 2
                va = k.pkmap_base + nr * 4096
                out.append(f'  slot {nr:4} va {va:#010x} pkmap_count {count} '
                           f'pte {pte:#010x}' + (f' pfn {pte >> 12:#x}' if pte & 1 else ''))
        head = (f'pkmap pool: {k.last_pkmap} slots at {k.pkmap_base:#010x}, {mapped} mapped '
                f'(count >= 1), {used} in use (count >= 2), last_pkmap_nr {h.last_pkmap_nr()}, '
                f'{len(h.pkmap_map_wait.tasks)} sleeping in kmap_high')
        addr = k.image.symbols['pkmap_count']
        head += f'\n  pkmap_count at {addr:#010x} (physical {addr - PAGE_OFFSET:#x})'
        return '\n'.join([head] + out)

    def fixmap(self, args):
        """kmap_atomic fixmap slots in use (per CPU and km_type) and their PTEs"""
        k, out = self.k, []
        for cpu in range(k.config['cpus']):
            for t, name in enumerate(layout.KM_TYPES):
                idx = layout.FIX_KMAP_BEGIN + t + layout.KM_TYPE_NR * cpu
                va = layout.fix_to_virt(idx)
                pte_pa = k.fixmap_pt_pa + (1023 - idx) * 4
                pte = k.machine.read32(pte_pa)
                if pte or args.strip() == 'all':
                    out.append(f'CPU {cpu} {name:20} va {va:#010x}  pte at {PAGE_OFFSET + pte_pa:#010x} '
                               f'= {pte:#010x}' + (f' (pfn {pte >> 12:#x})' if pte & 1 else ''))
        return '\n'.join(out) or 'no kmap_atomic slot mapped (monitor fixmap all lists them)'

    def counters(self, args):
        """the run's counters so far (NAME filters)"""
        c = collect_counters(self.k)
        return '\n'.join(f'{key} = {v}' for key, v in sorted(c.items())
                         if not args.strip() or args.strip() in key)

    def where(self, args):
        """every CPU: EIP as symbol+offset (file:line), task"""
        m, out = self.k.machine, []
        for i, cpu in enumerate(m.cpus):
            eip = cpu.get_reg('eip')
            t = self.k.sched.current[i]
            out.append(f'CPU {i}: {self.k.describe(eip) if t is None or not t.in_user else hex(eip)}'
                       f'  {self._task(t)}')
        return '\n'.join(out)


def run_gdb(scn, variant, seed, overrides, address, timeout=None, elf_dir=None, notes=None):
    """Run one variant with a gdb server on `address` (host, port).
    Returns run_variant's result with 'gdb' added (the server).  GdbError
    for a port in use or no connection within `timeout`."""
    notes = notes or (lambda text: print(f'kmaplab: {text}', file=sys.stderr, flush=True))
    holder = {}

    def setup(k):
        lab = Lab(k)
        srv = GdbServer(k.machine, address[0], address[1], timeout=timeout,
                        monitor=lab.commands(), thread_info=lab.thread_info, notes=notes,
                        on_kill=lambda: k.report('kill', 'run ended by gdb (kill)'))
        holder['srv'] = srv
        asm = set(image_mod.user_programs())       # ELF executables load as they are
        paths = image_mod.write_images(k, elf_dir or out_dir('gdb'),
                                       programs=sorted({t.program.name for t in k.sched.tasks.values()
                                                        if t.program is not None} & asm))
        host, port = srv.address
        notes(f'gdb server on {host}:{port}; in another terminal: '
              f'gdb -ex "target remote {host}:{port}" {paths[0]}')
        srv.attach()

    try:
        r = run_variant(scn, variant, seed=seed, overrides=overrides, setup=setup)
    except BaseException:
        if 'srv' in holder:
            holder['srv'].close()
        raise
    srv = holder['srv']
    k = r['kernel']
    if srv.error:
        srv.close()
        raise GdbError(srv.error)
    srv.finish(0 if r['ok'] else 1)
    r['gdb'] = srv
    return r
