"""Perfetto trace sinks (docs/tracing.md): native TrackEvent protobuf
(--format perfetto, .pftrace) and the legacy Chrome JSON (--format
perfetto-json).  Both open in ui.perfetto.dev; Perfetto calls the JSON
format legacy and recommends the protobuf.

What this file owns
  - Timeline: the model both formats share, built from the tracer's calls.
    Tracks: one per CPU ("CPU n", tid n+1: no track has tid 0, which some
    consumers drop), one per task ("name/pid", a thread of the "tasks"
    process), a "machine" track for events of no CPU, and counter tracks
    (free pages of each zone, pkmap slots in use; vmstat.py samples them at
    CPU 0's tick).  On a CPU track: a slice per stretch of a task, with a
    nested slice per stretch of traced instructions in one routine; on a
    task's track: a slice per stretch on a CPU.  Kernel events are instant
    events on the CPU track.  Flows: an IPI from its ipi_sent (sender's CPU)
    to the ipi_received on each target CPU; a wake-up from its wakeup event
    to the woken task's next slice.
  - Slices are written as begin/end pairs in the order they open and close,
    so a parent always comes before its children, also at equal timestamps.
  - PerfettoProtoSink writes TracePacket messages (the `perfetto` package's
    generated protos) one at a time, length-delimited as field 1 of Trace:
    a file of them is a Trace.  PerfettoSink (JSON) writes B/E, i, C, s/f
    events and metadata with a `cat`.

Time: 1 simulated cycle = 1 ns.
"""
import json

from .trace import ADDR_KEYS, Sink, _label
from .trace_text import _hex, event_text

ZONES = ('dma', 'normal', 'high')


