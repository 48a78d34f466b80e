"""Real programs in scenario files: host files copied into the lab, tasks
that exec an ELF binary, and expectations checked against answers the host
computes at run time (docs/scenarios.md, "Real programs").

    [[file]]   host = "busybox/busybox"   bytes of a host file (relative to
               the scenario file's folder or the project's build/ folder,
               and confined to them), instead of size/seed; mode = 0o755
    [[task]]   exec = "/bin/busybox"       a lab path (a [[file]]), instead
               argv = ["sha256sum", "/x"]  of program; argv (default: the
               env = ["PATH=/bin"]         file's name), env (default none)
               after = "name"              start when that task has exited
               cpu = "rr"                  round robin: the n-th task on CPU
                                           n % cpus (also for program tasks)
    [[expect.output]]  task, contains      the console output of the task
                                           and the tasks forked from it
                                           holds the text; "{sha256:/lab/path}" is
                                           the hashlib sha256 of that
                                           [[file]]'s bytes, computed now
    [[expect.file]]    name, same_as       the lab file (its page cache
                                           view, and the disk after the
                                           final sync) holds exactly the
                                           bytes of the [[file]] same_as
                       name, text          ... or exactly this text
                                           ("{sha256:/lab/path}" expands)

A failed answer check is a 'failed' finding with a report saying what
differs.  The checks read the page cache and the disk the way the data
oracle does (a checker, outside the kernel it checks).
"""
import hashlib
import os
import re

from minikernel.fs import FS_REGION_BYTES
from minikernel.kernel import ROOT

BUILD_DIR = os.path.join(ROOT, 'build')
MAX_HOST_FILE = FS_REGION_BYTES      # bytes of a host= file: the file system's region of the disk
OUTPUT_LIMIT = 8192                   # bytes of a task's output kept in results and shown
_PLACEHOLDER = re.compile(r'\{sha256:([^}]*)\}')


def host_path(scn_path, host, err, missing=None):
    """The host file a [[file]] host= names: relative to the scenario's
    folder, else to build/; it must stay inside that folder.  A file that
    is not there raises `missing` (default `err`): busybox on a machine
    that could not fetch it."""
    if not isinstance(host, str) or not host or os.path.isabs(host):
        raise err(f'{scn_path}: file.host: {host!r} (a relative path)')
    tried = []
    for base in (os.path.dirname(os.path.abspath(scn_path)), BUILD_DIR):
        base = os.path.realpath(base)
        p = os.path.realpath(os.path.join(base, host))
        if os.path.commonpath([p, base]) != base:
            raise err(f'{scn_path}: file.host: {host!r} leaves {base}')
        if os.path.isfile(p):
            return p
        tried.append(p)
    why = _missing_reason(host)
    raise (missing or err)(f'{scn_path}: file.host: {host!r} not found (tried {", ".join(tried)}){why}')


def _missing_reason(host):
    status = os.path.join(BUILD_DIR, host.split('/')[0], 'STATUS')
    if os.path.exists(status):
        with open(status) as f:
            return f'; {f.read().strip()}'
    return '; `make setup` builds workloads/ and fetches busybox where it can'


def validate(path, data, err, missing=None):
    """What the schema (kmaplab/scenario.py: types and ranges of these keys)
    cannot say: host files exist inside their folders and fit the disk,
    exec/after/expect name files and tasks of this scenario (ScenarioError
    is `err`; a missing host file raises `missing`)."""
    files = data.get('file', [])
    names = set()
    for i, f in enumerate(files):
        where = f'{path}: file[{i}].'
        if 'host' in f:
            if 'size' in f or 'seed' in f or 'fill' in f:
                raise err(f'{where}host: give host or size/seed/fill, not both')
            size = os.path.getsize(host_path(path, f['host'], err, missing))
            if size > MAX_HOST_FILE:
                raise err(f'{where}host: {f["host"]!r} has {size} bytes (allowed: at most '
                          f'{MAX_HOST_FILE >> 20}M, the file system\'s region of the disk)')
        names.add('/' + f['name'].strip('/'))
    tasks = data.get('task', [])
    tnames = []
    for i, t in enumerate(tasks):
        where = f'{path}: task[{i}].'
        if 'exec' in t:
            if 'program' in t:
                raise err(f'{where}exec: give program or exec, not both')
            if '/' + t['exec'].strip('/') not in names:
                raise err(f'{where}exec: {t["exec"]!r} is not a [[file]] of this scenario')
            if 'args' in t or 'thread_of' in t:
                raise err(f'{where}exec: args and thread_of are for program tasks (use argv)')
        elif 'argv' in t or 'env' in t:
            raise err(f'{where}argv: only with exec')
        if 'after' in t and t['after'] not in tnames:
            raise err(f'{where}after: {t["after"]!r} is not an earlier task')
        tnames.append(task_name(t))
    e = data.get('expect', {})
    for i, o in enumerate(e.get('output', [])):
        where = f'{path}: expect.output[{i}].'
        if o['task'] not in tnames:
            raise err(f'{where}task: {o["task"]!r} is not a task (allowed: {", ".join(tnames)})')
        for ref in _PLACEHOLDER.findall(o['contains']):
            if '/' + ref.strip('/') not in names:
                raise err(f'{where}contains: {{sha256:{ref}}} is not a [[file]]')
    for i, f in enumerate(e.get('file', [])):
        where = f'{path}: expect.file[{i}].'
        if ('same_as' in f) == ('text' in f):
            raise err(f'{where}same_as: give same_as or text (one of them)')
        if 'same_as' in f and '/' + f['same_as'].strip('/') not in names:
            raise err(f'{where}same_as: {f["same_as"]!r} is not a [[file]]')
        for ref in _PLACEHOLDER.findall(f.get('text', '')):
            if '/' + ref.strip('/') not in names:
                raise err(f'{where}text: {{sha256:{ref}}} is not a [[file]]')


