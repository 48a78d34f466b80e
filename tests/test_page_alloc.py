"""Tests for minikernel/page_alloc.py: mem_map in guest RAM, zones,
watermarks, GFP fallback, buddy split/merge, BUG checks, check()."""
import mmap
import random

import numpy as np
import pytest

from minikernel import layout
from minikernel import page_alloc as P
from minikernel.bug import KernelBug

MiB = layout.MiB
KERNEL_IMAGE = (0x100, 0x300)        # 1 MiB .. 3 MiB: a kernel image's pfns
# Python 3.11's mmap lacks the constant; 0x4000 is Linux's MAP_NORESERVE.
MAP_NORESERVE = getattr(mmap, 'MAP_NORESERVE', 0x4000)


def new_ram(size):
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)


def boot(ram_size=128 * MiB, highmem=96 * MiB, reserved=(KERNEL_IMAGE,), **kw):
    low, high = layout.split_memory(ram_size, highmem=highmem)
    ram = new_ram(ram_size)
    phys, _ = P.memmap_extent((low + high) >> layout.PAGE_SHIFT, low, floor=3 * MiB)
    return P.PageAlloc(ram, ram_size, phys, low, high, reserved=list(reserved), **kw), ram


def free_counts(pa):
    return [z.free_pages for z in pa.zones]


def zone_of(pa, pfn):
    return pa.page_zone(pfn).name


# ---- struct page and mem_map ----------------------------------------------

def test_struct_page_layout_matches_offsets():
    d = P.PAGE_DTYPE
    assert d.itemsize == P.PAGE_STRUCT_SIZE == 32
    expect = {'flags': P.PG_FLAGS_OFF, '_count': P.PG_COUNT_OFF, '_mapcount': P.PG_MAPCOUNT_OFF,
              'mapping': P.PG_MAPPING_OFF, 'index': P.PG_INDEX_OFF, 'private': P.PG_PRIVATE_OFF,
              'virtual': P.PG_VIRTUAL_OFF, 'pte_chain': P.PG_PTE_CHAIN_OFF}
    assert {name: d.fields[name][1] for name in d.names} == expect
    assert list(expect.values()) == list(range(0, 32, 4))
    assert (P.PG_locked, P.PG_dirty, P.PG_highmem, P.PG_reserved, P.PG_compound) == (0, 4, 8, 11, 20)
    assert P.PG_buddy > P.PG_compound and P.PG_buddy < P.ZONE_SHIFT


def test_mem_map_is_a_view_of_guest_ram():
    pa, ram = boot()
    pfn = 5000
    base = pa.memmap_phys + pfn * P.PAGE_STRUCT_SIZE
    pa.mem_map['index'][pfn] = 0xDEADBEEF
    pa.mem_map[pfn]['pte_chain'] = 0x12345678
    assert ram[base + P.PG_INDEX_OFF:base + P.PG_INDEX_OFF + 4] == (0xDEADBEEF).to_bytes(4, 'little')
    assert int.from_bytes(ram[base + P.PG_PTE_CHAIN_OFF:base + 32], 'little') == 0x12345678
    ram[base + P.PG_COUNT_OFF:base + P.PG_COUNT_OFF + 4] = (7).to_bytes(4, 'little')
    assert pa.page_count(pfn) == 7 and int(pa.mem_map['_count'][pfn]) == 7
    ram[base + P.PG_MAPCOUNT_OFF:base + P.PG_MAPCOUNT_OFF + 4] = (-1 & 0xFFFFFFFF).to_bytes(4, 'little')
    assert int(pa.mem_map[pfn]['_mapcount']) == -1


def test_pfn_to_page_gives_kernel_virtual_addresses():
    pa, _ = boot()
    assert pa.pfn_to_page(0) == layout.va(pa.memmap_phys)
    assert pa.pfn_to_page(10) == layout.va(pa.memmap_phys) + 320
    for pfn in (0, 1, 4095, 4096, pa.nr_pages - 1):
        assert pa.page_to_pfn(pa.pfn_to_page(pfn)) == pfn
    with pytest.raises(KernelBug):
        pa.page_to_pfn(pa.pfn_to_page(3) + 4)           # not on a struct page boundary
    with pytest.raises(KernelBug):
        pa.page_to_pfn(layout.va(pa.memmap_phys) - 32)
    with pytest.raises(KernelBug):
        pa.pfn_to_page(pa.nr_pages)