class Timeline(Sink):
    """Turns the tracer's calls into track operations for a writer:
    track(uuid, name, kind, **info), begin(uuid, ts, name, cat, args,
    flows_in), end(uuid, ts), instant(uuid, ts, name, cat, args, flows_out,
    flows_in), counter(uuid, ts, value), finish(meta)."""
    PROCESS = 1
    TASKS = 2
    MACHINE = 3
    CPU0 = 100
    COUNTER0 = 50
    TASK0 = 1000

    def begin(self, meta):
        self.meta = meta
        self.cur_task = {}         # cpu -> [task label, task uuid]
        self.routine = {}          # cpu -> [name, last time, last seq]
        self.task_tracks = {}      # label -> uuid
        self.pending_ipi = {}      # (cpu, vector) -> [flow id]
        self.pending_wake = {}     # task label -> [flow id]
        self.next_flow = 1
        self.last_ts = {}          # uuid -> last timestamp written (ends never go back)
        variant = ' '.join(f'{k}={v}' for k, v in (meta.get('variant') or {}).items())
        name = f'kmaplab {meta.get("scenario", "")} {variant}'.strip()
        self.define(self.PROCESS, name, 'process', pid=1)
        self.define(self.TASKS, 'tasks', 'process', pid=2)
        for c in range(meta.get('cpus', 1)):
            self.define(self.CPU0 + c, f'CPU {c}', 'thread', pid=1, tid=c + 1, order=c)
        self.define(self.MACHINE, 'machine (no CPU)', 'thread', pid=1, tid=meta.get('cpus', 1) + 1,
                    order=meta.get('cpus', 1))
        for i, z in enumerate(ZONES):
            self.define(self.COUNTER0 + i, f'free pages: ZONE_{z.upper() if z != "high" else "HIGHMEM"}',
                        'counter', parent=self.PROCESS, unit='pages')
        self.define(self.COUNTER0 + len(ZONES), 'pkmap slots in use', 'counter', parent=self.PROCESS,
                    unit='slots')
        self._samples = 0

    def _task_track(self, label, pid):
        uuid = self.task_tracks.get(label)
        if uuid is None:
            n = len(self.task_tracks)
            uuid = self.task_tracks[label] = self.TASK0 + n
            self.define(uuid, label, 'thread', pid=2, tid=10000 + n, order=pid)      # idle tasks share pid 0
        return uuid

    def _flow(self):
        f = self.next_flow
        self.next_flow += 1
        return f

    def _ts(self, uuid, t):
        self.last_ts[uuid] = max(self.last_ts.get(uuid, 0), t)
        return self.last_ts[uuid]

    # ---- the tracer's calls ----------------------------------------------------

    def span(self, cpu, task, t0, t1):
        label = _label(task)
        cur = self.cur_task.get(cpu)
        if cur is not None and cur[0] == label:
            self._close_routine(cpu)
            cur[2] = t1
            return
        self._close_routine(cpu)
        if cur is not None:
            self._end_task(cpu, cur, t0)
        cat = 'idle' if label.startswith('swapper') else 'task'
        flows = self.pending_wake.pop(label, [])
        self.begin_slice(self.CPU0 + cpu, self._ts(self.CPU0 + cpu, t0), label, cat, None, flows)
        uuid = self._task_track(label, getattr(task, 'pid', 0)) if task is not None else None
        if uuid is not None:
            self.begin_slice(uuid, self._ts(uuid, t0), f'on CPU {cpu}', cat, None, [])
        self.cur_task[cpu] = [label, uuid, t1]

    def _end_task(self, cpu, cur, t):
        self.end_slice(self.CPU0 + cpu, self._ts(self.CPU0 + cpu, t))
        if cur[1] is not None:
            self.end_slice(cur[1], self._ts(cur[1], t))

    def _close_routine(self, cpu):
        r = self.routine.pop(cpu, None)
        if r is not None:
            self.end_slice(self.CPU0 + cpu, self._ts(self.CPU0 + cpu, r[1] + 1))

    def insn(self, x):
        r = self.routine.get(x.cpu)
        name = x.info.routine
        if r is not None and r[0] == name and x.seq == r[2] + 1:
            r[1], r[2] = x.time, x.seq
            return
        self._close_routine(x.cpu)
        uuid = self.CPU0 + x.cpu
        self.begin_slice(uuid, self._ts(uuid, x.time), name, 'routine', {'first_seq': x.seq}, [])
        self.routine[x.cpu] = [name, x.time, x.seq]

    def event(self, e):
        uuid = self.MACHINE if e.cpu is None else self.CPU0 + e.cpu
        args = {k: (_hex(v) if k in ADDR_KEYS else v) for k, v in e.fields.items()}
        args.update(seq=e.seq, task=_label(e.task), text=event_text(e))
        out, into = [], []
        vector = e.fields.get('vector')
        if e.name == 'ipi_sent' and isinstance(e.fields.get('mask'), int):
            for c in range(self.meta.get('cpus', 1)):
                if e.fields['mask'] >> c & 1:
                    f = self._flow()
                    self.pending_ipi.setdefault((c, vector), []).append(f)
                    out.append(f)
        elif e.name == 'ipi_received' and e.cpu is not None:
            q = self.pending_ipi.get((e.cpu, vector))
            if q:
                into.append(q.pop(0))
        elif e.name == 'wakeup' and e.task is not None:
            f = self._flow()
            self.pending_wake.setdefault(_label(e.task), []).append(f)
            out.append(f)
        self.instant(uuid, self._ts(uuid, e.time), e.name, 'event', args, out, into)

    def counter_sample(self, t, free, pkmap):
        """free: {zone key: pages}; pkmap: slots in use (vmstat.py's sample)."""
        for i, z in enumerate(ZONES):
            self.counter(self.COUNTER0 + i, t, free[z])
        self.counter(self.COUNTER0 + len(ZONES), t, pkmap)
        self._samples += 1

    def end(self, summary):
        for cpu in list(self.routine):
            self._close_routine(cpu)
        for cpu, cur in sorted(self.cur_task.items()):
            self._end_task(cpu, cur, cur[2])
        self.finish(dict(self.meta, **summary, counter_samples=self._samples))


