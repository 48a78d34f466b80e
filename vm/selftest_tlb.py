"""Self-test of the modelled TLB (tlb='p3', vm/tlb.py): the properties the
model adds to the hardware, each shown by a small guest program on the
selftest rig (vm/selftest.py), with the QEMU soft TLB as the contrast.

What this file owns
  - TLB_S, guest routines appended to the rig's SELFTEST_S.
  - One check per property, returning (ok, detail):
      (i)   tlb_capacity_eviction  five pages of one 4-way DTLB set: the first
                                   is evicted, misses again, and a PTE change
                                   to it is seen without a flush; four pages
                                   stay cached
      (ii)  tlb_global_survives_cr3 a global entry (PTE.G, CR4.PGE) keeps its
                                   stale translation across a CR3 load, a
                                   non-global one does not; under tlb=qemu
                                   neither survives
      (iii) tlb_pge_toggle_drops    clearing CR4.PGE (2.4's __flush_tlb_global)
                                   drops the global entry
      (iv)  tlb_walk_exact          the model's walk and QEMU's walker leave
                                   the same A/D bits and take the same faults
                                   (error code, CR2) on the same program

Rules: as vm/selftest.py (plain x86, no Linux).
"""
from . import x86

TLB_S = r'''
// void write_cr4(EAX value)
write_cr4:
        mov cr4, eax
        hlt

// u32 write_read(EDX va, EAX value): write va, read it back.
write_read:
        mov dword ptr [edx], eax
        mov eax, dword ptr [edx]
        hlt
'''

SET_STRIDE = 16 * 0x1000       # pages 16 apart share a set of the P3 DTLB (16 sets)


def _rig(tlb='p3', **kw):
    return st.Rig(source=st.SELFTEST_S + TLB_S, tlb=tlb, **kw)


def _pattern(value):
    return value.to_bytes(4, 'little') * 1024


def _read(rig, va, name='read_x'):
    t = rig.call(0, name, edx=va)
    return t, rig.cpus[0].regs['eax']


def _remap(rig, va, frame, flags=x86.PTE_P | x86.PTE_W):
    rig.set_pte(va, frame | flags)           # no flush: the TLB may keep the old one


def check_tlb_capacity_eviction():
    rig = _rig()
    m, tlb = rig.m, rig.cpus[0].tlb
    pages = [st.DATA + i * SET_STRIDE for i in range(5)]
    for i, va in enumerate(pages):
        m.write(va, _pattern(0x1000 + i))
    m.write(st.FAR, _pattern(0xFA))
    for va in pages[:4]:
        _read(rig, va)
    before = tlb.counters()['dtlb_misses_kernel']
    _remap(rig, pages[0], st.FAR)
    _, kept = _read(rig, pages[0])             # 4 pages: still cached, stale
    after4 = tlb.counters()['dtlb_misses_kernel']
    _read(rig, pages[4])                        # the fifth evicts the oldest
    evictions = tlb.counters()['tlb_evictions']
    _, fresh = _read(rig, pages[0])             # walks again: the new frame
    after5 = tlb.counters()['dtlb_misses_kernel']
    ok = (kept == 0x1000 and after4 == before and evictions >= 1 and fresh == 0xFA
          and after5 == after4 + 2 and tlb.held('dtlb') <= 64)
    return ok, (f'4 pages of one set: page 0 reads {kept:#x} after its PTE changed (cached, '
                f'{after4 - before} misses); a 5th page evicts it ({evictions} evictions): page 0 '
                f'then reads {fresh:#x} and the two reads cost {after5 - after4} misses')


