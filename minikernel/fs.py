"""Files: a small extent file system on the disk, and the VFS fd layer.

Mirrors, in role, fs/open.c, fs/read_write.c, fs/file_table.c and
fs/buffer.c's get_block of a block file system (2.4/2.5), cut down to what
the thread's write and read paths and real programs need: a tree of
directories under / (Dir, with . and .. in getdents64), regular files made
of extents of the disk (one 4 KiB block per page), and the character
devices /dev/null, /dev/zero and /dev/console (CharDev).  Paths resolve
from / (every task's cwd); there are no symbolic links.  The file system
calls beyond open/read/write/lseek/close are in fs_calls.py.

Disk layout
  The disk is shared (vm/devices.py Disk, 4 KiB blocks).  The first time a
  file is created, the file system takes a region of FS_REGION_BYTES
  (128 MiB, or what is left of the disk) from the kernel's disk block
  allocator (alloc_boot_blocks, which program images and swap use too).
  Each file gets a contiguous extent of `max_size` bytes in it when it is
  created (FILE_MAX_SIZE = 4 MiB unless create_file says otherwise; a
  file open(O_CREAT) makes gets boot option fs_extent, default 4 MiB: 32
  such files fit).  An extent never moves; a file that grows past its
  extents gets another extent of FILE_MAX_SIZE (of fs_extent for an
  O_CREAT file; Inode.get_block, called by generic_file_write before each
  page), -ENOSPC when the region is full.  When an unlinked file's last
  reference goes (delete_inode), its extents return to the region, reused
  by the next extent of the same size.
  Block i of a file is found by walking its extents (bmap).  Only blocks that were written hold data
  (inode.on_disk); the others are holes and read as zeros, so a new or
  truncated file never shows what its extent held before.

Objects
  Inode        name, i_size, extent, on_disk, mapping (filemap.AddressSpace,
               the page cache), i_sem.
  File         struct file: the inode, f_flags, f_pos.  It is what an fd
               and a file mmap refer to (VMA.file); its nopage() is
               filemap_nopage.
  FilesStruct  the fd table (files_struct).  fds 0, 1, 2 of a new process
               are File objects of /dev/console (dup2 can replace them);
               new fds take the lowest free number.  Tasks sharing an mm
               (threads, CLONE_VM) share it too (CLONE_FILES).

Locks and rules
  - inode.i_sem: 2.4/2.5 generic_file_write holds the inode semaphore, a
    sleeping lock, across the whole write; truncate takes it too.  It is a
    locking.RWSemaphore used only in write mode (a mutex whose holder the
    deadlock detector can show).
  - f_pos is not locked (as in 2.5: threads sharing a File race on it).
  - The directory and the fd tables change only inside one Python step.
  - Truncation (O_TRUNC, ftruncate) holds i_sem, so it never runs inside
    a write() of the same file; shrinking a file is vmtruncate: every PTE
    mapping a page past the new end goes (memory.unmap_file_range, with the
    TLB flushes), then the pages leave the page cache.
  - The data oracle (k.oracle) hears of every file creation and truncation.

End of run (finish)
  The oracle checks the files as the workload left them.  Then, if the
  workload completed and SYNC_AT_EXIT is set, a `sync` kernel thread writes
  every dirty page back through writepage (the machine runs again, so the
  run's cycle count includes that I/O: about disk_latency per dirty page)
  and the oracle checks the disk alone.
"""
from .bug import KernelBug
from .layout import PAGE_OFFSET, PAGE_SIZE
from .locking import RWSemaphore
from .task import Charge, Guest

MiB = 1 << 20
PAGE = PAGE_SIZE
FS_REGION_BYTES = 128 * MiB
FILE_MAX_SIZE = 4 * MiB
NR_OPEN = 256                 # fds per table (2.4 NR_OPEN_DEFAULT is 1024; plenty here)
FIRST_FD = 3
SYNC_AT_EXIT = True          # write dirty pages back at the end of a completed run
SYNC_AT_EXIT_MAX_CYCLES = 10_000_000_000

