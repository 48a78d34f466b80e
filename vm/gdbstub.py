"""A gdb remote-serial-protocol server for the whole machine.

What this file owns
  - The RSP packet layer (acks, NoAck mode, checksums, escapes) on one TCP
    connection, and the commands gdb uses: qSupported, the target
    description (qXfer:features:read), threads (qfThreadInfo, qC, H, T,
    qThreadExtraInfo), registers (g, G, p, P), memory (m, M), breakpoints
    and watchpoints (Z0-Z4 / z0-z4), resume (c, s, vCont), kill (k, vKill),
    detach (D), and monitor commands (qRcmd).
  - Each emulated CPU is one gdb thread: thread id = CPU index + 1.

Why our own server and not udbserver
  udbserver (the gdbstub Rust crate for Unicorn) serves ONE Unicorn
  instance: its registers, its memory, its hooks, with its own blocking
  loop.  The machine is N instances that one host thread runs in turn (a
  stop must hold every CPU, and `info threads` must list them), memory is
  read through the selected CPU's page tables, and the lab's monitor
  commands need the kernel's state.  The protocol is small; this file is it.

How it runs
  vm/debug.py calls on_stop() from inside the emulation (a breakpoint, a
  step, a watchpoint, or the first instruction of the run).  on_stop
  reports the stop to gdb and serves packets until gdb resumes (c, s,
  vCont), detaches or kills.  Nothing runs meanwhile, so the whole machine
  is stopped at instruction boundaries.  When the run ends, finish() sends
  gdb the exit (W00) and closes.

Rules
  - Every socket wait has the server's `timeout` (None: wait for the user).
    If gdb goes away (EOF, a reset, the timeout), the debugger is released
    and the run goes on to its end and its report (`notes` says so).
  - Registers other than the general ones are read-only here: EIP and the
    segments of a CPU stopped inside a block cannot be changed under
    Unicorn, and CR writes would bypass the guest (E01).
  - Ctrl-C: while the machine runs, the server looks at the connection
    every 64th pick of the run loop (_Interruptible wraps the machine's
    policy; the picks are the policy's own, so the schedule is unchanged).
    A 0x03 byte stops the machine before the next guest instruction of
    whichever CPU runs next (reported as SIGINT).
  - Stepping is per CPU: `stepi` on CPU n runs the machine (its schedule
    unchanged) until CPU n has executed one instruction; the other CPUs run
    as the schedule has them run meanwhile (a real SMP machine has no
    scheduler locking either).
"""
import select
import socket
import struct

from unicorn import x86_const as ux

from .debug import DebugError, Debugger, WATCH_ACCESS, WATCH_READ, WATCH_WRITE

# gdb's i386 register numbering (org.gnu.gdb.i386.core / .sse), then ours.
_GPRS = ['eax', 'ecx', 'edx', 'ebx', 'esp', 'ebp', 'esi', 'edi', 'eip', 'eflags',
         'cs', 'ss', 'ds', 'es', 'fs', 'gs']
_X87 = ['fctrl', 'fstat', 'ftag', 'fiseg', 'fioff', 'foseg', 'fooff', 'fop']
_SYS = ['cr0', 'cr2', 'cr3', 'cr4']
_UC = {name: getattr(ux, 'UC_X86_REG_' + name.upper()) for name in _GPRS + _SYS}
_UC.update(fctrl=ux.UC_X86_REG_FPCW, fstat=ux.UC_X86_REG_FPSW, ftag=ux.UC_X86_REG_FPTAG,
           fiseg=ux.UC_X86_REG_FCS, fioff=ux.UC_X86_REG_FIP, foseg=ux.UC_X86_REG_FDS,
           fooff=ux.UC_X86_REG_FDP, fop=ux.UC_X86_REG_FOP, mxcsr=ux.UC_X86_REG_MXCSR)
