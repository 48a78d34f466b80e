"""Program images and exec: asm/user programs, and static i386 ELF binaries
(fs/binfmt_elf.c, 2.4.18/2.6 for the auxv entries 2.4 lacks).

A program is asm/user/<name>.S assembled together with asm/user/lib.S (the
syscall stubs) at USER_TEXT (0x08048000), entry point `_start`.  Its image
is written to the disk at boot (the disk a scenario ships with); exec maps
it as a private, writable, executable file mapping, so each text or data
page arrives by a page fault that reads it from the disk (DMA into a fresh
GFP_HIGHUSER frame) while the task sleeps: demand paging, as binfmt_elf +
filemap_nopage do it.

Initial user stack (the kmaplab ABI, simpler than ELF's auxv):
    [esp]      argc
    [esp+4*i]  argument i: an integer as is, a string as a pointer to its
               NUL-terminated copy higher up the stack
    [esp+4*(argc+1)]  0
The arguments are copied there by guest copy_to_user from a lowmem buffer,
so the stack page is demand-zeroed by the guest like any other.

ELF binaries (load_elf_binary, as binfmt_elf.c)
  An executable is a file in the lab's filesystem.  Its headers are parsed
  once per binary (parse_elf, cached by sha256 with its instruction-start
  bitmap and .symtab): from the bytes the disk image shipped with
  (inode.exec_image, set when a scenario copies a host file in; a write to
  the file drops it, and exec of it is then -ENOEXEC: reading headers back
  through the page cache is not done).  exec maps each PT_LOAD as its own
  private VMA with the segment's protection, backed by the file (a File
  opened read-only, whose nopage is filemap_nopage: text is demand-paged
  through the page cache like any mapped file); the bss is zeroed in the
  partial page by guest clear_user (padzero) and continues as an anonymous
  VMA; brk starts at the page after it; the stack VMA is 8 MiB under
  USER_STACK_TOP.  The initial stack (create_elf_tables) holds argc, argv,
  envp, the auxv (AT_HWCAP, AT_PAGESZ, AT_CLKTCK, AT_PHDR, AT_PHENT,
  AT_PHNUM, AT_BASE, AT_FLAGS, AT_ENTRY, AT_UID/EUID/GID/EGID, AT_SECURE,
  AT_RANDOM from the machine's seeded generator, AT_PLATFORM "i686",
  AT_EXECFN), and the strings, copied by guest copy_to_user page by page.
  Static executables only (ET_EXEC, no PT_INTERP).

  The instruction counter's bitmap for an ELF text is a capstone linear
  sweep of its executable sections (vm.symbols.insn_start_bitmap): exact
  for compiled code laid end to end (see there).

Rules: load_elf_binary runs on the new mm, already current (CR3), so its
guest copies reach it; it may sleep (faults).  parse_elf never does I/O.
"""
import hashlib
import os
import struct

from .layout import USER_TEXT, USER_STACK_TOP
from .memory import VMA, VM_EXEC, VM_READ, VM_WRITE
from .task import Charge, Guest

USER_STACK_SIZE = 256 * 1024
ELF_STACK_SIZE = 8 << 20           # RLIMIT_STACK's usual 8 MiB (no VM_GROWSDOWN here)
PAGE = 4096
ENOEXEC, ENOMEM, EFAULT = 8, 12, 14

# ELF (include/linux/elf.h)
ET_EXEC, EM_386 = 2, 3
PT_LOAD, PT_INTERP, PT_PHDR, PT_TLS = 1, 3, 6, 7
PF_X, PF_W, PF_R = 1, 2, 4
SHT_SYMTAB, SHF_ALLOC, SHF_EXECINSTR = 2, 0x2, 0x4
STT_NOTYPE, STT_FUNC = 0, 2
# auxv (include/linux/auxvec.h)
AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_EXECFN = 23, 25, 31
ELF_PLATFORM = 'i686'
# CPUID.1:EDX of the emulated CPU as the kernel reports it: FPU TSC CX8
# CMOV MMX FXSR SSE SSE2 (what glibc and musl may look at).
ELF_HWCAP = (1 << 0) | (1 << 4) | (1 << 8) | (1 << 15) | (1 << 23) | (1 << 24) | (1 << 25) | (1 << 26)
CLK_TCK = 100
TASK_SIZE = 0xC0000000


