"""The data oracle: a shadow model of every file's bytes, and of anonymous
pages across swap, compared with what the machine really holds.

It is a checker, not part of the kernel it checks: it READS guest RAM (page
cache pages, user pages through the task's page tables) and the disk's
backing store from Python, and never writes either.

The model
  - A file's expected bytes (shadow) start as the data it was created with.
    Each write() that returns n > 0 puts, at the position the write started
    (chosen under i_sem), the first n bytes the user buffer held WHEN THE
    SYSCALL WAS ENTERED: generic_file_write snapshots the buffer at entry
    (write_begin) and reports the result in the same Python step as its
    up(i_sem) (write_end), so the shadow sees writes in i_sem order.
  - Positions and sizes are the oracle's own: it keeps each open file's
    offset (a File starts at 0; read() moves it by what it returned,
    lseek by its arguments against the model's offset and size, write()
    by what it wrote; pread/pwrite take the offset of their arguments) and
    each file's size (the shadow's length; O_APPEND writes at it), and
    never reads the kernel's f_pos or i_size for them.  A write the kernel
    places elsewhere than the model says is reported (a corruption), and
    its bytes go where the model says, so the file check shows them too.
  - A write still in flight when the files are checked (a deadlocked run)
    may have changed some of its bytes: each byte it covers may hold the old
    or the new value.
  - Stores through a shared writable mapping change a file without a
    write(): the pages filemap_nopage hands to such a mapping are no longer
    checked (counted in oracle_pages_unchecked).
  - Anonymous pages: swap.py calls anon_swapped_out(entry, pfn) when it
    writes a page to its slot (a digest of the page then) and
    anon_swapped_in(entry, pfn) when a read of the slot completed.

Where the actual bytes come from (file_page)
  An uptodate page cache page (RAM); else the file's block on the disk; a
  hole reads as zeros.  check_files(disk_only=True) ignores the cache (used
  after writeback, to check what reached the disk).

Reports: each mismatch is k.report('corruption', ...) with the file, the
offset, 16 expected and actual bytes from the first difference, and where
the actual bytes are (pfn and physical address, or disk block); at most
MAX_REPORTS_PER_FILE per file, then one line with the count.
"""
import hashlib

from vm import x86

from .layout import PAGE_OFFSET, PAGE_SIZE

PAGE = PAGE_SIZE
MAX_REPORTS_PER_FILE = 3
ZERO_PAGE = bytes(PAGE)


class WriteRecord:
    """One write() between its entry and its return."""
    __slots__ = ('task', 'file', 'inode', 'data', 'pos')

    def __init__(self, task, file, data):
        self.task, self.file, self.inode, self.data, self.pos = task, file, file.inode, data, None


