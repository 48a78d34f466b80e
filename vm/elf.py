"""An assembled Image as an ELF32 i386 executable with symbols and DWARF,
for gdb, objdump, IDA, Ghidra, Binary Ninja.

What this file owns
  - write_elf(image, path, ...): one PT_LOAD segment (the flat image, code
    and data, at its virtual address), a section .text holding it, .symtab
    (every label: STT_FUNC for function entries, STT_OBJECT for data,
    STT_NOTYPE for labels inside a function), and DWARF 2:
      .debug_line     one row per statement that emits bytes, at its exact
                      address (from the Image's line info, not re-assembled)
      .debug_info     one compile unit; a DW_TAG_subprogram per function
                      (so `break f`, `bt`, `info symbol` name functions) and
                      a DW_TAG_variable per data label, typed as a 32-bit
                      word or an array of them (so `p pkmap_count[3]` and
                      `watch pkmap_count[3]` work without casts)
      .debug_frame    CFI for every function from a static walk of its
                      stack depth (push/pop/sub/add esp), so `bt` unwinds
                      frames that keep no frame pointer
      .debug_aranges  the unit's address range
  - function_starts(image): which labels start a function (a call target,
    or a code label that cannot be reached by falling through: after
    ret/jmp/iretd/ud2, or the first statement of a file).

Rules
  - Read-only on the Image; the output is a function of the Image, the
    paths given and `comp_dir` (byte-identical for the same inputs).
  - vm/ knows no Linux: the physical load address is the caller's.
"""
import bisect
import os
import struct

import capstone
from capstone import x86_const as cx

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
_CS.detail = True

# ELF
ET_EXEC, EM_386, PT_LOAD = 2, 3, 1
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS = 1, 2, 3, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_FILE = 0, 1, 2, 4

# DWARF
DW_TAG_array_type, DW_TAG_compile_unit, DW_TAG_base_type = 0x01, 0x11, 0x24
DW_TAG_subrange_type, DW_TAG_subprogram, DW_TAG_variable = 0x21, 0x2e, 0x34
DW_AT_location, DW_AT_name, DW_AT_byte_size, DW_AT_stmt_list = 0x02, 0x03, 0x0b, 0x10
DW_AT_low_pc, DW_AT_high_pc, DW_AT_language, DW_AT_comp_dir = 0x11, 0x12, 0x13, 0x1b
DW_AT_producer, DW_AT_upper_bound, DW_AT_encoding, DW_AT_external = 0x25, 0x2f, 0x3e, 0x3f
DW_AT_type, DW_AT_decl_file, DW_AT_decl_line = 0x49, 0x3a, 0x3b
DW_FORM_addr, DW_FORM_data2, DW_FORM_data4, DW_FORM_string = 0x01, 0x05, 0x06, 0x08
DW_FORM_block1, DW_FORM_data1, DW_FORM_flag, DW_FORM_ref4 = 0x0a, 0x0b, 0x0c, 0x13
DW_LANG_Mips_Assembler = 0x8001
DW_ATE_unsigned = 0x08
DW_OP_addr = 0x03
DW_CFA_advance_loc4, DW_CFA_offset, DW_CFA_def_cfa, DW_CFA_def_cfa_offset = 0x04, 0x80, 0x0c, 0x0e
DW_CFA_undefined = 0x07
REG_ESP, REG_EIP = 4, 8            # DWARF register numbers on i386

PRODUCER = 'kmaplab vm/asm.py (keystone + our preprocessor)'
_NO_FALLTHROUGH = ('ret', 'retn', 'jmp', 'iretd', 'iret', 'ud2', 'BUG')


def uleb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sleb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        done = (n == 0 and not b & 0x40) or (n == -1 and b & 0x40)
        out.append(b | (0 if done else 0x80))
        if done:
            return bytes(out)


def _insn_lines(image):
    return [ln for ln in image.lines if ln[4]]


