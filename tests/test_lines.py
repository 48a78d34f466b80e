"""Cache-line transfers (vm/lines.py, vm/_lines.c) on the selftest rig:
the MESI-like directory counts a line moving to another CPU, not a hit."""
from vm import selftest as st

XCHG_S = r'''
// u32 xchg_x(EDX va, EAX value): a locked read-modify-write.
xchg_x:
        xchg dword ptr [edx], eax
        hlt
'''


def _rig():
    rig = st.Rig(cpus=2, source=st.SELFTEST_S + XCHG_S)
    lines = rig.m.watch_lines()
    lines.watch('word', st.DATA, 64)         # two 32-byte lines
    return rig, lines


def test_line_moves_only_between_cpus():
    rig, lines = _rig()
    x = st.DATA
    steps = []

    def step(cpu, name, **regs):
        rig.call(cpu, name, edx=x, **regs)
        steps.append(lines.transfers('word'))
    step(0, 'write_x', eax=1)      # first touch: from memory, no transfer
    step(0, 'read_x')              # hit
    step(1, 'read_x')              # CPU0 holds it Modified: HITM, 1
    step(1, 'read_x')              # shared hit
    step(1, 'write_x', eax=2)      # RFO invalidates CPU0's copy: 2
    step(1, 'write_x', eax=3)      # owner: nothing
    step(0, 'xchg_x', eax=4)       # a locked RMW moves it once, not twice: 3
    assert steps == [0, 0, 1, 1, 2, 2, 3]
    assert lines.transfers('word', cpu=1) == 2 and lines.transfers('word', cpu=0) == 1
    assert lines.counters() == {'line_transfers': 3, 'line_transfers_word': 3}


def test_other_line_is_separate_and_outside_is_not_seen():
    rig, lines = _rig()
    rig.call(0, 'write_x', edx=st.DATA, eax=1)
    rig.call(1, 'write_x', edx=st.DATA + 32, eax=1)      # another line: no transfer
    rig.call(1, 'write_x', edx=st.DATA + 64, eax=1)      # outside the range
    rig.call(0, 'write_x', edx=st.DATA + 64, eax=1)
    assert lines.transfers() == 0
    rig.call(1, 'write_x', edx=st.DATA + 4, eax=1)       # same line as CPU0's word
    assert lines.transfers() == 1


def test_one_cpu_counts_nothing_and_installs_no_hook():
    """One CPU: no line can move to another CPU, so no memory hook is
    installed (any one would send every guest access through Unicorn's
    slow path); the group is still reported, with 0."""
    rig = st.Rig(cpus=1, source=st.SELFTEST_S + XCHG_S)
    lines = rig.m.watch_lines()
    lines.watch('word', st.DATA, 64)
    for name in ('write_x', 'read_x', 'xchg_x'):
        rig.call(0, name, edx=st.DATA, eax=1)
    assert lines.counters() == {'line_transfers': 0, 'line_transfers_word': 0}
    assert sum(lines.k.accesses) == 0          # no hook ran
    two, lines2 = _rig()
    two.call(0, 'write_x', edx=st.DATA, eax=1)
    assert sum(lines2.k.accesses) == 1         # with two CPUs the hook sees it