def test_mem_map_initial_contents():
    pa, _ = boot()
    mm = pa.mem_map
    low = pa.max_low_pfn
    assert (mm['virtual'][:low] == layout.PAGE_OFFSET + (np.arange(low, dtype=np.uint32) << 12)).all()
    assert (mm['virtual'][low:] == 0).all()
    assert (mm['_mapcount'] == -1).all() and (mm['mapping'] == 0).all()
    assert pa.PageHighMem(low) and not pa.PageHighMem(low - 1)
    assert pa.PageReserved(0) and pa.PageReserved(0x100) and pa.PageReserved(0x2FF)
    assert not pa.PageReserved(0x300)
    memmap_pfn = pa.memmap_phys >> 12
    assert pa.PageReserved(memmap_pfn) and pa.PageReserved(memmap_pfn + 255)   # 1 MiB of mem_map
    assert [int(f) >> P.ZONE_SHIFT for f in mm['flags'][[0, 4095, 4096, low - 1, low]]] == [0, 0, 1, 1, 2]


# ---- zones and watermarks -----------------------------------------------

def test_128M_with_highmem_96M_zone_sizes_and_watermarks():
    pa, _ = boot()
    dma, normal, high = pa.zones
    assert (dma.start_pfn, dma.end_pfn) == (0, 4096)
    assert (normal.start_pfn, normal.end_pfn) == (4096, 8192)
    assert (high.start_pfn, high.end_pfn) == (8192, 32768)
    assert [z.present_pages for z in pa.zones] == [4096, 4096, 24576]
    # 2.4: pages_min = size / 128 clamped to [20, 255]; low = 2 min; high = 3 min
    assert (dma.pages_min, dma.pages_low, dma.pages_high) == (32, 64, 96)
    assert (normal.pages_min, normal.pages_low, normal.pages_high) == (32, 64, 96)
    assert (high.pages_min, high.pages_low, high.pages_high) == (192, 384, 576)
    # reserved: pfn 0, the kernel image (512 pages), mem_map (1 MiB at 16 MiB)
    assert dma.reserved_pages == 1 + 512 and normal.reserved_pages == 256
    assert free_counts(pa) == [4096 - 513, 4096 - 256, 24576]
    assert pa.describe()[:2] == ['96MB HIGHMEM available.', '32MB LOWMEM available.']
    assert '  HighMem zone: 24576 pages, 0 reserved, min 192 low 384 high 576' in pa.describe()
    pa.check()


def test_3G_boots_with_the_right_zones():
    ram = 3 << 30
    pa, _ = boot(ram, highmem=None)
    assert [z.present_pages for z in pa.zones] == [4096, 225280, 557056]    # 16M, 880M, 2176M
    assert pa.nr_pages == 786432 and pa.max_low_pfn == 229376
    assert [z.pages_min for z in pa.zones] == [32, 255, 255]                  # clamped at 255
    memmap_pages = 786432 * 32 // 4096                                         # 24 MiB
    assert pa.zones[1].reserved_pages == memmap_pages
    assert pa.nr_free_pages() == 786432 - 1 - 512 - memmap_pages
    assert pa.nr_free_highpages() == 557056
    assert len(pa.zones[2].free_area[P.MAX_ORDER - 1]) == 557056 // 1024
    pa.check()


def test_small_machine_without_highmem_has_empty_highmem_zone():
    pa, _ = boot(24 * MiB, highmem=None)
    assert [z.present_pages for z in pa.zones] == [4096, 2048, 0]
    assert [z.name for z in pa.zonelist(P.GFP_HIGHUSER)] == ['Normal', 'DMA']
    pa.check()


def test_memmap_extent():
    assert P.memmap_extent(32768, 32 * MiB) == (16 * MiB, 1 * MiB)
    assert P.memmap_extent(786432, 896 * MiB, floor=3 * MiB + 5) == (16 * MiB, 24 * MiB)
    assert P.memmap_extent(32768, 16 * MiB + 512 * 1024, floor=3 * MiB) == (3 * MiB, 1 * MiB)  # no room above 16M
    assert P.memmap_extent(10, 64 * MiB, floor=20 * MiB + 1) == (20 * MiB + 4096, 4096)
    with pytest.raises(ValueError):
        P.memmap_extent(786432, 17 * MiB, floor=3 * MiB)