class ProgramFile:
    """An executable on the disk: its image and where its blocks are."""

    def __init__(self, kernel, name, image, first_block):
        self.k = kernel
        self.name = name
        self.image = image
        self.first_block = first_block
        self.npages = (image.size + PAGE - 1) // PAGE

    def nopage(self, task, vma, pgoff):
        """Read page `pgoff` of the image into a new frame.  Generator ->
        (pfn, major); (None, None) past the end (SIGBUS), (None, True) OOM."""
        k = self.k
        if pgoff >= self.npages:
            return None, None
        pfn = yield from k.alloc_page(task, k.gfp.GFP_HIGHUSER)
        if pfn is None:
            return None, True
        err = yield from k.blockdev.bio_rw(task, 'read', self.first_block + pgoff, pfn)
        if err:
            k.put_page(pfn)
            return None, None
        return pfn, True


class ElfError(ValueError):
    """A malformed or unsupported ELF file: str() is the one-line reason."""


class Phdr:
    __slots__ = ('type', 'offset', 'vaddr', 'filesz', 'memsz', 'flags', 'align')

    def __init__(self, type_, offset, vaddr, filesz, memsz, flags, align):
        self.type, self.offset, self.vaddr, self.filesz = type_, offset, vaddr, filesz
        self.memsz, self.flags, self.align = memsz, flags, align


class ElfProgram:
    """A parsed static i386 executable: what exec needs, built once per
    binary.  `image` is a vm Image of its executable span (bitmap and
    .symtab symbols) for the instruction counter and the symbolizer."""

    def __init__(self, name, sha256, entry, phoff, phnum, loads, phdr_addr, image, nsyms):
        self.name = name
        self.sha256 = sha256
        self.entry = entry
        self.phoff, self.phnum = phoff, phnum
        self.loads = loads                 # [Phdr] of PT_LOAD, by vaddr
        self.phdr_addr = phdr_addr         # AT_PHDR
        self.image = image
        self.nsyms = nsyms
        self.elf = True


_elf_cache = {}                    # sha256 -> ElfProgram (per process)
BITMAP_CACHE_DIR = None            # set by the runner: bitmaps kept across processes


