#!/usr/bin/env python3
"""tools/unicorn/build.py: kmaplab's own build of Unicorn 2.1.4 (called by
`make setup`), installed over the wheel's library in this venv.

    tools/unicorn/build.py            build (or take from the cache), install
    tools/unicorn/build.py --check    exit 0 if this venv's unicorn is ours

Why: stock Unicorn 2.1.4 is correct but slow where kmaplab spends its
guest time; the patches change what the emulator costs the host, never
what the guest sees (the proof is tools/digests --compare: every counter,
outcome and guest RAM byte of every report variant identical, and
tests/test_unicorn_build.py).  Each patch says what it changes and why:

  patches/0001-notdirty.patch  Unicorn keeps TLB_NOTDIRTY on every TLB
      entry that may execute (addr_code != -1), which on non-NX i386 is
      every entry, so every guest store takes the slow path through
      notdirty_write (a page_collection lock and a code lookup): 55-90 us
      for clear_user_highpage's 1,024 stores against 7-13 us.  The patch
      applies upstream QEMU's rule: an entry is cleaned once its page holds
      no translated code, and tlb_protect_code (a page's first TB) sets
      TLB_NOTDIRTY again on every entry of this CPU that writes the page
      (upstream's tlb_reset_dirty_range_all).  Self-modifying code is
      caught exactly as before, and the TLB's hits stay stock's: the
      victim-TLB lookup still misses an executable entry for a store
      (stock never cleared its TLB_NOTDIRTY, and the lookup compares the
      whole word), non-executable entries are cleaned as stock did.
  patches/0002-bounded-mem-hooks.patch  While any UC_HOOK_MEM_READ/WRITE/
      READ_AFTER hook exists, Unicorn sends every load and store of the
      code it translates to the slow-path helpers (tcg_uc_has_hookmem),
      even for a hook limited to a few bytes: the line-transfer hooks
      (vm/lines.py) slowed every guest access on SMP machines.  Now only a
      hook without a range does that; a bounded one flags the soft-TLB
      entries of the physical pages it covers (TLB_UC_HOOK in addr_read /
      addr_write, like upstream's TLB_WATCHPOINT: set at fill, and on the
      entries already filled when a hook is added or deleted, without a
      flush), so only their accesses leave the fast path, in code
      translated before or after the hook.  Hooks report exactly what they
      reported before (tests/test_unicorn_hooks.py, which fails on a build
      without it: code translated before a bounded hook never called it).
  patches/0003-pause.patch  QEMU's `pause` helper leaves the CPU loop
      (EXCP_INTERRUPT, "let another CPU run": a longjmp out of the
      translated code and a return from cpu_exec) every time it runs, so a
      spin-wait (asm/kernel/tlb.S's TLB-ack wait: pause; cmp; jne) paid
      about 80 ns an iteration for it; a Unicorn instance has one CPU, there
      is no one to yield to.  The patch keeps pause's block boundary (the
      same blocks, so the same block hook calls, instruction counts and
      stop points) and goes on to the next instruction with a direct jump,
      as `jmp` to it would.  A munmap-race exploration run's spin slices:
      6.2 -> 3.5 ms of CPU.run.
  patches/0004-tlb-fixed-size.patch  QEMU sizes each MMU mode's soft TLB
      dynamically: doubled at a flush that finds it more than 70% used,
      shrunk only after a 100 ms window of the host's wall clock.  So its
      size, and with it which entries collide, which are evicted and which
      accesses walk the page tables again (setting A/D bits, reading the
      PTE as it is now), depended on the host's speed and on what an
      instance had run before (a reused spare kept its grown TLB).  The
      patch keeps the initial 256 entries (+ 8 victim entries) per mode,
      always: the TLB's behaviour is a function of the guest's accesses
      only.  tests/test_unicorn_build.py grows a stock TLB to 512 and shows
      a stale entry surviving at once but not 150 ms later; with the patch
      both read the same.
  patches/0005-hook-nosync.patch  Before calling a data memory hook
      Unicorn syncs the guest PC (cpu_restore_state: a search of the
      translated code for the faulting host address), so that the hook can
      read EIP.  vm/lines.py's hooks read no CPU state; a new export,
      uc_kmaplab_hook_nosync(uc, hh), marks such a hook and the sync is
      skipped for it (another hook on the same access still gets it).
      Spin-waits on a watched line (the TLB-ack wait) called it on every
      iteration: a munmap-race exploration run 7.06 -> 6.18 ms (medians of
      3 alternating).  vm/native.hook_nosync is a no-op on other builds.

Steps (each a one-line error and exit 2 on failure):
  1. the sdist from PyPI (`pip download unicorn==2.1.4 --no-binary :all:`),
     its sha256 checked against SDIST_SHA256;
  2. unpacked in a temporary directory, patches applied in name order
     (`patch -p1` from the sdist's top directory);
  3. cmake + make, x86 only (UNICORN_ARCH=x86: i386 guests run on the
     x86_64 target, as in the wheel), Release, ~40 s on 2 cores;
  4. libunicorn.so.2 copied to the cache, ~/.cache/kmaplab/unicorn/<key>
     ($KMAPLAB_CACHE overrides ~/.cache/kmaplab), key = sha256 of the
     sdist's hash, every patch and this file's RECIPE; another checkout or
     a rerun takes it from there;
  5. installed: the venv's unicorn/lib/libunicorn.so.2 replaced (written
     beside it, then renamed: a process that has the old one mapped keeps
     it).

vm/native.py reads the build's uc_kmaplab_patches() (added by 0001) and
says which build runs: native.UNICORN_PATCHES.
"""
import glob
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

