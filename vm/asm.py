"""The guest assembler: Intel-syntax x86-32 .S files -> one flat Image.

What this file owns
  - assemble(sources, base, defines) and assemble_files(paths, base, ...):
    concatenate the sources in order into ONE flat image (code and data
    together) loaded at virtual address `base`, and return an Image with a
    symbol for every label, line info for every statement that emits bytes,
    the exception table, the bug table, named ranges, the addresses of
    special instructions and a bitmap of instruction starts.
  - Our preprocessor and the workarounds for keystone-engine 0.9.2, which
    has no symbol table output, no line info and a few wrong encodings.
  vm/ knows nothing about Linux: names and values come from the sources and
  from `defines`.

The dialect (GNU as, .intel_syntax noprefix, minus what we do not need)
  Comments     // to end of line, /* ... */ (may span lines), ; to end of
               line (keystone would read ; as a statement separator), and a
               line whose first non-blank is '#' followed by a blank ("# text"),
               unless the next word is a cpp one (`# define` is an error).
               None of these is a comment inside "strings".  A '#' anywhere
               else is an error.  One statement per line.
  #define N e  object-like constant; becomes `.equ N, e`.  Defining a name
               twice with different values (in the sources or in `defines`)
               is an error; the same definition again is fine, so a header
               may be included by every file.  No function-like macros.
  #include "f" relative to the including file's directory; included lines
               keep their own file:line.  Any other #directive is an error.
  Labels       `name:` (several per line allowed).  Every label is a symbol;
               names starting with `__kas_` are reserved.  `1:` ... `1b`/`1f`
               are GNU numeric local labels (nearest definition before / after,
               a label on the same line counts as before), scoped to one entry
               of `sources` and its includes.
  Directives   .globl/.global/.type/.size (accepted, no effect), .long/.int,
               .word, .byte, .ascii, .asciz, .space N / .zero N (optional fill),
               .align N (N a power of two; `base` must be a multiple of it;
               the padding is NOPs, also among data; after an instruction
               it counts as code),
               .equ NAME, expr (numbers only: labels are not allowed in it).
  Ours         .extable FAULT, FIXUP   if the instruction at label FAULT
                                       faults, continue at label FIXUP
                                       (Linux's __ex_table; 1b/2f allowed)
               BUG                     alone on a line: ud2 + a bug-table entry
               .spin NAME ... .endspin the address range [lo, hi) between them
                                       is Image.ranges[NAME] (to count
                                       instructions retired inside, e.g. a
                                       spin loop)
  String ops   movsl/movsd, stosl, lodsl, cmpsl, scasl (with or without a
               rep prefix) are the 32-bit forms, as in GNU as.

Addresses and memory (GNU as semantics; what you must write)
  address into a register   mov eax, offset sym     (or lea eax, [sym])
  load from sym             mov eax, dword ptr [sym]   (or mov eax, [sym])
  store to sym              mov dword ptr [sym + 4], 1
  push the address          push offset sym
  address in data           .long sym
  branch                    jmp sym / call sym / jne 1f  (direct)
  size of the data          mov dword ptr [eax], 1  (`mov [eax], 1` is an error)
  A bare label as a non-branch operand (`mov eax, sym`, `push sym`,
  `jmp dword ptr sym`) is rejected: GNU as loads from memory there, keystone
  would use the address.  `offset` covers the rest of its operand:
  `mov ecx, offset end - start`.  Constants (.equ, #define, `defines`) are
  immediates when bare: `mov eax, PAGE_SIZE`.  Numbers: 42, 0x2a, 0b101, 'a'.

Keystone 0.9.2 quirks handled here (each verified against capstone)
  - movsd/movsl/stosl/lodsl/cmpsl/scasl are "invalid mnemonic": rewritten to
    the explicit-operand forms (movs dword ptr es:[edi], dword ptr [esi] ...).
  - `mov eax, label` assembles to the label's ADDRESS, `offset` is rejected,
    `push label` fails ("invalid fixup") and `push a - b` gets a 0x66 prefix
    (pushes 16 bits): bare labels are rejected (above), `offset` is dropped
    before keystone, and `push offset x` is emitted as 0x68 + .long x.
  - iret, pushf, popf, push/pop ds/es/ss/cs get a 0x66 prefix (16-bit forms):
    rewritten to iretd/pushfd/popfd and raw one-byte encodings, as GNU as
    emits them in 32-bit code.  lgdt/lidt/sgdt/sidt also get 0x66: rejected.
    As a net, any 0x66 on a statement that names no 16-bit operand is an
    error.
  - Names starting with '.' (.Lfoo) fail inside [...]: every such label is
    renamed before keystone (the Image keeps the source name).
  - jecxz/loop to a target out of rel8 range is silently misencoded (a bit
    further it is "invalid fixup" with no line): every direct branch to a
    label is checked against the label's address, and on failure the
    rel8-only branches are measured with 2-byte placeholders.
  - .align with a non-power-of-two is silently ignored: rejected.
  - No symbol table and no line info: each statement gets an internal label
    `__kas_<i>:`; a table `.long <every label>` appended to the program hands
    back every address; the table is cut off (and the bytes are checked to be
    identical to the program assembled without the internal labels).
  - On failure keystone gives no line: the statement is found by assembling
    each one alone (unknown names resolved to a dummy), else by bisection.
  - MCAsmInfo::Radix is never initialised by ks_open (keystone PR #608): an
    instance whose heap garbage reads 16 lexes every decimal as hex (`1024`
    -> 0x1024), and any ks_option() call forces 16.  Every instance comes
    from _new_ks(), which probes `push 10` and takes another instance until
    one lexes decimals.  Setting sym_resolver is a ks_option() call, so
    _locate's instance reads 16, and a freed one leaves 16 behind for the
    next ks_open (50 of 50 fresh instances read hex after one): so every
    number keystone gets is also written radix-proof (decimals as 0x...;
    0-prefixed and 0b numbers lex the same in either radix).

Image is read-only by convention: assemble() memoizes its results per process
and hands the same object to every caller.
"""
import bisect
import os
import re
import struct

