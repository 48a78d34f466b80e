"""Build the real-program workloads into build/ (called by `make setup`).

  build/workloads/<name>   every workloads/<name>.c, compiled with zig
                           (`python -m ziglang cc -target x86-linux-musl
                           -static -O2`): static i386 ELF with symbols,
                           its .debug_* sections dropped (strip_debug): zig's
                           DWARF names the directories the objects were built
                           in (this checkout, the venv's musl sources, first
                           come first cached), so the same source gave other
                           bytes, file sizes and counters in another checkout.
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
import struct
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


RECIPE = ' '.join(ZIG_FLAGS + NOLIBC_FLAGS) + ' + strip_debug 1'   # a change rebuilds all


def build_c():
    os.makedirs(OUT, exist_ok=True)
    stamp = os.path.join(OUT, '.recipe')
    same_recipe = os.path.exists(stamp) and open(stamp).read() == RECIPE
    for src in sorted(glob.glob(os.path.join(SRC, '*.c'))):
        name = os.path.basename(src)[:-2]
        dst = os.path.join(OUT, name)
        newest = max(os.path.getmtime(p) for p in [src] + glob.glob(os.path.join(SRC, '*.h')))
        if same_recipe and os.path.exists(dst) and os.path.getmtime(dst) >= newest:
            continue
        flags = ZIG_FLAGS + (NOLIBC_FLAGS if name.startswith('nolibc') else [])
        cmd = [sys.executable, '-m', 'ziglang', 'cc', *flags, '-o', dst, src]
        print(f'workloads: zig cc {os.path.relpath(src, ROOT)}', flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            sys.stderr.write(r.stderr)
            print(f'workloads: {name}: zig cc failed', file=sys.stderr)
            return 1
        with open(dst, 'rb') as f:
            data = strip_debug(f.read())
        with open(dst, 'wb') as f:
            f.write(data)
    with open(stamp, 'w') as f:
        f.write(RECIPE)
    return 0


SHF_ALLOC, SHF_INFO_LINK = 0x2, 0x40
SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 4, 8, 9


def strip_debug(data):
    """An ELF32 little-endian file without its .debug_* sections, as
    `strip --strip-debug` (which this machine kind may lack; lld's own
    --strip-debug drops .symtab too).  The loaded bytes (program headers,
    every SHF_ALLOC section) stay where they are; the kept other sections
    (.comment, .symtab, .strtab, .shstrtab) are packed after them and the
    section indices in sh_link, sh_info and symbols renumbered.  ValueError
    if a kept section or symbol refers to a dropped one."""
    if data[:6] != b'\x7fELF\x01\x01':
        raise ValueError('not a 32-bit little-endian ELF file')
    phoff, shoff = struct.unpack_from('<II', data, 0x1c)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from('<HHHHH', data, 0x2a)
    shdrs = [list(struct.unpack_from('<10I', data, shoff + i * shentsize)) for i in range(shnum)]
    names = shdrs[shstrndx][4]

    def name(sh):
        return data[names + sh[0]:data.index(b'\0', names + sh[0])]
    keep = [i for i, sh in enumerate(shdrs) if not name(sh).startswith(b'.debug')]
    if len(keep) == shnum:
        return data
    new = {old: i for i, old in enumerate(keep)}

    def renumber(index, what):
        if index in new:
            return new[index]
        raise ValueError(f'{what} refers to dropped section {index}')
    phdrs = [struct.unpack_from('<8I', data, phoff + i * phentsize) for i in range(phnum)]
    end = max([phoff + phnum * phentsize] + [p[1] + p[4] for p in phdrs] +     # p_offset + p_filesz
              [sh[4] + sh[5] for sh in shdrs if sh[2] & SHF_ALLOC and sh[1] != SHT_NOBITS])
    out = bytearray(data[:end])
    table = []
    for old in keep:
        sh = shdrs[old][:]
        if old and not sh[2] & SHF_ALLOC:
            out += bytes(-len(out) % max(sh[8], 1))
            body = bytearray(data[sh[4]:sh[4] + sh[5]])
            if sh[1] == SHT_SYMTAB:
                for at in range(0, len(body), 16):
                    shndx, = struct.unpack_from('<H', body, at + 14)
                    if 0 < shndx < 0xff00:
                        struct.pack_into('<H', body, at + 14, renumber(shndx, 'a symbol'))
            sh[4] = len(out)
            out += body
        if sh[6]:
            sh[6] = renumber(sh[6], name(sh).decode())
        if sh[1] in (SHT_REL, SHT_RELA) or sh[2] & SHF_INFO_LINK:
            sh[7] = renumber(sh[7], name(sh).decode())
        table.append(sh)
    out += bytes(-len(out) % 4)
    struct.pack_into('<I', out, 0x20, len(out))
    struct.pack_into('<HH', out, 0x30, len(table), new[shstrndx])
    for sh in table:
        out += struct.pack('<10I', *sh)
    return bytes(out)


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
