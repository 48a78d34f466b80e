# The compiled pieces: vm/_native.c, the per-CPU hooks Unicorn calls from C
# (instruction counting by translated block, trap capture, interrupt window);
# vm/_debug.c, the debugger's breakpoint/step/watchpoint hooks; vm/_run.c,
# the run/trap round trip and the machine's clocks; vm/_tlb.c, the modelled
# TLB of tlb=p3 and vm/_lines.c, cache-line transfers (reached through
# ctypes); vm/_pyhook.c, the C callback of CPU.hook_code's Python hooks.
from setuptools import Extension, setup

setup(ext_modules=[Extension("vm._native", ["vm/_native.c"], extra_compile_args=["-O2"]),
                   Extension("vm._debug", ["vm/_debug.c"], extra_compile_args=["-O2"]),
                   Extension("vm._run", ["vm/_run.c"], extra_compile_args=["-O2"]),
                   Extension("vm._tlb", ["vm/_tlb.c"], extra_compile_args=["-O2"]),
                   Extension("vm._lines", ["vm/_lines.c"], extra_compile_args=["-O2"]),
                   Extension("vm._pyhook", ["vm/_pyhook.c"], extra_compile_args=["-O2"])])