import capstone
from keystone import Ks, KsError, KS_ARCH_X86, KS_MODE_32

SPECIAL_KINDS = ('invlpg', 'mov_cr3', 'mov_cr4', 'int', 'hlt', 'iret', 'sti')

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)


def _radix_ok(ks):
    """True if `ks` reads a bare number as decimal (see the module comment)."""
    return ks.asm('push 10', 0, as_bytes=True)[0] == b'\x6a\x0a'


def _new_ks(tries=64):
    """A keystone x86-32 instance that reads decimals as decimals.  Rejected
    instances are kept alive until one passes, so the next ks_open gets
    other heap memory; RuntimeError if none of `tries` does."""
    rejected = []
    for _ in range(tries):
        ks = Ks(KS_ARCH_X86, KS_MODE_32)
        if _radix_ok(ks):
            return ks
        rejected.append(ks)
    raise RuntimeError(f'keystone: {tries} instances all read decimal numbers as hex '
                       '(MCAsmInfo::Radix uninitialised)')


_KS = _new_ks()
_CACHE = {}             # (base, source lines, defines) -> Image
_CACHE_SIZE = 32
_FILES = {}             # (paths, base, defines, root) -> ([(path, stat stamp)], Image)
MAX_SPACE = 16 << 20        # .space/.zero: at most this many bytes
MAX_IMAGE = 64 << 20        # one assembled image at most


class AsmError(Exception):
    """An error in guest source: str(e) == 'file:line: message'."""

    def __init__(self, file, line, message):
        super().__init__(f'{file}:{line}: {message}')
        self.file, self.line, self.message = file, line, message


class Image:
    """One flat assembled image at `base` (see the module comment)."""

    def __init__(self, base, code, symbols, lines, extable, bugs, ranges, specials, bitmap):
        self.base = base
        self.code = code                # bytes, loaded at base
        self.size = len(code)
        self.symbols = symbols          # name -> address, every user label
        self.lines = lines              # sorted (addr, size, file, line, is_insn, text)
        self.extable = extable          # fault address -> fixup address
        self.bugs = bugs                # ud2 address -> (file, line)
        self.ranges = ranges            # name -> (lo, hi), hi exclusive
        self.specials = specials        # kind -> sorted addresses
        self.insn_bitmap = bitmap       # bit i: an instruction starts at base+i
        best = {}
        for name, addr in symbols.items():    # first non-.L name at each address
            if addr not in best or (best[addr].startswith('.L') and not name.startswith('.L')):
                best[addr] = name
        self._sym_addrs = sorted(best)
        self._sym_names = [best[a] for a in self._sym_addrs]
        self._line_addrs = [ln[0] for ln in lines]

    def contains(self, addr):
        return self.base <= addr < self.base + self.size

    def symbol_at(self, addr):
        """(name, offset) of the nearest symbol at or below addr, or None."""
        i = bisect.bisect_right(self._sym_addrs, addr) - 1
        if not self.contains(addr) or i < 0:
            return None
        return self._sym_names[i], addr - self._sym_addrs[i]

    def line_at(self, addr):
        """(file, line) of the statement whose bytes cover addr, or None."""
        i = bisect.bisect_right(self._line_addrs, addr) - 1
        if i >= 0 and addr < self.lines[i][0] + self.lines[i][1]:
            return self.lines[i][2], self.lines[i][3]
        return None

    def is_insn(self, addr):
        i = addr - self.base
        return 0 <= i < self.size and (self.insn_bitmap[i >> 3] >> (i & 7)) & 1 == 1


