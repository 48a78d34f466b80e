# The one compiled piece: vm/_native.c, the per-CPU hooks Unicorn calls from C
# (instruction counting by translated block, trap capture, interrupt window).
from setuptools import Extension, setup

setup(ext_modules=[Extension("vm._native", ["vm/_native.c"], extra_compile_args=["-O2"])])