def function_starts(image):
    """Sorted addresses of function entries (see the module comment)."""
    lines = _insn_lines(image)
    addrs = [ln[0] for ln in lines]
    called = set()
    for ln in lines:
        words = ln[5].split()
        if words and words[0] == 'call' and len(words) == 2 and words[1] in image.symbols:
            called.add(image.symbols[words[1]])
    starts = set()
    for addr in set(image.symbols.values()):
        if not image.is_insn(addr):
            continue
        i = bisect.bisect_left(addrs, addr)
        if addr in called or i == 0:
            starts.add(addr)
            continue
        prev = lines[i - 1]
        mnem = prev[5].split()[0] if prev[5].split() else ''
        if mnem in _NO_FALLTHROUGH or prev[2] != lines[i][2]:
            starts.add(addr)
    return sorted(starts)


def _names_at(image):
    by = {}
    for name, addr in sorted(image.symbols.items(), key=lambda kv: (kv[1], kv[0])):
        by.setdefault(addr, []).append(name)
    return by


# ---- .debug_frame: stack depth per instruction ------------------------------

def _stack_effect(insn):
    """Bytes pushed by `insn` (negative: popped), or None if it sets ESP in
    a way a static walk cannot follow."""
    m = insn.mnemonic
    if m in ('push', 'pushfd', 'pushal', 'pushad'):
        return {'pushal': 32, 'pushad': 32}.get(m, 4)
    if m in ('pop', 'popfd', 'popal', 'popad'):
        return {'popal': -32, 'popad': -32}.get(m, -4)
    ops = insn.operands
    if m in ('sub', 'add') and len(ops) == 2 and ops[0].type == cx.X86_OP_REG \
            and ops[0].reg == cx.X86_REG_ESP:
        if ops[1].type == cx.X86_OP_IMM:
            return ops[1].imm if m == 'sub' else -ops[1].imm
        return None
    if len(ops) >= 1 and ops[0].type == cx.X86_OP_REG and ops[0].reg == cx.X86_REG_ESP \
            and m not in ('cmp', 'test', 'push'):
        return None            # mov esp, ... / lea esp, ... / xchg: unknown from here
    return 0


def stack_depths(image, lo, hi):
    """{address: bytes pushed since the function's entry} for the
    instructions of [lo, hi) reachable from lo (entry depth 0: the return
    address is at [esp]).  Walks every path; a depth that is unknown or
    differs between paths is left out."""
    code = image.code
    insns = {}
    for insn in _CS.disasm(bytes(code[lo - image.base:hi - image.base]), lo):
        insns[insn.address] = insn
    depth, work, bad = {lo: 0}, [lo], set()
    while work:
        a = work.pop()
        insn = insns.get(a)
        if insn is None or a in bad:
            continue
        d = depth[a]
        eff = _stack_effect(insn)
        succ = []
        m = insn.mnemonic
        nxt = a + insn.size
        if m in ('ret', 'retn', 'iretd', 'iret', 'ud2'):
            pass
        elif m == 'jmp':
            if insn.operands[0].type == cx.X86_OP_IMM:
                succ.append(insn.operands[0].imm)
        elif m.startswith('j') or m.startswith('loop') or m == 'jecxz':
            succ += [insn.operands[0].imm, nxt]
        else:
            succ.append(nxt)
        if eff is None:
            continue
        for s in succ:
            if not lo <= s < hi:
                continue
            nd = d + eff
            if s not in depth:
                depth[s] = nd
                work.append(s)
            elif depth[s] != nd:
                bad.add(s)
    for a in bad:
        depth.pop(a, None)
    return {a: d for a, d in depth.items() if a in insns}


def _cfi(image, funcs, outermost=None):
    """The .debug_frame section: one CIE, one FDE per function, and for
    `outermost` (lo, hi) an FDE whose return address is undefined (the
    unwinder stops there)."""
    cie_body = (struct.pack('<IB', 0xFFFFFFFF, 1) + b'\0' + uleb(1) + sleb(-4) + bytes([REG_EIP])
                + bytes([DW_CFA_def_cfa]) + uleb(REG_ESP) + uleb(4)
                + bytes([DW_CFA_offset | REG_EIP]) + uleb(1))
    cie_body += b'\0' * (-(len(cie_body) + 4) % 4)
    out = bytearray(struct.pack('<I', len(cie_body)) + cie_body)
    for lo, hi in funcs:
        depths = stack_depths(image, lo, hi)
        if any(d < 0 for d in depths.values()):
            depths = {}                  # pops what it did not push (restore_all): no rows
        prog = bytearray()
        loc, cur = lo, 0
        for a in sorted(depths):
            d = depths[a]
            if d == cur:
                continue
            prog += bytes([DW_CFA_advance_loc4]) + struct.pack('<I', a - loc)
            prog += bytes([DW_CFA_def_cfa_offset]) + uleb(4 + d)
            loc, cur = a, d
        body = struct.pack('<III', 0, lo, hi - lo) + prog
        body += b'\0' * (-(len(body) + 4) % 4)       # DW_CFA_nop padding
        out += struct.pack('<I', len(body)) + body
    if outermost is not None:
        lo, hi = outermost
        body = struct.pack('<III', 0, lo, hi - lo) + bytes([DW_CFA_undefined]) + uleb(REG_EIP)
        body += b'\0' * (-(len(body) + 4) % 4)
        out += struct.pack('<I', len(body)) + body
    return bytes(out)


