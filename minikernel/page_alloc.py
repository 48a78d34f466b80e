"""The physical page allocator: mem_map, zones, buddy free lists, GFP fallback.

Mirrors mm/page_alloc.c of Linux 2.4 / 2.5 (2.5.34, September 2002).

What this file owns
  - mem_map: one 32-byte struct page per page frame, in guest lowmem (so,
    as in Linux, it costs ZONE_NORMAL memory), seen from Python as a numpy
    structured array that is a VIEW of the guest RAM buffer: guest asm and
    Python read and write the same bytes.  Hot paths use two memoryviews of
    the same bytes (u32 and i32 words) because they are faster per item;
    they are public as page_words / page_words_signed (word index
    pfn * PAGE_WORDS + W_FLAGS, W_COUNT, W_MAPCOUNT, W_MAPPING) for the
    reclaim, page-lock and rmap loops, which test and set flags and counts
    there without a call per field.
  - The three zones and their watermarks, the per-zone buddy free lists,
    the zonelists that say which zones a GFP mask may use, in which order.
  - The allocator's FAST path: the two zonelist walks of __alloc_pages.
    The slow path (waking kswapd, direct reclaim, OOM, looping) lives
    elsewhere and calls alloc_pages_pass() / alloc_pages_fast().

struct page (little endian, 32 bytes; asm/kernel code uses these offsets)
      0 flags      u32  PG_* bits below; bits 24..31 = zone index (2.5's
                        page->flags >> ZONE_SHIFT)
      4 _count     i32  references; 0 = free (page_count semantics)
      8 _mapcount  i32  -1 = mapped by no PTE (2.6: page_mapcount = +1)
     12 mapping    u32  address_space, or 0
     16 index      u32  offset in mapping / swap entry
     20 private    u32  buffers / swap; on a free block head: its order
     24 virtual    u32  2.4 page->virtual: kernel address if mapped, else 0
     28 pte_chain  u32  2.5 rmap: pte_chain (or direct pte), 0 if unmapped

Free blocks (2.6.19 style, instead of 2.4's per-order bitmaps): the first
page of a free block of order o has PG_buddy set and private = o; every
page of a free block has _count 0.  The free list of each order is a dict
pfn -> None: O(1) removal of a merging buddy, and popitem() takes the most
recently added block, like list_add + take-the-head (LIFO) in Linux.

Locking: Linux guards each zone's free lists and free_pages with
zone->lock (spin_lock_irqsave).  Here no lock is needed: Python kernel code
runs atomically between two yields and nothing in this file yields, so
every routine below runs with the equivalent of zone->lock held and
interrupts off.  No routine here sleeps; all may run in interrupt context.

Rules
  - zone.free_pages is exact at every return (check() verifies it).
  - Reserved pages (PG_reserved: the first page, the kernel image, page
    tables, mem_map itself) are never on a free list and never handed out.
  - A broken invariant raises KernelBug("function: reason"); running out
    of memory returns None.
"""
import numpy as np

from . import layout
from .bug import KernelBug

PAGE_SHIFT = layout.PAGE_SHIFT
PAGE_SIZE = layout.PAGE_SIZE

# ---- struct page ---------------------------------------------------------

PAGE_STRUCT_SIZE = 32
PG_FLAGS_OFF = 0
PG_COUNT_OFF = 4
PG_MAPCOUNT_OFF = 8
PG_MAPPING_OFF = 12
PG_INDEX_OFF = 16
PG_PRIVATE_OFF = 20
PG_VIRTUAL_OFF = 24
PG_PTE_CHAIN_OFF = 28

PAGE_DTYPE = np.dtype({
    'names': ['flags', '_count', '_mapcount', 'mapping', 'index', 'private', 'virtual',
              'pte_chain'],
    'formats': ['<u4', '<i4', '<i4', '<u4', '<u4', '<u4', '<u4', '<u4'],
    'offsets': [PG_FLAGS_OFF, PG_COUNT_OFF, PG_MAPCOUNT_OFF, PG_MAPPING_OFF, PG_INDEX_OFF,
                PG_PRIVATE_OFF, PG_VIRTUAL_OFF, PG_PTE_CHAIN_OFF],
    'itemsize': PAGE_STRUCT_SIZE,
})

# 32-bit word index of each field inside a struct page (offset / 4).
_W_FLAGS, _W_COUNT, _W_MAPCOUNT, _W_MAPPING = 0, 1, 2, 3
_W_INDEX, _W_PRIVATE, _W_VIRTUAL, _W_PTE_CHAIN = 4, 5, 6, 7
_WORDS = PAGE_STRUCT_SIZE // 4
# The same, for hot loops elsewhere that read PageAlloc.page_words directly
# (page_words[pfn * PAGE_WORDS + W_FLAGS] is page->flags).
PAGE_WORDS, W_FLAGS, W_COUNT, W_MAPPING = _WORDS, _W_FLAGS, _W_COUNT, _W_MAPPING
W_MAPCOUNT, W_PTE_CHAIN = _W_MAPCOUNT, _W_PTE_CHAIN

