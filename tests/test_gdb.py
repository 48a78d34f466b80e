"""gdb on the emulated machine (docs/debugging.md): the RSP server, the ELF
images, and the promise that a run under gdb has the counters of the same
run without it.

Every socket wait here is bounded (the server's timeout, the client's, the
subprocess timeouts): a broken server fails the test, it does not hang it.
"""
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from kmaplab import scenario as scn_mod
from kmaplab.gdb import run_gdb
from kmaplab.runner import run_variant

KMAPLAB = os.path.join(os.path.dirname(sys.executable), 'kmaplab')
TIMEOUT = 60

SCENARIO = """
name = "gdb-two"
description = "two CPUs write through kmap with a small pool (the gdb tests)"

[machine]
cpus = 2
mem = "32M"
highmem = "16M"

[boot]
write_path = "kmap"
pkmap = 32

[[task]]
name = "writer"
program = "writer"
args = ["out{cpu}", 40, 4096, 7]
cpu = "each"

[expect]
outcome = "completed"
"""


@pytest.fixture(scope='module')
def two(tmp_path_factory):
    path = tmp_path_factory.mktemp('gdb') / 'gdb-two.toml'
    path.write_text(SCENARIO)
    return scn_mod.find(str(path))


@pytest.fixture(scope='module')
def reference(two):
    """The counters of the run without gdb."""
    return run_variant(two, two.variants()[0])['counters']


# ---- a minimal RSP client -----------------------------------------------------

class Rsp:
    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
        self.buf = b''

    def _read(self):
        data = self.s.recv(65536)
        assert data, 'server closed the connection'
        self.buf += data

    def send(self, body):
        data = body.encode()
        self.s.sendall(b'$' + data + b'#%02x' % (sum(data) & 0xFF))
        while not self.buf:
            self._read()
        assert self.buf[:1] == b'+', self.buf
        self.buf = self.buf[1:]

    def recv(self):
        while b'#' not in self.buf or len(self.buf) < self.buf.index(b'#') + 3:
            self._read()
        i, j = self.buf.index(b'$'), self.buf.index(b'#')
        body, csum = self.buf[i + 1:j], self.buf[j + 1:j + 3]
        self.buf = self.buf[j + 3:]
        assert sum(body) & 0xFF == int(csum, 16)
        self.s.sendall(b'+')
        return body.decode('latin-1')

    def ask(self, body):
        self.send(body)
        return self.recv()

    def close(self):
        self.s.close()


def regs(hexdump):
    """The first 16 registers of a `g` reply (eax ecx edx ebx esp ebp esi edi
    eip eflags cs ss ds es fs gs)."""
    return [int.from_bytes(bytes.fromhex(hexdump[i * 8:i * 8 + 8]), 'little') for i in range(16)]


def start_in_thread(scn, timeout=TIMEOUT, port=0):
    """run_gdb in a thread; returns (thread, result holder, port, notes)."""
    notes, out, ports = [], {}, queue.Queue()

    def note(text):
        notes.append(text)
        m = re.search(r'gdb server on [\d.]+:(\d+)', text)
        if m:
            ports.put(int(m.group(1)))

    def target():
        try:
            out['r'] = run_gdb(scn, scn.variants()[0], None, {}, ('127.0.0.1', port),
                               timeout=timeout, elf_dir=out['elf'], notes=note)
        except BaseException as e:     # noqa: BLE001 - reported by the test
            out['error'] = e
            ports.put(None)
    out['elf'] = os.path.join(os.environ.get('KMAPLAB_OUT') or '/tmp', f'gdb-elf-{os.getpid()}')
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out, ports.get(timeout=TIMEOUT), notes


# ---- the server, driven by our client ------------------------------------------