def test_bad_geometry_is_a_value_error():
    ram = new_ram(64 * MiB)
    with pytest.raises(ValueError):
        P.PageAlloc(ram, 64 * MiB, 16 * MiB + 4, 64 * MiB, 0)          # unaligned mem_map
    with pytest.raises(ValueError):
        P.PageAlloc(ram, 64 * MiB, 63 * MiB, 32 * MiB, 32 * MiB)       # mem_map in highmem
    with pytest.raises(ValueError):
        P.PageAlloc(ram, 64 * MiB, 16 * MiB, 64 * MiB, 4 * MiB)        # more than the buffer
    with pytest.raises(ValueError):
        P.PageAlloc(ram, 64 * MiB, 16 * MiB, 64 * MiB, 0, reserved=[(5, 5)])


# ---- GFP zonelists and the fast path -----------------------------------------

def test_zonelist_for_each_gfp():
    pa, _ = boot()
    names = lambda gfp: [z.name for z in pa.zonelist(gfp)]
    for gfp in (P.GFP_KERNEL, P.GFP_ATOMIC, P.GFP_USER, P.GFP_NOIO, P.GFP_NOFS, P.GFP_NOHIGHIO):
        assert names(gfp) == ['Normal', 'DMA']
    assert names(P.GFP_HIGHUSER) == ['HighMem', 'Normal', 'DMA']
    assert names(P.GFP_DMA) == ['DMA']
    assert names(P.GFP_KERNEL | P.__GFP_DMA) == ['DMA']
    assert names(P.__GFP_DMA | P.__GFP_HIGHMEM) == ['DMA']          # DMA wins, as in 2.4


def test_gfp_bits_are_2_5s():
    assert (P.__GFP_DMA, P.__GFP_HIGHMEM, P.__GFP_WAIT, P.__GFP_HIGH, P.__GFP_IO, P.__GFP_FS) == \
        (0x01, 0x02, 0x10, 0x20, 0x40, 0x100)
    assert P.GFP_ATOMIC == P.__GFP_HIGH and not P.GFP_ATOMIC & P.__GFP_WAIT
    assert P.GFP_KERNEL & P.__GFP_WAIT and not P.GFP_KERNEL & P.__GFP_HIGH
    assert P.GFP_NOIO == P.__GFP_WAIT and not P.GFP_NOFS & P.__GFP_FS
    assert P.GFP_HIGHUSER == P.GFP_USER | P.__GFP_HIGHMEM


def drain(pa, gfp, order=0):
    """Allocate with the fast path until it fails; the zone of each page, run-length coded."""
    runs = []
    while (pfn := pa.alloc_pages_fast(gfp, order)) is not None:
        name = zone_of(pa, pfn)
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return [tuple(r) for r in runs]


def test_highuser_falls_back_highmem_normal_dma_with_incremental_min():
    pa, _ = boot()
    d0, n0, h0 = free_counts(pa)
    # Walk 1 (pages_low, incremental min, 2.5.32+ pages_high escape):
    #   HighMem while free > 1+384; Normal while free > 1+384+64 or >= 96;
    #   DMA while free > 1+384+64+64 or >= 96.
    # Walk 2 (pages_min): HighMem while free > 1+192; Normal needs > 225 or
    #   >= 96 (it has 95); DMA needs > 257 or >= 96 (95): no.
    assert drain(pa, P.GFP_HIGHUSER) == [('HighMem', h0 - 385), ('Normal', n0 - 95),
                                         ('DMA', d0 - 95), ('HighMem', 385 - 193)]
    assert free_counts(pa) == [95, 95, 193]
    assert pa.nr_failed[0] == 1
    pa.check()


def test_highuser_fallback_2_4_strict_incremental_min():
    pa, _ = boot(pages_high_escape=False)
    d0, n0, h0 = free_counts(pa)
    assert drain(pa, P.GFP_HIGHUSER) == [('HighMem', h0 - 385), ('Normal', n0 - 449),
                                         ('DMA', d0 - 513), ('HighMem', 385 - 193),
                                         ('Normal', 449 - 225), ('DMA', 513 - 257)]
    assert free_counts(pa) == [257, 225, 193]


