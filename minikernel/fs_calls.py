"""The file system calls real programs make (busybox, musl/glibc C
programs), on top of fs.py's namespace and fd tables: fs/open.c (openat,
access), fs/namei.c (mkdir, rmdir, unlink, rename), fs/stat.c (stat64,
lstat64, fstat64, fstatat64, readlink), fs/readdir.c (getdents64),
fs/fcntl.c (dup, dup2, dup3, fcntl), fs/read_write.c (_llseek, pread64,
pwrite64, readv), fs/ioctl.c, getcwd.  Linux i386 numbers, 2.6 semantics
where 2.4 lacks the call (the *at family, getdents64 is 2.4).

Rules
  - Each sys_* is a generator (task, args) -> EAX, registered in
    Syscalls.table through table() below; errors are Linux's for the same
    bad argument (EBADF, ENOENT, ENOTDIR, EISDIR, EEXIST, ENOTEMPTY, EINVAL,
    EFAULT, ENOTTY, ESPIPE, ENAMETOOLONG).
  - Paths are copied in with guest strncpy_from_user (getname); structures
    go out with guest copy_to_user.  Every task's cwd is /; a relative path
    of an *at call is relative to its directory fd (or / for AT_FDCWD).
  - The namespace changes inside one Python step (the dcache lock); an
    unlinked file nobody holds open or mapped is truncated (its pages leave
    the page cache; the oracle hears it), like the last iput.
  - The console is not a tty here: ioctl TCGETS/TIOCGWINSZ are ENOTTY on
    every fd (programs then write plain, line-by-line output).
  - statx is not implemented (ENOSYS, counted): glibc falls back to
    fstatat64.
"""
import struct

from .task import Guest
from .fs import (File, O_APPEND, O_CLOEXEC, NR_OPEN, PATH_MAX, S_IFDIR, SEEK_SET, SEEK_CUR,
                 SEEK_END)

EPERM, ENOENT, EBADF, EFAULT, EBUSY, EEXIST = 1, 2, 9, 14, 16, 17
ENOTDIR, EISDIR, EINVAL, EMFILE, ENOTTY, ESPIPE, ERANGE = 20, 21, 22, 24, 25, 29, 34
ENAMETOOLONG, ENOTEMPTY = 36, 39

AT_FDCWD = -100 & 0xFFFFFFFF
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EMPTY_PATH = 0x100, 0x200, 0x1000
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL = 0, 1, 2, 3, 4
F_GETLK, F_SETLK, F_SETLKW, F_DUPFD_CLOEXEC = 5, 6, 7, 1030
FD_CLOEXEC = 1
O_NONBLOCK = 0o4000
DT_CHR, DT_DIR, DT_REG = 2, 4, 8
PAGE = 4096
STAT64 = struct.Struct('<Q4xIIIIIQ4xqIQIIIIIIQ')      # struct stat64, i386: 96 bytes
assert STAT64.size == 96


def s32(v):
    return v - (1 << 32) if v & 0x80000000 else v


