# kmaplab: the user's entry points.  Every target sets itself up first.
PY      := .venv/bin/python
STAMP   := .venv/.installed
SCENARIO ?= hello
ARGS    ?=

.PHONY: setup test test-slow report run trace faults bench selftest clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py vm/_native.c
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	.venv/bin/pytest -q

test-slow: $(STAMP)
	.venv/bin/pytest -q -m slow

report: $(STAMP)
	.venv/bin/kmaplab report $(ARGS)

run: $(STAMP)
	.venv/bin/kmaplab run $(SCENARIO) $(ARGS)

trace: $(STAMP)
	.venv/bin/kmaplab trace $(SCENARIO) $(ARGS)

faults: $(STAMP)
	.venv/bin/kmaplab campaign $(ARGS)

bench: $(STAMP)
	.venv/bin/kmaplab bench $(ARGS)

selftest: $(STAMP)
	.venv/bin/kmaplab selftest

clean:
	rm -rf .venv build *.egg-info vm/*.so out
