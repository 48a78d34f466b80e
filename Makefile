# kmaplab: the user's entry points.  Every target sets itself up first.
PY      := .venv/bin/python
STAMP   := .venv/.installed
WORKLOADS := build/workloads/.built
UNICORN := .venv/.unicorn
SCENARIO ?= hello
ARGS    ?=
GDB_PORT ?= 1234

.PHONY: setup bytecode test test-slow report run trace faults bench selftest gdb image clean

setup: $(STAMP) $(UNICORN) $(WORKLOADS) bytecode

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

# kmaplab's Unicorn build (tools/unicorn/build.py: PyPI's sdist + our patches,
# x86 only, ~40 s once, cached in ~/.cache/kmaplab/unicorn) over the wheel's
# library; again whenever pip may have put the wheel's back ($(STAMP)).
$(UNICORN): tools/unicorn/build.py $(wildcard tools/unicorn/patches/*.patch) $(STAMP)
	@for t in cmake patch; do command -v $$t >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null 2>&1 && { apt-get install -y -q $$t >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$t >/dev/null 2>&1; }; }; }; done
	$(PY) tools/unicorn/build.py
	touch $(UNICORN)

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

test: $(STAMP) $(UNICORN) $(WORKLOADS) bytecode
	.venv/bin/pytest -q

test-slow: $(STAMP) $(UNICORN) $(WORKLOADS) bytecode
	.venv/bin/pytest -q -m slow

report: $(STAMP) $(UNICORN) $(WORKLOADS) bytecode
	.venv/bin/kmaplab report $(ARGS)

run: $(STAMP) $(UNICORN) $(WORKLOADS) bytecode
	.venv/bin/kmaplab run $(SCENARIO) $(ARGS)

trace: $(STAMP) $(UNICORN)
	.venv/bin/kmaplab trace $(SCENARIO) $(ARGS)

faults: $(STAMP) $(UNICORN)
	.venv/bin/kmaplab campaign $(ARGS)

bench: $(STAMP) $(UNICORN)
	.venv/bin/kmaplab bench $(ARGS)

gdb: $(STAMP) $(UNICORN) $(WORKLOADS)
	.venv/bin/kmaplab run $(SCENARIO) --gdb $(GDB_PORT) $(ARGS)

image: $(STAMP) $(UNICORN) $(WORKLOADS)
	.venv/bin/kmaplab image $(SCENARIO) --out out/image $(ARGS)

selftest: $(STAMP) $(UNICORN)
	.venv/bin/kmaplab selftest

clean:
	rm -rf .venv build *.egg-info vm/*.so out