O_ACCMODE, O_RDONLY, O_WRONLY, O_RDWR = 3, 0, 1, 2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_DIRECTORY, O_CLOEXEC = 0o200000, 0o2000000
PATH_MAX = 4096
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
ENOENT, EBADF, ENOMEM, EFAULT, EEXIST, EINVAL, EFBIG = 2, 9, 12, 14, 17, 22, 27
EMFILE, ETXTBSY, ENOSPC, ENAMETOOLONG = 24, 26, 28, 36
NAME_MAX = 255
MAX_FILE_BYTES = 0x7FFFFFFF  # MAX_NON_LFS: a file grows by FILE_MAX_SIZE extents up to this
S_IFMT, S_IFREG, S_IFDIR, S_IFCHR = 0o170000, 0o100000, 0o040000, 0o020000
ENOTDIR, EISDIR, ENOTEMPTY, EBUSY, EXDEV, ESPIPE = 20, 21, 39, 16, 18, 29
DEV_INO_BASE = 1 << 20       # inode numbers of directories and devices (files count from 1)


class Inode:
    """struct inode of a regular file: its extents on the disk and its page
    cache.  The first extent is `max_blocks` pages (the preallocation the
    file was created with); a file that grows past it gets more extents of
    FILE_MAX_SIZE from the region (get_block with create), up to
    MAX_FILE_BYTES."""

    kind = 'file'

    def __init__(self, ino, name, first_block, max_blocks):
        self.ino = ino
        self.name = name
        self.size = 0                  # i_size
        self.first_block = first_block
        self.max_blocks = max_blocks   # the first extent: max_blocks pages
        self.extents = [(first_block, max_blocks)]
        self.grow = None               # fn(nblocks) -> first block or None: more extents
        self.grow_blocks = FILE_MAX_SIZE // PAGE    # the size of the extents it grows by
        self.on_disk = set()           # block indexes whose data is on the disk
        self.mapping = None            # filemap.AddressSpace
        self.i_sem = None              # RWSemaphore, used in write mode only
        self.exec_image = None         # the ELF bytes shipped at boot (binfmt); a write drops it
        self.mode = S_IFREG | 0o644
        self.nlink = 1
        self.mtime = 0

    @property
    def max_size(self):
        """The largest size the file may reach (EFBIG past it)."""
        return MAX_FILE_BYTES

    def nblocks(self):
        return sum(n for _, n in self.extents)

    def get_block(self, index):
        """get_block(create=1): make sure file block `index` has a disk
        block, adding extents as needed.  False if the disk is full."""
        while index >= self.nblocks():
            first = self.grow(self.grow_blocks) if self.grow is not None else None
            if first is None:
                return False
            self.extents.append((first, self.grow_blocks))
        return True

    def block(self, index):
        """bmap(): the disk block of file block `index`."""
        i = index
        for first, n in self.extents:
            if 0 <= i < n:
                return first + i
            i -= n
        raise KernelBug(f'bmap: block {index} is outside the extents of {self.name}')

    def __repr__(self):
        return f'<inode {self.ino} {self.name} size {self.size}>'


class Dir:
    """A directory inode: name -> child (Inode, Dir or CharDev), in
    creation order (getdents64 lists . and .. first, then that order)."""

    kind = 'dir'

    def __init__(self, ino, name, parent=None):
        self.ino, self.name = ino, name
        self.parent = parent if parent is not None else self
        self.children = {}
        self.mode = S_IFDIR | 0o755
        self.mtime = 0
        self.size = 4096

    @property
    def nlink(self):
        return 2 + sum(1 for c in self.children.values() if c.kind == 'dir')

    def __repr__(self):
        return f'<dir {self.ino} /{self.name}>'


class CharDev:
    """A character device node: /dev/null, /dev/zero, /dev/console
    (drivers/char/mem.c, the console tty).  Reads and writes are the
    syscall layer's (minikernel/fs_calls.py)."""

    kind = 'chr'
    RDEV = {'null': (1, 3), 'zero': (1, 5), 'console': (5, 1)}

    def __init__(self, ino, name, dev):
        self.ino, self.name, self.dev = ino, name, dev
        self.mode = S_IFCHR | 0o666
        self.nlink = 1
        self.size = 0
        self.mtime = 0

    @property
    def rdev(self):
        major, minor = self.RDEV[self.dev]
        return (major << 8) | minor

    def __repr__(self):
        return f'<chrdev /{self.name}>'


