"""kmalloc: small kernel objects carved out of lowmem pages.

A deliberately plain slab allocator (mm/slab.c in role, not in detail):
one cache per object size class (32, 64, ..., 2048 bytes), each growing by
whole GFP_KERNEL pages from page_alloc, so that kernel metadata (mm_structs,
rmap pte_chains, ...) really consumes ZONE_NORMAL and shows up in its free
counts.  Objects are kernel virtual addresses in lowmem.

Rules
  - kmalloc never sleeps here (GFP_ATOMIC-like): it returns None when no
    lowmem page is left; callers handle that like -ENOMEM.
  - kfree of an address that is not allocated is a KernelBug.
  - A cache page whose objects are all free goes back to page_alloc.
"""
from .bug import KernelBug

SIZE_CLASSES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)
PAGE = 4096
# size -> its class, for every size up to the biggest class (kmalloc's
# lookup without a loop: rmap asks for an 8-byte pte_chain at every fault)
_CLASS_OF = [next(c for c in SIZE_CLASSES if n <= c) for n in range(SIZE_CLASSES[-1] + 1)]


class Slab:
    def __init__(self, kernel):
        self.k = kernel
        # size -> free object vas, as an insertion-ordered set (a dict):
        # kmalloc takes the last one freed (popitem is LIFO), and a cache
        # page going back deletes just its own objects (the rest keep
        # their order), not a pass over every free object of the class.
        self.free = {s: {} for s in SIZE_CLASSES}
        self.pages = {}                               # page va -> [size, in use count]
        self.owner = {}                               # object va -> (size, tag)
        self.counters = dict(slab_pages=0, kmalloc_calls=0, kfree_calls=0, kmalloc_failed=0)
        self.bytes_by_tag = {}

    def _size_class(self, size):
        if size <= SIZE_CLASSES[-1]:
            return _CLASS_OF[max(size, 0)]
        raise KernelBug(f'kmalloc: {size} bytes is larger than the biggest size class')

    def kmalloc(self, size, tag='kmalloc', gfp=None):
        """kmalloc(): a lowmem object of at least `size` bytes, or None."""
        s = self._size_class(size)
        self.counters['kmalloc_calls'] += 1
        free = self.free[s]
        if not free and not self._grow(s, gfp):
            self.counters['kmalloc_failed'] += 1
            return None
        va = free.popitem()[0]
        self.pages[va & ~(PAGE - 1)][1] += 1
        self.owner[va] = (s, tag)
        self.bytes_by_tag[tag] = self.bytes_by_tag.get(tag, 0) + s
        return va

    def kfree(self, va):
        owner = self.owner.pop(va, None)
        if owner is None:
            raise KernelBug(f'kfree: {va:#x} was not allocated by kmalloc')
        s, tag = owner
        self.counters['kfree_calls'] += 1
        self.bytes_by_tag[tag] -= s
        page = va & ~(PAGE - 1)
        info = self.pages[page]
        info[1] -= 1
        self.free[s][va] = None
        if info[1] == 0:
            self._shrink(page, s)

    def _grow(self, s, gfp):
        k = self.k
        pfn = k.page_alloc.alloc_pages_fast(gfp if gfp is not None else k.gfp.GFP_KERNEL, 0)
        if pfn is None:
            return False
        page = k.PAGE_OFFSET + (pfn << 12)
        self.pages[page] = [s, 0]
        self.free[s].update(dict.fromkeys(range(page + PAGE - s, page - 1, -s)))
        self.counters['slab_pages'] += 1
        return True

    def _shrink(self, page, s):
        free = self.free[s]
        for va in range(page, page + PAGE, s):      # all free: the page's in-use count is 0
            del free[va]
        del self.pages[page]
        self.counters['slab_pages'] -= 1
        self.k.page_alloc.free_pages((page - self.k.PAGE_OFFSET) >> 12, 0)

    def bytes_in_use(self, tag=None):
        if tag is None:
            return sum(self.bytes_by_tag.values())
        return self.bytes_by_tag.get(tag, 0)