def _global_run(tlb):
    """Page A global, page B not; both cached, both PTEs changed, CR3 reload."""
    rig = _rig(tlb=tlb)
    m = rig.m
    a, b = st.DATA, st.DATA + 0x1000
    m.write(a, _pattern(0xA0))
    m.write(b, _pattern(0xB0))
    m.write(st.FAR, _pattern(0xA1))
    m.write(st.FAR + 0x1000, _pattern(0xB1))
    rig.call(0, 'write_cr4', eax=x86.CR4_PGE)
    rig.set_pte(a, a | x86.PTE_P | x86.PTE_W | x86.PTE_G)
    _read(rig, a)
    _read(rig, b)
    _remap(rig, a, st.FAR, x86.PTE_P | x86.PTE_W | x86.PTE_G)
    _remap(rig, b, st.FAR + 0x1000)
    _, ra = _read(rig, a, 'reload_cr3_read')
    _, rb = _read(rig, b, 'reload_cr3_read')
    return rig, ra, rb


def check_tlb_global_survives_cr3():
    rig, ra, rb = _global_run('p3')
    _, qa, qb = _global_run('qemu')
    held = rig.cpus[0].tlb.held('dtlb', global_only=True)
    ok = ra == 0xA0 and rb == 0xB1 and qa == 0xA1 and qb == 0xB1 and held >= 1
    return ok, (f'tlb=p3 after a CR3 load: global page reads {ra:#x} (stale, kept), '
                f'non-global reads {rb:#x} (flushed); tlb=qemu: {qa:#x}, {qb:#x} (QEMU '
                f'drops global entries on a CR3 load)')


def check_tlb_pge_toggle_drops():
    rig, ra, _ = _global_run('p3')
    tlb = rig.cpus[0].tlb
    before = tlb.counters()['tlb_pge_flushes']
    rig.call(0, 'write_cr4', eax=0)                    # __flush_tlb_global: PGE off ...
    rig.call(0, 'write_cr4', eax=x86.CR4_PGE)          # ... and on again
    _, after = _read(rig, st.DATA)
    flushes = tlb.counters()['tlb_pge_flushes'] - before
    refills = tlb.counters()['tlb_global_refills']
    ok = ra == 0xA0 and after == 0xA1 and flushes == 2 and refills >= 1
    return ok, (f'global page read {ra:#x} across a CR3 load, {after:#x} after CR4.PGE off/on '
                f'({flushes} full flushes; {refills} misses refilled what they dropped)')


def _walk_program(tlb):
    """Reads, writes, a user read of a supervisor page, a write to a
    read-only page: (traps, PTEs) after."""
    rig = _rig(tlb=tlb)
    m = rig.m
    pages = [st.DATA + i * 0x1000 for i in range(4)]
    rig.set_pte(pages[2], pages[2] | x86.PTE_P)               # read-only
    rig.set_pte(pages[3], 0)                                  # not present
    out = []
    out.append(rig.call(0, 'read_x', edx=pages[0]))
    out.append(rig.call(0, 'write_x', edx=pages[1], eax=5))
    out.append(rig.call(0, 'write_read', edx=pages[0], eax=7))
    out.append(rig.call(0, 'write_x', edx=pages[2], eax=9))
    out.append(rig.call(0, 'read_x', edx=pages[3]))
    out.append(rig.to_user(0, 'user_read', ebx=pages[0]))
    traps = [(t.kind, t.cr2, t.error, t.eip) for t in out]
    ptes = [rig.pte(va) for va in pages] + [m.read32(0x1000)]
    return traps, ptes


def check_tlb_walk_exact():
    p3 = _walk_program('p3')
    qemu = _walk_program('qemu')
    ok = p3 == qemu and any(k == 'pf' for k, *_ in p3[0])
    return ok, (f'tlb=p3 and tlb=qemu: the same traps ({sum(k == "pf" for k, *_ in p3[0])} '
                f'#PF with the same CR2 and error code) and the same PTEs after '
                f'({" ".join(f"{p:#x}" for p in p3[1])})' if ok else f'p3 {p3} qemu {qemu}')


CHECKS = [
    ('tlb_capacity_eviction', check_tlb_capacity_eviction),
    ('tlb_global_survives_cr3', check_tlb_global_survives_cr3),
    ('tlb_pge_toggle_drops', check_tlb_pge_toggle_drops),
    ('tlb_walk_exact', check_tlb_walk_exact),
]


# The rig; imported last because vm/selftest.py imports CHECKS from here.
from . import selftest as st  # noqa: E402