VERSION = '2.1.4'
SDIST_SHA256 = '00567a70e323f749b419cd86bee4f9115beab7ebba32194581c090cbb7c59cff'
CMAKE_ARGS = ['-DCMAKE_BUILD_TYPE=Release', '-DUNICORN_ARCH=x86', '-DUNICORN_BUILD_TESTS=off']
MAKE_TARGET = 'unicorn'                  # the shared library only
RECIPE = f'cmake {" ".join(CMAKE_ARGS)}; make {MAKE_TARGET}'   # part of the cache key
LIB = 'libunicorn.so.2'
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildError(Exception):
    pass


def patches():
    """The patch files, in the order they apply."""
    return sorted(glob.glob(os.path.join(HERE, 'patches', '*.patch')))


def cache_key():
    h = hashlib.sha256(f'{VERSION} {SDIST_SHA256} {RECIPE}\n'.encode())
    for p in patches():
        with open(p, 'rb') as f:
            h.update(os.path.basename(p).encode() + b'\0' + f.read())
    return h.hexdigest()[:16]


def cache_dir():
    root = os.environ.get('KMAPLAB_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'kmaplab')
    return os.path.join(root, 'unicorn', cache_key())


def _run(cmd, cwd, what):
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = r.stdout.strip().splitlines()[-1:] or ['(no output)']
        raise BuildError(f'{what} failed: {tail[0]}')


def _sdist(tmp):
    """Download and check the sdist -> its path."""
    _run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
          '-d', tmp, f'unicorn=={VERSION}'], tmp, 'pip download of the unicorn sdist')
    path = os.path.join(tmp, f'unicorn-{VERSION}.tar.gz')
    if not os.path.exists(path):
        raise BuildError(f'pip download left no unicorn-{VERSION}.tar.gz')
    with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SDIST_SHA256:
        raise BuildError(f'unicorn-{VERSION}.tar.gz has sha256 {digest}, expected {SDIST_SHA256}')
    return path


def build(dest):
    """Build the patched library into dest/LIB."""
    for tool in ('cmake', 'make', 'patch', 'cc'):
        if shutil.which(tool) is None:
            raise BuildError(f'{tool} not found (needed to build unicorn; Debian: cmake build-essential patch)')
    with tempfile.TemporaryDirectory(prefix='kmaplab-unicorn-') as tmp:
        with tarfile.open(_sdist(tmp)) as tar:
            tar.extractall(tmp, filter='data')
        top = os.path.join(tmp, f'unicorn-{VERSION}')
        for p in patches():
            _run(['patch', '-p1', '--batch', '--forward', '-i', p], top, f'patch {os.path.basename(p)}')
        src = os.path.join(top, 'src')
        out = os.path.join(src, 'build')
        _run(['cmake', '-S', src, '-B', out] + CMAKE_ARGS, src, 'cmake')
        _run(['make', f'-j{os.cpu_count() or 2}', MAKE_TARGET], out, 'make')
        os.makedirs(dest, exist_ok=True)
        part = os.path.join(dest, LIB + '.part')
        shutil.copyfile(os.path.join(out, LIB), part)
        os.replace(part, os.path.join(dest, LIB))


def venv_lib():
    """This Python's unicorn/lib/libunicorn.so.2 (not loaded)."""
    spec = importlib.util.find_spec('unicorn')
    if spec is None or not spec.submodule_search_locations:
        raise BuildError('the unicorn package is not installed in this Python')
    return os.path.join(list(spec.submodule_search_locations)[0], 'lib', LIB)


def install():
    cached = os.path.join(cache_dir(), LIB)
    if not os.path.exists(cached):
        print(f'tools/unicorn/build.py: building unicorn {VERSION} with {len(patches())} patch(es) '
              f'(~40 s, once: cached in {cache_dir()})', flush=True)
        build(cache_dir())
    target = venv_lib()
    part = target + '.part'
    shutil.copyfile(cached, part)
    os.chmod(part, 0o755)
    os.replace(part, target)


def installed_patches():
    """The patch list of the library this venv loads ('' if stock): read in
    a fresh interpreter, so this process never maps the old library."""
    r = subprocess.run([sys.executable, '-c',
                        'import sys, os; sys.path.insert(0, os.getcwd()); '
                        'from vm import native; print(native.UNICORN_PATCHES)'],
                       cwd=os.path.dirname(os.path.dirname(HERE)), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise BuildError(f'cannot load vm.native: {(r.stderr.strip().splitlines() or ["?"])[-1]}')
    return r.stdout.strip()


def expected_patches():
    return ','.join(os.path.basename(p)[:-len('.patch')] for p in patches())


def main(argv):
    try:
        if argv[1:] == ['--check']:
            got = installed_patches()
            if got != expected_patches():
                print(f'unicorn: this venv runs patches {got or "none (stock)"}, '
                      f'tools/unicorn has {expected_patches()}: run make setup')
                return 1
            return 0
        if argv[1:]:
            print('usage: tools/unicorn/build.py [--check]')
            return 2
        install()
        got = installed_patches()
        if got != expected_patches():
            raise BuildError(f'installed library reports patches {got!r}, expected {expected_patches()!r} '
                             '(each patch must update uc_kmaplab_patches)')
        return 0
    except BuildError as e:
        print(f'tools/unicorn/build.py: {e}')
        return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
