"""The test suite's own settings.  The fixtures (lab, boot_kernel) come from
the kmaplab pytest plugin (kmaplab/pytest_plugin.py, installed with the
package as a pytest11 entry point), the same ones any kernel developer's
test gets."""
import os

import pytest


@pytest.fixture(autouse=True, scope='session')
def _outputs_in_tmp(tmp_path_factory):
    """Commands' default outputs (out/: schedules, inline plans, traces,
    reports) go to a temporary directory, never the source tree's out/."""
    os.environ['KMAPLAB_OUT'] = str(tmp_path_factory.mktemp('kmaplab-out'))
    yield