def test_kernel_then_atomic_then_memalloc_watermarks():
    pa, _ = boot()
    d0, n0, h0 = free_counts(pa)
    # GFP_KERNEL walk 1: Normal while > 1+64; DMA while > 129 or >= 96.
    # walk 2: Normal while > 1+32; DMA while > 1+32+32.
    assert drain(pa, P.GFP_KERNEL) == [('Normal', n0 - 65), ('DMA', d0 - 95),
                                       ('Normal', 65 - 33), ('DMA', 95 - 65)]
    # GFP_ATOMIC (__GFP_HIGH) may go to a quarter of pages_min: 1+8, 1+8+8.
    assert drain(pa, P.GFP_ATOMIC) == [('Normal', 33 - 9), ('DMA', 65 - 17)]
    assert free_counts(pa) == [17, 9, h0]                 # HighMem untouched
    # PF_MEMALLOC's walk ignores the watermarks and empties the zones.
    got = []
    while (pfn := pa.alloc_pages_pass(P.GFP_KERNEL, 0, P.WMARK_NONE)) is not None:
        got.append(zone_of(pa, pfn))
    assert got == ['Normal'] * 9 + ['DMA'] * 17
    assert free_counts(pa) == [0, 0, h0]
    pa.check()


def test_gfp_dma_uses_only_dma():
    pa, _ = boot()
    d0, n0, h0 = free_counts(pa)
    assert drain(pa, P.GFP_DMA) == [('DMA', d0 - 33)]     # walk 1 to 65, walk 2 to 33
    assert free_counts(pa) == [33, n0, h0]


def test_zone_watermark_ok_boundaries():
    pa, _ = boot()
    z = pa.zones[P.ZONE_NORMAL]
    z_free = z.free_pages
    assert pa.zone_watermark_ok(z, 0, z_free - 2)
    assert not pa.zone_watermark_ok(z, 0, z_free - 1)      # needs free > mark + 1
    assert pa.zone_watermark_ok(z, 3, z_free - 9) and not pa.zone_watermark_ok(z, 3, z_free - 8)


def test_kswapd_flags():
    pa, _ = boot()
    assert not pa.any_zone_below_low and not pa.need_balance
    drain(pa, P.GFP_KERNEL)
    assert pa.any_zone_below_low
    assert pa.zones[P.ZONE_NORMAL].need_balance            # the classzone
    assert not pa.zones[P.ZONE_HIGHMEM].need_balance


def test_orders_beyond_max_order():
    pa, _ = boot()
    assert pa.alloc_pages_fast(P.GFP_KERNEL, P.MAX_ORDER) is None
    with pytest.raises(KernelBug):
        pa.alloc_pages_fast(P.GFP_KERNEL, -1)
    pfn = pa.alloc_pages_fast(P.GFP_HIGHUSER, P.MAX_ORDER - 1)
    assert pfn % 1024 == 0 and zone_of(pa, pfn) == 'HighMem'
    assert pa.page_count(pfn) == 1 and pa.page_count(pfn + 1) == 0


# ---- buddy split / merge ------------------------------------------------

def test_expand_keeps_the_upper_half_and_merges_back():
    pa, _ = boot()
    before = pa.free_area_snapshot()
    first = pa.alloc_pages_fast(P.GFP_HIGHUSER, 0)
    second = pa.alloc_pages_fast(P.GFP_HIGHUSER, 0)
    assert (first, second) == (32767, 32766)             # 2.4 expand(): lower halves go back
    high = pa.zones[P.ZONE_HIGHMEM]
    assert [sorted(a)[-1:] for a in high.free_area[:10]] == \
        [[]] + [[32768 - (2 << o)] for o in range(1, 10)]
    pa.free_pages(first, 0)
    pa.free_pages(second, 0)
    assert pa.free_area_snapshot() == before
    pa.check()


