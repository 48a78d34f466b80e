"""Perfetto trace sinks (docs/tracing.md)."""
import json

from .trace import ADDR_KEYS, Sink, _label
from .trace_text import _hex, event_text


class PerfettoSink(Sink):
    """Chrome trace-event JSON (loads in ui.perfetto.dev and chrome://tracing):
    one track (thread) per CPU; a slice per stretch of a task on it, a
    nested slice per stretch of traced instructions in one routine; kernel
    events as instant events.  Time: 1 simulated cycle = 1 ns."""
    PID = 1
    MACHINE_TID = 999

    def __init__(self, out):
        self.out = out
        self.first = True
        self.tasks = {}            # cpu -> [label, start, end]
        self.routine = {}          # cpu -> [name, start, last time, last seq, first seq]

    def _w(self, obj):
        self.out.write(('' if self.first else ',\n') + json.dumps(obj, separators=(',', ':')))
        self.first = False

    @staticmethod
    def _us(t):
        return round(t / 1000, 3)

    def begin(self, meta):
        self.meta = meta
        self.out.write('{"traceEvents":[\n')
        variant = ' '.join(f'{k}={v}' for k, v in (meta.get('variant') or {}).items())
        name = f'kmaplab {meta.get("scenario", "")} {variant}'.strip()
        self._w({'ph': 'M', 'pid': self.PID, 'name': 'process_name', 'args': {'name': name}})
        for c in range(meta.get('cpus', 1)):
            self._w({'ph': 'M', 'pid': self.PID, 'tid': c, 'name': 'thread_name', 'args': {'name': f'CPU {c}'}})
            self._w({'ph': 'M', 'pid': self.PID, 'tid': c, 'name': 'thread_sort_index',
                     'args': {'sort_index': c}})
        self._w({'ph': 'M', 'pid': self.PID, 'tid': self.MACHINE_TID, 'name': 'thread_name',
                 'args': {'name': 'machine (no CPU)'}})

    def _slice(self, tid, name, t0, t1, cat, args=None):
        ev = {'ph': 'X', 'pid': self.PID, 'tid': tid, 'ts': self._us(t0), 'dur': self._us(max(t1 - t0, 1)),
              'name': name, 'cat': cat}
        if args:
            ev['args'] = args
        self._w(ev)

    def span(self, cpu, task, t0, t1):
        self._close_routine(cpu)
        label = _label(task)
        cur = self.tasks.get(cpu)
        if cur is not None and cur[0] == label:
            cur[2] = t1
            return
        if cur is not None:
            self._slice(cpu, cur[0], cur[1], t0, 'idle' if cur[0].startswith('swapper') else 'task')
        self.tasks[cpu] = [label, t0, t1]

    def _close_routine(self, cpu):
        r = self.routine.pop(cpu, None)
        if r is not None:
            self._slice(cpu, r[0], r[1], r[2] + 1, 'routine', {'first_seq': r[4], 'last_seq': r[3]})

    def insn(self, x):
        r = self.routine.get(x.cpu)
        name = x.info.routine
        if r is not None and r[0] == name and x.seq == r[3] + 1:
            r[2], r[3] = x.time, x.seq
            return
        self._close_routine(x.cpu)
        self.routine[x.cpu] = [name, x.time, x.time, x.seq, x.seq]

    def event(self, e):
        tid = self.MACHINE_TID if e.cpu is None else e.cpu
        args = {k: (_hex(v) if k in ADDR_KEYS else v) for k, v in e.fields.items()}
        args.update(seq=e.seq, task=_label(e.task), text=event_text(e))
        self._w({'ph': 'i', 's': 't', 'pid': self.PID, 'tid': tid, 'ts': self._us(e.time),
                 'name': e.name, 'cat': 'event', 'args': args})

    def end(self, summary):
        for cpu in list(self.routine):
            self._close_routine(cpu)
        for cpu, (label, t0, t1) in sorted(self.tasks.items()):
            self._slice(cpu, label, t0, t1, 'idle' if label.startswith('swapper') else 'task')
        self.out.write('\n],"displayTimeUnit":"ns","otherData":'
                       + json.dumps(dict(self.meta, **summary, time='1 cycle = 1 ns'), default=str) + '}\n')
