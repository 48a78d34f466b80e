"""Issue 17, nothing lost: result files are written under a temporary name
and renamed; a set of report files changes as one; `campaign --fresh`
keeps the earlier results until the new campaign has finished.  The tests
kill the writers (SIGKILL) and check what is left."""
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PUBLISHER = r'''
import os, sys
sys.path.insert(0, sys.argv[2])
from kmaplab import outfiles
out = sys.argv[1]
gen = 0
while True:
    gen += 1
    stage = outfiles.new_stage(out)
    for name in ('report.json', 'report.md', 'plot.png'):
        with open(os.path.join(stage, name), 'w') as f:
            f.write(f'generation {gen} ' * 2000)
    outfiles.publish(out, stage, ['report.json', 'report.md', 'plot.png'])
'''


def _set(out):
    got = set()
    for name in ('report.json', 'report.md', 'plot.png'):
        with open(os.path.join(out, name)) as f:
            text = f.read()
        assert text and text == text.split(' ', 2)[0] + ' ' + text.split(' ', 2)[1] + ' ' \
            + text.split(' ', 2)[2], name
        got.add(text[:30])
    return got


def test_a_killed_report_leaves_one_whole_set(tmp_path):
    """A writer publishing report sets in a loop, killed at 12 moments: the
    files always show one generation, each whole."""
    out = str(tmp_path / 'out')
    for i in range(12):
        p = subprocess.Popen([sys.executable, '-c', PUBLISHER, out, ROOT])
        time.sleep(0.15 + 0.05 * i)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if os.path.exists(os.path.join(out, 'report.md')):
            got = _set(out)
            assert len(got) == 1, got              # one generation: never a mixed set
            for name in ('report.json', 'report.md', 'plot.png'):
                assert len(open(os.path.join(out, name)).read()) > 20_000   # whole


def _report(out, seeds):
    return [sys.executable, '-m', 'kmaplab.cli', 'report', '--scenarios', 'hello,same-page-write',
            '--seeds', str(seeds), '--jobs', '1', '--out', str(out)]


def test_a_killed_kmaplab_report_leaves_the_earlier_report_whole(tmp_path):
    """The real command: a finished report (seeds 1), then a second report
    (seeds 2) killed by its PID at several moments.  What out/ shows is
    always one whole set: the first report byte for byte, or (once the
    second got to publish) the second's report.json and report.md, both."""
    out = tmp_path / 'out'
    t0 = time.monotonic()
    first = subprocess.run(_report(out, 1), cwd=ROOT, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    before = {n: (out / n).read_bytes() for n in ('report.json', 'report.md')}
    killed_before_publish = 0
    # moments relative to how long one report takes on this machine: the
    # first kill lands well before the second report (twice the runs) can
    # publish, the last one after it may have
    for delay in (0.3 * took, 0.8 * took, 1.4 * took, 2.2 * took):
        p = subprocess.Popen(_report(out, 2), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)              # this process, by its PID
        p.wait()
        now = {n: (out / n).read_bytes() for n in before}
        if now == before:
            killed_before_publish += 1
            continue
        import json
        seeds = {r['seed'] for r in json.loads(now['report.json'])['results']}
        # the new set, whole: its report.md is the one of 2 runs per variant (two
        # generations of the same report may have byte-identical report.md files:
        # wall and CPU seconds round to 0 on a fast run)
        assert len(seeds) > 1 and b'2 run(s) each' in now['report.md'], seeds
        before = now
    assert killed_before_publish >= 1


def _campaign(tmp_path, out, *extra):
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from test_faults import tiny_plans
    return [sys.executable, '-m', 'kmaplab.cli', 'campaign', '--plans', str(tiny_plans(tmp_path)),
            '--out', str(out), '--write-paths', 'atomic_fallback,perform_write', '--jobs', '1',
            *extra]


def test_a_killed_fresh_campaign_keeps_the_earlier_results(tmp_path):
    out = tmp_path / 'out'
    first = subprocess.run(_campaign(tmp_path, out, '--seeds', '1'), cwd=ROOT, capture_output=True,
                           text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    before = {n: (out / n).read_bytes() for n in ('results.jsonl', 'results.json', 'matrix.txt',
                                                 'failures.txt')}
    assert before['results.jsonl'].count(b'\n') == 4
    # enough runs (60) that it is still running when its first result lands
    p = subprocess.Popen(_campaign(tmp_path, out, '--seeds', '15', '--fresh'), cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    new = out / 'results.jsonl.new'
    t0 = time.monotonic()
    while time.monotonic() - t0 < 600 and p.poll() is None:
        if new.exists() and new.read_bytes().count(b'\n') >= 1:
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert new.exists() and new.read_bytes().count(b'\n') >= 1     # it was killed mid-campaign
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name


def test_a_new_set_drops_the_old_sets_other_files(tmp_path):
    """A report without the plot the previous one had: no link is left
    pointing at nothing."""
    sys.path.insert(0, ROOT)
    from kmaplab import outfiles
    out = str(tmp_path)
    for names in (['report.json', 'a.png'], ['report.json']):
        stage = outfiles.new_stage(out)
        for n in names:
            with open(os.path.join(stage, n), 'w') as f:
                f.write(n)
        outfiles.publish(out, stage, names)
    assert sorted(n for n in os.listdir(out) if not n.startswith('.set-')) == ['.current', 'report.json']
    assert open(os.path.join(out, 'report.json')).read() == 'report.json'