def test_buddies_never_merge_across_an_unaligned_zone_boundary():
    pa, _ = boot(highmem=96 * MiB + 8192)                 # Normal ends at pfn 8190
    assert pa.max_low_pfn == 8190
    normal, high = pa.zones[P.ZONE_NORMAL], pa.zones[P.ZONE_HIGHMEM]
    assert 8188 in normal.free_area[1] and 8190 in high.free_area[1]    # buddies, two zones
    before = pa.free_area_snapshot()
    held = []
    while (pfn := pa.alloc_pages_pass(P.GFP_KERNEL, 0, P.WMARK_NONE)) is not None:
        held.append(pfn)
    assert normal.free_pages == 0 and max(held) == 8189
    for pfn in held:
        pa.free_pages(pfn, 0)
    assert pa.free_area_snapshot() == before
    pa.check()


def test_allocated_pages_come_back_clean():
    pa, _ = boot()
    stale = (1 << P.PG_referenced) | (1 << P.PG_uptodate) | (1 << P.PG_dirty) | (1 << P.PG_error)
    for gfp, zone_bits in ((P.GFP_KERNEL, P.ZONE_NORMAL << P.ZONE_SHIFT),
                           (P.GFP_HIGHUSER, (P.ZONE_HIGHMEM << P.ZONE_SHIFT) | (1 << P.PG_highmem))):
        pfn = pa.alloc_pages_fast(gfp, 0)
        page = pa.mem_map[pfn]
        assert (int(page['flags']), int(page['_count']), int(page['private'])) == (zone_bits, 1, 0)
        pa.mem_map['flags'][pfn] |= stale
        pa.free_pages(pfn, 0)
        assert pa.alloc_pages_fast(gfp, 0) == pfn          # LIFO: the same page again
        assert int(pa.mem_map['flags'][pfn]) == zone_bits


def test_split_and_merge_return_to_boot_state():
    pa, _ = boot()
    before, counts = pa.free_area_snapshot(), free_counts(pa)
    rng = random.Random(1)
    held = []
    for _ in range(400):
        order = rng.choice((0, 0, 0, 1, 2, 3, 5))
        gfp = rng.choice((P.GFP_KERNEL, P.GFP_HIGHUSER, P.GFP_DMA))
        pfn = pa.alloc_pages_fast(gfp, order)
        assert pfn is not None
        held.append((pfn, order))
    assert free_counts(pa) != counts
    pa.check()
    rng.shuffle(held)
    for pfn, order in held:
        assert pa.free_pages(pfn, order)
    assert free_counts(pa) == counts
    assert pa.free_area_snapshot() == before
    pa.check()


def test_random_alloc_free_keeps_exact_counts():
    pa, _ = boot()
    boot_state, model = pa.free_area_snapshot(), free_counts(pa)
    rng = random.Random(20021002)
    held = []
    gfps = (P.GFP_KERNEL, P.GFP_ATOMIC, P.GFP_HIGHUSER, P.GFP_USER, P.GFP_NOIO, P.GFP_DMA)
    for step in range(4000):
        if held and rng.random() < 0.45:
            pfn, order = held.pop(rng.randrange(len(held)))
            pa.free_pages(pfn, order)
            model[pa.page_zone(pfn).index] += 1 << order
        else:
            order = rng.choice((0, 0, 0, 0, 1, 2, 4, 7))
            gfp = rng.choice(gfps)
            pfn = pa.alloc_pages_fast(gfp, order)
            if pfn is not None:
                assert pfn % (1 << order) == 0
                assert pa.page_zone(pfn) in pa.zonelist(gfp)
                held.append((pfn, order))
                model[pa.page_zone(pfn).index] -= 1 << order
        assert free_counts(pa) == model
        if step % 500 == 0:
            pa.check()
    pa.check()
    for pfn, order in held:
        pa.free_pages(pfn, order)
    assert pa.free_area_snapshot() == boot_state
    pa.check()


