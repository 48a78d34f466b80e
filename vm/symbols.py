"""Addresses to names, and bytes to instructions, over assembled Images.

What this file owns
  - Symbolizer(images): the one place that turns a guest address into text,
    `kmap_atomic+0x1c (asm/kernel/highmem.S:88)`, for traces, faults and
    listings, and turns bytes into Intel-syntax text with capstone.

Rules
  - Read-only: Images are never modified here.
  - An address outside every image, or before the first symbol of its image,
    is printed as hex (`0x08048123`), with the file:line when one is known.
"""
import bisect

import capstone

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
MAX_INSN = 15           # longest x86 instruction, in bytes
DATA_BYTES = 8          # bytes shown for a data line in a listing


class Symbolizer:
    def __init__(self, images):
        self.images = sorted(images, key=lambda im: im.base)
        self._bases = [im.base for im in self.images]

    def image_at(self, addr):
        """The image containing addr, or None."""
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0 and self.images[i].contains(addr):
            return self.images[i]
        return None

    def name(self, addr):
        """'sym+0x1c', 'sym', or hex when no symbol covers addr."""
        im = self.image_at(addr)
        sym = im.symbol_at(addr) if im else None
        if sym is None:
            return f'{addr:#010x}'
        name, off = sym
        return f'{name}+{off:#x}' if off else name

    def describe(self, addr):
        """'kmap_atomic+0x1c (asm/kernel/highmem.S:88)'."""
        im = self.image_at(addr)
        where = im.line_at(addr) if im else None
        if where is None:
            return self.name(addr)
        return f'{self.name(addr)} ({where[0]}:{where[1]})'

    def disasm(self, code, addr):
        """(text, size) of the instruction at the start of `code`, loaded at
        addr; ('(bad)', 1) if it does not decode."""
        for _, size, mnem, ops in _CS.disasm_lite(bytes(code[:MAX_INSN]), addr, 1):
            return f'{mnem} {ops}'.strip(), size
        return '(bad)', 1

    def disasm_at(self, image, addr):
        off = addr - image.base
        return self.disasm(image.code[off:off + MAX_INSN], addr)

    def listing(self, image, lo, hi):
        """Yield a line per instruction, and per data statement, starting in
        [lo, hi), e.g.
        c0100010 <kmap_atomic+0x10> 8b 44 24 04   mov eax, dword ptr [esp + 4]   ; f.S:90"""
        i = bisect.bisect_left(image.lines, (lo,))
        for addr, size, file, line, is_insn, text in image.lines[i:]:
            if addr >= hi:
                break
            off = addr - image.base
            chunk = image.code[off:off + size]
            rows = _CS.disasm_lite(chunk, addr) if is_insn else [(addr, size, text, '')]
            for a, n, mnem, ops in rows:
                raw = image.code[a - image.base:a - image.base + min(n, DATA_BYTES)].hex(' ')
                raw += ' ...' if n > DATA_BYTES else ''
                yield f'{a:08x} <{self.name(a)}> {raw}   {mnem} {ops}'.rstrip() + f'   ; {file}:{line}'


def insn_start_bitmap(code, base, ranges):
    """The instruction-start bitmap of machine code nobody assembled here
    (an ELF binary's text): a capstone linear sweep over each [lo, hi) of
    `ranges` (virtual addresses inside [base, base+len(code))), one bit per
    byte of `code`.  A byte that does not decode is skipped (no bit).

    Exact as long as the swept ranges hold only instructions laid end to end
    (compiled text: padding between functions is nop/int3, which decode);
    data inside a swept range, or a jump into the middle of an instruction,
    would make the count of that block wrong."""
    bm = bytearray((len(code) + 7) // 8)
    for lo, hi in ranges:
        off, end = lo - base, hi - base
        while off < end:
            for a, size, _, _ in _CS.disasm_lite(bytes(code[off:end]), base + off):
                i = a - base
                bm[i >> 3] |= 1 << (i & 7)
                off = i + size
            if off < end:             # stopped at a byte that does not decode
                off += 1
    return bytes(bm)