# Page flag bit numbers: include/linux/page-flags.h of 2.5.3x.
PG_locked = 0
PG_error = 1
PG_referenced = 2
PG_uptodate = 3
PG_dirty = 4
PG_lru = 5
PG_active = 6
PG_slab = 7
PG_highmem = 8
PG_checked = 9
PG_arch_1 = 10
PG_reserved = 11
PG_private = 12
PG_writeback = 13
PG_nosave = 14
PG_chainlock = 15
PG_direct = 16
PG_swapcache = 17
PG_mappedtodisk = 18
PG_reclaim = 19
PG_compound = 20
PG_buddy = 21          # ours (2.6.19 has one too): head of a free buddy block
ZONE_SHIFT = 24        # 2.5: page_zone(page) = zone_table[page->flags >> ZONE_SHIFT]

# A page handed out or freed must have none of these (2.6's bad_page checks).
_FLAGS_CHECK_AT_FREE = ((1 << PG_locked) | (1 << PG_lru) | (1 << PG_active) | (1 << PG_slab)
                        | (1 << PG_reserved) | (1 << PG_private) | (1 << PG_writeback)
                        | (1 << PG_swapcache) | (1 << PG_reclaim) | (1 << PG_buddy))
_FLAGS_CHECK_AT_PREP = _FLAGS_CHECK_AT_FREE | (1 << PG_dirty)
# prep_new_page() forgets these.
_FLAGS_CLEAR_AT_PREP = ((1 << PG_uptodate) | (1 << PG_error) | (1 << PG_referenced)
                        | (1 << PG_arch_1) | (1 << PG_checked) | (1 << PG_mappedtodisk))
# 2.4 __free_pages_ok: page->flags &= ~((1<<PG_referenced) | (1<<PG_dirty)).
_FLAGS_CLEAR_AT_FREE = (1 << PG_referenced) | (1 << PG_dirty)
# Blocks up to this order are checked page by page in Python, bigger ones with
# numpy (whose fixed cost, ~10 us, only pays off above ~32 pages).
_SCALAR_CHECK_MAX_ORDER = 5

# ---- GFP masks: include/linux/gfp.h of 2.5.3x ------------------------------

__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
GFP_ZONEMASK = 0x0F
__GFP_WAIT = 0x10       # can wait and reschedule
__GFP_HIGH = 0x20       # should access emergency pools
__GFP_IO = 0x40         # can start low memory physical IO
__GFP_HIGHIO = 0x80     # can start high mem physical IO
__GFP_FS = 0x100        # can call down to low-level FS

GFP_NOHIGHIO = __GFP_WAIT | __GFP_IO
GFP_NOIO = __GFP_WAIT
GFP_NOFS = __GFP_WAIT | __GFP_IO | __GFP_HIGHIO
GFP_ATOMIC = __GFP_HIGH
GFP_USER = __GFP_WAIT | __GFP_IO | __GFP_HIGHIO | __GFP_FS
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_KERNEL = __GFP_WAIT | __GFP_IO | __GFP_HIGHIO | __GFP_FS
GFP_NFS = GFP_KERNEL
GFP_KSWAPD = GFP_KERNEL
GFP_DMA = __GFP_DMA
# Inside a class body Python mangles __GFP_X to _Class__GFP_X: methods use these.
_GFP_DMA, _GFP_HIGHMEM, _GFP_HIGH = __GFP_DMA, __GFP_HIGHMEM, __GFP_HIGH

# ---- zones ------------------------------------------------------------------

ZONE_DMA, ZONE_NORMAL, ZONE_HIGHMEM = 0, 1, 2
MAX_NR_ZONES = 3
ZONE_NAMES = ('DMA', 'Normal', 'HighMem')
_ZONE_KEYS = ('dma', 'normal', 'high')        # /proc/vmstat-style counter names
MAX_ORDER = 11
SMALL_AREA = 32        # check(): a free list this short is checked in plain Python

# 2.4.x / 2.5.3x free_area_init_core(): pages_min = size / ratio, clamped to
# [min, max]; pages_low = 2 * pages_min; pages_high = 3 * pages_min.
ZONE_BALANCE_RATIO = (128, 128, 128)
ZONE_BALANCE_MIN = (20, 20, 20)
ZONE_BALANCE_MAX = (255, 255, 255)

# Kernel.alloc_page_fast's answer when the fast path found no page and the
# slow path (reclaim, which may sleep) is left to try: not a pfn.
ALLOC_SLOWPATH = -1

# Which watermark a zonelist walk tests (alloc_pages_pass).
WMARK_LOW = 'low'       # first walk of __alloc_pages: pages_low
WMARK_MIN = 'min'       # second walk: pages_min, a quarter of it for __GFP_HIGH
WMARK_NONE = 'none'     # PF_MEMALLOC walk: no watermark at all


