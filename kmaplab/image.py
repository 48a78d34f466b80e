"""`kmaplab image`: ELF files of the kernel image and the user programs.

What this file owns
  - write_images(kernel, out_dir, programs): kernel.elf (the image as the
    booted kernel assembled it: its addresses depend on the boot options
    through the defines) and <program>.elf for each user program, with
    symbols, line info for asm/*.S and CFI (vm/elf.py).  They load in gdb,
    objdump, IDA, Ghidra, Binary Ninja; Tenet exports (kmaplab/trace.py)
    name the same addresses.
  - The command: kmaplab image [SCENARIO] [--variant K=V] [--set K=V] --out DIR.

Rules
  - The files are a function of the scenario variant and the sources.
  - User programs are all linked at USER_TEXT: load one at a time in gdb
    (add-symbol-file), or use the kernel's alone.
"""
import os

from vm.elf import write_elf

from minikernel.kernel import ASM_DIR, ROOT
from minikernel.layout import PAGE_OFFSET

from .runner import program_image


def user_programs():
    """Every program of asm/user (lib.S is the library, not a program)."""
    names = [f[:-2] for f in os.listdir(os.path.join(ASM_DIR, 'user')) if f.endswith('.S')]
    return sorted(n for n in names if n != 'lib')


def write_images(k, out_dir, programs=None):
    """Write kernel.elf and <program>.elf into out_dir; returns the paths,
    the kernel's first."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [write_elf(k.image, os.path.join(out_dir, 'kernel.elf'), 'kernel', ROOT,
                       paddr=k.image.base - PAGE_OFFSET, caller='python_kernel')]
    for name in (user_programs() if programs is None else programs):
        img = program_image(name)
        paths.append(write_elf(img, os.path.join(out_dir, f'{name}.elf'), name, ROOT,
                               entry=img.symbols.get('_start', img.base)))
    return paths


def add_parser(sub):
    p = sub.add_parser('image', help='write ELF files (symbols, line info) of the kernel image '
                                     'and the user programs, for gdb/IDA/Ghidra/Binary Ninja')
    p.add_argument('scenario', nargs='?', default='hello', metavar='SCENARIO',
                   help='the scenario whose boot options shape the kernel image (default hello)')
    p.add_argument('--out', metavar='DIR', required=True, help='directory for the .elf files')
    p.add_argument('--set', action='append', metavar='KEY=VALUE',
                   help='a boot option or machine key (repeatable), as for kmaplab run')
    p.add_argument('--variant', metavar='KEY=VALUE,...',
                   help='the variant of a swept scenario, as for kmaplab run')
    p.add_argument('--seed', type=int, metavar='N', help='the seed (does not change the image)')
    p.add_argument('--cpus', type=int, metavar='N', help='the machine size (= --set cpus=N)')
    return p


def cmd_image(args, select_variant):
    from . import scenario as scn_mod
    from .runner import boot
    s = scn_mod.find(args.scenario)
    variant, overrides = select_variant(s, args)
    k = boot(s, variant, seed=args.seed, overrides=overrides)
    for path in write_images(k, args.out):
        print(path)
    return 0