def _stamp(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


# The images of assemble_files also kept on disk (a directory the lab sets:
# kmaplab/runner.py, build/cache), so that a new process (a pool worker, a
# test, `kmaplab run`) does not assemble the kernel again (~0.1-0.2 s).  An
# entry is found by its paths, base, defines and root, and by this file and
# keystone's version (a change to the assembler is a miss); it holds the
# sha256 of every file the image was made from (the `paths` and what they
# #include): any file whose contents differ now makes it a miss.
DISK_CACHE_DIR = None
_DISK_FORMAT = 'kmaplab-asm-image/1'
_SELF = []              # sha256 of this file and the keystone version (computed once)


def _self_hash():
    if not _SELF:
        import hashlib
        import keystone
        with open(__file__, 'rb') as f:
            version = repr(getattr(keystone, '__version__', '?')).encode()
            _SELF.append(hashlib.sha256(f.read() + version).hexdigest())
    return _SELF[0]


def _file_hash(path):
    import hashlib
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _disk_path(key):
    import hashlib
    name = hashlib.sha256(repr((_DISK_FORMAT, _self_hash(), key)).encode()).hexdigest()[:32]
    return os.path.join(DISK_CACHE_DIR, f'asm-{name}.pickle')


def _disk_load(key):
    """(stamps, Image) from the disk cache, or None (a miss: no entry, a
    file changed, an unreadable entry)."""
    import pickle
    try:
        with open(_disk_path(key), 'rb') as f:
            fmt, stored_key, files, image = pickle.load(f)
        if fmt != _DISK_FORMAT or stored_key != key or not isinstance(image, Image):
            return None
        stamps = []
        for path, digest in files:
            st = _stamp(path)
            if _file_hash(path) != digest:
                return None
            stamps.append((path, st))
        return stamps, image
    except Exception:                   # noqa: BLE001 - any broken entry is a miss
        return None


def _disk_store(key, stamps, image):
    """Write the entry (atomically: a reader sees all of it or none)."""
    import pickle
    import tempfile
    try:
        files = [(path, _file_hash(path)) for path, st in stamps]
        if any(_stamp(path) != st for path, st in stamps):
            return                      # changed while we assembled: do not keep it
        os.makedirs(DISK_CACHE_DIR, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=DISK_CACHE_DIR, prefix='.asm-')
        with os.fdopen(fd, 'wb') as f:
            pickle.dump((_DISK_FORMAT, key, files, image), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, _disk_path(key))
    except OSError:
        pass                            # no cache: assemble next time


def assemble_files(paths, base, defines=None, root=None):
    """assemble() the files at `paths`, named relative to `root` if given
    (paths are then relative to root too, unless absolute).  The image of
    the same paths, base and defines is reused while none of the files it
    was made from (the `paths` and what they #include) changed: no reading
    and preprocessing again at every boot (in this process; and through
    DISK_CACHE_DIR, if set, in the next ones)."""
    key = (tuple(paths), base, tuple(sorted((defines or {}).items())), root)
    hit = _FILES.get(key)
    if hit is not None:
        try:
            if all(_stamp(p) == st for p, st in hit[0]):
                return hit[1]
        except OSError:
            pass
    if DISK_CACHE_DIR is not None:
        hit = _disk_load(key)
        if hit is not None:
            _remember(key, *hit)
            return hit[1]
    sources, stamps = [], []
    for p in paths:
        real = os.path.join(root, p) if root else p
        name = os.path.relpath(real, root) if root else p
        try:
            with open(real, encoding='utf-8') as f:
                stamps.append((real, _stamp(real)))
                sources.append((name, f.read()))
        except UnicodeDecodeError as e:
            raise AsmError(name, 1, f'not UTF-8 text (byte offset {e.start})') from None
    image, files = _assemble(sources, base, defines, root)
    tops = {name for name, _ in sources}
    for f in sorted(files - tops):                      # the #included files
        real = os.path.join(root, f) if root else f
        try:
            stamps.append((real, _stamp(real)))
        except OSError:
            return image                                # cannot tell: do not keep it
    _remember(key, stamps, image)
    if DISK_CACHE_DIR is not None:
        _disk_store(key, stamps, image)
    return image


def _remember(key, stamps, image):
    if len(_FILES) >= _CACHE_SIZE:
        del _FILES[next(iter(_FILES))]                  # the oldest
    _FILES[key] = (stamps, image)


def assemble(sources, base, defines=None, root=None):
    """Assemble [(name, text)] into one Image at `base`.  #include paths are
    resolved against dirname(name) (under `root` if given).  Raises AsmError."""
    return _assemble(sources, base, defines, root)[0]


def _assemble(sources, base, defines, root):
    """assemble() -> (Image, the names of the files its lines came from)."""
    defines = dict(defines or {})
    lines = []
    for unit, (name, text) in enumerate(sources):
        _preprocess(name, text, root, unit, (), lines)
    lines = _sections(lines)
    key = (base, tuple(lines), tuple(sorted(defines.items())))
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]          # the oldest
        _CACHE[key] = _Program(lines, base, defines).assemble()
    return _CACHE[key], {ln.file for ln in lines}


# ---- preprocessing: comments, #include, #define ------------------------------

_LEX = re.compile(r'''
    (?P<hash>^[ \t]*\#[^\n]*)
  | (?P<str>"(?:\\.|[^"\\\n])*")
  | (?P<chr>'(?:\\.|[^'\\\n])')
  | (?P<block>/\*.*?\*/)
  | (?P<open>/\*|")
  | (?P<cmt>(?://|;)[^\n]*)
  | (?P<nl>\n)
  | (?P<text>[^"'/;\n]+|.)
''', re.M | re.S | re.X)

_CPP_WORDS = {'include', 'define', 'undef', 'if', 'ifdef', 'ifndef', 'elif', 'else',
              'endif', 'error', 'warning', 'pragma', 'line'}


def _sections(lines):
    """`.data` ... `.text` (or the end of the file): those lines go after
    all the code, on pages of their own (a `.align 4096` before the first),
    so that stores to kernel data never hit a page that holds code (QEMU
    takes its slow path for a store to a page with translated code, and so
    does a real CPU's self-modifying-code detection)."""
    text, data, in_data, unit = [], [], False, None
    for ln in lines:
        if ln.unit != unit:
            in_data, unit = False, ln.unit
        word = ln.text.strip()
        if word in ('.data', '.text'):
            in_data = word == '.data'
            continue
        (data if in_data else text).append(ln)
    if not data:
        return text
    return text + [_Line((data[0].file, data[0].line, '.align 4096', data[0].unit))] + data