def parse_elf(data, name):
    """Check and parse an ELF executable (load_elf_binary's checks, plus
    ours).  Returns an ElfProgram; raises ElfError with a one-line reason:
    not ELF, not 32-bit little-endian i386, not ET_EXEC, dynamic (PT_INTERP),
    truncated headers or segments, overlapping or misaligned PT_LOADs, a
    segment past user space, an entry point outside every executable
    segment."""
    digest = hashlib.sha256(data).hexdigest()
    hit = _elf_cache.get(digest)
    if hit is not None:
        return hit
    if len(data) < 52 or data[:4] != b'\x7fELF':
        raise ElfError(f'{name}: not an ELF file')
    if data[4] != 1 or data[5] != 1:
        raise ElfError(f'{name}: not a 32-bit little-endian ELF file')
    (e_type, e_machine, _, e_entry, e_phoff, e_shoff, _, _, e_phentsize, e_phnum,
     e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from('<HHIIIIIHHHHHH', data, 16)
    if e_machine != EM_386:
        raise ElfError(f'{name}: ELF machine {e_machine}, not i386 (3)')
    if e_type != ET_EXEC:
        raise ElfError(f'{name}: ELF type {e_type}, not a static executable (ET_EXEC)')
    if e_phentsize != 32 or not 0 < e_phnum <= 65536 // 32:
        raise ElfError(f'{name}: bad program header table (entsize {e_phentsize}, {e_phnum} entries)')
    if e_phoff + 32 * e_phnum > len(data):
        raise ElfError(f'{name}: truncated: program headers end at {e_phoff + 32 * e_phnum}, '
                       f'file is {len(data)} bytes')
    phdrs = []
    for i in range(e_phnum):
        t, off, va, _pa, filesz, memsz, flags, align = struct.unpack_from('<8I', data, e_phoff + 32 * i)
        phdrs.append(Phdr(t, off, va, filesz, memsz, flags, align))
    if any(p.type == PT_INTERP for p in phdrs):
        raise ElfError(f'{name}: dynamically linked (PT_INTERP): only static executables run here')
    loads = sorted((p for p in phdrs if p.type == PT_LOAD), key=lambda p: p.vaddr)
    if not loads:
        raise ElfError(f'{name}: no PT_LOAD segment')
    for p in loads:
        if p.offset + p.filesz > len(data):
            raise ElfError(f'{name}: truncated: segment at {p.vaddr:#x} needs file bytes up to '
                           f'{p.offset + p.filesz}, file is {len(data)} bytes')
        if p.filesz > p.memsz or (p.vaddr - p.offset) % PAGE:
            raise ElfError(f'{name}: bad segment at {p.vaddr:#x} (filesz > memsz or vaddr/offset '
                           f'not congruent modulo the page size)')
        if p.vaddr < PAGE or p.vaddr + p.memsz > TASK_SIZE:
            raise ElfError(f'{name}: segment {p.vaddr:#x}+{p.memsz:#x} outside user space')
    for a, b in zip(loads, loads[1:]):
        if a.vaddr + a.memsz > b.vaddr:
            raise ElfError(f'{name}: overlapping segments at {a.vaddr:#x} and {b.vaddr:#x}')
    execs = [p for p in loads if p.flags & PF_X]
    if not any(p.vaddr <= e_entry < p.vaddr + p.filesz for p in execs):
        raise ElfError(f'{name}: entry point {e_entry:#x} is outside every executable segment')
    phdr_addr = next((p.vaddr for p in phdrs if p.type == PT_PHDR), None)
    if phdr_addr is None:
        phdr_addr = next((p.vaddr - p.offset + e_phoff for p in loads
                          if p.offset <= e_phoff and e_phoff + 32 * e_phnum <= p.offset + p.filesz), 0)
    sections = _sections(data, e_shoff, e_shentsize, e_shnum)
    image, nsyms = _code_image(data, execs, sections, name, digest)
    prog = ElfProgram(name, digest, e_entry, e_phoff, e_phnum, loads, phdr_addr, image, nsyms)
    _elf_cache[digest] = prog
    return prog


def _sections(data, shoff, shentsize, shnum):
    """[(type, flags, addr, offset, size, link)] or [] if absent/broken
    (section headers are optional for exec)."""
    if not shoff or shentsize != 40 or shoff + 40 * shnum > len(data):
        return []
    out = []
    for i in range(shnum):
        _, t, fl, addr, off, size, link, _, _, _ = struct.unpack_from('<IIIIIIIIII', data, shoff + 40 * i)
        out.append((t, fl, addr, off, size, link))
    return out


def _code_image(data, execs, sections, name, digest):
    """A vm Image covering the executable segments: their bytes, the
    instruction-start bitmap (executable sections swept, or the segments
    if there are no section headers), and the .symtab function symbols."""
    from vm.asm import Image
    from vm.symbols import insn_start_bitmap
    lo = min(p.vaddr for p in execs)
    hi = max(p.vaddr + p.filesz for p in execs)
    code = bytearray(hi - lo)
    for p in execs:
        code[p.vaddr - lo:p.vaddr - lo + p.filesz] = data[p.offset:p.offset + p.filesz]
    ranges = [(a, min(a + sz, hi)) for t, fl, a, off, sz, _ in sections
              if fl & SHF_EXECINSTR and fl & SHF_ALLOC and lo <= a < hi and t != 8]
    if not ranges:
        ranges = [(p.vaddr, p.vaddr + p.filesz) for p in execs]
    bitmap = _cached_bitmap(digest)
    if bitmap is None:
        bitmap = insn_start_bitmap(bytes(code), lo, ranges)
        _store_bitmap(digest, bitmap)
    symbols = {}
    for t, _, _, off, size, link in sections:
        if t != SHT_SYMTAB or link >= len(sections):
            continue
        str_off, str_size = sections[link][3], sections[link][4]
        strtab = data[str_off:str_off + str_size]
        for j in range(min(size, len(data) - off) // 16):
            st_name, value, _, info, _, shndx = struct.unpack_from('<IIIBBH', data, off + 16 * j)
            if info & 0xF not in (STT_FUNC, STT_NOTYPE) or not lo <= value < hi or not st_name:
                continue
            end = strtab.find(b'\0', st_name)
            sym = strtab[st_name:end if end >= 0 else None].decode('latin-1')
            if sym and not sym.startswith('$'):
                symbols.setdefault(sym, value)
    return Image(lo, bytes(code), symbols, [], {}, {}, {}, {}, bitmap), len(symbols)


def _cached_bitmap(digest):
    if BITMAP_CACHE_DIR is None:
        return None
    try:
        with open(os.path.join(BITMAP_CACHE_DIR, f'{digest}.bitmap'), 'rb') as f:
            return f.read()
    except OSError:
        return None


def _store_bitmap(digest, bitmap):
    if BITMAP_CACHE_DIR is None:
        return
    try:
        os.makedirs(BITMAP_CACHE_DIR, exist_ok=True)
        tmp = os.path.join(BITMAP_CACHE_DIR, f'{digest}.{os.getpid()}.tmp')
        with open(tmp, 'wb') as f:
            f.write(bitmap)
        os.replace(tmp, os.path.join(BITMAP_CACHE_DIR, f'{digest}.bitmap'))
    except OSError:
        pass


def elf_stack_block(prog, argv, envp, execfn, random16, stack_top, ids=(0, 0, 0, 0)):
    """create_elf_tables() (binfmt_elf.c): the bytes of the initial stack
    and its ESP.  From the top down: execfn, the envp and argv strings, the
    platform string, the 16 AT_RANDOM bytes, then (16-byte aligned at argc)
    argc, argv[], NULL, envp[], NULL, the auxv pairs, AT_NULL."""
    strings = bytearray()
    def put(b):
        strings[:0] = b
        return len(strings)              # distance from the top, fixed up below
    fn_at = put(execfn.encode() + b'\0')
    env_at = [put(e.encode() + b'\0') for e in reversed(envp)][::-1]
    arg_at = [put(a.encode() + b'\0') for a in reversed(argv)][::-1]
    plat_at = put(ELF_PLATFORM.encode() + b'\0')
    rand_at = put(bytes(random16))
    top = stack_top - 16
    aux = elf_auxv(prog, top - rand_at, top - fn_at, top - plat_at, ids)
    words = ([len(argv)] + [top - a for a in arg_at] + [0] + [top - e for e in env_at] + [0]
             + [w for pair in aux for w in pair])
    strings_lo = top - len(strings)
    esp = (strings_lo - 4 * len(words)) & ~15
    table = struct.pack(f'<{len(words)}I', *words)
    block = table + bytes(strings_lo - esp - len(table)) + bytes(strings)
    return block, esp


def elf_auxv(prog, rand_addr, execfn_addr, platform_addr, ids=(0, 0, 0, 0)):
    """The auxv pairs of create_elf_tables, AT_NULL last."""
    uid, euid, gid, egid = ids
    return [(AT_HWCAP, ELF_HWCAP), (AT_PAGESZ, PAGE), (AT_CLKTCK, CLK_TCK),
            (AT_PHDR, prog.phdr_addr), (AT_PHENT, 32), (AT_PHNUM, prog.phnum), (AT_BASE, 0),
            (AT_FLAGS, 0), (AT_ENTRY, prog.entry), (AT_UID, uid), (AT_EUID, euid), (AT_GID, gid),
            (AT_EGID, egid), (AT_SECURE, 0), (AT_RANDOM, rand_addr),
            (AT_EXECFN, execfn_addr), (AT_PLATFORM, platform_addr), (AT_NULL, 0)]


def build_arg_block(args, stack_top):
    """The bytes to put right under `stack_top` and the resulting ESP."""
    strings = b''
    str_addr = []
    for a in args:
        if isinstance(a, str):
            str_addr.append(len(strings))
            strings += a.encode() + b'\0'
        else:
            str_addr.append(None)
    strings += b'\0' * (-len(strings) % 4)
    nwords = 1 + len(args) + 1
    size = nwords * 4 + len(strings)
    esp = stack_top - size - 16
    str_base = esp + nwords * 4
    words = [len(args)]
    for a, off in zip(args, str_addr):
        words.append(str_base + off if off is not None else int(a) & 0xFFFFFFFF)
    words.append(0)
    return struct.pack(f'<{nwords}I', *words) + strings, esp


class Binfmt:
    def __init__(self, kernel):
        self.k = kernel
        self.programs = {}         # name -> ProgramFile

    def install(self, name, image):
        """Put a program's image on the disk (boot time)."""
        if name in self.programs:
            return self.programs[name]
        k = self.k
        npages = (image.size + PAGE - 1) // PAGE
        block = k.alloc_boot_blocks(npages)
        k.disk.load(block, image.code)
        prog = ProgramFile(k, name, image, block)
        self.programs[name] = prog
        return prog

    def setup_mm(self, mm, prog):
        """The VMAs of a fresh exec: text+data, and the stack."""
        text_end = USER_TEXT + prog.npages * PAGE
        mm.insert_vma(VMA(mm, USER_TEXT, text_end, VM_READ | VM_WRITE | VM_EXEC, prog, 0, prog.name))
        mm.insert_vma(VMA(mm, USER_STACK_TOP - USER_STACK_SIZE, USER_STACK_TOP,
                          VM_READ | VM_WRITE, None, 0, '[stack]'))
        mm.program = prog

    # ---- ELF ----------------------------------------------------------------

    def elf_program(self, inode):
        """The parsed executable behind `inode`, or None (-ENOEXEC): from
        the bytes the disk image shipped (inode.exec_image).  Raises
        ElfError for a malformed file."""
        data = getattr(inode, 'exec_image', None)
        if data is None:
            return None
        return parse_elf(data, os.path.basename(inode.name))

    def load_elf_binary(self, task, inode, argv, envp, execfn=None):
        """load_elf_binary() (fs/binfmt_elf.c) on task.mm, a fresh mm with no
        VMAs that is already current on this CPU: map the segments, zero the
        bss, set brk, build the initial stack, point the user registers at
        the entry.  Generator -> 0 or -errno (-ENOEXEC for a file that is not
        a runnable ELF; -EFAULT/-ENOMEM if the stack or bss cannot be
        written).  may sleep."""
        k = self.k
        try:
            prog = self.elf_program(inode)
        except ElfError:
            prog = None
        if prog is None:
            return -ENOEXEC
        yield Charge(k.costs['exec'])
        mm = task.mm
        self.setup_elf_mm(mm, prog, inode)
        task.program = prog
        k.set_user_code(k.machine.cpus[task.cpu], task)
        if not (yield from self.padzero(prog)):
            return -EFAULT
        rand = bytes(k.machine.rng.getrandbits(8) for _ in range(16))
        block, esp = elf_stack_block(prog, argv, envp, execfn or inode.name, rand, USER_STACK_TOP)
        if not (yield from self.copy_to_stack(task, esp, block)):
            return -EFAULT
        task.uregs = dict(eax=0, ebx=0, ecx=0, edx=0, esi=0, edi=0, ebp=0,
                          esp=esp, eip=prog.entry, eflags=0x202)
        return 0

    def padzero(self, prog):
        """padzero(elf_bss): the bss part of each segment's last file page
        cleared by the guest's clear_user (the page holds file bytes past
        p_filesz).  The task's new mm is current.  Generator -> success;
        may sleep (the write fault reads the page in)."""
        for p in prog.loads:
            end = p.vaddr + p.filesz
            if p.memsz > p.filesz and end % PAGE:
                n = min(PAGE - end % PAGE, p.memsz - p.filesz)
                left = yield Guest('clear_user', end, n)
                if left:
                    return False
        return True

    def setup_elf_mm(self, mm, prog, inode):
        """The VMAs of an ELF exec (elf_map + set_brk + setup_arg_pages):
        per PT_LOAD a private file mapping of its pages with the segment's
        protection, an anonymous VMA for the bss past the file's last page,
        brk after the highest one, the stack.  Never sleeps."""
        from .fs import File, O_RDONLY
        file = File(self.k, inode, O_RDONLY)
        brk = 0
        for p in prog.loads:
            flags = ((VM_READ if p.flags & PF_R else 0) | (VM_WRITE if p.flags & PF_W else 0)
                     | (VM_EXEC if p.flags & PF_X else 0))
            start = p.vaddr & ~(PAGE - 1)
            file_end = (p.vaddr + p.filesz + PAGE - 1) & ~(PAGE - 1)
            mem_end = (p.vaddr + p.memsz + PAGE - 1) & ~(PAGE - 1)
            if file_end > start:
                mm.insert_vma(VMA(mm, start, file_end, flags, file, (p.offset & ~(PAGE - 1)) >> 12,
                                  prog.name))
            if mem_end > max(file_end, start):
                mm.insert_vma(VMA(mm, max(file_end, start), mem_end, flags, None, 0, '[bss]'))
            brk = max(brk, mem_end)
        mm.start_brk = mm.brk = brk
        mm.insert_vma(VMA(mm, USER_STACK_TOP - ELF_STACK_SIZE, USER_STACK_TOP,
                          VM_READ | VM_WRITE, None, 0, '[stack]'))
        mm.program = prog

    def copy_to_stack(self, task, esp, block):
        """Copy `block` to user `esp` a page at a time through the task's
        lowmem buffer and guest copy_to_user.  Generator -> success."""
        k = self.k
        kbuf = k.task_kbuf(task)
        for off in range(0, len(block), PAGE):
            chunk = block[off:off + PAGE]
            k.machine.write(kbuf - k.PAGE_OFFSET, chunk)
            left = yield Guest('copy_to_user', esp + off, kbuf, len(chunk))
            if left:
                return False
        return True

    def thread_stack(self, mm):
        """A stack VMA for one more thread of `mm`, under the ones it has
        (what a thread library would mmap).  Returns its top."""
        stacks = [v for v in mm.vmas if v.name.startswith('[stack')]
        top = min(v.start for v in stacks)
        mm.insert_vma(VMA(mm, top - USER_STACK_SIZE, top, VM_READ | VM_WRITE, None, 0,
                          f'[stack:{len(stacks)}]'))
        return top

    def start_user(self, task, args, stack_top=USER_STACK_TOP):
        """The first kernel frame of a new process: copy the arguments onto
        the user stack (faulting it in), then return to user at _start.
        Generator."""
        k = self.k
        yield Charge(k.costs['exec'])
        block, esp = build_arg_block(args, stack_top)
        kbuf = k.task_kbuf(task)
        k.machine.write(kbuf - k.PAGE_OFFSET, block)
        left = yield Guest('copy_to_user', esp, kbuf, len(block))
        if left:
            k.kill_task(task, 'SIGSEGV', 'exec: cannot set up the user stack')
        task.uregs = dict(eax=0, ebx=0, ecx=0, edx=0, esi=0, edi=0, ebp=0,
                          esp=esp, eip=task.mm.program.image.symbols['_start'], eflags=0x202)
        return None


def assemble_program(name, root, asm_dir):
    """asm/user/<name>.S + asm/user/lib.S at USER_TEXT (raises AsmError)."""
    import os
    from vm.asm import assemble_files
    paths = [os.path.join(asm_dir, 'user', f'{name}.S'), os.path.join(asm_dir, 'user', 'lib.S')]
    return assemble_files(paths, USER_TEXT, root=root)