def test_rsp_session_counters_equal_the_run_without_gdb(two, reference):
    """connect, break at kmap_high, continue, registers, pkmap_count, step,
    switch thread, watch pkmap_count[5], monitor, continue to the end: the
    counters are those of the run without gdb."""
    t, out, port, notes = start_in_thread(two)
    assert port, out.get('error')
    c = Rsp(port)
    k_high = None
    try:
        assert 'qXfer:features:read+' in c.ask('qSupported:swbreak+;hwbreak+')
        assert c.ask('?').startswith('T05')
        assert c.ask('qfThreadInfo') == 'm1,2'
        xml = c.ask('qXfer:features:read:target.xml:0,4000')
        assert 'cr3' in xml and 'org.gnu.gdb.i386.core' in xml
        syms = _kernel_symbols(out)
        k_high, pkc = syms['kmap_high'], syms['pkmap_count']
        assert c.ask(f'Z0,{k_high:x},1') == 'OK'
        stop = c.ask('vCont;c')
        assert stop.startswith('T05') and 'swbreak' in stop
        tid = int(re.search(r'thread:([0-9a-f]+)', stop).group(1), 16)
        c.ask(f'Hg{tid:x}')
        r = regs(c.ask('g'))
        assert r[8] == k_high                     # eip
        assert r[10] == 0x10                      # cs: kernel code
        cr3 = int.from_bytes(bytes.fromhex(c.ask(f'p{43:x}')), 'little')
        assert cr3 and cr3 % 4096 == 0
        counts = bytes.fromhex(c.ask(f'm{pkc:x},80'))
        assert len(counts) == 128
        # step: one instruction on that CPU (push ebx: esp goes down by 4)
        stop = c.ask(f'vCont;s:{tid:x};c')
        assert stop.startswith('T05') and f'thread:{tid:x}' in stop
        r2 = regs(c.ask('g'))
        assert r2[8] == k_high + 1 and r2[4] == r[4] - 4
        other = 2 if tid == 1 else 1
        assert c.ask(f'T{other:x}') == 'OK'
        assert c.ask(f'Hg{other:x}') == 'OK'
        assert regs(c.ask('g'))[4] != r2[4]       # another CPU: its own stack
        assert c.ask(f'Hg{tid:x}') == 'OK'
        assert c.ask(f'z0,{k_high:x},1') == 'OK'
        # a write watchpoint on pkmap_count[5]
        assert c.ask(f'Z2,{pkc + 20:x},4') == 'OK'
        stop = c.ask('vCont;c')
        assert f'watch:{pkc + 20:x}' in stop
        assert int.from_bytes(bytes.fromhex(c.ask(f'm{pkc + 20:x},4')), 'little') >= 1
        assert c.ask(f'z2,{pkc + 20:x},4') == 'OK'
        # a read watchpoint on last_pkmap_nr (map_new_virtual reads it)
        last = syms['last_pkmap_nr']
        assert c.ask(f'Z3,{last:x},4') == 'OK'
        assert f'rwatch:{last:x}' in c.ask('vCont;c')
        assert c.ask(f'z3,{last:x},4') == 'OK'
        text = bytes.fromhex(c.ask('qRcmd,' + b'pkmap'.hex())).decode()
        assert 'pkmap pool: 32 slots' in text
        text = bytes.fromhex(c.ask('qRcmd,' + b'tasks'.hex())).decode()
        assert 'writer' in text
        assert c.ask('vCont;c').startswith('W')
    finally:
        c.close()
        t.join(TIMEOUT)
    assert not t.is_alive()
    r = out['r']
    assert r['outcome'] == 'completed'
    assert r['counters'] == reference


@pytest.fixture(scope='module')
def two_p3(tmp_path_factory):
    """The same scenario on the modelled TLB (tlb=p3, UC_TLB_VIRTUAL)."""
    path = tmp_path_factory.mktemp('gdb') / 'gdb-two-p3.toml'
    path.write_text(SCENARIO.replace('[boot]\n', '[boot]\ntlb = "p3"\n'))
    return scn_mod.find(str(path))


def test_watchpoints_under_the_modelled_tlb(two_p3):
    """Under tlb=p3 QEMU's soft TLB is filled by the model's hook, and the
    memory hooks still see the physical address the fill gave: a write and
    a read watchpoint hit as under tlb=qemu, and the run's counters are
    those of the run without gdb."""
    reference = run_variant(two_p3, two_p3.variants()[0])['counters']
    assert reference['dtlb_misses_kernel'] > 0             # the model was on
    t, out, port, notes = start_in_thread(two_p3)
    assert port, out.get('error')
    c = Rsp(port)
    try:
        assert c.ask('?').startswith('T05')
        syms = _kernel_symbols(out)
        pkc, last = syms['pkmap_count'], syms['last_pkmap_nr']
        assert c.ask(f'Z2,{pkc + 20:x},4') == 'OK'
        assert f'watch:{pkc + 20:x}' in c.ask('vCont;c')
        assert int.from_bytes(bytes.fromhex(c.ask(f'm{pkc + 20:x},4')), 'little') >= 1
        assert c.ask(f'z2,{pkc + 20:x},4') == 'OK'
        assert c.ask(f'Z3,{last:x},4') == 'OK'
        assert f'rwatch:{last:x}' in c.ask('vCont;c')
        assert c.ask(f'z3,{last:x},4') == 'OK'
        assert c.ask('vCont;c').startswith('W')
    finally:
        c.close()
        t.join(TIMEOUT)
    assert not t.is_alive()
    r = out['r']
    assert r['outcome'] == 'completed'
    assert r['counters'] == reference