class _Line(tuple):
    """(file, line, text, unit): one comment-free source line."""
    file = property(lambda s: s[0])
    line = property(lambda s: s[1])
    text = property(lambda s: s[2])
    unit = property(lambda s: s[3])


def _strip_comments(name, text):
    """[(line_no, text)] with comments removed; a /* */ spanning lines joins
    them into one logical line numbered by where it starts."""
    out, pieces, start, lineno = [], [], 1, 1
    for m in _LEX.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind == 'nl':
            out.append((start, ''.join(pieces)))
            pieces, lineno = [], lineno + 1
            start = lineno
        elif kind == 'block':
            pieces.append(' ')
            lineno += tok.count('\n')
        elif kind == 'open':
            raise AsmError(name, lineno, 'unterminated ' + ('comment' if tok == '/*' else 'string'))
        elif kind != 'cmt':
            pieces.append(tok)
    out.append((start, ''.join(pieces)))
    return out


def _preprocess(name, text, root, unit, stack, out):
    """Append the _Lines of file `name` to out, expanding #include/#define."""
    for lineno, line in _strip_comments(name, text):
        line = line.strip()
        if line.startswith('#'):
            _hash_line(name, lineno, line, root, unit, stack, out)
        elif line:
            out.append(_Line((name, lineno, line, unit)))


def _hash_line(name, lineno, line, root, unit, stack, out):
    m = re.match(r'#(\s*)(\w*)', line)
    space, word = m.groups()
    if word in ('include', 'define') and not space:
        body = re.sub(r'/\*.*?\*/', ' ', line)
        if '/*' in body:
            raise AsmError(name, lineno, 'a comment opened on a # line must close on it')
        body = re.split(r'//|;', body, 1)[0].strip()
        if word == 'include':
            return _include(name, lineno, body, root, unit, stack, out)
        return out.append(_define(name, lineno, body, unit))
    if word in _CPP_WORDS or not (space or line == '#'):
        what = m.group(0) if word else line.split()[0]
        raise AsmError(name, lineno, f"unsupported preprocessor directive '{what}'"
                                     ' (only #include "file" and #define NAME value)')
    # '# text': a comment


def _define(name, lineno, body, unit):
    m = re.match(r'#define\s+([A-Za-z_]\w*)(\(?)\s*(.*)$', body)
    if not m or m.group(2):
        raise AsmError(name, lineno, '#define NAME value: only object-like constants')
    if not m.group(3):
        raise AsmError(name, lineno, f'#define {m.group(1)} needs a value')
    return _Line((name, lineno, f'.equ {m.group(1)}, {m.group(3)}', unit))


def _inside(path, root):
    real, root = os.path.realpath(path), os.path.realpath(root)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _include(name, lineno, body, root, unit, stack, out):
    m = re.match(r'#include\s+"([^"]+)"$', body)
    if not m:
        raise AsmError(name, lineno, 'expected #include "file"')
    path = os.path.normpath(os.path.join(os.path.dirname(name), m.group(1)))
    if path in stack or path == name:
        raise AsmError(name, lineno, f'#include cycle through {path}')
    full = os.path.join(root, path) if root else path
    if root and not _inside(full, root):
        raise AsmError(name, lineno, f'cannot include "{m.group(1)}": outside the project '
                                     f'({root})')
    try:
        with open(full, encoding='utf-8') as f:
            text = f.read()
    except UnicodeDecodeError:
        raise AsmError(name, lineno, f'cannot include "{m.group(1)}": not UTF-8 text') from None
    except OSError as e:
        raise AsmError(name, lineno, f'cannot include "{m.group(1)}": {e.strerror}') from None
    _preprocess(path, text, root, unit, stack + (name,), out)


# ---- statements ---------------------------------------------------------------

_LABEL = re.compile(r'\s*([A-Za-z_.][\w.]*|\d+)\s*:')
_TOK = re.compile(r'''
    (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])')
  | (?P<num>0[xX][0-9a-fA-F]+(?![\w.])|0[bB][01]+(?![\w.])|\d+(?![\w.]))
  | (?P<local>\d+[bf](?![\w.]))
  | (?P<name>[A-Za-z_.][\w.]*)
  | (?P<bad>\d[\w.]*|[\#@$`?\\{}])
  | (?P<sp>\s+)
  | (?P<op>.)
''', re.X)

_REGS = set('''eax ebx ecx edx esi edi ebp esp ax bx cx dx si di bp sp al ah bl bh cl ch
    dl dh cs ds es fs gs ss cr0 cr2 cr3 cr4 dr0 dr1 dr2 dr3 dr6 dr7 st
    mm0 mm1 mm2 mm3 mm4 mm5 mm6 mm7 xmm0 xmm1 xmm2 xmm3 xmm4 xmm5 xmm6 xmm7'''.split())