# ---- .debug_line ------------------------------------------------------------

def _line_program(image, files):
    """DWARF 2 line number program for the image's statements."""
    fidx = {f: i + 1 for i, f in enumerate(files)}
    hdr = bytearray()
    hdr += struct.pack('<BBbBB', 1, 1, -5, 14, 13)
    hdr += bytes([0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1])
    hdr += b'\0'                                          # no include directories
    for f in files:
        hdr += f.encode() + b'\0' + uleb(0) + uleb(0) + uleb(0)
    hdr += b'\0'
    prog = bytearray()
    prog += b'\0' + uleb(5) + bytes([2]) + struct.pack('<I', image.base)
    addr, line, cur_file = image.base, 1, 1
    for a, size, f, ln, _is_insn, _text in image.lines:
        if size == 0:
            continue
        if fidx[f] != cur_file:
            prog += bytes([4]) + uleb(fidx[f])            # DW_LNS_set_file
            cur_file = fidx[f]
        if a != addr:
            prog += bytes([2]) + uleb(a - addr)           # DW_LNS_advance_pc
            addr = a
        if ln != line:
            prog += bytes([3]) + sleb(ln - line)          # DW_LNS_advance_line
            line = ln
        prog += bytes([1])                                # DW_LNS_copy
    end = image.base + image.size
    if end != addr:
        prog += bytes([2]) + uleb(end - addr)
    prog += b'\0' + uleb(1) + bytes([1])                  # DW_LNE_end_sequence
    body = struct.pack('<H', 2) + struct.pack('<I', len(hdr)) + bytes(hdr) + bytes(prog)
    return struct.pack('<I', len(body)) + body


# ---- .debug_info / .debug_abbrev ------------------------------------------

_ABBREV = [
    (1, DW_TAG_compile_unit, 1, [(DW_AT_name, DW_FORM_string), (DW_AT_comp_dir, DW_FORM_string),
                                 (DW_AT_producer, DW_FORM_string), (DW_AT_language, DW_FORM_data2),
                                 (DW_AT_low_pc, DW_FORM_addr), (DW_AT_high_pc, DW_FORM_addr),
                                 (DW_AT_stmt_list, DW_FORM_data4)]),
    (2, DW_TAG_subprogram, 0, [(DW_AT_name, DW_FORM_string), (DW_AT_external, DW_FORM_flag),
                               (DW_AT_decl_file, DW_FORM_data1), (DW_AT_decl_line, DW_FORM_data4),
                               (DW_AT_low_pc, DW_FORM_addr), (DW_AT_high_pc, DW_FORM_addr)]),
    (3, DW_TAG_base_type, 0, [(DW_AT_name, DW_FORM_string), (DW_AT_encoding, DW_FORM_data1),
                              (DW_AT_byte_size, DW_FORM_data1)]),
    (4, DW_TAG_array_type, 1, [(DW_AT_type, DW_FORM_ref4)]),
    (5, DW_TAG_subrange_type, 0, [(DW_AT_upper_bound, DW_FORM_data4)]),
    (6, DW_TAG_variable, 0, [(DW_AT_name, DW_FORM_string), (DW_AT_external, DW_FORM_flag),
                             (DW_AT_type, DW_FORM_ref4), (DW_AT_location, DW_FORM_block1)]),
]


