"""Tenet trace sink (github.com/gaasedelen/tenet)."""
import os

from .trace import REGS, Sink, _open


class TenetSink(Sink):
    """Tenet text traces (github.com/gaasedelen/tenet), one file per CPU:
    each line holds the registers an instruction changed, EIP of the next
    one, and the memory it read (mr=) or wrote (mw=) at virtual addresses.
    The first line of a file holds every register."""
    GPRS = ('eax', 'ebx', 'ecx', 'edx', 'ebp', 'esp', 'esi', 'edi')
    _IDX = [REGS.index(r) for r in GPRS]

    def __init__(self, prefix):
        self.prefix = prefix
        self.files = {}
        self.state = {}            # cpu -> (registers, eip) the file last described
        self.paths = []

    def path(self, cpu):
        root, ext = os.path.splitext(self.prefix)
        return f'{root}.cpu{cpu}{ext or ".tenet"}'

    def _file(self, cpu):
        f = self.files.get(cpu)
        if f is None:
            p = self.path(cpu)
            f = self.files[cpu] = _open(p)
            self.paths.append(p)
        return f

    def _delta(self, old, new):
        return [f'{r}={new[i]:#x}' for r, i in zip(self.GPRS, self._IDX) if old is None or old[i] != new[i]]

    def insn(self, x):
        f = self._file(x.cpu)
        st = self.state.get(x.cpu)
        if st is None or st != (x.before, x.eip):
            parts = self._delta(None if st is None else st[0], x.before) + [f'eip={x.eip:#x}']
            f.write(','.join(parts) + '\n')
        if x.after is None or x.next_eip is None:
            self.state[x.cpu] = (x.before, x.eip)
            return
        parts = self._delta(x.before, x.after) + [f'eip={x.next_eip:#x}']
        for op, va, pa, sz, val in x.mem:
            if va is not None:
                parts.append(f'm{op}={va:#x}:{val.to_bytes(8, "little")[:sz].hex()}')
        f.write(','.join(parts) + '\n')
        self.state[x.cpu] = (x.after, x.next_eip)

    def end(self, summary):
        for f in self.files.values():
            f.close()
