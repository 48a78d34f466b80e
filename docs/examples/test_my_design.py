"""An example test a kernel developer writes outside the kmaplab tree.

With kmaplab installed (pip install kmaplab, or `make setup` in a clone),
`pytest test_my_design.py` finds the `lab` fixture through the kmaplab
pytest plugin: no conftest.py, no imports of kmaplab needed.
"""


def test_perform_write_does_not_deadlock_on_its_own_page(lab):
    """The 2.5.34 fallback copy deadlocks on the same page; 2.6.24's
    generic_perform_write retries the short copy with the page unlocked."""
    broken = lab.run('same-page-write', variant='write_path=atomic_fallback')
    broken.expect('deadlock')
    fixed = lab.run('same-page-write', variant='write_path=perform_write')
    fixed.expect('completed')
    assert fixed.counter('perform_write_retries') >= 1
    assert fixed.counter('lock_page_waits') <= broken.counter('lock_page_waits')


def test_every_cpu_says_hello(lab):
    r = lab.run('hello', cpus=2)
    r.expect()                                  # the scenario's own expectation and checks
    assert r.counter('console_lines') == 2
