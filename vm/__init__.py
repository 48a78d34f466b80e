"""vm: the emulated x86 SMP machine (Unicorn underneath); knows no Linux.

numpy (mem_map, vmstat, traces) links OpenBLAS, whose import starts a pool
of worker threads that spin-wait before they sleep: about 0.15 CPU-s per
process that no lab code asks for (the lab never calls BLAS).  One thread,
unless the user chose otherwise, set before anything imports numpy.
"""
import os

os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