def _abbrev_section():
    out = bytearray()
    for code, tag, children, attrs in _ABBREV:
        out += uleb(code) + uleb(tag) + bytes([children])
        for at, form in attrs:
            out += uleb(at) + uleb(form)
        out += b'\0\0'
    return bytes(out + b'\0')


def _info_section(image, name, comp_dir, files, funcs, data):
    fidx = {f: i + 1 for i, f in enumerate(files)}
    die = bytearray()
    hdr_len = 11                          # unit_length 4 + version 2 + abbrev 4 + addr 1

    def off():
        return hdr_len + len(die)

    die += uleb(1) + name.encode() + b'\0' + comp_dir.encode() + b'\0' + PRODUCER.encode() + b'\0'
    die += struct.pack('<HIII', DW_LANG_Mips_Assembler, image.base, image.base + image.size, 0)
    word = off()
    die += uleb(3) + b'unsigned int\0' + bytes([DW_ATE_unsigned, 4])
    arrays = {}
    for _, _, n in data:
        if n > 1 and n not in arrays:
            arrays[n] = off()
            die += uleb(4) + struct.pack('<I', word)
            die += uleb(5) + struct.pack('<I', n - 1) + b'\0'
    for fname, lo, hi in funcs:
        where = image.line_at(lo)
        f, ln = (fidx.get(where[0], 0), where[1]) if where else (0, 0)
        die += uleb(2) + fname.encode() + b'\0' + bytes([1, f]) + struct.pack('<III', ln, lo, hi)
    for vname, addr, n in data:
        t = arrays.get(n, word)
        die += uleb(6) + vname.encode() + b'\0' + bytes([1]) + struct.pack('<I', t)
        die += bytes([5, DW_OP_addr]) + struct.pack('<I', addr)
    die += b'\0'                          # end of the unit's children
    body = struct.pack('<HIB', 2, 0, 4) + bytes(die)
    return struct.pack('<I', len(body)) + body


def _aranges(image):
    body = struct.pack('<HIBB', 2, 0, 4, 0) + b'\0' * 4    # pad to 2 * address size
    body += struct.pack('<IIII', image.base, image.size, 0, 0)
    return struct.pack('<I', len(body)) + body


# ---- the ELF file -----------------------------------------------------------

class _Strtab:
    def __init__(self):
        self.data = bytearray(b'\0')
        self.index = {'': 0}

    def add(self, s):
        if s not in self.index:
            self.index[s] = len(self.data)
            self.data += s.encode() + b'\0'
        return self.index[s]


CALLER_SIZE = 16


