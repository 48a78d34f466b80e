"""Trace sinks: text (aligned, one line per entry) and jsonl (one JSON
object per line; the schema is in docs/tracing.md), and the text of an
event's fields that the other sinks share."""
import json

from .trace import ADDR_KEYS, PF_P, PF_U, PF_W, SYM_KEYS, Sink, _label


def _hex(v):
    return f'{v:#x}' if isinstance(v, int) and not isinstance(v, bool) else str(v)


def _num(v):
    return f'{v:#x}' if isinstance(v, int) and not isinstance(v, bool) and v >= 0x10000 else str(v)


def _fmt_field(key, v):
    if isinstance(v, int) and not isinstance(v, bool) and (key in ADDR_KEYS or key.endswith('pfn')):
        return f'{key}={v:#x}'
    if isinstance(v, list):
        return f'{key}=(' + ', '.join(_num(x) for x in v) + ')'
    if isinstance(v, str) and (' ' in v or not v):
        return f'{key}="{v}"' if v else ''
    return f'{key}={v}'


def error_code_text(err):
    return ' '.join(('protection' if err & PF_P else 'not-present', 'write' if err & PF_W else 'read',
                     'user' if err & PF_U else 'kernel'))


def event_text(e):
    """The fields of an event as text, symbolized where known."""
    f = dict(e.fields)
    parts = []
    if e.name == 'page_fault' and 'error' in f:
        parts.append(f'address={f.pop("address", 0):#010x} error={f["error"]:#x} '
                     f'({error_code_text(f.pop("error"))})')
        atomic = f.pop('in_atomic', None)
        if atomic:
            parts.append(f'IN ATOMIC (preempt_count {atomic})')
    for key in SYM_KEYS:
        if key + '_at' in f:
            f.pop(key, None)
            f[key] = f.pop(key + '_at')
    parts += [_fmt_field(k, v) for k, v in f.items()]
    return ' '.join(p for p in parts if p)


class TextSink(Sink):
    """Aligned text, one line per instruction or event (see docs/tracing.md)."""
    HEADER = (f'{"seq":>10} {"time":>11} {"cpu":>3} {"task":<14} r {"eip":<8} {"where":<46} '
              f'{"bytes":<20} {"instruction":<34} changes / memory')

    def __init__(self, out):
        self.out = out

    def begin(self, meta):
        w = self.out.write
        w(f'# kmaplab trace: {json.dumps({k: v for k, v in meta.items() if k != "regs"}, sort_keys=True)}\n')
        w('# seq: instructions retired by all CPUs before; time: this CPU\'s clock in cycles; '
          'r: ring; * = event; mem: r/w va(pa)=value\n')
        w('#' + self.HEADER[1:] + '\n')

    def insn(self, x):
        i = x.info
        if i.text is None:
            i.text = f'{x.eip:08x} {i.where:<46} {i.raw.hex(" "):<20} {i.asm:<34}'
        if x.regs is not None:
            tail = ' '.join(['%s=%08x' % rv for rv in x.regs])
        else:
            tail = '(faulted: not retired)' if not x.retired else '(after-state not traced)'
        if x.mem:
            tail += '  ' + ' '.join([('%s %08x(pa %08x)=%0*x' % (op, va, pa, 2 * sz, val)) if va is not None
                                     else ('%s ?(pa %08x)=%0*x' % (op, pa, 2 * sz, val))
                                     for op, va, pa, sz, val in x.mem])
        self.out.write('%10d %11d %3d %-14s %d %s %s\n' % (x.seq, x.time, x.cpu, _label(x.task), x.ring,
                                                          i.text, tail))

    def event(self, e):
        cpu = '-' if e.cpu is None else e.cpu
        self.out.write(f'{e.seq:>10} {e.time:>11} {cpu:>3} {_label(e.task):<14} * '
                       f'{e.name:<16} {event_text(e)}\n')

    def end(self, summary):
        self.out.write(f'# end: {json.dumps(summary, sort_keys=True)}\n')


class JsonlSink(Sink):
    """One JSON object per line (schema: docs/tracing.md)."""

    def __init__(self, out):
        self.out = out

    def _w(self, obj):
        self.out.write(json.dumps(obj, separators=(',', ':')) + '\n')

    def begin(self, meta):
        self._w(dict(type='meta', version=1, **meta))

    def insn(self, x):
        i = x.info
        self._w({'type': 'insn', 'seq': x.seq, 'time': x.time, 'cpu': x.cpu, 'task': _label(x.task),
                 'ring': x.ring, 'eip': x.eip, 'sym': i.sym, 'file': i.file, 'line': i.line,
                 'bytes': i.raw.hex(), 'asm': i.asm, 'retired': x.retired,
                 'regs': None if x.regs is None else dict(x.regs),
                 'mem': [{'op': op, 'va': va, 'pa': pa, 'size': sz, 'value': val}
                         for op, va, pa, sz, val in x.mem]})

    def event(self, e):
        self._w({'type': 'event', 'seq': e.seq, 'time': e.time, 'cpu': e.cpu,
                 'task': None if e.task is None else _label(e.task), 'event': e.name, 'args': e.fields})

    def end(self, summary):
        self._w(dict(type='end', **summary))