class FsCalls:
    def __init__(self, kernel, syscalls):
        self.k = kernel
        self.sc = syscalls

    def table(self):
        return {10: self.sys_unlink, 33: self.sys_access, 38: self.sys_rename, 39: self.sys_mkdir,
                40: self.sys_rmdir, 41: self.sys_dup, 54: self.sys_ioctl, 55: self.sys_fcntl,
                63: self.sys_dup2, 85: self.sys_readlink, 140: self.sys_llseek, 145: self.sys_readv,
                180: self.sys_pread64, 181: self.sys_pwrite64, 183: self.sys_getcwd,
                195: self.sys_stat64, 196: self.sys_lstat64, 197: self.sys_fstat64,
                220: self.sys_getdents64, 221: self.sys_fcntl, 295: self.sys_openat,
                296: self.sys_mkdirat, 300: self.sys_fstatat64, 301: self.sys_unlinkat,
                302: self.sys_renameat, 305: self.sys_readlinkat, 307: self.sys_faccessat,
                330: self.sys_dup3}

    # ---- helpers ---------------------------------------------------------

    def getname(self, task, uaddr):
        """getname(): the user's path string, via guest strncpy_from_user.
        Generator -> str, or -errno (EFAULT, ENAMETOOLONG)."""
        k = self.k
        kbuf = k.task_kbuf(task)
        n = yield Guest('strncpy_from_user', kbuf, uaddr, PATH_MAX)
        if n >= 0x80000000:
            return -EFAULT
        if n >= PATH_MAX:
            return -ENAMETOOLONG
        return k.machine.read(kbuf - k.PAGE_OFFSET, n).decode('latin-1')

    def at_path(self, task, dirfd, uaddr, empty_ok=False):
        """The absolute path of an *at call's (dirfd, path).  Generator ->
        str or -errno."""
        path = yield from self.getname(task, uaddr)
        if isinstance(path, int):
            return path
        if not path and not empty_ok:
            return -ENOENT
        if path.startswith('/') or dirfd == AT_FDCWD:
            return path if path.startswith('/') else '/' + path
        file = self.k.vfs.fget(task, dirfd)
        if file is None:
            return -EBADF
        if file.inode.kind != 'dir':
            return -ENOTDIR
        return f'/{file.inode.name}/{path}'

    def resolve(self, path):
        """(key, node or None), or -errno for a path (ENAMETOOLONG, ENOTDIR
        when a middle component is not a directory, ENOENT when it is
        missing)."""
        vfs = self.k.vfs
        key = vfs.normalize(path)
        if key is None:
            return -ENAMETOOLONG
        node = vfs.lookup_path(key)
        if node is None and key:
            parent = key.rpartition('/')[0]
            if parent not in vfs.dirs:
                return -ENOTDIR if vfs.lookup_path(parent) is not None else -ENOENT
        return key, node

    def put_user(self, task, uaddr, data):
        return (yield from self.sc.copy_to_user(task, uaddr, data))

    # ---- open, access ----------------------------------------------------------

    def sys_openat(self, task, args):
        path = yield from self.at_path(task, args[0], args[1])
        if isinstance(path, int):
            return path
        return (yield from self.k.vfs.sys_open(task, path, args[2], args[3]))

    def sys_access(self, task, args):
        return (yield from self.sys_faccessat(task, (AT_FDCWD, args[0], args[1], 0)))

    def sys_faccessat(self, task, args):
        """faccessat(): root may do anything, so only existence matters."""
        path = yield from self.at_path(task, args[0], args[1])
        if isinstance(path, int):
            return path
        if args[2] & ~7:
            return -EINVAL
        r = self.resolve(path)
        if isinstance(r, int):
            return r
        return 0 if r[1] is not None else -ENOENT

    # ---- stat ------------------------------------------------------------

    def stat_bytes(self, node):
        """struct stat64 of a node (cp_new_stat64)."""
        t = node.mtime // 1_000_000_000
        size = node.size if node.kind != 'chr' else 0
        rdev = node.rdev if node.kind == 'chr' else 0
        blocks = (size + 511) // 512
        return STAT64.pack(0x801, node.ino & 0xFFFFFFFF, node.mode, node.nlink, 0, 0, rdev, size,
                           PAGE, blocks, t, 0, t, 0, t, 0, node.ino)

    def _stat_path(self, task, path, ubuf):
        if isinstance(path, int):
            return path
        r = self.resolve(path)
        if isinstance(r, int):
            return r
        if r[1] is None:
            return -ENOENT
        return (yield from self.put_user(task, ubuf, self.stat_bytes(r[1])))

    def sys_stat64(self, task, args):
        path = yield from self.at_path(task, AT_FDCWD, args[0])
        return (yield from self._stat_path(task, path, args[1]))

    sys_lstat64 = sys_stat64                  # no symlinks here

    def sys_fstat64(self, task, args):
        file = self.k.vfs.fget(task, args[0])
        if file is None:
            return -EBADF
        return (yield from self.put_user(task, args[1], self.stat_bytes(file.inode)))

    def sys_fstatat64(self, task, args):
        dirfd, upath, ubuf, flags = args[0], args[1], args[2], args[3]
        if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800):
            return -EINVAL
        path = yield from self.at_path(task, dirfd, upath, empty_ok=bool(flags & AT_EMPTY_PATH))
        if path == '' and flags & AT_EMPTY_PATH:
            if dirfd == AT_FDCWD:
                path = '/'
            else:
                return (yield from self.sys_fstat64(task, (dirfd, ubuf)))
        return (yield from self._stat_path(task, path, ubuf))

    def sys_readlink(self, task, args):
        return (yield from self.sys_readlinkat(task, (AT_FDCWD, args[0], args[1], args[2])))

    def sys_readlinkat(self, task, args):
        """No symbolic links: EINVAL for anything that exists, ENOENT
        otherwise (e.g. /proc/self/exe: there is no /proc)."""
        path = yield from self.at_path(task, args[0], args[1])
        if isinstance(path, int):
            return path
        if s32(args[3]) <= 0:
            return -EINVAL
        r = self.resolve(path)
        if isinstance(r, int):
            return r
        return -EINVAL if r[1] is not None else -ENOENT

    def sys_getcwd(self, task, args):
        buf, size = args[0], args[1]
        if size < 2:
            return -ERANGE
        err = yield from self.put_user(task, buf, b'/\0')
        return err or 2

    # ---- directories -----------------------------------------------------

    def sys_mkdir(self, task, args):
        return (yield from self.sys_mkdirat(task, (AT_FDCWD, args[0], args[1])))

    def sys_mkdirat(self, task, args):
        from .fs import Dir
        path = yield from self.at_path(task, args[0], args[1])
        if isinstance(path, int):
            return path
        r = self.resolve(path)
        if isinstance(r, int):
            return r
        key, node = r
        if node is not None:
            return -EEXIST
        vfs = self.k.vfs
        where = vfs.parent_of(key)
        if isinstance(where, int):
            return where
        parent, name = where
        d = Dir(vfs._ino(), key, parent)
        d.mode = S_IFDIR | (args[2] & 0o7777)
        d.mtime = self.k.machine.now()
        parent.children[name] = d
        vfs.dirs[key] = d
        return 0

    def sys_rmdir(self, task, args):
        return (yield from self.sys_unlinkat(task, (AT_FDCWD, args[0], AT_REMOVEDIR)))

    def sys_unlink(self, task, args):
        return (yield from self.sys_unlinkat(task, (AT_FDCWD, args[0], 0)))

    def sys_unlinkat(self, task, args):
        """unlinkat(): a file (EISDIR for a directory), or with AT_REMOVEDIR
        an empty directory (ENOTDIR, ENOTEMPTY, EBUSY for /)."""
        path = yield from self.at_path(task, args[0], args[1])
        if isinstance(path, int):
            return path
        flags = args[2]
        if flags & ~AT_REMOVEDIR:
            return -EINVAL
        r = self.resolve(path)
        if isinstance(r, int):
            return r
        key, node = r
        if node is None:
            return -ENOENT
        vfs = self.k.vfs
        if flags & AT_REMOVEDIR:
            if node.kind != 'dir':
                return -ENOTDIR
            if not key:
                return -EBUSY
            if node.children:
                return -ENOTEMPTY
            del node.parent.children[key.rpartition('/')[2]]
            del vfs.dirs[key]
            return 0
        if node.kind == 'dir':
            return -EISDIR
        if node.kind != 'file':
            return -EPERM
        parent = vfs.dirs[key.rpartition('/')[0]]
        del parent.children[key.rpartition('/')[2]]
        del vfs.inodes[key]
        node.nlink = 0
        if not self._in_use(node):
            yield from vfs.delete_inode(task, node)      # iput of the last reference
        return 0

    def _in_use(self, inode):
        """Is the inode still open or mapped by any task?"""
        for t in self.k.sched.tasks.values():
            if t.files is not None and any(f.inode is inode for f in t.files.fds.values()):
                return True
        return any(getattr(v.file, 'inode', None) is inode for mm in self.k.mms for v in mm.vmas)

    def sys_rename(self, task, args):
        return (yield from self.sys_renameat(task, (AT_FDCWD, args[0], AT_FDCWD, args[1])))

    def sys_renameat(self, task, args):
        """renameat(): a file over a file (the old target unlinked), or a
        directory to a new name or over an empty directory; EINVAL for a
        directory into itself, EISDIR/ENOTDIR for a kind mismatch."""
        old = yield from self.at_path(task, args[0], args[1])
        if isinstance(old, int):
            return old
        new = yield from self.at_path(task, args[2], args[3])
        if isinstance(new, int):
            return new
        r1, r2 = self.resolve(old), self.resolve(new)
        for r in (r1, r2):
            if isinstance(r, int):
                return r
        (okey, onode), (nkey, nnode) = r1, r2
        if onode is None:
            return -ENOENT
        if not okey or not nkey:
            return -EBUSY
        if okey == nkey:
            return 0
        vfs = self.k.vfs
        if onode.kind == 'dir' and (nkey + '/').startswith(okey + '/'):
            return -EINVAL
        where = vfs.parent_of(nkey)
        if isinstance(where, int):
            return where
        if nnode is not None:
            if onode.kind == 'dir' and nnode.kind != 'dir':
                return -ENOTDIR
            if onode.kind != 'dir' and nnode.kind == 'dir':
                return -EISDIR
            if nnode.kind == 'dir' and nnode.children:
                return -ENOTEMPTY
            self._detach(nkey, nnode)
            if nnode.kind == 'file' and not self._in_use(nnode):
                yield from vfs.delete_inode(task, nnode)
        self._detach(okey, onode)
        newparent, newname = vfs.parent_of(nkey)
        self._attach(nkey, onode, newparent, newname)
        return 0

    def _detach(self, key, node):
        vfs = self.k.vfs
        parent = vfs.dirs[key.rpartition('/')[0]]
        del parent.children[key.rpartition('/')[2]]
        if node.kind == 'file':
            del vfs.inodes[key]
        elif node.kind == 'dir':
            for sub in [d for d in vfs.dirs if d == key or d.startswith(key + '/')]:
                del vfs.dirs[sub]
            for sub in [f for f in vfs.inodes if f.startswith(key + '/')]:
                del vfs.inodes[sub]

    def _attach(self, key, node, parent, name):
        """Put `node` (and, for a directory, its subtree) under `key`."""
        vfs = self.k.vfs
        parent.children[name] = node
        if node.kind == 'dir':
            node.parent = parent
        stack = [(key, node)]
        while stack:
            k_, n = stack.pop()
            n.name = k_
            if n.kind == 'file':
                vfs.inodes[k_] = n
            elif n.kind == 'dir':
                vfs.dirs[k_] = n
                stack.extend((f'{k_}/{c}', child) for c, child in n.children.items())

    def sys_getdents64(self, task, args):
        """getdents64(fd, dirp, count): linux_dirent64 records (d_ino, d_off,
        d_reclen, d_type, name), 8-byte aligned; '.' and '..' first.  f_pos
        is the index of the next entry.  EINVAL if not even one fits."""
        fd, dirp, count = args[0], args[1], args[2]
        file = self.k.vfs.fget(task, fd)
        if file is None:
            return -EBADF
        d = file.inode
        if d.kind != 'dir':
            return -ENOTDIR
        entries = [('.', d), ('..', d.parent)] + list(d.children.items())
        out = bytearray()
        i = file.pos
        while i < len(entries):
            name, node = entries[i]
            reclen = (19 + len(name) + 1 + 7) & ~7
            if len(out) + reclen > count:
                break
            dtype = {'dir': DT_DIR, 'file': DT_REG, 'chr': DT_CHR}[node.kind]
            rec = struct.pack('<QqHB', node.ino, i + 1, reclen, dtype) + name.encode('latin-1')
            out += rec + bytes(reclen - len(rec))
            i += 1
        if i < len(entries) and not out:
            return -EINVAL
        if out:
            err = yield from self.put_user(task, dirp, bytes(out))
            if err:
                return err
        file.pos = i
        return len(out)

    # ---- fds ---------------------------------------------------------------

    def _dup_to(self, task, file, newfd, cloexec=False):
        files = task.files
        old = files.fds.get(newfd)
        files.fds[newfd] = file
        if hasattr(file, 'get_file'):             # a reference-counted file (a pipe end)
            file.get_file()
        if old is not None and hasattr(old, 'fput'):
            old.fput()
        if cloexec:
            files.close_on_exec.add(newfd)
        else:
            files.close_on_exec.discard(newfd)
        return newfd

    def sys_dup(self, task, args):
        file = self.k.vfs.fget(task, args[0])
        if file is None:
            return -EBADF
        fd = task.files.install(file)
        return -EMFILE if fd is None else fd
        yield

    def sys_dup2(self, task, args):
        oldfd, newfd = args[0], args[1]
        file = self.k.vfs.fget(task, oldfd)
        if file is None:
            return -EBADF
        if newfd >= NR_OPEN:
            return -EBADF
        if oldfd == newfd:
            return newfd
        return self._dup_to(task, file, newfd)
        yield

    def sys_dup3(self, task, args):
        oldfd, newfd, flags = args[0], args[1], args[2]
        if flags & ~O_CLOEXEC or oldfd == newfd:
            return -EINVAL
        file = self.k.vfs.fget(task, oldfd)
        if file is None or newfd >= NR_OPEN:
            return -EBADF
        return self._dup_to(task, file, newfd, bool(flags & O_CLOEXEC))
        yield

    def sys_fcntl(self, task, args):
        """fcntl/fcntl64: F_DUPFD(_CLOEXEC), F_GETFD/F_SETFD (FD_CLOEXEC),
        F_GETFL/F_SETFL (O_APPEND, O_NONBLOCK), locks always granted."""
        fd, cmd, arg = args[0], args[1], args[2]
        file = self.k.vfs.fget(task, fd)
        if file is None:
            return -EBADF
        files = task.files
        if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
            if arg >= NR_OPEN:
                return -EINVAL
            new = files.install(file, lowest=arg)
            if new is None:
                return -EMFILE
            if cmd == F_DUPFD_CLOEXEC:
                files.close_on_exec.add(new)
            return new
        if cmd == F_GETFD:
            return FD_CLOEXEC if fd in files.close_on_exec else 0
        if cmd == F_SETFD:
            (files.close_on_exec.add if arg & FD_CLOEXEC else files.close_on_exec.discard)(fd)
            return 0
        if cmd == F_GETFL:
            return file.flags & ~O_CLOEXEC
        if cmd == F_SETFL:
            file.flags = (file.flags & ~(O_APPEND | O_NONBLOCK)) | (arg & (O_APPEND | O_NONBLOCK))
            return 0
        if cmd in (F_GETLK, F_SETLK, F_SETLKW, 12, 13, 14):
            return 0
        return -EINVAL
        yield

    def sys_ioctl(self, task, args):
        """Nothing here is a tty: ENOTTY (EBADF for a bad fd)."""
        if self.k.vfs.fget(task, args[0]) is None:
            return -EBADF
        return -ENOTTY
        yield

    # ---- read/write variants -----------------------------------------------

    def sys_llseek(self, task, args):
        """_llseek(fd, offset_high, offset_low, loff_t *result, whence)."""
        fd, hi, lo, result, whence = args[:5]
        file = self.k.vfs.fget(task, fd)
        if file is None:
            return -EBADF
        if file.inode.kind == 'chr' and file.inode.dev == 'console':
            return -ESPIPE
        offset = (hi << 32) | lo
        if offset & (1 << 63):
            offset -= 1 << 64
        base = {SEEK_SET: 0, SEEK_CUR: file.pos, SEEK_END: file.inode.size}.get(whence)
        if base is None or base + offset < 0:
            return -EINVAL
        pos = base + offset
        err = yield from self.put_user(task, result, struct.pack('<q', pos))
        if err:
            return err
        file.pos = pos
        if self.k.oracle is not None:
            self.k.oracle.seek(file, offset, whence)
        return 0

    def _positioned(self, task, fd, lo, hi, write):
        """A File at the given offset sharing fd's inode and flags (pread
        and pwrite leave f_pos alone), or -errno."""
        file = self.k.vfs.fget(task, fd)
        if file is None:
            return -EBADF
        if file.inode.kind != 'file':
            return -ESPIPE
        if not (file.writable if write else file.readable):
            return -EBADF
        pos = (hi << 32) | lo
        if pos & (1 << 63):
            return -EINVAL
        f = File(self.k, file.inode, file.flags)
        f.pos = pos
        if self.k.oracle is not None:
            self.k.oracle.positioned(f, pos)
        return f

    def sys_pread64(self, task, args):
        f = self._positioned(task, args[0], args[3], args[4], False)
        if isinstance(f, int):
            return f
        buf, count = args[1], args[2]
        if count >= 0x80000000:
            return -EINVAL
        if not count:
            return 0
        if buf + count > self.k.PAGE_OFFSET:
            return -EFAULT
        return (yield from self.k.filemap.generic_file_read(task, f, buf, count))

    def sys_pwrite64(self, task, args):
        f = self._positioned(task, args[0], args[3], args[4], True)
        if isinstance(f, int):
            return f
        buf, count = args[1], args[2]
        if count >= 0x80000000:
            return -EINVAL
        if not count:
            return 0
        if buf + count > self.k.PAGE_OFFSET:
            return -EFAULT
        return (yield from self.k.filemap.generic_file_write(task, f, [(buf, count)], count))

    def sys_readv(self, task, args):
        """readv(fd, iov, iovcnt): each segment read in turn; a short read
        ends it."""
        fd, iov_addr, iovcnt = args[0], args[1], args[2]
        if not 0 < iovcnt <= 512:
            return -EINVAL if iovcnt else 0
        raw = yield from self.sc.copy_from_user(task, iov_addr, 8 * iovcnt)
        if raw is None:
            return -EFAULT
        total = 0
        for base, n in struct.iter_unpack('<II', raw):
            if not n:
                continue
            r = yield from self.k.vfs.sys_read(task, fd, base, n)
            if r < 0:
                return total if total else r
            total += r
            if r < n:
                break
        return total

