"""Thread-local storage segments: set_thread_area / get_thread_area.

Mirrors Linux 2.6.0 arch/i386/kernel/process.c (sys_set_thread_area,
sys_get_thread_area, get_free_idx) and asm-i386/desc.h (LDT_entry_a/b,
LDT_empty, load_TLS).  The 3.18 tls_desc_okay() checks (no 16-bit, code or
not-present TLS segments) are not applied: 2.6.0 accepted those.

Invariants
  - Each task has three TLS descriptors (thread_info + TI_TLS_ARRAY, see
    sched.py), for GDT entries GDT_ENTRY_TLS_MIN..MAX (6..8).  An empty
    entry is all zero (desc_empty).
  - Each CPU has its own GDT (cpu_gdt_table[cpu]); entries 6-8 of a CPU's
    GDT hold the TLS of the task running there.  Only guest code writes them:
    load_TLS (asm/kernel/switch.S), from __switch_to at every context switch
    and from set_thread_area for the current task.
  - %fs and %gs are in pt_regs (2.6.29's layout); restore_all reloads them
    from there on every return to user mode, so a new TLS descriptor is seen
    at the latest on the way back (a selector whose descriptor became
    invalid is replaced by 0, as the .fixup of RESTORE_REGS does).

Locks: none.  set_thread_area modifies only the current task's array and
loads it with interrupts off (2.6's get_cpu()/put_cpu()).  May sleep (the
user copies may fault).
"""
import struct

from .layout import GDT_ENTRY_TLS_ENTRIES, GDT_ENTRY_TLS_MAX, GDT_ENTRY_TLS_MIN
from .sched import TI_CPU, TI_TLS_ARRAY
from .task import Guest

EFAULT, EINVAL, ESRCH = 14, 22, 3
USER_DESC_SIZE = 16        # struct user_desc: entry_number, base_addr, limit, flag bits


def ldt_entry_a(base, limit):
    """LDT_entry_a(info)."""
    return ((base & 0x0000FFFF) << 16) | (limit & 0x0FFFF)


def ldt_entry_b(base, limit, seg_32bit, contents, read_exec_only, limit_in_pages,
                seg_not_present, useable):
    """LDT_entry_b(info): a DPL 3 code/data descriptor's high word."""
    return ((base & 0xFF000000) | ((base & 0x00FF0000) >> 16) | (limit & 0xF0000)
            | ((read_exec_only ^ 1) << 9) | (contents << 10) | ((seg_not_present ^ 1) << 15)
            | (seg_32bit << 22) | (limit_in_pages << 23) | (useable << 20) | 0x7000)


def unpack_user_desc(raw):
    """struct user_desc -> dict (the bit fields of its fourth word)."""
    entry, base, limit, bits = struct.unpack('<iIII', raw)
    return dict(entry_number=entry, base_addr=base, limit=limit, seg_32bit=bits & 1,
                contents=(bits >> 1) & 3, read_exec_only=(bits >> 3) & 1,
                limit_in_pages=(bits >> 4) & 1, seg_not_present=(bits >> 5) & 1,
                useable=(bits >> 6) & 1)


def ldt_empty(info):
    """LDT_empty(info): the descriptor that clears an entry."""
    return (info['base_addr'] == 0 and info['limit'] == 0 and info['contents'] == 0
            and info['read_exec_only'] == 1 and info['seg_32bit'] == 0
            and info['limit_in_pages'] == 0 and info['seg_not_present'] == 1
            and info['useable'] == 0)