class Oracle:
    def __init__(self, kernel):
        self.k = kernel
        self.shadow = {}           # Inode -> bytearray: the expected contents (but appends)
        self.appends = {}          # Inode -> [chunks, bytes]: writes at the shadow's end, joined
                                   # into it once when it is read (_shadow): no regrowth per write
        self.unchecked = {}        # Inode -> set of page indexes user stores may change
        self.inflight = []         # WriteRecords of writes not returned yet
        self.anon = {}             # swap entry -> digest of the page written to it
        self.fpos = {}             # File -> its offset in the oracle's model (absent: 0)
        self.counters = dict(oracle_writes=0, oracle_bytes=0, oracle_file_checks=0,
                             oracle_pages_checked=0, oracle_pages_unchecked=0,
                             oracle_mismatches=0, oracle_misplaced_writes=0, oracle_anon_swapouts=0,
                             oracle_anon_swapins=0, oracle_anon_mismatches=0)

    # ---- the model ---------------------------------------------------------

    def file_created(self, inode, data):
        self.appends.pop(inode, None)
        self.shadow[inode] = bytearray(data)
        self.unchecked.pop(inode, None)

    def file_truncated(self, inode, length=0):
        """The file is now `length` bytes: cut, or grown with zeros."""
        old = self._shadow(inode) or bytearray()
        keep = {i for i in self.unchecked.get(inode, ()) if i * PAGE < length}
        self.file_created(inode, bytes(old[:length]).ljust(length, b'\0'))
        if keep:
            self.unchecked[inode] = keep

    def shared_writable(self, inode, index):
        """A page of `inode` is now mapped shared and writable: user stores
        may change it behind write()'s back."""
        self.unchecked.setdefault(inode, set()).add(index)

    # ---- positions (the model's own) -------------------------------------------

    def size(self, inode):
        """The file's size in the model."""
        tail = self.appends.get(inode)
        return len(self.shadow.get(inode, b'')) + (tail[1] if tail is not None else 0)

    def _shadow(self, inode):
        """The file's expected bytes with its pending appends joined in
        (None: no model of the file)."""
        shadow = self.shadow.get(inode)
        tail = self.appends.pop(inode, None)
        if tail is not None:
            if shadow:
                shadow += b''.join(tail[0])
            else:                                # one copy, not a join and a copy
                shadow = self.shadow[inode] = bytearray().join(tail[0])
        return shadow

    def positioned(self, file, pos):
        """pread/pwrite: a File at `pos`, the syscall's own argument."""
        self.fpos[file] = pos

    def read_done(self, file, n):
        """read() on `file` returned n (> 0: the offset moves by n)."""
        if n > 0:
            self.fpos[file] = self.fpos.get(file, 0) + n

    def seek(self, file, offset, whence):
        """lseek(file, offset, whence) succeeded: SEEK_SET 0, SEEK_CUR 1,
        SEEK_END 2, against the model's offset and size."""
        base = {0: 0, 1: self.fpos.get(file, 0), 2: self.size(file.inode)}[whence]
        self.fpos[file] = base + offset

    def write_begin(self, task, file, iov, count):
        """At write()/writev() entry: snapshot the user buffers [(base, len)]
        (as much as the file's extent could take)."""
        if len(iov) == 1:
            data = self.read_user(task, iov[0][0], iov[0][1])
        else:
            data = b''.join([self.read_user(task, base, n) for base, n in iov])
        limit = min(count, file.inode.max_size)
        rec = WriteRecord(task, file, data if len(data) <= limit else data[:limit])
        self.inflight.append(rec)
        return rec

    def write_at(self, rec, kernel_pos):
        """The write took i_sem and starts at `kernel_pos` (the kernel's
        choice): the model's position is the file's offset, or its size for
        O_APPEND, taken in the same i_sem order.  A difference is reported;
        the model's position is kept."""
        f = rec.file
        rec.pos = self.size(rec.inode) if f.append else self.fpos.get(f, 0)
        if rec.pos != kernel_pos:
            self.counters['oracle_misplaced_writes'] += 1
            self.k.report('corruption', f'data oracle: write() to {rec.inode.name} by '
                                        f'{rec.task.name}/{rec.task.pid} starts at offset '
                                        f'{kernel_pos:#x}, the file\'s model says {rec.pos:#x}',
                          file=rec.inode.name, offset=kernel_pos, expected_offset=rec.pos)

    def write_end(self, rec, n):
        """write() returns n: the first n snapshot bytes are at rec.pos, and
        the file's offset is after them."""
        self.inflight.remove(rec)
        if rec.pos is None:
            return
        if n <= 0:
            if not rec.file.append:
                self.fpos[rec.file] = rec.pos
            return
        self.fpos[rec.file] = rec.pos + n
        inode = rec.inode
        if inode not in self.shadow:
            self.shadow[inode] = bytearray()
        data = rec.data if len(rec.data) == n else rec.data[:n]
        if self.size(inode) == rec.pos:         # at the end (the common case): kept aside
            tail = self.appends.get(inode)
            if tail is None:
                tail = self.appends[inode] = [[], 0]
            tail[0].append(data)
            tail[1] += len(data)
        else:
            shadow = self._shadow(inode)
            if len(shadow) < rec.pos:
                shadow.extend(bytes(rec.pos - len(shadow)))
            shadow[rec.pos:rec.pos + n] = data
        self.counters['oracle_writes'] += 1
        self.counters['oracle_bytes'] += n

    # ---- reading the machine (checker reads) -----------------------------------

    def read_user(self, task, addr, n):
        """n bytes of `task`'s memory at `addr`, through its page tables:
        a present page from RAM, a swapped one from swap (k.swap.peek_entry),
        a file-backed one not faulted in yet from its file, anything else
        (untouched anonymous memory, no mapping) as zeros."""
        parts = []
        end = addr + n
        mm = task.mm
        while addr < end:
            page = addr & ~(PAGE - 1)
            stop = min(end, page + PAGE)
            if mm is None:
                parts.append(bytes(stop - addr))
            else:
                parts.append(self._user_bytes(mm, page, addr - page, stop - page))
            addr = stop
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def _user_bytes(self, mm, va, lo, hi):
        """Bytes [lo, hi) of the user page at `va` (see read_user): only
        that piece is read from RAM when the page is present."""
        k = self.k
        if va < PAGE_OFFSET:
            pte_pa = k.mm.pte_offset(mm, va)
            if pte_pa is not None:
                pte = k.mm.read_pte(pte_pa)
                if pte & x86.PTE_P:
                    return bytes(k.machine.read((pte & x86.PTE_FRAME) + lo, hi - lo))
        return self._user_page(mm, va)[lo:hi]

    def _user_page(self, mm, va):
        k = self.k
        if va >= PAGE_OFFSET:
            return ZERO_PAGE
        pte_pa = k.mm.pte_offset(mm, va)
        pte = k.mm.read_pte(pte_pa) if pte_pa is not None else 0
        if pte & x86.PTE_P:
            frame = pte & x86.PTE_FRAME
            return bytes(k.machine.read(frame, PAGE))
        if pte:
            return k.swap.peek_entry(pte) if k.swap is not None else ZERO_PAGE
        vma = mm.find_vma(va)
        if vma is None or vma.start > va or vma.file is None:
            return ZERO_PAGE
        pgoff = vma.pgoff + ((va - vma.start) >> 12)
        f = vma.file
        if hasattr(f, 'inode'):
            return self.file_page(f.inode, pgoff)[0]
        if hasattr(f, 'first_block'):                     # a program image (binfmt)
            return k.disk.peek(f.first_block + pgoff) if pgoff < f.npages else ZERO_PAGE
        return ZERO_PAGE

    def file_page(self, inode, index, disk_only=False):
        """(4096 bytes, where) of page `index` of a file as the machine has
        it: the uptodate page cache page, else the disk block, else zeros."""
        data, pfn, block = self._file_page(inode, index, disk_only)
        return data, _where(pfn, block)

    def _file_page(self, inode, index, disk_only):
        """file_page without the text: (bytes, pfn or None, block or None)."""
        k = self.k
        pfn = inode.mapping.pages.get(index)
        if pfn is not None and not disk_only and k.filemap.PageUptodate(pfn):
            return bytes(k.machine.read(pfn << 12, PAGE)), pfn, None
        if index in inode.on_disk:
            block = inode.block(index)
            return k.disk.peek(block), None, block
        return ZERO_PAGE, None, None

    # ---- checks ---------------------------------------------------------------

    def check_all(self):
        """Every file against its shadow (end of run, or on demand).
        Returns the number of mismatching pages."""
        return self.check_files()

    def check_files(self, disk_only=False):
        self.counters['oracle_file_checks'] += 1
        bad = 0
        for inode in sorted(self.shadow, key=lambda i: i.ino):
            bad += self._check_file(inode, disk_only)
        return bad

    def _check_file(self, inode, disk_only):
        exp = self._shadow(inode)
        flight = [r for r in self.inflight if r.inode is inode and r.pos is not None]
        bad = []
        if not self._size_ok(inode, exp, flight):
            bad.append((None, f'data oracle: {inode.name}: size {inode.size}, expected {len(exp)}',
                        {}))
        skip = self.unchecked.get(inode, ())
        length = max(len(exp), inode.size)         # past the shadow: zeros (a hole) expected
        checked = unchecked = 0
        file_page = self._file_page
        for index in range((length + PAGE - 1) // PAGE):
            if index in skip:
                unchecked += 1
                continue
            checked += 1
            lo = index * PAGE
            want = exp[lo:lo + PAGE]             # a bytearray (compared with bytes: memcmp)
            size = min(PAGE, length - lo)
            if len(want) < size:
                want = bytes(want).ljust(size, b'\0')
            got, pfn, block = file_page(inode, index, disk_only)
            if len(got) != size:
                got = got[:size]
            if got == want:
                continue
            want = bytes(want)
            i = _first_unexplained(lo, want, got, flight)
            if i is not None:
                bad.append(self._mismatch(inode, lo + i, want[i:i + 16], got[i:i + 16],
                                          _where(pfn, block)))
        self.counters['oracle_pages_checked'] += checked
        self.counters['oracle_pages_unchecked'] += unchecked
        for _, message, extra in bad[:MAX_REPORTS_PER_FILE]:
            self.k.report('corruption', message, **extra)
        if len(bad) > MAX_REPORTS_PER_FILE:
            self.k.report('corruption', f'data oracle: {inode.name}: {len(bad)} mismatches in all '
                                        f'({len(bad) - MAX_REPORTS_PER_FILE} not shown)')
        self.counters['oracle_mismatches'] += len(bad)
        return len(bad)

    def _size_ok(self, inode, exp, flight):
        if inode.size == len(exp):
            return True
        top = max([len(exp)] + [r.pos + len(r.data) for r in flight])
        return bool(flight) and len(exp) <= inode.size <= top

    def _mismatch(self, inode, offset, want, got, where):
        message = (f'data oracle: {inode.name} offset {offset:#x}: expected {want.hex()} '
                   f'found {got.hex()} ({where})')
        return offset, message, dict(file=inode.name, offset=offset, expected=want.hex(),
                                     actual=got.hex(), where=where)

    # ---- anonymous pages across swap ---------------------------------------

    def _digest(self, pfn):
        return hashlib.blake2b(self.k.machine.read(pfn << 12, PAGE), digest_size=16).digest()

    def anon_swapped_out(self, entry, pfn):
        """swap_writepage is writing frame `pfn` to slot `entry`."""
        self.counters['oracle_anon_swapouts'] += 1
        self.anon[entry] = self._digest(pfn)

    def anon_swapped_in(self, entry, pfn):
        """The read of slot `entry` into `pfn` completed: the bytes must be
        those that went out."""
        self.counters['oracle_anon_swapins'] += 1
        want = self.anon.get(entry)
        if want is None or self._digest(pfn) == want:
            return
        self.counters['oracle_anon_mismatches'] += 1
        first = bytes(self.k.machine.read(pfn << 12, 16)).hex()
        self.k.report('corruption', f'data oracle: anonymous page from swap entry {entry:#x} '
                                    f'came back different into pfn {pfn:#x} (physical '
                                    f'{pfn << 12:#x}, starts {first})', entry=entry, pfn=pfn)


def _where(pfn, block):
    """Where file_page's bytes come from, as reports say it."""
    if pfn is not None:
        return f'page cache pfn {pfn:#x} at physical {pfn << 12:#x}'
    if block is not None:
        return f'disk block {block}'
    return 'a hole'


def _first_unexplained(lo, want, got, flight):
    """The first index where got differs from want and no in-flight write
    covering that file offset explains the byte, or None."""
    for i in range(len(want)):
        if want[i] == got[i]:
            continue
        off = lo + i
        if any(r.pos <= off < r.pos + len(r.data) and r.data[off - r.pos] == got[i]
               for r in flight):
            continue
        return i
    return None