_SIZES = {'byte', 'word', 'dword', 'qword', 'tbyte', 'fword', 'xmmword', 'ptr'}
_KEYWORDS = _REGS | _SIZES | {'offset', 'short', 'near', 'far'}
_PREFIXES = {'lock', 'rep', 'repe', 'repz', 'repne', 'repnz'}
_BRANCH = re.compile(r'j[a-z]+|call|loop[a-z]*$')
_SHORT_ONLY = {'jecxz', 'loop', 'loope', 'loopz', 'loopne', 'loopnz'}    # rel8, 2 bytes

_ALIAS = {      # no-operand mnemonics keystone rejects or encodes as 16-bit
    'movsl': 'movs dword ptr es:[edi], dword ptr [esi]',
    'movsd': 'movs dword ptr es:[edi], dword ptr [esi]',
    'stosl': 'stos dword ptr es:[edi], eax',
    'lodsl': 'lods eax, dword ptr [esi]',
    'cmpsl': 'cmps dword ptr [esi], dword ptr es:[edi]',
    'scasl': 'scas eax, dword ptr es:[edi]',
    'iret': 'iretd', 'iretl': 'iretd',
    'pushf': 'pushfd', 'pushfl': 'pushfd', 'popf': 'popfd', 'popfl': 'popfd',
}
_RAW = {('push', 'es'): 0x06, ('push', 'cs'): 0x0e, ('push', 'ss'): 0x16, ('push', 'ds'): 0x1e,
        ('pop', 'es'): 0x07, ('pop', 'ss'): 0x17, ('pop', 'ds'): 0x1f}
_REJECT = {m: f'{m} is not supported (keystone 0.9.2 encodes it with a bogus 0x66 prefix)'
           for m in ('lgdt', 'lidt', 'sgdt', 'sidt')}
_WORDY = re.compile(r'\b(word|ax|bx|cx|dx|si|di|bp|sp)\b|'
                    r'\b(movsw|stosw|lodsw|cmpsw|scasw|insw|outsw|cbw|cwd|pushw|popw)\b', re.I)


class _Stmt:
    """One source line: its labels and at most one instruction or directive."""

    def __init__(self, ln):
        self.file, self.line, self.unit = ln.file, ln.line, ln.unit
        self.labels = []        # source names defined on this line
        self.ks_labels = []     # the same, as keystone sees them
        self.kind = 'none'      # none insn data align equ extable spin endspin
        self.text = ''          # the statement as written, labels removed
        self.head = ''          # mnemonic with prefixes, or directive name
        self.args = ''          # operands / directive arguments
        self.ks = ''            # what keystone gets
        self.target = None      # direct branch: the label it must reach
        self.index = 0          # position in the program
        self.bug = False        # a BUG line
        self.fault = self.fixup = None   # .extable: keystone label names

    def error(self, message):
        return AsmError(self.file, self.line, message)


def _parse(ln):
    s = _Stmt(ln)
    pos = 0
    while m := _LABEL.match(ln.text, pos):
        s.labels.append(m.group(1))
        pos = m.end()
    s.text = rest = ln.text[pos:].strip()
    if not rest:
        return s
    if rest.startswith('.'):
        s.head, _, s.args = rest.replace('\t', ' ').partition(' ')
        s.kind = _directive_kind(s)
    elif rest == 'BUG':
        s.kind, s.head, s.bug = 'insn', 'ud2', True
    else:
        _parse_insn(s, rest)
    s.args = s.args.strip()
    return s


def _directive_kind(s):
    d = s.head
    if d in ('.globl', '.global', '.type', '.size'):
        return 'none'
    if d in ('.long', '.int', '.word', '.byte', '.ascii', '.asciz', '.space', '.zero'):
        return 'data'
    if d in ('.align', '.equ', '.extable', '.spin', '.endspin'):
        return d[1:]
    raise s.error(f'unknown directive {d}')


def _parse_insn(s, rest):
    words = rest.split(None, 1)
    prefixes = []
    while words[0].lower() in _PREFIXES and len(words) == 2:
        prefixes.append(words[0].lower())
        words = words[1].split(None, 1)
    mnem, args = words[0].lower(), (words[1] if len(words) == 2 else '')
    if mnem in _REJECT:
        raise s.error(_REJECT[mnem])
    if not args and mnem in _ALIAS:
        mnem, _, args = _ALIAS[mnem].partition(' ')
    s.kind, s.head, s.args = 'insn', ' '.join(prefixes + [mnem]), args


# ---- the program: names, rewriting, keystone, the Image ---------------------