class File:
    """struct file."""

    def __init__(self, kernel, inode, flags):
        self.k = kernel
        self.inode = inode
        self.flags = flags
        self.pos = 0

    @property
    def name(self):
        return self.inode.name

    @property
    def mapping(self):
        return self.inode.mapping

    @property
    def readable(self):
        return self.flags & O_ACCMODE in (O_RDONLY, O_RDWR)

    @property
    def writable(self):
        return self.flags & O_ACCMODE in (O_WRONLY, O_RDWR)

    @property
    def append(self):
        return bool(self.flags & O_APPEND)

    def nopage(self, task, vma, pgoff):
        """vm_ops->nopage of a file mapping: filemap_nopage.  Generator."""
        return (yield from self.k.filemap.filemap_nopage(task, vma, pgoff))

    def __repr__(self):
        return f'<file {self.name} pos {self.pos}>'


class FilesStruct:
    """files_struct: fd -> File, shared by the threads of a process;
    close_on_exec: the fds with FD_CLOEXEC."""

    def __init__(self):
        self.fds = {}
        self.close_on_exec = set()
        self.users = 1

    def install(self, file, lowest=0):
        """get_unused_fd + fd_install: the lowest free fd >= `lowest`, or None."""
        for fd in range(lowest, NR_OPEN):
            if fd not in self.fds:
                self.fds[fd] = file
                self.close_on_exec.discard(fd)
                if hasattr(file, 'get_file'):     # a reference-counted file (a pipe end)
                    file.get_file()
                return fd
        return None