def _kernel_symbols(out):
    """The symbols of the kernel.elf run_gdb wrote before it listened."""
    path = os.path.join(out['elf'], 'kernel.elf')
    return _elf_symbols(path)


def _elf_symbols(path):
    """name -> value from an ELF32 .symtab (our own reader: no binutils needed)."""
    import struct
    data = open(path, 'rb').read()
    shoff, = struct.unpack_from('<I', data, 32)
    shnum, shstrndx = struct.unpack_from('<HH', data, 48)
    secs = [struct.unpack_from('<IIIIIIIIII', data, shoff + 40 * i) for i in range(shnum)]
    symtab = next(s for s in secs if s[1] == 2)
    strtab = secs[symtab[6]]
    out = {}
    for off in range(symtab[4], symtab[4] + symtab[5], 16):
        name, value = struct.unpack_from('<II', data, off)
        if name:
            end = data.index(b'\0', strtab[4] + name)
            out[data[strtab[4] + name:end].decode()] = value
    return out


def test_gdb_disconnecting_mid_run_lets_the_run_finish(two, reference):
    t, out, port, notes = start_in_thread(two)
    c = Rsp(port)
    try:
        c.ask('?')
        k_high = _kernel_symbols(out)['kmap_high']
        c.ask(f'Z0,{k_high:x},1')
        assert c.ask('c').startswith('T05')
    finally:
        c.close()                                 # gone, with a breakpoint set
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert out['r']['counters'] == reference
    assert any('disconnected; the run goes on' in n for n in notes)


def test_ctrl_c_stops_the_machine_and_the_run_is_unchanged(two, reference):
    t, out, port, notes = start_in_thread(two)
    c = Rsp(port)
    try:
        c.ask('?')
        body = b'vCont;c'
        c.s.sendall(b'$' + body + b'#%02x' % (sum(body) & 0xFF) + b'\x03')    # continue, Ctrl-C
        assert c.recv().startswith('T02')          # the '+' ack comes first: recv skips it
        assert c.ask('vCont;c').startswith('W')
    finally:
        c.close()
    t.join(TIMEOUT)
    assert out['r']['counters'] == reference


def test_kill_ends_the_run_with_its_report(two):
    t, out, port, notes = start_in_thread(two)
    c = Rsp(port)
    try:
        c.ask('?')
        c.send('k')
    finally:
        c.close()
    t.join(TIMEOUT)
    r = out['r']
    assert r['outcome'] == 'killed'
    assert any(rep['message'] == 'run ended by gdb (kill)' for rep in r['reports'])


def test_no_connection_is_a_one_line_error(two):
    t, out, port, notes = start_in_thread(two, timeout=0.5)
    t.join(TIMEOUT)
    assert 'no gdb connected' in str(out['error'])


# ---- the command line ---------------------------------------------------------

def _cli(*args, timeout=TIMEOUT):
    return subprocess.run([KMAPLAB, *args], capture_output=True, text=True, timeout=timeout)


def test_port_in_use_is_a_one_line_error(two):
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    s.listen(1)
    try:
        p = _cli('run', two.path, '--gdb', f'127.0.0.1:{s.getsockname()[1]}', '--gdb-timeout', '5')
    finally:
        s.close()
    assert p.returncode == 2
    assert 'Traceback' not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith('kmaplab: gdb: cannot listen on')


@pytest.mark.parametrize('args, message', [
    (['--gdb', 'nope'], 'expected [HOST:]PORT'),
    (['--gdb', '1234', '--variant', 'atomic_fault=nope'], 'no variant matches'),
    (['--gdb', '1234'], 'choose one with --variant'),
    (['--gdb', '1234', '--schedule', 'x.json'], 'one at a time'),
])
def test_bad_gdb_options(args, message):
    p = _cli('run', 'sleep-in-atomic', *args)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and 'Traceback' not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# ---- a real gdb -----------------------------------------------------------------

