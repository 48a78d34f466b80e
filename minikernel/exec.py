"""execve: fs/exec.c (2.4.18 do_execve, copy_strings, exec_mmap,
setup_arg_pages) in front of the program loaders of binfmt.py.

do_execve(filename, argv, envp)
  1. getname (strncpy_from_user) and open_exec: a file of the lab's
     filesystem (an ELF shipped with the disk image, loaded by binfmt's
     load_elf_binary path), or an asm/user program installed at boot,
     reachable as /bin/<name> or <name> when no such file exists.  A file
     that is neither is -ENOEXEC; a missing one -ENOENT; a file whose mode
     (inode.mode, when the filesystem keeps one) has no execute bit -EACCES.
  2. count(argv), count(envp) in guest code (-EFAULT, -E2BIG).
  3. copy_strings_kernel(filename), copy_strings(envp), copy_strings(argv):
     guest code (asm/kernel/exec.S) copies every string into the
     MAX_ARG_PAGES argument pages (alloc_page(GFP_HIGHUSER) on first use)
     through kmap / copy_from_user / kunmap: kmap_high_calls.copy_strings.
     struct linux_binprm lives in the task's lowmem syscall page.
  4. Past this point there is no way back (flush_old_exec): exec_mmap gives
     the task a new mm (mm_alloc; the CPU switches to it with the guest's
     switch_mm, as activate_mm) and drops the old one (mmput: exit_mmap when
     it was the last user); close-on-exec fds are closed; flush_thread
     clears the TLS array and gives the fresh FPU state; the signal
     handlers go back to SIG_DFL (flush_signal_handlers; SIG_IGN, the mask
     and pending signals stay).
  5. setup_arg_pages: the argument pages become the top of the new stack
     (put_dirty_page: a present, dirty, writable PTE each, an anonymous
     rmap entry, the LRU).  The program's VMAs are set up; for an ELF the
     bss is cleared (padzero) and create_elf_tables puts argc, the argv and
     envp pointers (found by guest strnlen_user on the new stack, as 2.4
     walks them) and the auxv under the strings; an asm program gets argc
     and the pointers only (its ABI).
A failure before step 4 returns -errno to the caller with its mm intact;
a failure after it (the stack cannot be written) kills the task (SIGSEGV),
as Linux does.

Rules: do_execve runs in the calling task and may sleep (page allocation,
kmap_high, user faults, the old mm's TLB flush).  The argument pages are
highmem; Python never reads or writes them: it learns the strings'
addresses from guest strnlen_user.
"""
import os

from vm import x86

from .layout import USER_STACK_TOP
from .task import Charge, Guest

PAGE = 4096
MAX_ARG_PAGES = 32
PATH_MAX = 4096
ENOENT, ENOEXEC, EFAULT, EACCES, ENAMETOOLONG = 2, 8, 14, 13, 36

# struct linux_binprm, the part the guest copy_strings reads (in lowmem).
BPRM_P = 0
BPRM_KDS = 4
BPRM_PAGE = 8
BPRM_SIZE = BPRM_PAGE + 4 * MAX_ARG_PAGES
BPRM_OFF = 2048                 # where in the task's syscall page
KARGV_OFF = 2048 + 512          # copy_strings_kernel's one-pointer array


