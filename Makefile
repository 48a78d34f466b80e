# kmaplab: the user's entry points.  Every target sets itself up first.
PY      := .venv/bin/python
STAMP   := .venv/.installed
WORKLOADS := build/workloads/.built
SCENARIO ?= hello
ARGS    ?=
GDB_PORT ?= 1234

.PHONY: setup bytecode test test-slow report run trace faults bench selftest gdb image clean

setup: $(STAMP) $(WORKLOADS) bytecode

$(STAMP): pyproject.toml setup.py vm/_native.c vm/_debug.c vm/_run.c vm/_tlb.c vm/_lines.c vm/_pyhook.c
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -e '.[test]'
	@# gdb for `make gdb` and tests/test_gdb.py (which skips the real-gdb part without it)
	@command -v gdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q gdb >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q gdb >/dev/null 2>&1; }; }; } || \
	  echo 'make: gdb not installed (not root or no apt-get): tests use their own RSP client'
	touch $(STAMP)

# The C workloads (zig) and busybox-static:i386 (where root and dpkg allow):
# workloads/build.py; the first zig build of musl takes ~40 s of CPU, cached.
$(WORKLOADS): workloads/build.py $(wildcard workloads/*.[ch]) workloads/busybox.sha256 | $(STAMP)
	$(PY) workloads/build.py
	touch $(WORKLOADS)

# Byte-compiled sources: where PYTHONDONTWRITEBYTECODE is set, Python writes
# no .pyc itself and every process compiled all of the lab again (~0.2 CPU-s
# each); compileall writes them anyway and redoes only changed files.
bytecode: $(STAMP)
	@$(PY) -m compileall -q vm minikernel kmaplab tests >/dev/null

test: $(STAMP) $(WORKLOADS) bytecode
	.venv/bin/pytest -q

test-slow: $(STAMP) $(WORKLOADS) bytecode
	.venv/bin/pytest -q -m slow

report: $(STAMP) $(WORKLOADS) bytecode
	.venv/bin/kmaplab report $(ARGS)

run: $(STAMP) $(WORKLOADS) bytecode
	.venv/bin/kmaplab run $(SCENARIO) $(ARGS)

trace: $(STAMP)
	.venv/bin/kmaplab trace $(SCENARIO) $(ARGS)

faults: $(STAMP)
	.venv/bin/kmaplab campaign $(ARGS)

bench: $(STAMP)
	.venv/bin/kmaplab bench $(ARGS)

gdb: $(STAMP) $(WORKLOADS)
	.venv/bin/kmaplab run $(SCENARIO) --gdb $(GDB_PORT) $(ARGS)

image: $(STAMP) $(WORKLOADS)
	.venv/bin/kmaplab image $(SCENARIO) --out out/image $(ARGS)

selftest: $(STAMP)
	.venv/bin/kmaplab selftest

clean:
	rm -rf .venv build *.egg-info vm/*.so out