class _Program:
    """All statements of one assemble() call, checked and rewritten."""

    def __init__(self, lines, base, defines):
        self.base = base
        self.stmts = [_parse(ln) for ln in lines]
        self.labels = {}        # source name -> (keystone name, _Stmt)
        self.locals = {}        # (unit, n) -> ([stmt index], [keystone name])
        self.consts = {}        # name -> (value text, where)
        self.ks_names = {}      # keystone name -> source name (user labels only)
        self.nlocal = 0         # numeric labels renamed so far
        for name, value in defines.items():
            if not re.fullmatch(r'[A-Za-z_][\w]*', name) or name.startswith('__kas_'):
                raise ValueError(f'bad define name {name!r}')
            self._const(name, f'{int(value):#x}', None)
        for i, s in enumerate(self.stmts):
            s.index = i
            self._collect(i, s)
        for name, (_, where) in self.consts.items():
            if name in self.labels:
                raise self.labels[name][1].error(f"'{name}' is both a label and a constant")
        for i, s in enumerate(self.stmts):
            self._rewrite(i, s)

    # -- names

    def _collect(self, i, s):
        for lab in s.labels:
            if lab.isdigit():
                idx, names = self.locals.setdefault((s.unit, int(lab)), ([], []))
                idx.append(i)
                names.append(f'__kas_n{self.nlocal}')
                s.ks_labels.append(names[-1])
                self.nlocal += 1
                continue
            self._check_name(s, lab)
            if lab in self.labels:
                first = self.labels[lab][1]
                raise s.error(f"duplicate label '{lab}' (first defined at {first.file}:{first.line})")
            ks_name = '__kas_d' + lab[1:] if lab.startswith('.') else lab
            self.labels[lab] = (ks_name, s)
            self.ks_names[ks_name] = lab
            s.ks_labels.append(ks_name)
        if s.kind == 'equ':
            name, comma, value = s.args.partition(',')
            if not comma or not value.strip():
                raise s.error('expected .equ NAME, value')
            self._check_name(s, name.strip())
            if self._const(name.strip(), value.strip(), s):
                s.kind = 'none'        # the same definition again

    def _check_name(self, s, name):
        if not re.fullmatch(r'[A-Za-z_.][\w.]*', name) or name.lower() in _KEYWORDS:
            raise s.error(f"bad name '{name}'")
        if name.startswith('__kas_'):
            raise s.error(f"names starting with __kas_ are reserved: '{name}'")

    def _const(self, name, value, s):
        """Record a constant; True if it repeats an identical definition."""
        if name in self.consts:
            old, where = self.consts[name]
            if old == value:
                return True
            first = f'{where.file}:{where.line}' if where else 'defines'
            msg = f"'{name}' redefined as {value} (was {old} at {first})"
            raise s.error(msg) if s else ValueError(msg)
        self.consts[name] = (value, s)
        return False

    def _local_ref(self, i, s, tok):
        n, direction = int(tok[:-1]), tok[-1]
        idx, names = self.locals.get((s.unit, n), ([], []))
        k = bisect.bisect_right(idx, i) - (1 if direction == 'b' else 0)
        if not 0 <= k < len(idx):
            where = 'before' if direction == 'b' else 'after'
            raise s.error(f"'{tok}': no local label '{n}:' {where} this line")
        return names[k]

    # -- rewriting to keystone text

    def _rewrite(self, i, s):
        if s.kind == 'insn':
            self._rewrite_insn(i, s)
        elif s.kind == 'data':
            if s.head in ('.space', '.zero'):
                self._space_size(s)
            s.ks = f'{s.head} {self._expr(i, s, s.args, "data")}'
        elif s.kind == 'equ':
            name, _, value = s.args.partition(',')
            s.ks = f'.equ {name.strip()}, {self._expr(i, s, value, "equ")}'
        elif s.kind == 'align':
            self._align(s)
        elif s.kind == 'extable':
            s.fault, s.fixup = self._extable_args(i, s)
        elif s.kind == 'spin' and not re.fullmatch(r'[A-Za-z_.][\w.]*', s.args):
            raise s.error('expected .spin NAME')
        elif s.kind == 'endspin' and s.args:
            raise s.error('.endspin takes no arguments')

    def _space_size(self, s):
        """.space N / .zero N: N a number (or a constant) from 0 to MAX_SPACE."""
        text = s.args.split(',')[0].strip()
        seen = set()
        while text in self.consts and text not in seen:
            seen.add(text)
            text = self.consts[text][0].strip()
        try:
            n = int(text, 0)
        except ValueError:
            return                  # an expression: the image size check bounds it
        if not 0 <= n <= MAX_SPACE:
            raise s.error(f'{s.head} {n}: the size must be from 0 to {MAX_SPACE:#x} bytes')

    def _rewrite_insn(self, i, s):
        mnem = s.head.split()[-1]
        if (mnem, s.args.lower()) in _RAW:
            s.ks = f'.byte {_RAW[mnem, s.args.lower()]:#x}'
            return
        mode = 'branch' if _BRANCH.fullmatch(mnem) else 'insn'
        ops = self._expr(i, s, s.args, mode)
        if mnem == 'push' and re.match(r'offset\b', s.args, re.I):
            s.ks = f'.byte 0x68\n.long {ops}'         # keystone: "invalid fixup"
        else:
            s.ks = f'{s.head} {ops}'.strip()
        if mode == 'branch' and (s.args in self.labels or re.fullmatch(r'\d+[bf]', s.args)):
            s.target = ops.strip()

    def _expr(self, i, s, text, mode):
        """Check the names in an operand list or expression and rewrite them
        for keystone.  mode: insn, branch, data or equ (see the module comment)."""
        out, depth, offset, ptr = [], 0, False, False
        for m in _TOK.finditer(text):
            kind, tok = m.lastgroup, m.group()
            is_label = False
            if kind == 'local':
                tok, is_label = self._local_ref(i, s, tok), True
            elif kind == 'name':
                low = tok.lower()
                if low == 'offset':
                    offset = True       # up to the next operand
                    continue
                ptr = ptr or low == 'ptr'
                if tok in self.labels:
                    tok, is_label = self.labels[tok][0], True
                elif low not in _KEYWORDS and tok not in self.consts and tok != '.':
                    raise s.error(f"undefined symbol '{tok}'")
            elif kind == 'num' and tok[0] in '123456789':
                tok = hex(int(tok))     # radix-proof (see the module comment)
            elif kind == 'bad':
                raise s.error(f"unexpected '{tok}'")
            elif kind == 'op' and tok in '[],':
                depth += {'[': 1, ']': -1, ',': 0}[tok]
                offset = offset and not (tok == ',' and depth == 0)
            if is_label:
                self._label_use_ok(s, m.group(), mode, depth, offset, ptr)
            out.append(tok)
        return ''.join(out)

    def _label_use_ok(self, s, name, mode, depth, offset, ptr):
        if mode == 'equ':
            raise s.error(f"label '{name}' in .equ: constants must be numbers")
        bare = depth == 0 and not offset
        if bare and (mode == 'insn' or (mode == 'branch' and ptr)):
            raise s.error(f"bare label '{name}' as an operand is ambiguous: write "
                          f"'offset {name}' for its address or '[{name}]' for memory")

    def _align(self, s):
        try:
            n = int(s.args, 0)
        except ValueError:
            n = 0
        if n <= 0 or n & (n - 1):
            raise s.error('.align N: N must be a power of two')
        if self.base % n:
            raise s.error(f'.align {n}: base {self.base:#x} is not a multiple of {n}')
        s.ks = f'.align {n:#x}'

    def _extable_args(self, i, s):
        args = [a.strip() for a in s.args.split(',')]
        if len(args) != 2:
            raise s.error('expected .extable FAULT, FIXUP')
        out = []
        for a in args:
            if re.fullmatch(r'\d+[bf]', a):
                out.append(self._local_ref(i, s, a))
            elif a in self.labels:
                out.append(self.labels[a][0])
            else:
                raise s.error(f".extable: '{a}' is not a label")
        return out

    # -- keystone

    def text(self, internal=True):
        """The keystone program; with internal labels and the address table."""
        out = self._define_lines()
        for i, s in enumerate(self.stmts):
            if internal:
                out.append(f'__kas_{i}:')
            out += [lab + ':' for lab in s.ks_labels]
            if s.ks:
                out.append(s.ks)
        if internal:
            out.append('__kas_end:')
            names = self.table_names()
            out += ['.long ' + ', '.join(names[k:k + 64]) for k in range(0, len(names), 64)]
        return '\n'.join(out)

    def _define_lines(self):
        return [f'.equ {k}, {v}' for k, (v, where) in self.consts.items() if where is None]

    def table_names(self):
        names = [f'__kas_{i}' for i in range(len(self.stmts))] + ['__kas_end']
        names += [ks for ks, _ in self.labels.values()]
        return names + [n for _, ns in self.locals.values() for n in ns]

    def assemble(self):
        try:
            out, _ = _KS.asm(self.text(), self.base, as_bytes=True)
        except KsError as e:
            raise self._locate(e) from None
        addrs = self._addresses(out)
        code = out[:addrs['__kas_end'] - self.base]
        if len(code) > MAX_IMAGE:
            last = self.stmts[-1] if self.stmts else None
            if last is not None:
                raise last.error(f'the image is {len(code):#x} bytes, more than {MAX_IMAGE:#x}')
        plain = _KS.asm(self.text(internal=False), self.base, as_bytes=True)[0] or b''
        if plain != code:
            raise AssertionError('asm: internal labels changed the encoding')
        return _ImageBuilder(self, code, addrs).build()

    def _addresses(self, out):
        """keystone name -> address, from the table at the end of `out`."""
        names = self.table_names()
        addrs = dict(zip(names, struct.unpack_from(f'<{len(names)}I', out, len(out) - 4 * len(names))))
        if addrs['__kas_end'] - self.base + 4 * len(names) != len(out):
            raise AssertionError('asm: address table not at the end of the output')
        return addrs

    def _short_branch_error(self):
        """Keystone fails on (or misencodes) a rel8-only branch out of range.
        Assemble those branches as 2-byte placeholders and measure."""
        short = [s for s in self.stmts if s.target and s.head.split()[-1] in _SHORT_ONLY]
        saved = [s.ks for s in short]
        try:
            for s in short:
                s.ks = '.byte 0, 0'
            addrs = self._addresses(_KS.asm(self.text(), self.base, as_bytes=True)[0])
        except KsError:
            return None
        finally:
            for s, ks in zip(short, saved):
                s.ks = ks
        for s in short:
            dist = addrs[s.target] - (addrs[f'__kas_{s.index}'] + 2)
            if not -128 <= dist < 128:
                return s.error(f'{s.head} {s.args}: target out of range ({dist:+d} bytes, rel8 only)')
        return None

    def _locate(self, err):
        """The AsmError for the statement keystone failed on: a rel8 branch
        out of range, else each .equ alone, else each statement alone after
        the constants, else the smallest failing prefix of the program."""
        if e := self._short_branch_error():
            return e
        ks = _new_ks()
        ks.sym_resolver = _dummy_resolver(self.base)
        equs = [s for s in self.stmts if s.kind == 'equ']
        others = [s for s in self.stmts if s.kind != 'equ' and s.ks]
        prefix = '\n'.join(self._define_lines() + [s.ks for s in equs])
        for s in equs:
            if e := _ks_fails(ks, s.ks, self.base):
                return s.error(f'{e}: {s.text}')
        for s in others:
            if e := _ks_fails(ks, prefix + '\n' + s.ks, self.base):
                return s.error(f'{e}: {s.text}')
        lo, hi = 0, len(self.stmts)
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            if _ks_fails(ks, prefix + '\n' + '\n'.join(s.ks for s in self.stmts[:mid]), self.base):
                hi = mid
            else:
                lo = mid
        return self.stmts[hi - 1].error(f'{err} (keystone failed on the program around here)')


