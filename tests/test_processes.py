"""Processes: the per-call-site kmap profile, fork with copy-on-write,
wait4 and exit statuses, signals, pipes, execve (issue 13).

Every number asserted here is what the emulated machine did: guest kmaps
counted at their entry with the return address the guest pushed, PTEs read
back from guest RAM, exit statuses a guest parent got from wait4."""
import pytest

from minikernel.kernel import Kernel
from test_kernel import MiB, prog, reports


# ---- per-call-site kmap counters -------------------------------------------

@pytest.mark.parametrize('write_path, read_path', [('kmap', 'kmap'), ('atomic_fallback', 'atomic')])
def test_kmap_calls_are_attributed_to_their_callers(write_path, read_path):
    k = Kernel(dict(cpus=2, mem=64 * MiB, highmem=32 * MiB, write_path=write_path,
                    read_path=read_path), programs=prog('writer', 'reader'))
    w = k.spawn('w', 'writer', ['out', 64, 4096, 7], cpu=0)
    r = k.spawn('r', 'reader', ['out', 3], cpu=1, start=200_000_000)
    assert k.run() == 'finished' and w.exit_code == 0 and r.exit_code == 0
    c = k.highmem.counters
    for prefix in ('kmap_high_calls', 'kmap_atomic_calls'):
        per_site = sum(v for key, v in c.items() if key.startswith(prefix + '.'))
        assert per_site == c[prefix]
    if write_path == 'kmap':
        assert c['kmap_high_calls.generic_file_write'] == 64
        assert c['kmap_high_calls.file_read_actor'] == 3 * 64
    else:
        assert c['kmap_atomic_calls.filemap_copy_from_user_atomic'] == 64
        assert c['kmap_atomic_calls.file_read_actor'] == 3 * 64
        assert 'kmap_high_calls.file_read_actor' not in c
    assert c['kmap_atomic_calls.do_anonymous_page'] >= 1     # clear_user_highpage, inlined
