"""Issue 17 (first landed part): memory-management syscalls check ranges as
Linux 2.5 does (EINVAL/ENOMEM, never a false kernel BUG), trace fields carry
no host addresses, assembly errors name file:line (.space range, #include
confined to the project)."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('call, errno', [
    ((91, 0x40000000, 0x90000000), -22),        # munmap reaching into the kernel: EINVAL
    ((91, 0xBFFFF000, 0xFFFFF000), -22),        # a range that wraps past 4 GiB
    ((91, 0xC0000000, 0x1000), -22),            # start past TASK_SIZE
    ((91, 0x40000001, 0x1000), -22),            # not aligned
    ((91, 0x40000000, 0), -22),                 # length 0
    ((192, 0xBFFFF000, 0x2000, 3, 0x32, -1, 0), -12),   # MAP_FIXED past TASK_SIZE: ENOMEM
    ((192, 0x40000001, 0x1000, 3, 0x32, -1, 0), -22),   # MAP_FIXED not aligned
    ((192, 0, 0xC0001000, 3, 0x22, -1, 0), -22),        # longer than TASK_SIZE
])
def test_mm_syscalls_check_ranges_like_linux(boot_kernel, call, errno):
    k = boot_kernel()
    t = k.spawn('t', 'hello', [])
    args = [a & 0xFFFFFFFF for a in call[1:]] + [0] * (6 - len(call[1:]))
    gen = k.syscalls.table[call[0]](t, args)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        assert stop.value == errno
    assert not [r for r in k.reports if r['kind'] in ('bug', 'oops')]


def test_trace_fields_carry_no_host_addresses():
    from kmaplab.trace import _plain
    from minikernel.sched import WaitQueue

    class Opaque:
        pass
    v = _plain(('page_lock', 5, lambda: 1, WaitQueue('bio read'), Opaque()))
    assert ' at 0x' not in repr(v) and v[:2] == ['page_lock', 5]


@pytest.mark.parametrize('text, needle', [
    ('_start:\n        .space -1\n', 'x.S:2: .space -1'),
    ('_start:\n        .space 0x7fffffff\n', 'x.S:2: .space'),
    ('_start:\n#include "../../../../../../etc/passwd"\n', 'x.S:2: cannot include'),
    ('_start:\n#include "/etc/passwd"\n', 'outside the project'),
])
def test_asm_errors_have_file_and_line(text, needle):
    from vm.asm import AsmError, assemble
    with pytest.raises(AsmError) as e:
        assemble([('asm/user/x.S', text)], 0x08048000, root=ROOT)
    assert needle in str(e.value) and 'root:' not in str(e.value)