class Tls:
    def __init__(self, kernel):
        self.k = kernel

    # ---- the task's array ---------------------------------------------------

    def _slot_pa(self, task, i):
        return task.thread_info - self.k.PAGE_OFFSET + TI_TLS_ARRAY + 8 * i

    def read_desc(self, task, i):
        """(a, b) of the task's TLS entry i (0..2)."""
        return struct.unpack('<II', self.k.machine.read(self._slot_pa(task, i), 8))

    def write_desc(self, task, i, a, b):
        self.k.machine.write(self._slot_pa(task, i), struct.pack('<II', a, b))

    def copy_thread(self, parent, child):
        """copy_thread(): the child starts with the parent's TLS array
        (`p->thread = current->thread`).  No lock; the child is not running."""
        m = self.k.machine
        m.write(self._slot_pa(child, 0), m.read(self._slot_pa(parent, 0), 8 * GDT_ENTRY_TLS_ENTRIES))

    def flush_thread(self, task):
        """flush_thread()'s part (2.6.0, exec): clear the task's TLS array
        and reload this CPU's TLS GDT entries (load_TLS, guest code); the
        new image's %fs/%gs start at 0.  The task is current.  Generator."""
        self.k.machine.write(self._slot_pa(task, 0), bytes(8 * GDT_ENTRY_TLS_ENTRIES))
        cpu = self.k.sched.read_ti(task, TI_CPU)
        yield Guest('load_TLS', task.thread_info, cpu, irqs=False)

    def get_free_idx(self, task):
        for i in range(GDT_ENTRY_TLS_ENTRIES):
            if self.read_desc(task, i) == (0, 0):           # desc_empty
                return i + GDT_ENTRY_TLS_MIN
        return -ESRCH

    # ---- the system calls --------------------------------------------------------

    def sys_set_thread_area(self, task, args):
        """set_thread_area(struct user_desc *u_info) (nr 243).  Generator."""
        k = self.k
        uaddr = args[0]
        raw = yield from k.syscalls.copy_from_user(task, uaddr, USER_DESC_SIZE)
        if raw is None:
            return -EFAULT
        info = unpack_user_desc(raw)
        idx = info['entry_number']
        if idx == -1:
            idx = self.get_free_idx(task)
            if idx < 0:
                return idx
            if (yield from k.syscalls.copy_to_user(task, uaddr, struct.pack('<I', idx))):
                return -EFAULT                               # put_user(idx, &u_info->entry_number)
        if not GDT_ENTRY_TLS_MIN <= idx <= GDT_ENTRY_TLS_MAX:
            return -EINVAL
        if ldt_empty(info):
            a = b = 0
        else:
            a = ldt_entry_a(info['base_addr'], info['limit'])
            b = ldt_entry_b(info['base_addr'], info['limit'], info['seg_32bit'], info['contents'],
                            info['read_exec_only'], info['limit_in_pages'],
                            info['seg_not_present'], info['useable'])
        self.write_desc(task, idx - GDT_ENTRY_TLS_MIN, a, b)
        cpu = k.sched.read_ti(task, TI_CPU)
        yield Guest('load_TLS', task.thread_info, cpu, irqs=False)     # get_cpu(); load_TLS(t, cpu)
        return 0

    def sys_get_thread_area(self, task, args):
        """get_thread_area(struct user_desc *u_info) (nr 244).  Generator."""
        k = self.k
        uaddr = args[0]
        raw = yield from k.syscalls.copy_from_user(task, uaddr, 4)       # get_user(idx, ...)
        if raw is None:
            return -EFAULT
        idx = struct.unpack('<i', raw)[0]
        if not GDT_ENTRY_TLS_MIN <= idx <= GDT_ENTRY_TLS_MAX:
            return -EINVAL
        a, b = self.read_desc(task, idx - GDT_ENTRY_TLS_MIN)
        base = ((a >> 16) & 0x0000FFFF) | ((b << 16) & 0x00FF0000) | (b & 0xFF000000)
        limit = (a & 0x0FFFF) | (b & 0xF0000)
        bits = (((b >> 22) & 1)                      # seg_32bit
                | (((b >> 10) & 3) << 1)             # contents
                | ((((b >> 9) & 1) ^ 1) << 3)        # read_exec_only = !writable
                | (((b >> 23) & 1) << 4)             # limit_in_pages
                | ((((b >> 15) & 1) ^ 1) << 5)       # seg_not_present = !present
                | (((b >> 20) & 1) << 6))            # useable
        out = struct.pack('<iIII', idx, base, limit, bits)
        if (yield from k.syscalls.copy_to_user(task, uaddr, out)):
            return -EFAULT
        return 0
