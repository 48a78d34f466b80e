"""Files: a small extent file system on the disk, and the VFS fd layer.

Mirrors, in role, fs/open.c, fs/read_write.c, fs/file_table.c and
fs/buffer.c's get_block of a block file system (2.4/2.5), cut down to what
the thread's write and read paths need: a flat directory of files, each one
contiguous extent of the disk, one 4 KiB block per page.

Disk layout
  The disk is shared (vm/devices.py Disk, 4 KiB blocks).  The first time a
  file is created, the file system takes a region of FS_REGION_BYTES
  (128 MiB, or what is left of the disk) from the kernel's disk block
  allocator (alloc_boot_blocks, which program images and swap use too).
  Each file gets a contiguous extent of `max_size` bytes in it when it is
  created (FILE_MAX_SIZE = 4 MiB unless create_file says otherwise: 32
  default-size files fit).  An extent never moves or grows: a write past
  it is -EFBIG, a file that does not fit is -ENOSPC.  Block i of a file is
  disk block first_block + i.  Only blocks that were written hold data
  (inode.on_disk); the others are holes and read as zeros, so a new or
  truncated file never shows what its extent held before.

Objects
  Inode        name, i_size, extent, on_disk, mapping (filemap.AddressSpace,
               the page cache), i_sem.
  File         struct file: the inode, f_flags, f_pos.  It is what an fd
               and a file mmap refer to (VMA.file); its nopage() is
               filemap_nopage.
  FilesStruct  the fd table (files_struct).  fds 0, 1, 2 are the console
               (syscalls.py); files get 3 and up.  Tasks sharing an mm
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
from .task import Charge

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
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
ENOENT, EBADF, ENOMEM, EFAULT, EEXIST, EINVAL, EFBIG = 2, 9, 12, 14, 17, 22, 27
EMFILE, ETXTBSY, ENOSPC, ENAMETOOLONG = 24, 26, 28, 36
NAME_MAX = 255


class Inode:
    """struct inode of a file: its extent on the disk and its page cache."""

    def __init__(self, ino, name, first_block, max_blocks):
        self.ino = ino
        self.name = name
        self.size = 0                  # i_size
        self.first_block = first_block
        self.max_blocks = max_blocks   # the extent: max_size = max_blocks pages
        self.on_disk = set()           # block indexes whose data is on the disk
        self.mapping = None            # filemap.AddressSpace
        self.i_sem = None              # RWSemaphore, used in write mode only
        self.exec_image = None         # the ELF bytes shipped at boot (binfmt); a write drops it

    @property
    def max_size(self):
        return self.max_blocks * PAGE

    def block(self, index):
        """bmap(): the disk block of file block `index`."""
        if not 0 <= index < self.max_blocks:
            raise KernelBug(f'bmap: block {index} is outside the extent of {self.name}')
        return self.first_block + index

    def __repr__(self):
        return f'<inode {self.ino} {self.name} size {self.size}>'


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
    """files_struct: fd -> File, shared by the threads of a process."""

    def __init__(self):
        self.fds = {}
        self.users = 1

    def install(self, file):
        """get_unused_fd + fd_install: the lowest free fd, or None."""
        for fd in range(FIRST_FD, NR_OPEN):
            if fd not in self.fds:
                self.fds[fd] = file
                return fd
        return None


class Vfs:
    """The file system and fd layer of one kernel (k.vfs)."""

    def __init__(self, kernel):
        self.k = kernel
        self.inodes = {}               # name -> Inode
        self.region = None             # (first disk block, nblocks), taken at first create
        self.region_next = 0           # next free block of the region
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
        if self.region is None:
            first = k.alloc_boot_blocks(FS_REGION_BYTES // PAGE)
            self.region = (first, max(0, min(FS_REGION_BYTES // PAGE, k.disk.nblocks - first)))
        first, total = self.region
        if self.region_next + nblocks > total:
            return None
        block = first + self.region_next
        self.region_next += nblocks
        return block

    def _new_inode(self, name, max_size):
        """A new empty file: extent, inode, page cache, i_sem.  None if the
        disk region or lowmem is exhausted."""
        k = self.k
        nblocks = (max_size + PAGE - 1) // PAGE
        block = self._alloc_extent(nblocks)
        if block is None:
            return None
        inode = Inode(len(self.inodes) + 1, name, block, nblocks)
        inode.mapping = k.filemap.new_mapping(inode)
        if inode.mapping is None:
            return None
        inode.i_sem = RWSemaphore(k, f'i_sem({name})')
        self.inodes[name] = inode
        self._counters['fs_files'] += 1
        if k.oracle is not None:
            k.oracle.file_created(inode, b'')
        return inode

    def create_file(self, name, data=b'', max_size=None):
        """Boot time: a file holding `data`, written straight to the disk
        (the disk image a scenario ships).  ValueError on a bad request."""
        k = self.k
        name = name.lstrip('/')
        if not name or '/' in name or len(name) > NAME_MAX:
            raise ValueError(f'file name {name!r}: one path component of 1 to {NAME_MAX} characters')
        if name in self.inodes:
            raise ValueError(f'file {name!r} already exists')
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
        return self.inodes.get(name.lstrip('/'))

    # ---- fd tables ---------------------------------------------------------

    def files_init(self, task, share_with=None):
        """copy_files(): a new task's fd table, shared with `share_with` if
        it shares its mm (CLONE_VM implies CLONE_FILES here)."""
        if share_with is not None and share_with.files is not None:
            task.files = share_with.files
            task.files.users += 1
        else:
            task.files = FilesStruct()

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
                files.fds.clear()
        return
        yield

    # ---- system calls ----------------------------------------------------------

    def sys_open(self, task, path, flags, mode):
        """sys_open() -> filp_open -> open_namei (2.5).  Generator -> fd or -errno."""
        k = self.k
        yield Charge(k.costs['page_cache_lookup'])
        self._counters['fs_opens'] += 1
        name = path.lstrip('/')
        if len(name) > NAME_MAX:
            return -ENAMETOOLONG
        if not name or '/' in name:
            return -ENOENT
        if flags & O_ACCMODE == 3:
            return -EINVAL
        if task.files is None:
            self.files_init(task)
        inode = self.inodes.get(name)
        if inode is None:
            if not flags & O_CREAT:
                return -ENOENT
            inode = self._new_inode(name, FILE_MAX_SIZE)
            if inode is None:
                return -ENOSPC
        elif flags & O_CREAT and flags & O_EXCL:
            return -EEXIST
        file = File(k, inode, flags)
        if flags & O_TRUNC and file.writable:
            err = yield from self.do_truncate(task, inode)
            if err:
                return err
        fd = task.files.install(file)
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
        """sys_ftruncate() (fs/open.c): the file must be open for writing.
        Generator -> 0 or -errno."""
        file = self.fget(task, fd)
        if file is None or not file.writable:
            return -EBADF if file is None else -EINVAL
        if length & 0x80000000:
            return -EINVAL
        if length > file.inode.max_size:
            return -EFBIG
        return (yield from self.do_truncate(task, file.inode, length))

    def sys_close(self, task, fd):
        files = task.files
        if files is None or files.fds.pop(fd, None) is None:
            return -EBADF
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
        self._counters['fs_writes'] += 1
        if not all(self._access_ok(b, n) for b, n in iov):
            self._counters['fs_efaults'] += 1
            return -EFAULT
        return (yield from self.k.filemap.generic_file_write(task, file, iov, count))

    def sys_lseek(self, task, fd, offset, whence):
        """sys_lseek() (generic_file_llseek).  Generator -> new f_pos or -errno."""
        file = self.fget(task, fd)
        if file is None:
            return -EBADF
        self._counters['fs_lseeks'] += 1
        offset = offset - (1 << 32) if offset & 0x80000000 else offset
        base = {SEEK_SET: 0, SEEK_CUR: file.pos, SEEK_END: file.inode.size}.get(whence)
        if base is None or base + offset < 0 or base + offset >= 0x80000000:
            return -EINVAL
        file.pos = base + offset
        return file.pos
        yield

    def mmap_file(self, task, fd):
        """The File behind `fd` for do_mmap (VMA.file), or None (EBADF)."""
        file = self.fget(task, fd)
        if file is None or not file.readable:
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