def task_name(spec):
    return spec.get('name') or spec.get('program') or os.path.basename(spec['exec'])


def answers(scn, file_bytes):
    """The host's answers for this scenario: (outputs, files) with the
    placeholders of [[expect.output]] replaced by hashlib's sha256 of the
    [[file]] bytes (`file_bytes(lab path) -> bytes`)."""
    e = scn.expect

    def expand(text):
        return _PLACEHOLDER.sub(lambda m: hashlib.sha256(file_bytes(m.group(1))).hexdigest(), text)
    outputs = [(o['task'], expand(o['contains'])) for o in e.get('output', [])]
    files = [(f['name'], file_bytes(f['same_as']) if 'same_as' in f else expand(f['text']).encode('latin-1'))
             for f in e.get('file', [])]
    return outputs, files


def lab_file(k, name, disk_only):
    """The bytes of lab file `name` as the machine holds them (page cache
    if uptodate, else disk; or the disk alone), or None if missing."""
    inode = k.vfs.lookup(name)
    if inode is None:
        return None
    pages = [k.oracle.file_page(inode, i, disk_only)[0] for i in range((inode.size + 4095) // 4096)]
    return b''.join(pages)[:inode.size]


def check(k, outputs, files, tasks, phase):
    """Compare with the host's answers; each difference is a 'wrong_answer'
    report.  phase 'run' (after the run: outputs, page cache view) or
    'disk' (after the final sync: the disk alone)."""
    n = 0
    if phase == 'run':
        for tname, text in outputs:
            n += 1
            out = family_output(k, tasks.get(tname, []))
            if text not in out:
                k.report('wrong_answer', f'{tname}: output does not contain {text!r} '
                                         f'(it was {out[-200:]!r})')
    for name, want in files:
        n += 1
        got = lab_file(k, name, disk_only=phase == 'disk')
        where = 'on the disk' if phase == 'disk' else 'in the page cache'
        if got is None:
            k.report('wrong_answer', f'{name}: no such file {where}')
        elif got != want:
            i = next((j for j in range(min(len(got), len(want))) if got[j] != want[j]),
                     min(len(got), len(want)))
            k.report('wrong_answer', f'{name}: {len(got)} bytes {where}, expected {len(want)}; '
                                     f'first difference at offset {i}')
    return n


def family_output(k, instances):
    """The console output of a task and of every task forked from it (a
    shell and its commands: what its terminal would show), in time order."""
    family = {t.pid for t in instances}
    family |= {t.pid for t in k.sched.tasks.values() if t.origin is not None and t.origin in instances}
    return ''.join(text for _, _, pid, text in k.console if pid in family)


def outputs_of(k):
    """Each user task's console output (bounded), by 'name/pid'."""
    out = {}
    for t in sorted(k.sched.tasks.values(), key=lambda t: t.pid):
        if t.console:
            text = bytes(t.console[:OUTPUT_LIMIT]).decode('latin-1')
            if len(t.console) > OUTPUT_LIMIT:
                text += f'\n[... {len(t.console) - OUTPUT_LIMIT} more bytes]'
            out[f'{t.name}/{t.pid}'] = text
    return out