def elf_bytes(image, name, comp_dir, paddr=None, entry=None, caller=None):
    """The ELF file of `image` as bytes (see the module comment).

    caller: a name for whatever calls the image's routines from outside it
    with the image's first byte as return address (the host, for a kernel
    whose guest routines return to a trap at the image start): a 16-byte
    NOBITS section `.caller` just below the image holds a function of that
    name, so a backtrace names that frame, and its FDE ends the unwinding."""
    paddr = image.base if paddr is None else paddr
    starts = function_starts(image)
    names = _names_at(image)
    end = image.base + image.size
    data_addrs = sorted(a for a in names if not image.is_insn(a))
    all_addrs = sorted(names)
    funcs = []
    for i, a in enumerate(starts):
        hi = starts[i + 1] if i + 1 < len(starts) else end
        nxt_data = [d for d in data_addrs if a < d < hi]
        hi = min([hi] + nxt_data)
        funcs.append((names[a][0], a, hi))
    data = []
    for a in data_addrs:
        j = bisect.bisect_right(all_addrs, a)
        hi = all_addrs[j] if j < len(all_addrs) else end
        size = hi - a
        for n in names[a]:
            data.append(((n, a), (size, size // 4 if size % 4 == 0 and size >= 4 else 1)))
    files = sorted({ln[2] for ln in image.lines})

    # symbols: file, then locals, then globals
    strtab = _Strtab()
    syms = [struct.pack('<IIIBBH', 0, 0, 0, 0, 0, 0)]
    func_size = {a: hi - a for _, a, hi in funcs}
    local, glob = [], []
    for a in all_addrs:
        for n in names[a]:
            if a in func_size:
                glob.append(struct.pack('<IIIBBH', strtab.add(n), a, func_size[a],
                                        (STB_GLOBAL << 4) | STT_FUNC, 0, 1))
            elif not image.is_insn(a):
                size = next(s for (nn, aa), (s, _) in data if nn == n and aa == a)
                glob.append(struct.pack('<IIIBBH', strtab.add(n), a, size,
                                        (STB_GLOBAL << 4) | STT_OBJECT, 0, 1))
            else:
                local.append(struct.pack('<IIIBBH', strtab.add(n), a, 0,
                                         (STB_LOCAL << 4) | STT_NOTYPE, 0, 1))
    if caller:
        local.append(struct.pack('<IIIBBH', strtab.add(caller), image.base - CALLER_SIZE,
                                 CALLER_SIZE, (STB_LOCAL << 4) | STT_FUNC, 0, 2))
    syms += local
    first_global = len(syms)
    syms += glob

    sections = [
        ('.text', SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR | SHF_WRITE, image.base, bytes(image.code), 16),
        ('.symtab', SHT_SYMTAB, 0, 0, b''.join(syms), 4),
        ('.strtab', SHT_STRTAB, 0, 0, bytes(strtab.data), 1),
        ('.debug_abbrev', SHT_PROGBITS, 0, 0, _abbrev_section(), 1),
        ('.debug_info', SHT_PROGBITS, 0, 0,
         _info_section(image, name, comp_dir, files, funcs, [(n, a, c) for (n, a), (_, c) in data]), 1),
        ('.debug_line', SHT_PROGBITS, 0, 0, _line_program(image, files), 1),
        ('.debug_aranges', SHT_PROGBITS, 0, 0, _aranges(image), 1),
        ('.debug_frame', SHT_PROGBITS, 0, 0,
         _cfi(image, [(a, hi) for _, a, hi in funcs],
              (image.base - CALLER_SIZE, image.base) if caller else None), 4),
    ]
    if caller:
        sections.insert(1, ('.caller', SHT_NOBITS, SHF_ALLOC | SHF_EXECINSTR,
                            image.base - CALLER_SIZE, b'', 1))
    shstr = _Strtab()
    for s in sections:
        shstr.add(s[0])
    shstr.add('.shstrtab')
    sections.append(('.shstrtab', SHT_STRTAB, 0, 0, bytes(shstr.data), 1))

    ehsize, phsize, shsize = 52, 32, 40
    out = bytearray(ehsize + phsize)
    offsets = []
    for i, (_, _, _, addr, body, align) in enumerate(sections):
        if i == 0:                        # .text: file offset congruent to its address
            pad = (addr - len(out)) % 0x1000
        else:
            pad = -len(out) % align
        out += b'\0' * pad
        offsets.append(len(out))
        out += body
    out += b'\0' * (-len(out) % 4)
    shoff = len(out)
    shdrs = [b'\0' * shsize]
    index = {s[0]: i + 1 for i, s in enumerate(sections)}
    for (sname, stype, flags, addr, body, align), off in zip(sections, offsets):
        link = info = entsize = 0
        if sname == '.symtab':
            link, info, entsize = index['.strtab'], first_global, 16
        size = CALLER_SIZE if stype == SHT_NOBITS else len(body)
        shdrs.append(struct.pack('<IIIIIIIIII', shstr.index[sname], stype, flags, addr, off,
                                 size, link, info, align, entsize))
    out += b''.join(shdrs)
    text_off = offsets[0]
    ident = b'\x7fELF' + bytes([1, 1, 1, 0]) + b'\0' * 8
    hdr = ident + struct.pack('<HHIIIIIHHHHHH', ET_EXEC, EM_386, 1,
                              image.base if entry is None else entry, ehsize, shoff, 0,
                              ehsize, phsize, 1, shsize, len(shdrs), index['.shstrtab'])
    ph = struct.pack('<IIIIIIII', PT_LOAD, text_off, image.base, paddr, image.size, image.size,
                     7, 0x1000)
    out[0:ehsize + phsize] = hdr + ph
    return bytes(out)


def write_elf(image, path, name, comp_dir, paddr=None, entry=None, caller=None):
    """Write the ELF file of `image` to `path` (atomically: a temporary file
    renamed into place)."""
    data = elf_bytes(image, name, comp_dir, paddr, entry, caller)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)
    return path
