"""pytest fixtures for writing fault-injection tests in a few lines.

    boot_kernel(**options)            a booted Kernel (not run) with every user
                                      program installed; options are boot
                                      options (write_path=..., cpus=...).
    lab.run(SCENARIO, plan=None, seed=0, variant=None, **overrides)
                                      boot a scenario's variant, apply a fault
                                      plan, run it, judge it: the result dict
                                      of kmaplab.inject.run_one (outcome,
                                      findings, counters, faults, reports ...).

Every lab.run is remembered: when a test fails, its report gets a section
"kmaplab replay" with each run's seed and the one-line command that replays
it (`kmaplab inject SCENARIO --plan F --seed N ...` or `kmaplab run ...`).
"""
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


class Lab:
    """Runs scenarios with fault plans and remembers how to replay them."""

    def __init__(self):
        self.replays = []

    def run(self, scenario, plan=None, seed=0, variant=None, **overrides):
        from kmaplab.inject import _resolve_plan, find_scenario, replay_command, run_one
        scn = find_scenario(scenario) if isinstance(scenario, str) else scenario
        variant = dict(variant or {})
        plan = _resolve_plan(scn, plan)
        cmd = replay_command(scn.path, plan, seed, dict(variant, **overrides))
        self.replays.append(f'seed {seed}: {cmd}')
        return run_one(scn, variant, seed=seed, plan=plan, overrides=overrides)


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


@pytest.fixture(autouse=True, scope='session')
def _outputs_in_tmp(tmp_path_factory):
    """Commands' default outputs (out/: schedules, inline plans, traces,
    reports) go to a temporary directory, never the source tree's out/."""
    os.environ['KMAPLAB_OUT'] = str(tmp_path_factory.mktemp('kmaplab-out'))
    yield
