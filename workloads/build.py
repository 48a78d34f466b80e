"""Build the real-program workloads into build/ (called by `make setup`).

  build/workloads/<name>   every workloads/<name>.c, compiled with zig
                           (`python -m ziglang cc -target x86-linux-musl
                           -static -O2`): static i386 ELF with symbols.
                           Files named nolibc*.c are built -nostdlib.
  build/busybox/busybox    Debian's busybox-static:i386 (glibc, stripped),
                           fetched with apt-get download + dpkg-deb -x where
                           the machine allows it (root, dpkg, apt-get), its
                           sha256 checked against workloads/busybox.sha256.
  build/busybox/STATUS     "ok <sha256>" or "missing: <reason>" (the reason
                           tests print when they skip).

Each step is skipped when its output is newer than its input, so only the
first run pays for zig's build of musl (~40 s of CPU, cached in zig's
global cache) and for the download.  Errors print one line; the exit code
is 0 unless a C workload fails to compile (a real error in this project).
"""
import hashlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, 'workloads')
OUT = os.path.join(ROOT, 'build', 'workloads')
BB_DIR = os.path.join(ROOT, 'build', 'busybox')
BB_PACKAGE = 'busybox-static:i386'
ZIG_FLAGS = ['-target', 'x86-linux-musl', '-static', '-O2']
NOLIBC_FLAGS = ['-nostdlib', '-fno-builtin', '-fno-stack-protector']


def build_c():
    os.makedirs(OUT, exist_ok=True)
    for src in sorted(glob.glob(os.path.join(SRC, '*.c'))):
        name = os.path.basename(src)[:-2]
        dst = os.path.join(OUT, name)
        newest = max(os.path.getmtime(p) for p in [src] + glob.glob(os.path.join(SRC, '*.h')))
        if os.path.exists(dst) and os.path.getmtime(dst) >= newest:
            continue
        flags = ZIG_FLAGS + (NOLIBC_FLAGS if name.startswith('nolibc') else [])
        cmd = [sys.executable, '-m', 'ziglang', 'cc', *flags, '-o', dst, src]
        print(f'workloads: zig cc {os.path.relpath(src, ROOT)}', flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            sys.stderr.write(r.stderr)
            print(f'workloads: {name}: zig cc failed', file=sys.stderr)
            return 1
    return 0


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def known_sha256():
    with open(os.path.join(SRC, 'busybox.sha256')) as f:
        return f.read().split()[0]


def fetch_busybox():
    os.makedirs(BB_DIR, exist_ok=True)
    binary = os.path.join(BB_DIR, 'busybox')
    status = os.path.join(BB_DIR, 'STATUS')
    if os.path.exists(binary) and os.path.exists(status):
        return
    reason = _fetch(binary)
    if reason is None:
        digest = sha256(binary)
        if digest != known_sha256():
            print(f'workloads: busybox sha256 {digest} differs from workloads/busybox.sha256 '
                  f'(a newer Debian build?); using it', file=sys.stderr)
        text = f'ok {digest}'
    else:
        text = f'missing: {reason}'
    print(f'workloads: busybox: {text}', flush=True)
    with open(status, 'w') as f:
        f.write(text + '\n')


def _fetch(binary):
    """Download and unpack busybox-static:i386; None, or why not."""
    if os.geteuid() != 0:
        return 'not root (dpkg --add-architecture i386 needs it)'
    for tool in ('dpkg', 'apt-get', 'dpkg-deb'):
        if shutil.which(tool) is None:
            return f'no {tool} on this machine (not Debian-like)'
    with tempfile.TemporaryDirectory() as tmp:
        steps = [['dpkg', '--add-architecture', 'i386'], ['apt-get', 'update', '-qq'],
                 ['apt-get', 'download', '-qq', BB_PACKAGE]]
        for cmd in steps:
            r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            if r.returncode:
                last = (r.stderr.strip().splitlines() or ['?'])[-1]
                return f'{" ".join(cmd)} failed: {last}'
        debs = glob.glob(os.path.join(tmp, '*.deb'))
        if not debs:
            return 'apt-get download produced no .deb'
        r = subprocess.run(['dpkg-deb', '-x', debs[0], os.path.join(tmp, 'x')],
                           capture_output=True, text=True)
        src = os.path.join(tmp, 'x', 'bin', 'busybox')
        if r.returncode or not os.path.exists(src):
            return 'dpkg-deb -x did not give bin/busybox'
        shutil.copy(src, binary)
    return None


def main():
    rc = build_c()
    if '--no-busybox' not in sys.argv:
        fetch_busybox()
    return rc


if __name__ == '__main__':
    sys.exit(main())