def _ks_fails(ks, text, base):
    try:
        ks.asm(text, base)
    except KsError as e:
        return e
    return None


def _dummy_resolver(value):
    def resolve(name, out):
        out[0] = value
        return True
    return resolve


class _ImageBuilder:
    """Turns keystone's bytes and the label addresses into an Image."""

    def __init__(self, prog, code, addrs):
        self.prog, self.code, self.addrs = prog, code, addrs
        self.base = prog.base
        self.bitmap = bytearray((len(code) + 7) // 8)
        self.specials = {k: [] for k in SPECIAL_KINDS}

    def build(self):
        p, lines, bugs, ranges, extable = self.prog, [], {}, {}, []
        spin = None
        prev_insn = False
        for i, s in enumerate(p.stmts):
            addr = self.addrs[f'__kas_{i}']
            size = self.addrs[f'__kas_{i + 1}' if i + 1 < len(p.stmts) else '__kas_end'] - addr
            if s.kind == 'spin':
                if spin:
                    raise s.error(f'.spin inside .spin {spin[0].args}')
                spin = (s, addr)
            elif s.kind == 'endspin':
                spin = self._endspin(s, spin, addr, ranges)
            elif s.kind == 'extable':
                extable.append(s)
            if size:
                is_insn = self._insn(s, addr, size) if s.kind == 'insn' else \
                    self._padding(addr, size) if s.kind == 'align' and prev_insn else False
                lines.append((addr, size, s.file, s.line, is_insn, s.text))
                prev_insn = is_insn
                if s.bug:
                    bugs[addr] = (s.file, s.line)
        if spin:
            raise spin[0].error(f'.spin {spin[0].args} without .endspin')
        symbols = {p.ks_names[ks]: self.addrs[ks] for ks in p.ks_names}
        return Image(self.base, self.code, symbols, lines, self._extable(extable), bugs,
                     ranges, self.specials, bytes(self.bitmap))

    def _endspin(self, s, spin, addr, ranges):
        if not spin:
            raise s.error('.endspin without .spin')
        name = spin[0].args
        if name in ranges:
            raise spin[0].error(f'duplicate .spin {name}')
        ranges[name] = (spin[1], addr)
        return None

    def _extable(self, stmts):
        table = {}
        for s in stmts:
            fault, fixup = self.addrs[s.fault], self.addrs[s.fixup]
            if not self._is_start(fault):
                raise s.error('.extable: the fault label is not on an instruction')
            if fault in table:
                raise s.error(f'.extable: a second entry for {s.args.split(",")[0]}')
            table[fault] = fixup
        return table

    def _is_start(self, addr):
        i = addr - self.base
        return 0 <= i < len(self.code) and (self.bitmap[i >> 3] >> (i & 7)) & 1

    def _mark(self, addr):
        i = addr - self.base
        self.bitmap[i >> 3] |= 1 << (i & 7)

    def _insn(self, s, addr, size):
        """Check the one instruction keystone made for s; classify and mark it."""
        chunk = self.code[addr - self.base: addr - self.base + size]
        _, isize, mnem, ops = next(_CS.disasm_lite(chunk, addr, 1), (0, 0, '', ''))
        if isize != size:
            raise s.error(f'keystone emitted {chunk.hex()} which is not one instruction')
        if 0x66 in _prefixes(chunk) and not _WORDY.search(s.text) and 'xmm' not in ops:
            # (an SSE2 instruction on xmm registers: 0x66 is its mandatory prefix)
            raise s.error(f'keystone emitted a 16-bit form ({chunk.hex()}: {mnem} {ops}) '
                          'for a 32-bit instruction')
        if s.target is not None and int(ops, 0) != self.addrs[s.target]:
            raise s.error(f'{s.head} {s.args}: target out of range or misencoded ({mnem} {ops})')
        kind = _special(mnem, ops)
        if kind:
            self.specials[kind].append(addr)
        self._mark(addr)
        return True

    def _padding(self, addr, size):
        """Alignment padding after code: NOPs that execution may fall into."""
        off = addr - self.base
        insns = list(_CS.disasm_lite(self.code[off:off + size], addr))
        if sum(x[1] for x in insns) != size or any(x[2] != 'nop' for x in insns):
            return False
        for x in insns:
            self._mark(x[0])
        return True


def _prefixes(chunk):
    out = []
    for b in chunk:
        if b not in (0xf0, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65, 0x66, 0x67):
            break
        out.append(b)
    return out


def _special(m, ops):
    if m in ('invlpg', 'int', 'hlt', 'sti'):
        return m
    if m in ('iret', 'iretd'):
        return 'iret'
    if m == 'mov' and ops.startswith('cr3,'):
        return 'mov_cr3'
    if m == 'mov' and ops.startswith('cr4,'):
        return 'mov_cr4'
    return None