def memmap_bytes(nr_pages):
    """Bytes of mem_map for `nr_pages` frames, rounded up to whole pages."""
    return (nr_pages * PAGE_STRUCT_SIZE + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def memmap_extent(nr_pages, lowmem, floor=0):
    """Where boot code should put mem_map: (phys, nbytes), page aligned.

    Mirrors alloc_bootmem()'s goal __pa(MAX_DMA_ADDRESS) (2.4/2.5): above
    ZONE_DMA when it fits in lowmem, else at the first free byte `floor`.
    The caller must reserve [phys, phys + nbytes) from everything else;
    PageAlloc reserves it from the buddy allocator itself.
    """
    size = memmap_bytes(nr_pages)
    floor = (floor + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    phys = max(floor, layout.MAX_DMA_ADDRESS)
    if phys + size > lowmem:
        phys = floor
    if phys + size > lowmem:
        raise ValueError(f'mem_map ({size >> 10} KiB) does not fit in lowmem '
                         f'({lowmem >> 20} MiB) above {floor:#x}')
    return phys, size


class Zone:
    """struct zone: a range of page frames and its buddy free lists.

    Every field is guarded by zone->lock in Linux; see the file comment for
    why there is none here.
    """

    def __init__(self, index, start_pfn, end_pfn):
        self.index = index
        self.name = ZONE_NAMES[index]
        self.start_pfn = start_pfn              # zone_start_pfn
        self.end_pfn = end_pfn                  # one past the last frame
        self.spanned_pages = end_pfn - start_pfn
        self.present_pages = self.spanned_pages  # no holes on this machine
        self.reserved_pages = 0                 # PG_reserved at boot, never freed
        self.free_pages = 0                     # exact, in pages
        self.pages_min = self.pages_low = self.pages_high = 0
        self.need_balance = False               # 2.4: set when the fast walk failed
        self.free_area = [dict() for _ in range(MAX_ORDER)]   # order -> {head pfn: None}
        self.nr_alloc = [0] * MAX_ORDER         # blocks handed out, by order
        self.nr_free = [0] * MAX_ORDER          # blocks given back, by order
        self.min_free_seen = 1 << 62            # the lowest free_pages since boot
        self.others_free_at_min = {}
        self._set_watermarks()

    def _set_watermarks(self):
        """Watermarks as 2.4/2.5 free_area_init_core() sets them."""
        if not self.present_pages:
            return
        mark = self.present_pages // ZONE_BALANCE_RATIO[self.index]
        mark = min(max(mark, ZONE_BALANCE_MIN[self.index]), ZONE_BALANCE_MAX[self.index])
        self.pages_min, self.pages_low, self.pages_high = mark, 2 * mark, 3 * mark

    def __repr__(self):
        return (f'<Zone {self.name} pfn {self.start_pfn:#x}-{self.end_pfn:#x} '
                f'free {self.free_pages} min/low/high {self.pages_min}/{self.pages_low}/'
                f'{self.pages_high}>')


def _merge_ranges(ranges, limit):
    """Sorted, merged, validated (start_pfn, end_pfn) pairs, clipped to [0, limit)."""
    out = []
    for start, end in sorted((int(s), int(e)) for s, e in ranges):
        if not 0 <= start < end:
            raise ValueError(f'bad reserved range ({start:#x}, {end:#x})')
        end = min(end, limit)
        if start >= end:
            continue
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def _aligned_blocks(start, end):
    """Split [start, end) into the largest naturally aligned buddy blocks:
    the fully merged state that freeing each page one by one would reach."""
    while start < end:
        order = MAX_ORDER - 1
        while start & ((1 << order) - 1) or start + (1 << order) > end:
            order -= 1
        yield start, order
        start += 1 << order


class PageAlloc:
    """The zoned buddy allocator over guest RAM.

    ram: the guest RAM buffer (writable, e.g. an anonymous mmap); ram_size its
    size.  memmap_phys: physical address of mem_map (page aligned, in lowmem;
    see memmap_extent).  lowmem, highmem: bytes, from layout.split_memory.
    reserved: (start_pfn, end_pfn) ranges never handed out; the first page
    and mem_map are added here.  pages_high_escape: 2.5.32+'s "a zone at or
    above pages_high may always be used" in the zonelist walks; False gives
    2.4's strict incremental min.
    """

    def __init__(self, ram, ram_size, memmap_phys, lowmem, highmem, reserved=(),
                 pages_high_escape=True):
        self._check_geometry(ram_size, memmap_phys, lowmem, highmem)
        self.nr_pages = (lowmem + highmem) >> PAGE_SHIFT
        self.max_low_pfn = lowmem >> PAGE_SHIFT
        self.lowmem, self.highmem = lowmem, highmem
        self.memmap_phys = memmap_phys
        self.memmap_virt = layout.va(memmap_phys)
        self.pages_high_escape = pages_high_escape
        nbytes = self.nr_pages * PAGE_STRUCT_SIZE
        self.mem_map = np.ndarray((self.nr_pages,), dtype=PAGE_DTYPE, buffer=ram,
                                  offset=memmap_phys)
        words = memoryview(ram)[memmap_phys:memmap_phys + nbytes]
        self._u32 = words.cast('I')             # the same bytes, word by word
        self._i32 = words.cast('i')
        self.page_words = self._u32             # public: mem_map as u32 words
        self.page_words_signed = self._i32      # the same as i32 (_count, _mapcount)
        self._dma_end = min(self.max_low_pfn, layout.MAX_DMA_ADDRESS >> PAGE_SHIFT)
        self.zones = [Zone(ZONE_DMA, 0, self._dma_end),
                      Zone(ZONE_NORMAL, self._dma_end, self.max_low_pfn),
                      Zone(ZONE_HIGHMEM, self.max_low_pfn, self.nr_pages)]
        self._zonelists = [self._build_zonelist(i) for i in range(GFP_ZONEMASK + 1)]
        self.nr_failed = [0] * MAX_ORDER        # alloc_pages_fast returned None, by order
        self._init_mem_map()
        memmap_pfns = (memmap_phys >> PAGE_SHIFT, ((memmap_phys + nbytes - 1) >> PAGE_SHIFT) + 1)
        self.reserved = _merge_ranges([(0, 1), memmap_pfns, *reserved], self.nr_pages)
        self._free_boot_memory()

    @staticmethod
    def _check_geometry(ram_size, memmap_phys, lowmem, highmem):
        """Reject a layout boot code could not have produced (ValueError)."""
        if lowmem % PAGE_SIZE or highmem % PAGE_SIZE or lowmem <= 0 or highmem < 0:
            raise ValueError(f'lowmem/highmem must be page multiples: {lowmem:#x}/{highmem:#x}')
        if lowmem > layout.MAXMEM or lowmem + highmem > ram_size:
            raise ValueError(f'lowmem {lowmem:#x} + highmem {highmem:#x} exceeds MAXMEM or '
                             f'the RAM buffer ({ram_size:#x} bytes)')
        nbytes = ((lowmem + highmem) >> PAGE_SHIFT) * PAGE_STRUCT_SIZE
        if memmap_phys % PAGE_SIZE or memmap_phys + nbytes > lowmem:
            raise ValueError(f'mem_map at {memmap_phys:#x} ({nbytes:#x} bytes) must be page '
                             f'aligned and inside lowmem')

    def _build_zonelist(self, zone_bits):
        """build_zonelists() (2.4/2.5): __GFP_DMA -> DMA; __GFP_HIGHMEM ->
        HighMem, Normal, DMA; neither -> Normal, DMA.  Empty zones left out."""
        first = ZONE_NORMAL
        if zone_bits & _GFP_HIGHMEM:
            first = ZONE_HIGHMEM
        if zone_bits & _GFP_DMA:
            first = ZONE_DMA
        return tuple(self.zones[i] for i in range(first, -1, -1) if self.zones[i].present_pages)

    # ---- boot -------------------------------------------------------------

    def _init_mem_map(self):
        """free_area_init_core() + one_highpage_init() (2.4), vectorised:
        every page reserved with count 0 and its zone in flags; lowmem pages
        get page->virtual = __va(pfn << PAGE_SHIFT), highmem pages PG_highmem."""
        mm, low = self.mem_map, self.max_low_pfn
        flags = np.full(self.nr_pages, 1 << PG_reserved, dtype=np.uint32)
        flags[self._dma_end:low] |= np.uint32(ZONE_NORMAL << ZONE_SHIFT)
        flags[low:] |= np.uint32((ZONE_HIGHMEM << ZONE_SHIFT) | (1 << PG_highmem))
        mm['flags'] = flags
        mm['_count'] = 0
        mm['_mapcount'] = -1
        for field in ('mapping', 'index', 'private', 'pte_chain'):
            mm[field] = 0
        mm['virtual'][:low] = layout.PAGE_OFFSET + (np.arange(low, dtype=np.uint32) << PAGE_SHIFT)
        mm['virtual'][low:] = 0

    def _free_boot_memory(self):
        """free_all_bootmem() + the highmem loop of mem_init(): hand every
        page outside the reserved ranges to the buddy allocator, as whole
        aligned blocks rather than page by page (same final free lists)."""
        flags = self.mem_map['flags']
        for z in self.zones:
            for start, end in self._free_runs(z):
                flags[start:end] &= np.uint32(~(1 << PG_reserved) & 0xFFFFFFFF)
                for pfn, order in _aligned_blocks(start, end):
                    self._add_to_free_area(z, pfn, order)
                    z.free_pages += 1 << order
            z.reserved_pages = z.present_pages - z.free_pages

    def _free_runs(self, zone):
        """The (start, end) runs of `zone` not covered by a reserved range."""
        pos = zone.start_pfn
        for start, end in self.reserved:
            if end <= pos or start >= zone.end_pfn:
                continue
            if start > pos:
                yield pos, start
            pos = max(pos, end)
        if pos < zone.end_pfn:
            yield pos, zone.end_pfn

    # ---- struct page <-> pfn ----------------------------------------------

    def pfn_to_page(self, pfn):
        """The kernel virtual address of pfn's struct page (what asm gets)."""
        if not 0 <= pfn < self.nr_pages:
            raise KernelBug(f'pfn_to_page: pfn {pfn:#x} beyond mem_map ({self.nr_pages:#x})')
        return self.memmap_virt + pfn * PAGE_STRUCT_SIZE

    def page_to_pfn(self, page):
        """The pfn of the struct page at kernel virtual address `page`."""
        off = page - self.memmap_virt
        if off % PAGE_STRUCT_SIZE or not 0 <= off < self.nr_pages * PAGE_STRUCT_SIZE:
            raise KernelBug(f'page_to_pfn: {page:#x} is not a struct page in mem_map')
        return off // PAGE_STRUCT_SIZE

    def page_zone(self, pfn):
        """The zone holding `pfn` (by range; check() verifies flags agree)."""
        if pfn >= self.max_low_pfn:
            return self.zones[ZONE_HIGHMEM]
        return self.zones[ZONE_NORMAL if pfn >= self._dma_end else ZONE_DMA]

    def page_count(self, pfn):
        return self._i32[pfn * _WORDS + _W_COUNT]

    # struct page fields word by word (a numpy struct scalar costs ~1 us a
    # field: these are the hot paths' accessors).  Never sleep; the caller
    # holds what Linux would for the field.

    def page_mapcount(self, pfn):
        return self._i32[pfn * _WORDS + _W_MAPCOUNT]

    def set_page_mapcount(self, pfn, value):
        self._i32[pfn * _WORDS + _W_MAPCOUNT] = value

    def page_mapping(self, pfn):
        """page->mapping (a guest address, 0 for none)."""
        return self._u32[pfn * _WORDS + _W_MAPPING]

    def set_page_mapping(self, pfn, value):
        self._u32[pfn * _WORDS + _W_MAPPING] = value

    def page_index(self, pfn):
        """page->index (the file index, or the swap entry in the swap cache)."""
        return self._u32[pfn * _WORDS + _W_INDEX]

    def set_page_index(self, pfn, value):
        self._u32[pfn * _WORDS + _W_INDEX] = value

    def page_pte_chain(self, pfn):
        return self._u32[pfn * _WORDS + _W_PTE_CHAIN]

    def set_page_pte_chain(self, pfn, value):
        self._u32[pfn * _WORDS + _W_PTE_CHAIN] = value

    def set_page_flag(self, pfn, bit):
        """SetPageX(): set bit PG_x of the page's flags."""
        self._u32[pfn * _WORDS + _W_FLAGS] |= 1 << bit

    def clear_page_flag(self, pfn, bit):
        """ClearPageX()."""
        self._u32[pfn * _WORDS + _W_FLAGS] &= ~(1 << bit) & 0xFFFFFFFF

    def test_page_flag(self, pfn, bit):
        """PageX()."""
        return bool(self._u32[pfn * _WORDS + _W_FLAGS] >> bit & 1)

    def page_flags(self, pfn):
        return self._u32[pfn * _WORDS + _W_FLAGS]

    def PageHighMem(self, pfn):
        return bool(self._u32[pfn * _WORDS] & (1 << PG_highmem))

    def PageReserved(self, pfn):
        return bool(self._u32[pfn * _WORDS] & (1 << PG_reserved))

    # ---- GFP: zonelists and watermarks ------------------------------------

    def zonelist(self, gfp):
        """The zones `gfp` may allocate from, in fallback order."""
        return self._zonelists[gfp & GFP_ZONEMASK]

    @staticmethod
    def zone_watermark_ok(zone, order, mark):
        """May a block of `order` come from `zone` without going below `mark`?
        2.5's test for a zone first in its zonelist: free_pages > mark + 2^order."""
        return zone.free_pages > mark + (1 << order)

    @property
    def any_zone_below_low(self):
        """True if some zone has free_pages <= pages_low: kswapd has work
        (2.5.3x __alloc_pages wakes kswapd for such zones)."""
        return any(z.present_pages and z.free_pages <= z.pages_low for z in self.zones)

    @property
    def need_balance(self):
        """2.4's classzone->need_balance: a fast walk failed since kswapd last
        cleared the flags (kswapd clears zone.need_balance)."""
        return any(z.need_balance for z in self.zones)

    def _local_mark(self, zone, gfp, wmark):
        """What `zone` adds to the incremental min in a walk against `wmark`."""
        if wmark == WMARK_LOW:
            return zone.pages_low
        if wmark == WMARK_MIN:
            return zone.pages_min >> 2 if gfp & _GFP_HIGH else zone.pages_min
        raise ValueError(f'unknown watermark {wmark!r}')

    def alloc_pages_pass(self, gfp, order, wmark):
        """One zonelist walk of __alloc_pages (2.5.34): pfn of the block, or None.

        wmark WMARK_LOW / WMARK_MIN: the "incremental min": min starts at
        2^order and each zone in turn adds its mark (pages_low; or pages_min,
        a quarter of it with __GFP_HIGH), so falling back to a lower zone
        needs more free pages there; a zone qualifies if free_pages > min or
        (pages_high_escape) free_pages >= its pages_high.  WMARK_NONE: any
        zone with a free block (PF_MEMALLOC).  2.5's third walk, after
        reclaim, is WMARK_MIN with gfp & ~__GFP_HIGH.  Never sleeps.
        """
        if not 0 <= order < MAX_ORDER:
            if order < 0:
                raise KernelBug(f'__alloc_pages: bad order {order}')
            return None                          # 2.4 alloc_pages: order >= MAX_ORDER
        need = 1 << order
        for zone in self._zonelists[gfp & GFP_ZONEMASK]:
            if wmark != WMARK_NONE:
                need += zone.pages_low if wmark == WMARK_LOW else self._local_mark(zone, gfp, wmark)
                free = zone.free_pages
                if not (free > need or (self.pages_high_escape and free >= zone.pages_high)):
                    continue
            pfn = self._rmqueue(zone, order)
            if pfn is not None:
                if zone.free_pages < zone.min_free_seen:
                    self._note_low_water(zone)
                return pfn
        return None

    def _note_low_water(self, zone):
        """The lowest free count a zone reached; and, the first time it got
        down to its pages_low watermark, how much the other zones had free
        (is lowmem short while highmem is not?)."""
        zone.min_free_seen = zone.free_pages
        if not zone.others_free_at_min and zone.free_pages <= zone.pages_low + 1:
            zone.others_free_at_min = {z.name: z.free_pages for z in self.zones if z is not zone}

    def alloc_pages_fast(self, gfp, order):
        """The fast path of __alloc_pages (2.5.34): a walk against pages_low,
        then one against pages_min (min/4 for __GFP_HIGH, i.e. GFP_ATOMIC).
        pfn of the first page (_count 1), or None.  Never sleeps.

        When the first walk fails the classzone gets need_balance (2.4); the
        caller wakes kswapd (any_zone_below_low / need_balance say so).
        """
        pfn = self.alloc_pages_pass(gfp, order, WMARK_LOW)
        if pfn is None:
            zones = self.zonelist(gfp)
            if zones:
                zones[0].need_balance = True
            pfn = self.alloc_pages_pass(gfp, order, WMARK_MIN)
        if pfn is None and 0 <= order < MAX_ORDER:
            self.nr_failed[order] += 1
        return pfn

    # ---- the buddy allocator ------------------------------------------------

    def _add_to_free_area(self, zone, pfn, order):
        """list_add() to free_area[order] + set_page_order() (2.6.19)."""
        w = pfn * _WORDS
        self._u32[w + _W_FLAGS] |= 1 << PG_buddy
        self._u32[w + _W_PRIVATE] = order
        zone.free_area[order][pfn] = None

    def _rmv_page_order(self, pfn):
        """rmv_page_order() (2.6.19): the block is no longer a free head."""
        w = pfn * _WORDS
        self._u32[w + _W_FLAGS] &= ~(1 << PG_buddy) & 0xFFFFFFFF
        self._u32[w + _W_PRIVATE] = 0

    def _rmqueue(self, zone, order):
        """rmqueue() (2.4/2.5): take the newest block of the smallest order
        >= `order` from zone's free lists, split it; pfn or None."""
        areas = zone.free_area
        for cur in range(order, MAX_ORDER):
            area = areas[cur]
            if area:
                pfn = area.popitem()[0]
                self._rmv_page_order(pfn)
                zone.free_pages -= 1 << order
                if cur > order:
                    pfn = self._expand(zone, pfn, order, cur)
                self._prep_new_page(pfn)
                zone.nr_alloc[order] += 1
                return pfn
        return None

    def _expand(self, zone, pfn, low, high):
        """expand() (2.4): split a block of order `high` down to `low`; each
        time the LOWER half goes back on the free list and the upper half is
        kept (2.6 does the opposite).  Returns the pfn kept."""
        while high > low:
            high -= 1
            self._add_to_free_area(zone, pfn, high)
            pfn += 1 << high
        return pfn

    def _prep_new_page(self, pfn):
        """prep_new_page() (2.6.10 checks, 2.4 set_page_count): BUG on a bad
        page state, clear the stale flags, _count = 1 on the first page."""
        w = pfn * _WORDS
        u32, i32 = self._u32, self._i32
        flags = u32[w + _W_FLAGS]
        if (flags & _FLAGS_CHECK_AT_PREP or i32[w + _W_COUNT] or i32[w + _W_MAPCOUNT] != -1
                or u32[w + _W_MAPPING] or u32[w + _W_PTE_CHAIN]):
            raise KernelBug(self._bad_page('prep_new_page', pfn))
        u32[w + _W_FLAGS] = flags & ~_FLAGS_CLEAR_AT_PREP
        u32[w + _W_PRIVATE] = 0
        i32[w + _W_COUNT] = 1

    def free_pages(self, pfn, order):
        """__free_pages() (2.4): drop one reference to the block at `pfn`;
        when it was the last, give the block back.  True if it was freed.

        BUG on a bad pfn/order, a reserved page (2.4 silently skips those;
        freeing one through the allocator is a kernel bug here) and on a
        page whose count is already 0 (double free).  Never sleeps.
        """
        if type(pfn) is not int or order != 0 or type(order) is not int \
                or not 0 <= pfn < self.nr_pages:           # (an order-0 page is a block)
            self._check_block('free_pages', pfn, order)
            pfn = int(pfn)
        w = pfn * _WORDS
        if self._u32[w + _W_FLAGS] & (1 << PG_reserved):
            raise KernelBug(f'free_pages: pfn {pfn:#x} is a reserved page')
        count = self._i32[w + _W_COUNT]
        if count <= 0:
            raise KernelBug(f'free_pages: double free of pfn {pfn:#x} order {order} '
                            f'(count {count})')
        self._i32[w + _W_COUNT] = count - 1
        if count > 1:
            return False
        self._free_pages_ok(pfn, order)
        return True

    def _check_block(self, fn, pfn, order):
        """BUG unless [pfn, pfn + 2^order) is an aligned block inside one zone."""
        if not isinstance(order, (int, np.integer)) or not 0 <= order < MAX_ORDER:
            raise KernelBug(f'{fn}: bad order {order!r}')
        if (not isinstance(pfn, (int, np.integer)) or not 0 <= pfn < self.nr_pages
                or pfn & ((1 << order) - 1)):
            raise KernelBug(f'{fn}: pfn {pfn:#x} is not an order-{order} block in mem_map')
        if pfn + (1 << order) > self.page_zone(pfn).end_pfn:
            raise KernelBug(f'{fn}: order-{order} block at {pfn:#x} crosses its zone end')

    def _free_pages_ok(self, pfn, order):
        """__free_pages_ok() (2.4): check the block, then merge it with its
        free buddy as long as there is one (2.6.19's page_is_buddy test in
        place of 2.4's bitmap) and put the result on its free list."""
        self._free_pages_check(pfn, order)
        zone = self.page_zone(pfn)
        zone.free_pages += 1 << order
        zone.nr_free[order] += 1
        while order < MAX_ORDER - 1:
            buddy = pfn ^ (1 << order)
            if not self._page_is_buddy(zone, buddy, order):
                break
            try:
                del zone.free_area[order][buddy]
            except KeyError:
                raise KernelBug(f'__free_pages_ok: pfn {buddy:#x} has PG_buddy order {order} '
                                f'but is not on the free list') from None
            self._rmv_page_order(buddy)
            pfn &= ~(1 << order)                 # the merged block starts lower
            order += 1
        self._add_to_free_area(zone, pfn, order)

    def _page_is_buddy(self, zone, pfn, order):
        """page_is_buddy() (2.6.19): pfn heads a free block of exactly `order`
        in the same zone."""
        if not zone.start_pfn <= pfn < zone.end_pfn:
            return False
        w = pfn * _WORDS
        return bool(self._u32[w + _W_FLAGS] & (1 << PG_buddy)) and self._u32[w + _W_PRIVATE] == order

    def _free_pages_check(self, pfn, order):
        """free_pages_check() (2.6.10, every page of the block) + 2.4's flag
        clearing: BUG if a page is still referenced, mapped, locked, on the
        LRU, in the swap cache or already free."""
        bad = self._first_page_in_use(pfn, 1 << order)
        if bad is not None:
            raise KernelBug(self._bad_page('__free_pages_ok', bad))
        self._u32[pfn * _WORDS + _W_FLAGS] &= ~_FLAGS_CLEAR_AT_FREE & 0xFFFFFFFF

    def _first_page_in_use(self, pfn, n):
        """The first page of [pfn, pfn + n) that may not be freed (flags,
        count, mapcount, mapping or pte_chain say it is in use), or None."""
        if n > 1 << _SCALAR_CHECK_MAX_ORDER:
            return self._first_page_in_use_vec(pfn, n)
        u32, i32 = self._u32, self._i32
        for w in range(pfn * _WORDS, (pfn + n) * _WORDS, _WORDS):
            if (u32[w + _W_FLAGS] & _FLAGS_CHECK_AT_FREE or i32[w + _W_COUNT]
                    or i32[w + _W_MAPCOUNT] != -1 or u32[w + _W_MAPPING]
                    or u32[w + _W_PTE_CHAIN]):
                return w // _WORDS
        return None

    def _first_page_in_use_vec(self, pfn, n):
        """_first_page_in_use with numpy, for big blocks."""
        block = self.mem_map[pfn:pfn + n]
        bad = (((block['flags'] & _FLAGS_CHECK_AT_FREE) != 0) | (block['_count'] != 0)
               | (block['_mapcount'] != -1) | (block['mapping'] != 0) | (block['pte_chain'] != 0))
        return pfn + int(np.argmax(bad)) if bad.any() else None

    def _bad_page(self, fn, pfn):
        """bad_page()'s report, as a KernelBug message."""
        p = self.mem_map[pfn]
        return (f'{fn}: Bad page state at pfn {pfn:#x}: flags {int(p["flags"]):#x} count '
                f'{int(p["_count"])} mapcount {int(p["_mapcount"])} mapping '
                f'{int(p["mapping"]):#x} pte_chain {int(p["pte_chain"]):#x}')

    # ---- references -------------------------------------------------------

    def get_page(self, pfn):
        """get_page() (2.4): take a reference.  BUG on a free page (count 0,
        not reserved): that reference would outlive the page."""
        w = pfn * _WORDS
        count = self._i32[w + _W_COUNT]
        if count <= 0 and not self._u32[w + _W_FLAGS] & (1 << PG_reserved):
            raise KernelBug(f'get_page: pfn {pfn:#x} is free (count {count})')
        self._i32[w + _W_COUNT] = count + 1

    def put_page(self, pfn):
        """put_page() (2.4): drop a reference, free the page (order 0) on the
        last one.  Reserved pages (ZERO_PAGE, kernel image) are not counted."""
        if self._u32[pfn * _WORDS + _W_FLAGS] & (1 << PG_reserved):
            return False
        return self.free_pages(pfn, 0)

    # ---- queries ------------------------------------------------------------

    def nr_free_pages(self):
        return sum(z.free_pages for z in self.zones)

    def nr_free_highpages(self):
        return self.zones[ZONE_HIGHMEM].free_pages

    def free_area_snapshot(self):
        """Per zone, per order, the sorted free block heads (for comparisons)."""
        return [[tuple(sorted(area)) for area in z.free_area] for z in self.zones]

    def counters(self):
        """Flat name -> number map for scenario reports (/proc/vmstat names)."""
        c = {}
        for z, key in zip(self.zones, _ZONE_KEYS):
            c[f'pgalloc_{key}'] = sum(z.nr_alloc)
            c[f'pgfree_{key}'] = sum(z.nr_free)
            c[f'nr_free_{key}'] = z.free_pages
            c[f'min_free_{key}'] = z.min_free_seen if z.present_pages and z.min_free_seen < 1 << 62 else z.free_pages
            c[f'pages_low_{key}'] = z.pages_low
        normal = self.zones[ZONE_NORMAL]
        c['free_high_at_low_normal'] = normal.others_free_at_min.get('HighMem', -1)
        c['pgalloc_fast_failed'] = sum(self.nr_failed)
        return c

    def describe(self):
        """Boot banner lines, as Linux 2.4/2.5 prints them at setup and mem_init."""
        reserved = sum(z.reserved_pages for z in self.zones)
        lines = [f'{self.highmem >> 20}MB HIGHMEM available.',
                 f'{self.lowmem >> 20}MB LOWMEM available.',
                 f'On node 0 totalpages: {self.nr_pages}']
        for z in self.zones:
            lines.append(f'  {z.name} zone: {z.present_pages} pages, {z.reserved_pages} '
                         f'reserved, min {z.pages_min} low {z.pages_low} high {z.pages_high}')
        lines.append(f'Memory: {self.nr_free_pages() * 4}k/{self.nr_pages * 4}k available '
                     f'({reserved * 4}k reserved, {self.highmem >> 10}k highmem)')
        return lines

    # ---- consistency check --------------------------------------------------

    def check(self):
        """Walk mem_map and every free list; KernelBug on the first
        inconsistency.  O(frames), vectorised: fine between scenario steps."""
        self._check_zone_bits()
        for z in self.zones:
            if z.present_pages:
                self._check_zone(z)

    def _check_zone_bits(self):
        flags = self.mem_map['flags']
        for z in self.zones:
            f = flags[z.start_pfn:z.end_pfn]
            high = (f >> PG_highmem) & 1
            bad = ((f >> ZONE_SHIFT) != z.index) | (high != (z.index == ZONE_HIGHMEM))
            if bad.any():
                pfn = z.start_pfn + int(np.argmax(bad))
                raise KernelBug(f'check: pfn {pfn:#x} flags {int(flags[pfn]):#x} disagree with '
                                f'its zone {z.name}')

    def _check_zone(self, z):
        """One zone: heads, coverage, counts, PG_buddy and free_pages agree."""
        mm = self.mem_map[z.start_pfn:z.end_pfn]
        diff = np.zeros(z.spanned_pages + 1, dtype=np.int64)
        heads, total = [], 0
        for order, area in enumerate(z.free_area):
            if area:
                rel = self._check_area(z, mm, order, area)
                np.add.at(diff, rel, 1)
                np.add.at(diff, rel + (1 << order), -1)
                heads.append(rel)
                total += len(area) << order
        if total != z.free_pages:
            raise KernelBug(f'check: zone {z.name} free_pages {z.free_pages} but its free '
                            f'lists hold {total} pages')
        cover = np.cumsum(diff[:-1])
        self._check_cover(z, mm, cover, heads)

    def _check_area(self, z, mm, order, area):
        """The heads of free_area[order]: in zone, aligned, marked, unmerged."""
        if len(area) <= SMALL_AREA:
            return self._check_small_area(z, mm, order, area)
        pfns = np.fromiter(area, dtype=np.int64, count=len(area))
        size = 1 << order
        bad = (pfns < z.start_pfn) | (pfns + size > z.end_pfn) | (pfns & (size - 1) != 0)
        if bad.any():
            raise KernelBug(f'check: zone {z.name} order {order} block at '
                            f'{int(pfns[np.argmax(bad)]):#x} misaligned or outside the zone')
        rel = pfns - z.start_pfn
        bad = ((mm['flags'][rel] & (1 << PG_buddy)) == 0) | (mm['private'][rel] != order)
        if bad.any():
            raise KernelBug(f'check: free block {int(pfns[np.argmax(bad)]):#x} order {order} '
                            f'lacks PG_buddy / private == order')
        if order < MAX_ORDER - 1:
            both = np.isin(pfns ^ size, pfns)
            if both.any():
                raise KernelBug(f'check: free block {int(pfns[np.argmax(both)]):#x} and its '
                                f'buddy are both free at order {order} (should have merged)')
        return rel

    def _check_small_area(self, z, mm, order, area):
        """_check_area for a short list, in plain Python (numpy's per-call
        cost is most of the check on a machine whose free lists hold a few
        blocks): the same checks in the same order, the same first report."""
        pfns = list(area)
        size = 1 << order
        for p in pfns:
            if p < z.start_pfn or p + size > z.end_pfn or p & (size - 1):
                raise KernelBug(f'check: zone {z.name} order {order} block at '
                                f'{p:#x} misaligned or outside the zone')
        rel = [p - z.start_pfn for p in pfns]
        flags, private = mm['flags'], mm['private']
        for p, r in zip(pfns, rel):
            if not int(flags[r]) & (1 << PG_buddy) or int(private[r]) != order:
                raise KernelBug(f'check: free block {p:#x} order {order} '
                                f'lacks PG_buddy / private == order')
        if order < MAX_ORDER - 1:
            heads = set(pfns)
            for p in pfns:
                if p ^ size in heads:
                    raise KernelBug(f'check: free block {p:#x} and its '
                                    f'buddy are both free at order {order} (should have merged)')
        return np.array(rel, dtype=np.int64)

    def _check_cover(self, z, mm, cover, heads):
        """Free blocks do not overlap; their pages are unreferenced and not
        reserved; PG_buddy is set on the block heads and nowhere else."""
        checks = (
            (cover > 1, 'lies in two free blocks'),
            ((cover == 1) & (mm['_count'] != 0), 'is on a free list with _count != 0'),
            ((cover == 1) & ((mm['flags'] & (1 << PG_reserved)) != 0), 'is free but reserved'),
        )
        for bad, what in checks:
            if bad.any():
                raise KernelBug(f'check: pfn {z.start_pfn + int(np.argmax(bad)):#x} {what}')
        marked = np.flatnonzero(mm['flags'] & (1 << PG_buddy))
        expect = np.sort(np.concatenate(heads)) if heads else marked[:0]
        if not np.array_equal(marked, expect):
            stray = np.setdiff1d(marked, expect)
            pfn = z.start_pfn + int(stray[0] if len(stray) else np.setdiff1d(expect, marked)[0])
            raise KernelBug(f'check: pfn {pfn:#x} PG_buddy disagrees with the free lists')