class PerfettoProtoSink(Timeline):
    """Native Perfetto TrackEvent protobuf, streamed packet by packet."""
    SEQ = 1

    def __init__(self, out):
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
        self.pb = pb
        self.out = out
        self.first = True

    def _write(self, packet):
        packet.trusted_packet_sequence_id = self.SEQ
        if self.first:
            packet.sequence_flags = self.pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
            self.first = False
        data = packet.SerializeToString()
        self.out.write(b'\x0a' + _varint(len(data)) + data)       # Trace.packet = 1, length-delimited

    def define(self, uuid, name, kind, pid=None, tid=None, order=None, parent=None, unit=None):
        p = self.pb.TracePacket()
        d = p.track_descriptor
        d.uuid = uuid
        if kind == 'process':
            d.process.pid = pid
            d.process.process_name = name
        elif kind == 'thread':
            d.thread.pid = pid
            d.thread.tid = tid
            d.thread.thread_name = name
            d.parent_uuid = self.PROCESS if pid == 1 else self.TASKS
        else:
            d.name = name
            d.parent_uuid = parent
            d.counter.unit_name = unit
        self._write(p)

    def _event(self, uuid, ts, typ, name=None, cat=None, args=None):
        p = self.pb.TracePacket()
        p.timestamp = ts
        ev = p.track_event
        ev.type = typ
        ev.track_uuid = uuid
        if name is not None:
            ev.name = name
        if cat:
            ev.categories.append(cat)
        for k, v in (args or {}).items():
            a = ev.debug_annotations.add()
            a.name = k
            if isinstance(v, bool):
                a.bool_value = v
            elif isinstance(v, int) and -(1 << 63) <= v < 1 << 63:
                a.int_value = v
            elif isinstance(v, float):
                a.double_value = v
            else:
                a.string_value = str(v) if not isinstance(v, list) else json.dumps(v)
        return p, ev

    def begin_slice(self, uuid, ts, name, cat, args, flows_in):
        p, ev = self._event(uuid, ts, self.pb.TrackEvent.TYPE_SLICE_BEGIN, name, cat, args)
        ev.terminating_flow_ids.extend(flows_in)
        self._write(p)

    def end_slice(self, uuid, ts):
        p, _ = self._event(uuid, ts, self.pb.TrackEvent.TYPE_SLICE_END)
        self._write(p)

    def instant(self, uuid, ts, name, cat, args, flows_out, flows_in):
        p, ev = self._event(uuid, ts, self.pb.TrackEvent.TYPE_INSTANT, name, cat, args)
        ev.flow_ids.extend(flows_out)
        ev.terminating_flow_ids.extend(flows_in)
        self._write(p)

    def counter(self, uuid, ts, value):
        p, ev = self._event(uuid, ts, self.pb.TrackEvent.TYPE_COUNTER)
        ev.counter_value = int(value)
        self._write(p)

    def finish(self, meta):
        pass


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class PerfettoSink(Timeline):
    """The legacy Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing)."""
    PID = 1

    def __init__(self, out):
        self.out = out
        self.first = True
        self.tids = {}

    def _w(self, obj):
        self.out.write(('{"traceEvents":[\n' if self.first else ',\n') + json.dumps(obj, separators=(',', ':')))
        self.first = False

    @staticmethod
    def _us(t):
        return round(t / 1000, 3)

    def define(self, uuid, name, kind, pid=None, tid=None, order=None, parent=None, unit=None):
        if kind == 'process':
            self._w({'ph': 'M', 'cat': '__metadata', 'pid': pid, 'tid': 0, 'name': 'process_name',
                     'args': {'name': name}})
        elif kind == 'thread':
            self.tids[uuid] = (pid, tid)
            self._w({'ph': 'M', 'cat': '__metadata', 'pid': pid, 'tid': tid, 'name': 'thread_name',
                     'args': {'name': name}})
            self._w({'ph': 'M', 'cat': '__metadata', 'pid': pid, 'tid': tid, 'name': 'thread_sort_index',
                     'args': {'sort_index': order or 0}})
        else:
            self.tids[uuid] = (self.PID, name)

    def _where(self, uuid):
        pid, tid = self.tids[uuid]
        return {'pid': pid, 'tid': tid}

    def begin_slice(self, uuid, ts, name, cat, args, flows_in):
        ev = dict(ph='B', ts=self._us(ts), name=name, cat=cat, **self._where(uuid))
        if args:
            ev['args'] = args
        self._w(ev)
        for f in flows_in:
            self._w(dict(ph='f', bp='e', id=f, ts=self._us(ts), name='flow', cat='flow', **self._where(uuid)))

    def end_slice(self, uuid, ts):
        self._w(dict(ph='E', ts=self._us(ts), **self._where(uuid)))

    def instant(self, uuid, ts, name, cat, args, flows_out, flows_in):
        self._w(dict(ph='i', s='t', ts=self._us(ts), name=name, cat=cat, args=args, **self._where(uuid)))
        for f in flows_out:
            self._w(dict(ph='s', id=f, ts=self._us(ts), name='flow', cat='flow', **self._where(uuid)))
        for f in flows_in:
            self._w(dict(ph='f', bp='e', id=f, ts=self._us(ts), name='flow', cat='flow', **self._where(uuid)))

    def counter(self, uuid, ts, value):
        _, name = self.tids[uuid]
        self._w({'ph': 'C', 'pid': self.PID, 'ts': self._us(ts), 'name': name, 'cat': 'counter',
                 'args': {'value': int(value)}})

    def finish(self, meta):
        if self.first:
            self.out.write('{"traceEvents":[\n')
        self.out.write('\n],"displayTimeUnit":"ns","otherData":'
                       + json.dumps(dict(meta, time='1 cycle = 1 ns'), default=str) + '}\n')