# (name, bytes) in gdb's order
REGS = ([(r, 4) for r in _GPRS] + [(f'st{i}', 10) for i in range(8)] + [(r, 4) for r in _X87]
        + [(f'xmm{i}', 16) for i in range(8)] + [('mxcsr', 4)] + [(r, 4) for r in _SYS])
WRITABLE = set(range(8))                 # eax..edi

TARGET_XML = ('<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
              '<target version="1.0"><architecture>i386</architecture>'
              '<feature name="org.gnu.gdb.i386.core">'
              + ''.join(f'<reg name="{n}" bitsize="32" type="{t}"/>' for n, t in (
                  ('eax', 'int32'), ('ecx', 'int32'), ('edx', 'int32'), ('ebx', 'int32'),
                  ('esp', 'data_ptr'), ('ebp', 'data_ptr'), ('esi', 'int32'), ('edi', 'int32'),
                  ('eip', 'code_ptr'), ('eflags', 'int32'), ('cs', 'int32'), ('ss', 'int32'),
                  ('ds', 'int32'), ('es', 'int32'), ('fs', 'int32'), ('gs', 'int32')))
              + ''.join(f'<reg name="st{i}" bitsize="80" type="i387_ext"/>' for i in range(8))
              + ''.join(f'<reg name="{n}" bitsize="32" type="int" group="float"/>' for n in _X87)
              + '</feature><feature name="org.gnu.gdb.i386.sse">'
              + ''.join(f'<reg name="xmm{i}" bitsize="128" type="uint128"/>' for i in range(8))
              + '<reg name="mxcsr" bitsize="32" type="int" group="vector"/>'
              + '</feature><feature name="org.kmaplab.i386.sys">'
              + ''.join(f'<reg name="{n}" bitsize="32" type="int" group="system"/>' for n in _SYS)
              + '</feature></target>')


_NOTHING = object()               # a reply already sent


class GdbError(Exception):
    """A one-line error for the user (port in use, no connection, ...)."""


class _Gone(Exception):
    """gdb went away (EOF, reset, timeout)."""


def _hex(data):
    return data.hex()


def _escape(data):
    out = bytearray()
    for b in data:
        if b in b'#$}*':
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


