"""Program images and exec: user programs from asm/user/, loaded on demand.

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
"""
import struct

from .layout import USER_TEXT, USER_STACK_TOP
from .memory import VMA, VM_EXEC, VM_READ, VM_WRITE
from .task import Charge, Guest

USER_STACK_SIZE = 256 * 1024
PAGE = 4096


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