def test_reserved_pages_are_never_handed_out():
    extra = (20000, 20003)                                # an odd reserved hole in HighMem
    pa, _ = boot(reserved=(KERNEL_IMAGE, extra))
    total = pa.nr_free_pages()
    memmap = (pa.memmap_phys >> 12, (pa.memmap_phys >> 12) + 256)
    reserved = set(range(0, 1)) | set(range(*KERNEL_IMAGE)) | set(range(*memmap)) | set(range(*extra))
    got = []
    for order in (3, 0):                                  # big blocks first, then the crumbs
        while (pfn := pa.alloc_pages_pass(P.GFP_HIGHUSER, order, P.WMARK_NONE)) is not None:
            got.extend(range(pfn, pfn + (1 << order)))
    assert len(got) == len(set(got)) == total
    assert not reserved & set(got)
    assert set(got) | reserved == set(range(pa.nr_pages))
    assert free_counts(pa) == [0, 0, 0]
    pa.check()


# ---- BUG checks -----------------------------------------------------------

def test_double_free_is_a_kernel_bug_and_loses_nothing():
    pa, _ = boot()
    pfn = pa.alloc_pages_fast(P.GFP_KERNEL, 0)
    pa.free_pages(pfn, 0)
    counts, state = free_counts(pa), pa.free_area_snapshot()
    with pytest.raises(KernelBug, match='double free'):
        pa.free_pages(pfn, 0)
    assert free_counts(pa) == counts and pa.free_area_snapshot() == state
    pa.check()


def test_freeing_inside_a_free_block_is_a_double_free():
    pa, _ = boot()
    pfn = pa.alloc_pages_fast(P.GFP_HIGHUSER, 2)
    pa.free_pages(pfn, 2)
    with pytest.raises(KernelBug):
        pa.free_pages(pfn + 1, 0)


def test_freeing_reserved_pages_is_a_kernel_bug():
    pa, _ = boot()
    for pfn in (0, KERNEL_IMAGE[0], pa.memmap_phys >> 12):
        with pytest.raises(KernelBug, match='reserved'):
            pa.free_pages(pfn, 0)
    assert not pa.put_page(0)                             # put_page ignores them, as 2.4 does
    pa.check()


def test_bad_order_or_alignment_is_a_kernel_bug():
    pa, _ = boot()
    pfn = pa.alloc_pages_fast(P.GFP_HIGHUSER, 1)
    for args in ((pfn, P.MAX_ORDER), (pfn, -1), (pfn + 1, 1), (pa.nr_pages, 0), (pfn, 1.0)):
        with pytest.raises(KernelBug):
            pa.free_pages(*args)
    assert pa.free_pages(pfn, 1)
    pa.check()


@pytest.mark.parametrize('order', [1, 7])                # checked page by page / with numpy
def test_count_not_zero_on_the_free_path_is_a_kernel_bug(order):
    pa, _ = boot()
    pfn = pa.alloc_pages_fast(P.GFP_HIGHUSER, order)
    tail = pfn + (1 << order) - 1
    pa.mem_map['_count'][tail] = 1                        # someone holds a tail page
    with pytest.raises(KernelBug, match=f'Bad page state at pfn {tail:#x}'):
        pa.free_pages(pfn, order)


@pytest.mark.parametrize('field, value', [('mapping', 0xC1234000), ('_mapcount', 0),
                                          ('flags', 1 << P.PG_lru), ('pte_chain', 0xC0001000)])
def test_freeing_a_page_still_in_use_is_a_kernel_bug(field, value):
    pa, _ = boot()
    pfn = pa.alloc_pages_fast(P.GFP_KERNEL, 0)
    if field == 'flags':
        pa.mem_map['flags'][pfn] |= value
    else:
        pa.mem_map[field][pfn] = value
    with pytest.raises(KernelBug, match='Bad page state'):
        pa.free_pages(pfn, 0)


def test_allocating_a_corrupted_free_page_is_a_kernel_bug():
    pa, _ = boot()
    nxt = next(reversed(pa.zones[P.ZONE_HIGHMEM].free_area[P.MAX_ORDER - 1]))
    pa.mem_map['mapping'][nxt + 1023] = 0xC0DE0000        # the page expand() will hand out
    with pytest.raises(KernelBug, match='prep_new_page'):
        pa.alloc_pages_fast(P.GFP_HIGHUSER, 0)


def test_references():
    pa, _ = boot()
    pfn = pa.alloc_pages_fast(P.GFP_KERNEL, 0)
    pa.get_page(pfn)
    assert pa.page_count(pfn) == 2
    assert not pa.free_pages(pfn, 0) and pa.page_count(pfn) == 1
    assert pa.put_page(pfn) and pa.page_count(pfn) == 0
    with pytest.raises(KernelBug):
        pa.get_page(pfn)                                  # a reference to a free page
    pa.check()


