"""The kmaplab pytest plugin: fixtures for kernel developers' own tests.

Installed with kmaplab (the `pytest11` entry point in pyproject.toml), so a
test file anywhere gets the fixtures with no conftest.py:

    def test_perform_write_survives_the_same_page(lab):
        r = lab.run('same-page-write', variant='write_path=perform_write')
        r.expect('completed')                       # the outcome, with the reasons if not
        assert r.counter('perform_write_retries') >= 1
        assert r.counters['lock_page_waits'] == 0

Fixtures
    lab                 a Lab: run scenarios (names, or paths to your own
                        .toml files) and fault plans; remembers each run.
    boot_kernel(**opts) a booted Kernel (not run) with every user program of
                        asm/user/ installed (64 MiB, 32 MiB of highmem, one
                        CPU unless told otherwise).

Lab
    lab.run(SCENARIO, variant=None, plan=None, seed=0, **overrides) -> Result
        variant: a dict or 'k=v,...' (the swept values of one variant;
        default: the scenario's first variant), plan: a fault plan (path or
        dict), overrides: boot options (write_path='kmap', cpus=4 ...).
    lab.variants(SCENARIO) -> [dict]: the scenario's variants.
    lab.run_all(SCENARIO, seed=0, **overrides) -> [Result], one per variant.
Result (a dict: the fields of kmaplab.inject.run_one, also as attributes)
    r.outcome, r.expected, r.ok, r.findings, r.counters, r.reports, r.why,
    r.faults (fault plans), r.checkers, r.replay (the command that replays it);
    r.counter(name): a counter (a KeyError naming close ones if absent);
    r.expect(outcome=None): assert the outcome (default: the scenario's
    expectation), the failure message lists the kernel's reports.

Every lab.run is remembered: when a test fails, its report gets a section
"kmaplab replay" with each run's seed and the one-line command that replays
it.  Outcomes and counters are what the emulated machine did; nothing here
decides them.
"""
import difflib
import functools
import os

import pytest

MiB = 1 << 20


@functools.cache
def _all_programs():
    from minikernel.binfmt import assemble_program
    from minikernel.kernel import ASM_DIR, ROOT
    names = sorted(f[:-2] for f in os.listdir(os.path.join(ASM_DIR, 'user'))
                   if f.endswith('.S') and f != 'lib.S')
    return {n: assemble_program(n, ROOT, ASM_DIR) for n in names}


@pytest.fixture
def boot_kernel():
    """Boot a kernel with every user program installed (64 MiB, 32 MiB of
    highmem, one CPU unless told otherwise)."""
    from minikernel.kernel import Kernel

    def boot(**options):
        opts = {'mem': 64 * MiB, 'highmem': 32 * MiB, 'max_cycles': 2_000_000_000}
        opts.update(options)
        return Kernel(opts, _all_programs())
    return boot


class Result(dict):
    """One run: the result dict of kmaplab.inject.run_one, its fields also
    as attributes, and helpers to assert on it."""

    def __init__(self, r, replay):
        super().__init__(r)
        self['replay'] = replay

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def counter(self, key):
        try:
            return self.counters[key]
        except KeyError:
            close = difflib.get_close_matches(key, list(self.counters), n=4)
            raise KeyError(f'no counter {key!r}' + (f' (close: {", ".join(close)})' if close else '')) \
                from None

    def explain(self):
        lines = [f'{self.scenario} {self.variant} seed {self.seed}: outcome {self.outcome} '
                 f'(scenario expects {self.expected})']
        lines += [f'  {x}' for x in self.why or []]
        for rep in (self.reports or [])[:8]:
            if rep.get('kind') not in ('fault', 'warning'):
                lines.append(f'  {rep["kind"]}: {rep["message"]}')
                lines += [f'      {g}' for g in rep.get('graph', [])]
        lines.append(f'  replay: {self.replay}')
        return '\n'.join(lines)

    def expect(self, outcome=None):
        """Assert the outcome (default: the scenario's expectation, with its checks)."""
        if outcome is None:
            assert self.ok, self.explain()
        else:
            assert self.outcome == outcome, f'expected {outcome}\n' + self.explain()
        return self

    def __repr__(self):
        return f'<kmaplab Result {self.scenario} {self.variant} seed={self.seed}: {self.outcome}>'


class Lab:
    """Runs scenarios with fault plans and remembers how to replay them."""

    def __init__(self):
        self.replays = []

    @staticmethod
    def _scenario(scenario):
        from kmaplab.inject import find_scenario
        return find_scenario(scenario) if isinstance(scenario, str) else scenario

    def variants(self, scenario):
        return self._scenario(scenario).variants()

    def run(self, scenario, variant=None, plan=None, seed=0, **overrides):
        from kmaplab import options
        from kmaplab.inject import _resolve_plan, replay_command, run_one
        scn = self._scenario(scenario)
        if isinstance(variant, str):
            variant = options.select(scn, scn.variants(), variant)[0]
        elif variant is None:
            variant = scn.variants()[0]
        variant = dict(variant)
        plan = _resolve_plan(scn, plan)
        cmd = replay_command(scn.path, plan, seed, dict(variant, **overrides))
        self.replays.append(f'seed {seed}: {cmd}')
        return Result(run_one(scn, variant, seed=seed, plan=plan, overrides=overrides), cmd)

    def run_all(self, scenario, seed=0, **overrides):
        return [self.run(scenario, v, seed=seed, **overrides) for v in self.variants(scenario)]


@pytest.fixture
def lab(request):
    lab = Lab()
    request.node._kmaplab_lab = lab
    return lab


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    lab = getattr(item, '_kmaplab_lab', None)
    if rep.when == 'call' and rep.failed and lab is not None and lab.replays:
        rep.sections.append(('kmaplab replay', '\n'.join(lab.replays)))