class Vfs:
    """The file system and fd layer of one kernel (k.vfs)."""

    def __init__(self, kernel):
        self.k = kernel
        self.inodes = {}               # path (no leading /) -> Inode, regular files
        self._next_ino = DEV_INO_BASE
        self.root = Dir(self._ino(), '')
        self.dirs = {'': self.root}    # path -> Dir
        for d in ('dev',):
            self._mkdir_boot(d)
        for dev in ('null', 'zero', 'console'):
            node = CharDev(self._ino(), f'dev/{dev}', dev)
            self.dirs['dev'].children[dev] = node
        self.console = self.dirs['dev'].children['console']
        self.region = None             # (first disk block, nblocks), taken at first create
        self.region_next = 0           # next free block of the region
        self.free_extents = {}         # nblocks -> [first block]: extents of deleted files
        self._counters = dict(fs_files=0, fs_opens=0, fs_reads=0, fs_writes=0, fs_lseeks=0,
                              fs_truncates=0, fs_efaults=0, fs_sync_at_exit_pages=0)

    def counters(self):
        """fs, page cache and data oracle counters, one flat map."""
        c = dict(self._counters)
        c.update(self.k.filemap.counters)
        if self.k.oracle is not None:
            c.update(self.k.oracle.counters)
        return c

    # ---- files on the disk -------------------------------------------------

    def _alloc_extent(self, nblocks):
        """The first block of a new extent of `nblocks`, or None (ENOSPC).
        The region is taken at the first call: FS_REGION_BYTES, or what is
        left of the disk if that is less."""
        k = self.k
        free = self.free_extents.get(nblocks)
        if free:
            return free.pop()
        if self.region is None:
            first = k.alloc_boot_blocks(FS_REGION_BYTES // PAGE)
            self.region = (first, max(0, min(FS_REGION_BYTES // PAGE, k.disk.nblocks - first)))
        first, total = self.region
        if self.region_next + nblocks > total:
            return None
        block = first + self.region_next
        self.region_next += nblocks
        return block

    def _ino(self):
        self._next_ino += 1
        return self._next_ino

    def _grow_extent(self, nblocks):
        block = self._alloc_extent(nblocks)
        if block is not None:            # (a counter only once it happens: recorded runs keep theirs)
            self._counters['fs_extents_added'] = self._counters.get('fs_extents_added', 0) + 1
        return block

    # ---- the namespace: paths, directories -----------------------------------

    @staticmethod
    def normalize(path):
        """A path as the key of the namespace ('a/b', '' for /), resolving
        '.', '..' and repeated slashes from / (every task's cwd is /).
        None if a component is longer than NAME_MAX."""
        parts = []
        for c in path.split('/'):
            if c in ('', '.'):
                continue
            if c == '..':
                if parts:
                    parts.pop()
                continue
            if len(c) > NAME_MAX:
                return None
            parts.append(c)
        return '/'.join(parts)

    def lookup_path(self, key):
        """The object (Inode, Dir, CharDev) at normalized `key`, or None."""
        if key in self.dirs:
            return self.dirs[key]
        parent, _, name = key.rpartition('/')
        d = self.dirs.get(parent)
        return d.children.get(name) if d is not None else None

    def parent_of(self, key):
        """(parent Dir, name) for creating `key`, or -errno (ENOENT: no
        parent; ENOTDIR: the parent is not a directory)."""
        parent, _, name = key.rpartition('/')
        d = self.dirs.get(parent)
        if d is None:
            return -ENOTDIR if self.lookup_path(parent) is not None else -ENOENT
        return d, name

    def _mkdir_boot(self, key):
        """mkdir -p at boot."""
        parts = key.split('/')
        for i in range(1, len(parts) + 1):
            sub = '/'.join(parts[:i])
            if sub in self.dirs:
                continue
            parent = self.dirs['/'.join(parts[:i - 1])]
            if parts[i - 1] in parent.children:
                raise ValueError(f'/{sub} exists and is not a directory')
            d = Dir(self._ino(), sub, parent)
            parent.children[parts[i - 1]] = d
            self.dirs[sub] = d

    def _new_inode(self, name, max_size):
        """A new empty file: extent, inode, page cache, i_sem, its entry in
        its directory (which must exist).  None if the disk region or
        lowmem is exhausted."""
        k = self.k
        nblocks = (max_size + PAGE - 1) // PAGE
        block = self._alloc_extent(nblocks)
        if block is None:
            return None
        inode = Inode(len(self.inodes) + 1, name, block, nblocks)
        inode.grow = self._grow_extent
        inode.mtime = k.machine.now()
        inode.mapping = k.filemap.new_mapping(inode)
        if inode.mapping is None:
            return None
        inode.i_sem = RWSemaphore(k, f'i_sem({name})')
        self.inodes[name] = inode
        parent, _, base = name.rpartition('/')
        self.dirs[parent].children[base] = inode
        self._counters['fs_files'] += 1
        if k.oracle is not None:
            k.oracle.file_created(inode, b'')
        return inode

    def create_file(self, name, data=b'', max_size=None):
        """Boot time: a file holding `data`, written straight to the disk
        (the disk image a scenario ships).  ValueError on a bad request."""
        k = self.k
        key = self.normalize(name)
        if not key or key != name.strip('/'):
            raise ValueError(f'file name {name!r}: a path of components of 1 to {NAME_MAX} '
                             f'characters, without . or ..')
        name = key
        if self.lookup_path(name) is not None:
            raise ValueError(f'file {name!r} already exists')
        if '/' in name:
            self._mkdir_boot(name.rpartition('/')[0])
        max_size = FILE_MAX_SIZE if max_size is None else max_size
        if len(data) > max_size or max_size <= 0:
            raise ValueError(f'file {name!r}: {len(data)} bytes of data, max_size {max_size}')
        inode = self._new_inode(name, max_size)
        if inode is None:
            raise ValueError(f'file {name!r}: no room on the disk for a {max_size}-byte extent')
        k.disk.load(inode.first_block, bytes(data))
        if bytes(data[:4]) == b'\x7fELF':
            inode.exec_image = bytes(data)              # what exec parses (binfmt.py)
        inode.on_disk.update(range((len(data) + PAGE - 1) // PAGE))
        inode.size = len(data)
        if k.oracle is not None:
            k.oracle.file_created(inode, data)
        return inode

    def lookup(self, name):
        """The regular file at path `name`, or None."""
        key = self.normalize(name)
        return self.inodes.get(key) if key is not None else None

    # ---- fd tables ---------------------------------------------------------

    def files_init(self, task, share_with=None):
        """copy_files(): a new task's fd table, shared with `share_with` if
        it shares its mm (CLONE_VM implies CLONE_FILES here)."""
        if share_with is not None and share_with.files is not None:
            task.files = share_with.files
            task.files.users += 1
        else:
            task.files = FilesStruct()
            for fd in (0, 1, 2):                 # stdin, stdout, stderr: the console
                task.files.fds[fd] = File(self.k, self.console, O_RDWR)

    def copy_files(self, task, parent):
        """copy_files() without CLONE_FILES (fork): a new table holding the
        same struct files, one more reference each."""
        task.files = FilesStruct()
        if parent.files is not None:
            task.files.close_on_exec = set(parent.files.close_on_exec)
            for fd, f in parent.files.fds.items():
                task.files.fds[fd] = f
                if hasattr(f, 'get_file'):
                    f.get_file()

    def fget(self, task, fd):
        files = task.files
        return files.fds.get(fd) if files is not None else None

    def files_exit(self, task):
        """exit_files(): drop the task's fd table; the last user closes
        every file.  Generator (never sleeps)."""
        files, task.files = task.files, None
        if files is not None:
            files.users -= 1
            if files.users == 0:
                for f in files.fds.values():
                    if hasattr(f, 'fput'):
                        f.fput()
                files.fds.clear()
        return
        yield

    # ---- system calls ----------------------------------------------------------

    def sys_open(self, task, path, flags, mode):
        """sys_open() -> filp_open -> open_namei (2.5), paths from / (the
        cwd of every task).  Generator -> fd or -errno: ENOENT (missing, or
        a missing parent), ENOTDIR, EISDIR (a directory opened for
        writing), EEXIST (O_CREAT|O_EXCL), ENOSPC, EMFILE."""
        k = self.k
        yield Charge(k.costs['page_cache_lookup'])
        self._counters['fs_opens'] += 1
        if len(path) > PATH_MAX:
            return -ENAMETOOLONG
        name = self.normalize(path)
        if name is None:
            return -ENAMETOOLONG
        if not path:
            return -ENOENT
        if flags & O_ACCMODE == 3:
            return -EINVAL
        if task.files is None:
            self.files_init(task)
        node = self.lookup_path(name)
        if node is None:
            if not flags & O_CREAT:
                return -ENOENT
            where = self.parent_of(name)
            if isinstance(where, int):
                return where
            node = self._new_inode(name, k.config['fs_extent'])
            if node is None:
                return -ENOSPC
            node.grow_blocks = node.max_blocks
        elif flags & O_CREAT and flags & O_EXCL:
            return -EEXIST
        if node.kind == 'dir' and (flags & O_ACCMODE != O_RDONLY or flags & O_CREAT):
            return -EISDIR
        if node.kind != 'dir' and flags & O_DIRECTORY:
            return -ENOTDIR
        file = File(k, node, flags)
        if flags & O_TRUNC and file.writable and node.kind == 'file':
            err = yield from self.do_truncate(task, node)
            if err:
                return err
        fd = task.files.install(file)
        if fd is not None and flags & O_CLOEXEC:
            task.files.close_on_exec.add(fd)
        return -EMFILE if fd is None else fd

    def do_truncate(self, task, inode, length=0):
        """do_truncate() -> notify_change -> vmtruncate (2.4.18), i_sem held
        throughout: growing only moves i_size (the new part is a hole);
        shrinking sets i_size first (a racing fault past it gets SIGBUS),
        unmaps every PTE that maps a page past the new end, zeroes the tail
        of a partial last page, drops the pages past the end from the page
        cache and their blocks from the file.  Generator -> 0; may sleep."""
        k = self.k
        yield from inode.i_sem.down_write(task)
        inode.exec_image = None
        old, inode.size = inode.size, length
        if length < old:
            first = (length + PAGE - 1) // PAGE           # the first page wholly past the end
            yield from k.mm.unmap_file_range(task, inode, first)
            if length % PAGE:
                yield from self._truncate_partial_page(task, inode, length)
            yield from k.filemap.truncate_inode_pages(task, inode.mapping, first)
            inode.on_disk.difference_update([i for i in inode.on_disk if i >= first])
        inode.i_sem.up_write(task)
        self._counters['fs_truncates'] += 1
        if k.oracle is not None:
            k.oracle.file_truncated(inode, length)
        return 0

    def delete_inode(self, task, inode):
        """iput() of an unlinked inode's last reference (ext2_delete_inode):
        truncate it to nothing, then give its extents back to the region
        (free_extents, reused by size).  Nothing is in flight on them: the
        truncate waited on every locked page, and a page under writeback is
        locked.  Generator; may sleep."""
        yield from self.do_truncate(task, inode, 0)
        for first, n in inode.extents:
            self.free_extents.setdefault(n, []).append(first)
        inode.extents = []
        self._counters['fs_extents_freed'] = self._counters.get('fs_extents_freed', 0) + 1

    def _truncate_partial_page(self, task, inode, length):
        """block_truncate_page(): zero the last page from the new end on
        (read from the disk first if it is not cached), so the bytes past
        the end never come back if the file grows again.  Generator."""
        fm, index = self.k.filemap, length // PAGE
        if inode.mapping.pages.get(index) is None and index not in inode.on_disk:
            return                                          # a hole: zeros already
        pfn = yield from fm.grab_cache_page(task, inode.mapping, index)
        if pfn is None:
            return
        if not fm.PageUptodate(pfn) and not (yield from fm._read_block(task, inode, index, pfn)):
            fm.SetPageUptodate(pfn)
        if fm.PageUptodate(pfn):
            yield from fm._zero_segments(task, pfn, [(length % PAGE, PAGE)])
            fm.set_page_dirty(pfn)
        fm.unlock_page(task, pfn)
        fm.page_cache_release(pfn)

    def sys_ftruncate(self, task, fd, length):
        """sys_ftruncate() (fs/open.c do_sys_ftruncate, 2.6): a regular file
        open for writing (-EINVAL for a device or directory, as !S_ISREG).
        Generator -> 0 or -errno."""
        file = self.fget(task, fd)
        if file is None or not file.writable or file.inode.kind != 'file':
            return -EBADF if file is None else -EINVAL
        if length & 0x80000000:
            return -EINVAL
        if length > file.inode.max_size:
            return -EFBIG
        return (yield from self.do_truncate(task, file.inode, length))

    def sys_close(self, task, fd):
        """close(): the fd goes; a file with references (a pipe end) drops one."""
        files = task.files
        f = files.fds.pop(fd, None) if files is not None else None
        if f is None:
            return -EBADF
        files.close_on_exec.discard(fd)
        if hasattr(f, 'fput'):
            f.fput()
        return 0
        yield

    def _access_ok(self, buf, count):
        return buf + count <= PAGE_OFFSET

    def sys_read(self, task, fd, buf, count):
        """sys_read() -> generic_file_read (2.5.34).  Generator."""
        file = self.fget(task, fd)
        if file is None or not file.readable:
            return -EBADF
        if count >= 0x80000000:
            return -EINVAL
        if count == 0:
            return 0
        if file.inode.kind != 'file':
            if not self._access_ok(buf, count):
                return -EFAULT
            return (yield from self.special_read(task, file, buf, count))
        self._counters['fs_reads'] += 1
        if not self._access_ok(buf, count):
            self._counters['fs_efaults'] += 1
            return -EFAULT
        return (yield from self.k.filemap.generic_file_read(task, file, buf, count))

    def sys_write(self, task, fd, buf, count):
        """sys_write() -> generic_file_write (2.5.34).  Generator."""
        file = self.fget(task, fd)
        if file is None or not file.writable:
            return -EBADF
        if count >= 0x80000000:
            return -EINVAL
        if count == 0:
            return 0
        if file.inode.kind != 'file':                  # devices: not counted as file I/O
            if not self._access_ok(buf, count):
                return -EFAULT
            return (yield from self.special_write(task, file, [(buf, count)]))
        self._counters['fs_writes'] += 1
        if not self._access_ok(buf, count):
            self._counters['fs_efaults'] += 1
            return -EFAULT
        return (yield from self.k.filemap.generic_file_write(task, file, [(buf, count)], count))

    def sys_writev(self, task, fd, iov):
        """sys_writev() -> generic_file_writev (2.5.34): `iov` is the
        already-copied-in iovec [(base, len)].  Generator."""
        file = self.fget(task, fd)
        if file is None or not file.writable:
            return -EBADF
        count = sum(n for _, n in iov)
        if count >= 0x80000000:
            return -EINVAL
        if count == 0:
            return 0
        if file.inode.kind != 'file':
            if not all(self._access_ok(b, n) for b, n in iov):
                return -EFAULT
            return (yield from self.special_write(task, file, iov))
        self._counters['fs_writes'] += 1
        if not all(self._access_ok(b, n) for b, n in iov):
            self._counters['fs_efaults'] += 1
            return -EFAULT
        return (yield from self.k.filemap.generic_file_write(task, file, iov, count))

    # ---- devices and directories under read/write ------------------------------

    def special_read(self, task, file, buf, count):
        """read() of a device or a directory: /dev/null and the console give
        EOF (no input device), /dev/zero zeros (guest clear_user),
        a directory EISDIR.  Generator."""
        node = file.inode
        if node.kind == 'dir':
            return -EISDIR
        if node.dev == 'zero':
            left = yield Guest('clear_user', buf, count)
            return count - left if count - left else -EFAULT
        return 0

    def special_write(self, task, file, iov):
        """write() to a device: /dev/null and /dev/zero swallow it (without
        reading the buffer, as write_null); the console copies it in a page
        at a time (guest copy_from_user) and appends it to the task's
        output.  Generator -> bytes or -errno."""
        node = file.inode
        if node.kind == 'dir':
            return -EISDIR
        if node.dev != 'console':
            return sum(n for _, n in iov)
        sc, total = self.k.syscalls, 0
        for base, n in iov:
            done = 0
            while done < n:
                step = min(PAGE, n - done)
                data = yield from sc.copy_from_user(task, base + done, step)
                if data is None:
                    total += done
                    return total if total else -EFAULT
                self.k.console_write(task, data)
                done += step
            total += n
        return total

    def sys_lseek(self, task, fd, offset, whence):
        """sys_lseek() (generic_file_llseek).  Generator -> new f_pos or -errno."""
        file = self.fget(task, fd)
        if file is None:
            return -EBADF
        if file.inode.kind == 'chr' and file.inode.dev == 'console':
            return -ESPIPE
        self._counters['fs_lseeks'] += 1
        offset = offset - (1 << 32) if offset & 0x80000000 else offset
        base = {SEEK_SET: 0, SEEK_CUR: file.pos, SEEK_END: file.inode.size}.get(whence)
        if base is None or base + offset < 0 or base + offset >= 0x80000000:
            return -EINVAL
        file.pos = base + offset
        if self.k.oracle is not None:
            self.k.oracle.seek(file, offset, whence)
        return file.pos
        yield

    def mmap_file(self, task, fd):
        """The File behind `fd` for do_mmap (VMA.file), or None (EBADF)."""
        file = self.fget(task, fd)
        if file is None or not file.readable or file.inode.kind != 'file':
            return None
        return file

    # ---- reclaim's hooks (mm/vmscan.c calls them through k.vfs) --------------------

    def writepage_for_reclaim(self, task, pfn):
        return (yield from self.k.filemap.writepage_for_reclaim(task, pfn))

    def remove_from_page_cache(self, pfn):
        self.k.filemap.remove_from_page_cache(pfn)

    # ---- end of run --------------------------------------------------------------

    def finish(self):
        """Kernel.finish(): the data oracle on the state the workload left;
        then, if the workload completed, write every dirty page back with a
        `sync` kernel thread (the real writepage path, disk DMA) and check
        the disk alone against the shadow."""
        k = self.k
        oracle = k.oracle
        bad = oracle.check_all() if oracle is not None else 0
        if not SYNC_AT_EXIT or not k.finished() or not k.filemap.dirty_pages():
            return
        written = self.sync_at_exit()
        self._counters['fs_sync_at_exit_pages'] += written
        if oracle is not None and not bad:
            oracle.check_files(disk_only=True)

    def sync_at_exit(self):
        """Run a `sync` kernel thread (sync_inodes) to completion: the
        machine runs again until it exits.  Returns pages written."""
        k = self.k
        result = {}

        def body(task):
            result['written'] = yield from k.filemap.sync_inodes(task)
            return 0
        k.kernel_thread('sync', 0, body)
        end = k.run(k.machine.now() + SYNC_AT_EXIT_MAX_CYCLES)
        if end != 'finished':
            k.report('warning', f'sync at exit did not complete ({end})')
        return result.get('written', 0)