class Exec:
    def __init__(self, kernel):
        self.k = kernel
        self.counters = dict(execs=0, exec_failed=0, exec_arg_pages=0, exec_instructions=0,
                             exec_cycles=0)

    # ---- helpers ------------------------------------------------------------

    def _bprm(self, task):
        return self.k.task_kbuf(task) + BPRM_OFF

    def _pages(self, task):
        k = self.k
        base = self._bprm(task) - k.PAGE_OFFSET + BPRM_PAGE
        return [k.machine.read32(base + 4 * i) for i in range(MAX_ARG_PAGES)]

    def _free_pages(self, task):
        for page in self._pages(task):
            if page:
                self.k.put_page(self.k.page_alloc.page_to_pfn(page))

    def open_exec(self, path):
        """('elf', inode) | ('asm', ProgramFile) | -errno."""
        k = self.k
        inode = k.vfs.lookup(path)
        if inode is not None:
            if not getattr(inode, 'mode', 0o755) & 0o111:
                return -EACCES
            return ('elf', inode)
        name = os.path.basename(path)
        if path in (name, '/bin/' + name) and name in k.binfmt.programs:
            return ('asm', k.binfmt.programs[name])
        return -ENOENT

    # ---- execve -----------------------------------------------------------------

    def do_execve(self, task, filename, argv, envp):
        """do_execve().  Generator -> -errno (on success the task returns to
        user mode in the new program: the value is its EAX, 0)."""
        k = self.k
        cpu = k.machine.cpus[task.cpu]
        insns0, cycles0 = cpu.instructions, k.machine.time(task.cpu)
        kbuf = k.task_kbuf(task)
        n = yield Guest('strncpy_from_user', kbuf, filename, PATH_MAX)     # getname
        if n >= 0x80000000:
            return self._fail(-EFAULT)
        if n >= PATH_MAX:
            return self._fail(-ENAMETOOLONG)
        path = k.machine.read(kbuf - k.PAGE_OFFSET, n).decode('latin-1')
        target = self.open_exec(path)
        if isinstance(target, int):
            return self._fail(target)
        kind, obj = target
        prog = None
        if kind == 'elf':
            try:
                prog = k.binfmt.elf_program(obj)
            except ValueError:
                prog = None
            if prog is None:
                return self._fail(-ENOEXEC)
        yield Charge(k.costs['exec'])
        bprm = self._bprm(task)
        bw = bprm - k.PAGE_OFFSET
        k.machine.write(bw, bytes(BPRM_SIZE))
        k.machine.write32(bw + BPRM_P, PAGE * MAX_ARG_PAGES - 4)
        argc = yield Guest('count', argv, (PAGE * MAX_ARG_PAGES - 4) // 4)
        if argc >= 0x80000000:
            return self._fail(argc - (1 << 32))
        envc = yield Guest('count', envp, (PAGE * MAX_ARG_PAGES - 4) // 4)
        if envc >= 0x80000000:
            return self._fail(envc - (1 << 32))
        # copy_strings_kernel(1, &bprm.filename): set_fs(KERNEL_DS)
        k.machine.write32(kbuf - k.PAGE_OFFSET + KARGV_OFF, kbuf)
        k.machine.write32(bw + BPRM_KDS, 1)
        r = yield Guest('copy_strings', 1, kbuf + KARGV_OFF, bprm)
        k.machine.write32(bw + BPRM_KDS, 0)
        p_exec = k.machine.read32(bw + BPRM_P)
        if r == 0:
            r = yield Guest('copy_strings', envc, envp, bprm)
        p_env = k.machine.read32(bw + BPRM_P)
        if r == 0:
            r = yield Guest('copy_strings', argc, argv, bprm)
        if r:
            self._free_pages(task)
            return self._fail(r - (1 << 32))
        p = k.machine.read32(bw + BPRM_P)
        pages = self._pages(task)
        # ---- flush_old_exec: no way back from here on
        err = yield from self.exec_mmap(task)
        if err:
            self._free_pages(task)
            return self._fail(err)
        yield from self.close_on_exec(task)
        yield from self.flush_thread(task)
        k.signals.flush_signal_handlers(task)
        mm = task.mm
        stack_base = USER_STACK_TOP - MAX_ARG_PAGES * PAGE
        if kind == 'elf':
            k.binfmt.setup_elf_mm(mm, prog, obj)
        else:
            k.binfmt.setup_mm(mm, obj)
        task.program = mm.program
        task.name = os.path.basename(path)
        k.set_user_code(cpu, task)
        self.setup_arg_pages(task, mm, pages, stack_base)
        if kind == 'elf' and not (yield from k.binfmt.padzero(prog)):
            k.kill_task(task, 'SIGSEGV', f'exec {path}: cannot clear the bss')
            return 0
        ok = yield from self.create_tables(task, kind, prog or obj, stack_base + p, argc,
                                           stack_base + p_env, envc, stack_base + p_exec)
        if not ok:
            k.kill_task(task, 'SIGSEGV', f'exec {path}: cannot set up the user stack')
            return 0
        self.counters['execs'] += 1
        k.trace_event('exec', task=task, path=path, argc=argc, envc=envc)
        self.counters['exec_instructions'] += cpu.instructions - insns0
        self.counters['exec_cycles'] += k.machine.time(task.cpu) - cycles0
        return 0

    def _fail(self, err):
        self.counters['exec_failed'] += 1
        return err

    def exec_mmap(self, task):
        """exec_mmap(): a new mm, made current (activate_mm: the guest's
        switch_mm loads its page directory), the old one released (mmput).
        Generator -> 0 or -ENOMEM."""
        k = self.k
        old = task.mm
        mm = k.mm.mm_alloc()
        if mm is None:
            return -12
        task.mm = task.active_mm = mm
        yield Guest('switch_mm', old.guest, mm.guest, task.cpu, irqs=False)
        old.users -= 1
        if old.users == 0:
            yield from k.mm.exit_mmap(task, old)
        k.reap_mms()
        return 0

    def flush_thread(self, task):
        """flush_thread() (2.6.0, with v4.14's fpu__clear): the new image
        starts with no TLS descriptors (the array cleared and this CPU's
        GDT entries reloaded by the guest's load_TLS) and the fresh FPU
        state in the registers (guest fxrstor).  Generator; no lock."""
        yield from self.k.tls.flush_thread(task)
        yield from self.k.fpu.clear(task)

    def close_on_exec(self, task):
        """flush_old_files(): close every fd marked close-on-exec."""
        files = task.files
        if files is None:
            return
        for fd in sorted(getattr(files, 'close_on_exec', ())):
            yield from self.k.vfs.sys_close(task, fd)
        if hasattr(files, 'close_on_exec'):
            files.close_on_exec.clear()

    def setup_arg_pages(self, task, mm, pages, stack_base):
        """setup_arg_pages() -> put_dirty_page(): each argument page mapped
        at the top of the new stack, present, dirty and writable."""
        k = self.k
        for i, page in enumerate(pages):
            if not page:
                continue
            pfn = k.page_alloc.page_to_pfn(page)
            va = stack_base + i * PAGE
            pte_pa = k.mm.pte_alloc(mm, va)
            if pte_pa is None:
                k.put_page(pfn)
                continue                       # the stack page faults in as zeroes
            k.mm.write_pte(pte_pa, (pfn << 12) | x86.PTE_P | x86.PTE_U | x86.PTE_W
                           | x86.PTE_D | x86.PTE_A)
            k.page_add_anon(pfn, mm, va, pte_pa)
            self.counters['exec_arg_pages'] += 1

    def _string_addrs(self, task, addr, n):
        """The addresses of n consecutive strings from addr (create_elf_tables'
        walk with strnlen_user).  Generator -> (list, the address after them)."""
        out = []
        for _ in range(n):
            out.append(addr)
            length = yield Guest('strnlen_user', addr, MAX_ARG_PAGES * PAGE)
            if length == 0:
                return None, addr
            addr += length
        return out, addr

    def create_tables(self, task, kind, prog, p, argc, p_env, envc, p_exec):
        """create_elf_tables() for strings already on the stack (argv at p,
        envp at p_env, the filename at p_exec).  Generator -> success."""
        from .binfmt import ELF_PLATFORM, elf_auxv
        import struct
        k = self.k
        args, _ = yield from self._string_addrs(task, p, argc)
        envs, _ = yield from self._string_addrs(task, p_env, envc)
        if args is None or envs is None:
            return False
        top = p & ~3
        extra = b''
        aux_words = []
        if kind == 'elf':
            plat = ELF_PLATFORM.encode() + b'\0'
            rand = bytes(k.machine.rng.getrandbits(8) for _ in range(16))
            plat_addr = top - len(plat)
            rand_addr = (plat_addr - 16) & ~3
            extra_lo = rand_addr
            extra = rand + bytes(plat_addr - rand_addr - 16) + plat + bytes(top - plat_addr - len(plat))
            aux_words = [w for pair in elf_auxv(prog, rand_addr, p_exec, plat_addr) for w in pair]
            top = extra_lo
        words = [argc] + args + [0] + envs + [0] + aux_words
        esp = (top - 4 * len(words)) & ~15
        table = struct.pack(f'<{len(words)}I', *words)
        block = table + bytes(top - esp - len(table)) + extra
        ok = yield from k.binfmt.copy_to_stack(task, esp, block)
        if not ok:
            return False
        entry = prog.entry if kind == 'elf' else prog.image.symbols['_start']
        task.uregs = dict(eax=0, ebx=0, ecx=0, edx=0, esi=0, edi=0, ebp=0,
                          esp=esp, eip=entry, eflags=0x202)
        return True