# ---- check() catches corruption ------------------------------------------

def corrupt_count(pa):
    z = pa.zones[P.ZONE_NORMAL]
    pa.mem_map['_count'][next(iter(z.free_area[P.MAX_ORDER - 1])) + 7] = 1


def corrupt_free_pages(pa):
    pa.zones[P.ZONE_DMA].free_pages += 1


def corrupt_overlap(pa):
    z = pa.zones[P.ZONE_HIGHMEM]
    head = next(iter(z.free_area[P.MAX_ORDER - 1]))
    pa._add_to_free_area(z, head + 512, 9)                # a block inside a free block
    z.free_pages += 512


def corrupt_unmerged(pa):
    z = pa.zones[P.ZONE_HIGHMEM]
    head = z.free_area[P.MAX_ORDER - 1].popitem()[0]
    pa._rmv_page_order(head)
    pa._add_to_free_area(z, head, 9)                      # two free order-9 buddies
    pa._add_to_free_area(z, head + 512, 9)


def corrupt_stray_buddy_flag(pa):
    pfn = pa.alloc_pages_fast(P.GFP_KERNEL, 0)
    pa.mem_map['flags'][pfn] |= 1 << P.PG_buddy


def corrupt_zone_bits(pa):
    pa.mem_map['flags'][9000] &= ~np.uint32(0xFF << P.ZONE_SHIFT)


def corrupt_head_flag(pa):
    z = pa.zones[P.ZONE_NORMAL]
    pa.mem_map['flags'][next(iter(z.free_area[P.MAX_ORDER - 1]))] &= ~np.uint32(1 << P.PG_buddy)


def corrupt_misaligned(pa):
    z = pa.zones[P.ZONE_HIGHMEM]
    head = z.free_area[P.MAX_ORDER - 1].popitem()[0]
    pa._rmv_page_order(head)
    pa._add_to_free_area(z, head + 1, 9)


@pytest.mark.parametrize('small', [0, 32], ids=['numpy', 'small-lists'])
@pytest.mark.parametrize('corrupt, what', [
    (corrupt_count, '_count != 0'), (corrupt_free_pages, 'free_pages'),
    (corrupt_overlap, 'two free blocks'), (corrupt_unmerged, 'should have merged'),
    (corrupt_stray_buddy_flag, 'PG_buddy'), (corrupt_zone_bits, 'zone'),
    (corrupt_head_flag, 'lacks PG_buddy'), (corrupt_misaligned, 'misaligned')])
def test_check_finds_corruption(corrupt, what, small, monkeypatch):
    """Both ways of checking a free list (numpy for long ones, plain Python
    for short ones) find each corruption with the same report."""
    default = P.SMALL_AREA
    monkeypatch.setattr(P, 'SMALL_AREA', small)
    pa, _ = boot()
    pa.check()
    corrupt(pa)
    with pytest.raises(KernelBug, match=what) as e:
        pa.check()
    monkeypatch.setattr(P, 'SMALL_AREA', default if small == 0 else 0)
    with pytest.raises(KernelBug) as other:
        pa.check()
    assert str(other.value) == str(e.value)


def test_counters_and_banner():
    pa, _ = boot()
    a = pa.alloc_pages_fast(P.GFP_HIGHUSER, 2)
    b = pa.alloc_pages_fast(P.GFP_KERNEL, 0)
    pa.free_pages(a, 2)
    c = pa.counters()
    assert (c['pgalloc_high'], c['pgfree_high'], c['pgalloc_normal'], c['pgfree_normal']) == (1, 1, 1, 0)
    assert pa.zones[P.ZONE_HIGHMEM].nr_alloc[2] == 1 and pa.zones[P.ZONE_NORMAL].nr_alloc[0] == 1
    assert c['nr_free_normal'] == pa.zones[P.ZONE_NORMAL].free_pages
    assert pa.describe()[-1] == (f'Memory: {pa.nr_free_pages() * 4}k/131072k available '
                                 f'(3076k reserved, 98304k highmem)')
    assert b is not None