GDB_SCRIPT = """
set pagination off
set confirm off
target remote 127.0.0.1:{port}
info threads
break kmap_high
continue
info registers eip cs cr3
print pkmap_count[0]@4
bt
stepi
info registers eip
thread 2
info registers eip
thread 1
delete
watch pkmap_count[5]
continue
delete
monitor pkmap
continue
"""


@pytest.mark.skipif(shutil.which('gdb') is None, reason='gdb is not installed (make setup installs it where it can)')
def test_real_gdb_session(two, reference, tmp_path):
    elf = tmp_path / 'elf'
    run = subprocess.Popen([KMAPLAB, 'run', two.path, '--json', '--gdb', '127.0.0.1:0',
                            '--gdb-timeout', str(TIMEOUT), '--gdb-elf', str(elf)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for _ in range(20):
            line = run.stderr.readline()
            m = re.search(r'gdb server on [\d.]+:(\d+)', line)
            if m:
                port = int(m.group(1))
                break
        assert port, 'the server did not say where it listens'
        script = tmp_path / 'session.gdb'
        script.write_text(GDB_SCRIPT.format(port=port))
        # an error inside a script ends the script: the unknown symbol goes first, alone
        g = subprocess.run(['gdb', '-nx', '-batch', '-ex', 'set breakpoint pending off',
                            '-ex', 'break no_such_function', '-x', str(script),
                            str(elf / 'kernel.elf')],
                           capture_output=True, text=True, timeout=TIMEOUT)
        stdout, stderr = run.communicate(timeout=TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
    text = g.stdout + g.stderr
    assert 'Function "no_such_function" not defined.' in text
    assert re.search(r'Thread [12] hit Breakpoint \d+, kmap_high \(\) at asm/kernel/highmem.S:\d+', text), text
    assert re.search(r'eip\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <kmap_high>', text)
    assert re.search(r'cr3\s+0x[0-9a-f]+', text)
    assert '#1  0xc0100000 in python_kernel ()' in text             # bt: the caller is Python
    assert re.search(r'eip\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <kmap_high\+1>', text)     # stepi
    assert '[Switching to thread 2 (Thread 2)]' in text
    assert re.search(r'Hardware watchpoint \d+: pkmap_count\[5\]', text) and 'New value = 1' in text
    assert 'pkmap pool: 32 slots' in text
    assert '[Inferior 1 (Remote target) exited normally]' in text
    assert run.returncode == 0, stderr
    assert json.loads(stdout)['counters'] == reference


def test_image_elf_files(tmp_path):
    p = _cli('image', 'hello', '--out', str(tmp_path))
    assert p.returncode == 0, p.stderr
    kernel = tmp_path / 'kernel.elf'
    assert str(kernel) in p.stdout and (tmp_path / 'writer.elf').exists()
    syms = _elf_symbols(kernel)
    assert syms['ret_to_python'] == 0xc0100000 and 'kmap_high' in syms and 'pkmap_count' in syms
    assert _elf_symbols(tmp_path / 'writer.elf')['_start'] == 0x08048000
    if shutil.which('gdb'):
        g = subprocess.run(['gdb', '-nx', '-batch', '-ex', 'info symbol 0xc0100000',
                            '-ex', 'info line kmap_high', '-ex', 'list kmap_high,+2',
                            '-ex', 'ptype pkmap_count', str(kernel)],
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert 'ret_to_python in section .text' in g.stdout
        assert 'of "asm/kernel/highmem.S" starts at address' in g.stdout
        src = open(os.path.join(os.path.dirname(__file__), '..', 'asm', 'kernel', 'highmem.S')).read()
        line = src.split('\n').index('kmap_high:') + 2         # the line after the label, 1-based
        assert f'{line}\t        push ebx' in g.stdout       # list: highmem.S's source lines
        assert 'type = unsigned int [' in g.stdout


def test_stack_depths_follow_pushes_and_pops():
    """The CFI's walk: kmap_high pushes ebx and esi before anything else."""
    from kmaplab.runner import boot
    from vm.elf import function_starts, stack_depths
    scn = scn_mod.find('hello')
    k = boot(scn, scn.variants()[0])
    img = k.image
    lo = img.symbols['kmap_high']
    starts = function_starts(img)
    hi = starts[starts.index(lo) + 1]
    d = stack_depths(img, lo, hi)
    assert d[lo] == 0 and d[lo + 1] == 4 and d[lo + 2] == 8
    assert img.symbols['kmap_high'] in starts and img.symbols['map_new_virtual'] in starts
    assert img.symbols['mnv_next'] not in starts                   # a label inside a function