class GdbServer:
    """Serve gdb for `machine` on (host, port).

    monitor: name -> fn(args: str) -> str, the lab's `monitor` commands (the
    server adds help, phys, cr, translate).  thread_info(cpu) -> str, shown
    by `info threads`.  notes: fn(str) for one-line messages to the user.
    on_kill(): called when gdb kills the run (before the machine stops).
    timeout: seconds for every socket wait (None: forever)."""

    def __init__(self, machine, host='127.0.0.1', port=1234, timeout=None, monitor=None,
                 thread_info=None, notes=None, on_kill=None):
        self.m = machine
        self.timeout = timeout
        self.monitor = dict(monitor or {})
        self.thread_info = thread_info
        self.notes = notes or (lambda text: None)
        self.on_kill = on_kill
        self.dbg = Debugger(machine, self.on_stop)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.listener.bind((host, port))
            self.listener.listen(1)
        except OSError as e:
            self.listener.close()
            raise GdbError(f'cannot listen on {host}:{port}: {e.strerror}') from None
        self.address = self.listener.getsockname()
        self.conn = None
        self.ack = True
        self._buf = b''
        self.g_cpu = 0                   # the thread of g/m/p (Hg)
        self.c_cpu = 0                   # the thread of s/c (Hc)
        self.stop = None                 # the Stop being served
        self.killed = False
        self.detached = False
        self.gone = None                 # why gdb went away, if it did
        self.error = None                # a one-line error that ends the run
        self.watch_kinds = {}            # va -> kind, for the stop reply
        self.stops = 0
        self.interrupted = False         # gdb sent Ctrl-C while the machine ran

    # ---- life cycle -------------------------------------------------------

    def attach(self):
        """Install the debugger and stop before the machine's first guest
        instruction (whichever CPU runs it)."""
        self.dbg.attach()
        self.dbg.set_step(range(len(self.m.cpus)))
        self.m.policy = _Interruptible(self.m.policy, self)

    def poll_interrupt(self):
        """Between two picks of the run loop: has gdb sent Ctrl-C (or gone
        away)?  Never blocks."""
        if self.conn is None or self.interrupted:
            return
        try:
            ready, _, _ = select.select([self.conn], [], [], 0)
            data = self.conn.recv(4096) if ready else None
        except OSError as e:
            self._release(f'connection lost ({e.strerror})')
            return
        if data is None:
            return
        if not data:
            self._release('disconnected')
            return
        if b'\x03' in data:
            self._interrupt()
        self._buf += data.replace(b'\x03', b'')

    def _interrupt(self):
        self.interrupted = True
        self.dbg.set_step(range(len(self.m.cpus)))
    def finish(self, code=0):
        """The run ended: tell gdb (W) and close."""
        if self.conn is not None and not self.killed:
            try:
                self._send(f'W{code & 0xFF:02x}')
            except _Gone:
                pass
        self.close()

    def close(self):
        for s in (self.conn, self.listener):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.conn = None

    def _release(self, why):
        """gdb is gone or detached: no more stops; the run goes on."""
        self.dbg.release()
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        self.conn = None
        if why:
            self.gone = why
            self.notes(f'gdb {why}; the run goes on without the debugger')

    def _end_run(self, cpu, reason):
        self.dbg.release()
        self.m.stop(reason)
        self.m.cpus[cpu].k.limit = 0     # the running CPU stops at its next block boundary

    # ---- the stop ---------------------------------------------------------

    def on_stop(self, stop):
        if self.interrupted and stop.kind == 'step':
            stop.kind = 'interrupt'
        self.interrupted = False
        self.stop = stop
        self.stops += 1
        self.g_cpu = self.c_cpu = stop.cpu
        if self.conn is None:
            if self.detached or self.gone:
                return
            self.notes(f'waiting for gdb on {self.address[0]}:{self.address[1]}')
            self.listener.settimeout(self.timeout)
            try:
                self.conn, _ = self.listener.accept()
            except socket.timeout:
                self.error = f'no gdb connected to {self.address[0]}:{self.address[1]} ' \
                             f'within {self.timeout} s'
                self._end_run(stop.cpu, 'gdb: no connection')
                return
            self.conn.settimeout(self.timeout)
            self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            try:
                self._send(self._stop_reply())
            except _Gone as e:
                self._release(str(e))
                return
        try:
            self._serve()
        except _Gone as e:
            self._release(str(e))

    def _stop_reply(self):
        s = self.stop
        tid = s.cpu + 1
        if s.kind == 'watch':
            kind = self.watch_kinds.get(s.watch_va, WATCH_WRITE)
            name = {WATCH_WRITE: 'watch', WATCH_READ: 'rwatch', WATCH_ACCESS: 'awatch'}[kind]
            return f'T05{name}:{s.watch_va:x};thread:{tid:x};'
        if s.kind == 'break':
            return f'T05swbreak:;thread:{tid:x};'
        if s.kind == 'interrupt':
            return f'T02thread:{tid:x};'
        return f'T05thread:{tid:x};'

    def _serve(self):
        """Answer packets until gdb resumes the machine."""
        while True:
            pkt = self._recv()
            reply = self._dispatch(pkt)
            if reply is None:            # resumed (or killed / detached)
                return
            if reply is not _NOTHING:
                self._send(reply)

    # ---- packets ----------------------------------------------------------

    def _read_more(self):
        try:
            data = self.conn.recv(65536)
        except socket.timeout:
            raise _Gone(f'sent nothing for {self.timeout} s') from None
        except OSError as e:
            raise _Gone(f'connection lost ({e.strerror})') from None
        if not data:
            raise _Gone('disconnected')
        self._buf += data

    def _recv(self):
        while True:
            i = self._buf.find(b'$')
            if i < 0:
                self._buf = self._buf[-1:] if self._buf.endswith(b'\x03') else b''   # acks
                self._read_more()
                continue
            j = self._buf.find(b'#', i)
            if j < 0 or len(self._buf) < j + 3:
                self._read_more()
                continue
            body, csum = self._buf[i + 1:j], self._buf[j + 1:j + 3]
            self._buf = self._buf[j + 3:]
            ok = sum(body) & 0xFF == int(csum, 16) if csum.isalnum() else False
            if self.ack:
                self._write(b'+' if ok else b'-')
            if ok:
                return self._unescape(body).decode('latin-1')

    @staticmethod
    def _unescape(body):
        out, it = bytearray(), iter(body)
        for b in it:
            out.append(next(it, 0) ^ 0x20 if b == 0x7D else b)
        return bytes(out)

    def _write(self, data):
        try:
            self.conn.sendall(data)
        except socket.timeout:
            raise _Gone(f'stopped reading for {self.timeout} s') from None
        except OSError as e:
            raise _Gone(f'connection lost ({e.strerror})') from None

    def _send(self, payload):
        data = _escape(payload.encode('latin-1') if isinstance(payload, str) else payload)
        self._write(b'$' + data + b'#' + b'%02x' % (sum(data) & 0xFF))
        if self.ack:                     # wait for gdb's ack (a '-' asks again)
            while True:
                while not self._buf:
                    self._read_more()
                c, self._buf = self._buf[:1], self._buf[1:]
                if c == b'+':
                    return
                if c == b'-':
                    self._write(b'$' + data + b'#' + b'%02x' % (sum(data) & 0xFF))
                elif c == b'$':          # a packet without our ack: keep it
                    self._buf = c + self._buf
                    return

    def _dispatch(self, p):
        if not p:
            return ''
        c = p[0]
        try:
            if c == 'q' or c == 'Q':
                return self._query(p)
            if c == '?':
                return self._stop_reply()
            if c == 'H':
                cpu = self._tid(p[2:], allow_any=True)
                if cpu is None:
                    return 'E01'
                if p[1] == 'g':
                    self.g_cpu = cpu
                else:
                    self.c_cpu = cpu
                return 'OK'
            if c == 'T':
                return 'OK' if self._tid(p[1:]) is not None else 'E01'
            if c == 'g':
                return ''.join(self._reg_hex(self.g_cpu, i) for i in range(len(REGS)))
            if c == 'G':
                return self._write_regs(p[1:])
            if c == 'p':
                n = int(p[1:], 16)
                return self._reg_hex(self.g_cpu, n) if n < len(REGS) else 'E01'
            if c == 'P':
                n, v = p[1:].split('=')
                return self._write_reg(int(n, 16), bytes.fromhex(v))
            if c == 'm':
                addr, n = (int(x, 16) for x in p[1:].split(','))
                data = self.dbg.read_virt(self.g_cpu, addr, min(n, 0x10000))
                return data.hex() if data or not n else 'E14'
            if c == 'M':
                head, data = p[1:].split(':')
                addr, _ = (int(x, 16) for x in head.split(','))
                return 'OK' if self.dbg.write_virt(self.g_cpu, addr, bytes.fromhex(data)) else 'E14'
            if c in 'Zz':
                return self._breakpoint(p)
            if c == 'c':
                return self._resume([])
            if c == 's':
                return self._resume([self.c_cpu])
            if c == 'v':
                return self._v(p)
            if c == 'k':
                return self._kill(reply=False)
            if c == 'D':
                self.detached = True
                self._send('OK')
                self._release(None)
                self.notes('gdb detached; the run goes on')
                return None
        except (ValueError, IndexError):
            return 'E01'
        except DebugError as e:
            self.notes(f'gdb: {e}')
            return 'E01'
        return ''

    def _tid(self, text, allow_any=False):
        t = int(text, 16) if text not in ('-1', '') else -1
        if t in (0, -1):
            return self.stop.cpu if allow_any else None
        return t - 1 if 1 <= t <= len(self.m.cpus) else None

    def _query(self, p):
        if p.startswith('qSupported'):
            return ('PacketSize=4000;qXfer:features:read+;QStartNoAckMode+;swbreak+;hwbreak+;'
                    'vContSupported+')
        if p == 'QStartNoAckMode':
            self._send('OK')
            self.ack = False
            return _NOTHING
        if p.startswith('qXfer:features:read:target.xml:'):
            off, n = (int(x, 16) for x in p.rsplit(':', 1)[1].split(','))
            chunk = TARGET_XML[off:off + n]
            return ('l' if off + n >= len(TARGET_XML) else 'm') + chunk
        if p == 'qfThreadInfo':
            return 'm' + ','.join(f'{i + 1:x}' for i in range(len(self.m.cpus)))
        if p == 'qsThreadInfo':
            return 'l'
        if p == 'qC':
            return f'QC{self.stop.cpu + 1:x}'
        if p == 'qAttached':
            return '1'
        if p.startswith('qThreadExtraInfo,'):
            cpu = self._tid(p.split(',')[1])
            if cpu is None:
                return 'E01'
            text = self.thread_info(cpu) if self.thread_info else f'CPU {cpu}'
            return _hex(text.encode())
        if p.startswith('qRcmd,'):
            return _hex(self._monitor(bytes.fromhex(p[6:]).decode('latin-1')).encode('latin-1'))
        if p.startswith('qSymbol'):
            return 'OK'
        return ''

    # ---- registers --------------------------------------------------------

    def _reg_bytes(self, cpu, n):
        name, size = REGS[n]
        uc = self.m.cpus[cpu].uc
        if name.startswith('st'):
            mant, exp = uc.reg_read(getattr(ux, f'UC_X86_REG_FP{name[2]}'))
            return struct.pack('<QH', mant & (2**64 - 1), exp & 0xFFFF)
        if name.startswith('xmm'):
            return (uc.reg_read(getattr(ux, f'UC_X86_REG_XMM{name[3]}')) & (2**128 - 1)).to_bytes(16, 'little')
        return (uc.reg_read(_UC[name]) & 0xFFFFFFFF).to_bytes(4, 'little')

    def _reg_hex(self, cpu, n):
        return self._reg_bytes(cpu, n).hex()

    def reg(self, cpu, name):
        return self.m.cpus[cpu].uc.reg_read(_UC[name])

    def _write_reg(self, n, data):
        if n not in WRITABLE:
            return 'E01'
        cpu = self.m.cpus[self.g_cpu]
        cpu.set_reg(REGS[n][0], int.from_bytes(data[:4], 'little'))
        return 'OK'

    def _write_regs(self, text):
        data = bytes.fromhex(text)
        off = 0
        for n, (_, size) in enumerate(REGS):
            chunk = data[off:off + size]
            off += size
            if n in WRITABLE and len(chunk) == 4 and chunk != self._reg_bytes(self.g_cpu, n):
                self._write_reg(n, chunk)
        return 'OK'

    # ---- breakpoints --------------------------------------------------------

    def _breakpoint(self, p):
        insert = p[0] == 'Z'
        kind, addr, length = p[1:].split(',')[:3]
        kind, addr, length = int(kind), int(addr, 16), int(length.split(';')[0], 16)
        if kind in (0, 1):
            if insert:
                self.dbg.add_breakpoint(addr)
            else:
                self.dbg.remove_breakpoint(addr)
            return 'OK'
        if kind in (2, 3, 4):
            wk = {2: WATCH_WRITE, 3: WATCH_READ, 4: WATCH_ACCESS}[kind]
            if insert:
                self.dbg.add_watch(self.g_cpu, addr, length, wk)
                self.watch_kinds[addr] = wk
            else:
                self.dbg.remove_watch(addr, length, wk)
            return 'OK'
        return ''

    # ---- resume, kill -------------------------------------------------------

    def _resume(self, step_cpus):
        self.dbg.set_step(step_cpus)
        if b'\x03' in self._buf:            # Ctrl-C sent with (or right after) the resume
            self._buf = self._buf.replace(b'\x03', b'')
            self._interrupt()
        return None

    def _v(self, p):
        if p == 'vCont?':
            return 'vCont;c;C;s;S'
        if p.startswith('vCont;'):
            step = []
            for action in p[6:].split(';'):
                op, _, tid = action.partition(':')
                if op[:1] in ('s', 'S'):
                    cpu = self._tid(tid, allow_any=True) if tid else self.c_cpu
                    if cpu is not None:
                        step.append(cpu)
            return self._resume(step)
        if p.startswith('vKill'):
            return self._kill(reply=True)
        if p == 'vMustReplyEmpty':
            return ''
        return ''

    def _kill(self, reply):
        self.killed = True
        if reply:
            try:
                self._send('OK')
            except _Gone:
                pass
        if self.on_kill is not None:
            self.on_kill()
        self._end_run(self.stop.cpu, 'killed by gdb')
        self.close()
        return None

    # ---- monitor ------------------------------------------------------------

    def _monitor(self, line):
        words = line.split()
        if not words:
            return self._help()
        cmd, args = words[0], ' '.join(words[1:])
        builtin = {'help': lambda a: self._help(), 'phys': self._phys, 'cr': self._cr,
                   'translate': self._translate}
        fn = builtin.get(cmd) or self.monitor.get(cmd)
        if fn is None:
            return f'unknown monitor command {cmd!r} (monitor help)\n'
        try:
            out = fn(args)
        except (ValueError, IndexError) as e:
            return f'monitor {cmd}: {e}\n'
        return out if out.endswith('\n') else out + '\n'

    def _help(self):
        lines = ['monitor phys ADDR [LEN]   physical memory (hex dump, LEN default 64)',
                 'monitor cr                CR0/CR2/CR3/CR4 and EIP of every CPU',
                 'monitor translate VA      VA through the current thread\'s page tables']
        for name, fn in sorted(self.monitor.items()):
            doc = (fn.__doc__ or '').strip().splitlines()
            lines.append(f'monitor {name:18}{doc[0] if doc else ""}')
        return '\n'.join(lines)

    def _phys(self, args):
        words = args.split()
        addr = int(words[0], 0)
        n = int(words[1], 0) if len(words) > 1 else 64
        if not 0 <= addr < self.m.ram_size or n <= 0:
            return f'phys: {addr:#x} is outside RAM ({self.m.ram_size:#x} bytes)'
        data = self.m.read(addr, min(n, 4096, self.m.ram_size - addr))
        out = []
        for i in range(0, len(data), 16):
            row = data[i:i + 16]
            words = ' '.join(f'{int.from_bytes(row[j:j + 4], "little"):08x}' for j in range(0, len(row), 4))
            out.append(f'{addr + i:08x}: {words}')
        return '\n'.join(out)

    def _cr(self, args):
        out = []
        for i in range(len(self.m.cpus)):
            out.append(f'CPU {i}: ' + ' '.join(f'{r}={self.reg(i, r):#010x}'
                                               for r in ('eip', 'cr0', 'cr2', 'cr3', 'cr4')))
        return '\n'.join(out)

    def _translate(self, args):
        va = int(args.split()[0], 0)
        pa = self.dbg.translate(self.g_cpu, va)
        where = 'not mapped' if pa is None else f'-> physical {pa:#010x}'
        return f'CPU {self.g_cpu} (cr3={self.dbg.cr3(self.g_cpu):#x}): {va:#010x} {where}'


class _Interruptible:
    """The machine's interleaving policy, seen through the server: every
    64th pick looks at the connection for Ctrl-C without blocking.  The
    picks are the inner policy's, so the schedule is unchanged; every other
    attribute is the inner policy's."""

    def __init__(self, inner, server):
        self._inner, self._server, self._n = inner, server, 0

    def pick(self, machine):
        self._n += 1
        if not self._n & 63:
            self._server.poll_interrupt()
        return self._inner.pick(machine)

    def __getattr__(self, name):
        return getattr(self._inner, name)
