"""Tenet trace sink (github.com/gaasedelen/tenet): one file per task.

Tenet models one thread per trace file, so each task (its user code and
the kernel code run on its behalf, on whichever CPU) gets its own file:
PREFIX.NAME-PID.EXT.  Each line holds the registers an instruction changed,
EIP of the next one, and the memory it read (mr=) or wrote (mw=) at virtual
addresses; the first line of a file holds every register.

Gaps.  Between two stretches of a task other code runs (other tasks, the
kernel for them, a CPU's interrupt).  The task's next line then also carries
the registers that changed meanwhile and, as mw= entries, the memory the
gap changed that this task can see (the latest value per address): every
traced write by another task at a kernel virtual address (the kernel half
is shared) on a page this task has itself accessed, and every write by a
thread of the same mm at a user address on a page this task has accessed.  So the
bystander's write through a reused kmap_atomic slot shows in the holder's
file, at the slot address, before the holder's copy goes on through it.  Only traced
writes are known: writes by untraced code, by device DMA or by the Python
kernel (page-cache fills, swap-in) are not.
"""
import os
import re

from minikernel.layout import PAGE_OFFSET

from .trace import REGS, Sink, _label, _open


class TenetSink(Sink):
    GPRS = ('eax', 'ebx', 'ecx', 'edx', 'ebp', 'esp', 'esi', 'edi')
    _IDX = [REGS.index(r) for r in GPRS]

    def __init__(self, prefix):
        self.prefix = prefix
        self.files = {}            # task label -> file
        self.state = {}            # task label -> (registers, eip) the file last described
        self.kpages = {}           # task label -> kernel virtual pages it accessed
        self.upages = {}           # task label -> user virtual pages it accessed
        self.mm = {}               # task label -> its mm (threads share one)
        self.pending = {}          # task label -> {its va: (size, value)} written by others in its gap
        self.paths = []

    def path(self, label):
        root, ext = os.path.splitext(self.prefix)
        name = re.sub(r'[^\w.-]', '-', label)
        return f'{root}.{name}{ext or ".tenet"}'

    def _file(self, label):
        f = self.files.get(label)
        if f is None:
            p = self.path(label)
            f = self.files[label] = _open(p)
            self.paths.append(p)
        return f

    def _delta(self, old, new):
        return [f'{r}={new[i]:#x}' for r, i in zip(self.GPRS, self._IDX) if old is None or old[i] != new[i]]

    def _gap_memory(self, label):
        pend = self.pending.pop(label, None)
        if not pend:
            return []
        return [f'mw={va:#x}:{val.to_bytes(8, "little")[:size].hex()}' for va, (size, val) in sorted(pend.items())]

    def _note_memory(self, label, x):
        """Learn this task's pages; queue its writes for the other tasks that see them."""
        kmine = self.kpages.setdefault(label, set())
        umine = self.upages.setdefault(label, set())
        mm = self.mm[label] = getattr(x.task, 'mm', None)
        for op, va, pa, sz, val in x.mem:
            if va is None:
                continue
            page = va >> 12
            kernel = va >= PAGE_OFFSET
            (kmine if kernel else umine).add(page)
            if op != 'w':
                continue
            for other in self.files:
                if other == label:
                    continue
                if page in (self.kpages.get(other, ()) if kernel else
                            self.upages.get(other, ()) if mm is not None and self.mm.get(other) is mm else ()):
                    self.pending.setdefault(other, {})[va] = (sz, val)

    def insn(self, x):
        label = _label(x.task)
        f = self._file(label)
        st = self.state.get(label)
        if st is None or st != (x.before, x.eip) or label in self.pending:
            parts = self._delta(None if st is None else st[0], x.before) + [f'eip={x.eip:#x}']
            f.write(','.join(parts + self._gap_memory(label)) + '\n')
        self._note_memory(label, x)
        if x.after is None or x.next_eip is None:
            self.state[label] = (x.before, x.eip)
            return
        parts = self._delta(x.before, x.after) + [f'eip={x.next_eip:#x}']
        for op, va, pa, sz, val in x.mem:
            if va is not None:
                parts.append(f'm{op}={va:#x}:{val.to_bytes(8, "little")[:sz].hex()}')
        f.write(','.join(parts) + '\n')
        self.state[label] = (x.after, x.next_eip)

    def end(self, summary):
        for f in self.files.values():
            f.close()
