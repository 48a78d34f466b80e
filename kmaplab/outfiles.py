"""Output files that are never half-written and sets of them that change as one.

  - atomic_write(path, text): the bytes go to a temporary name beside
    `path` (same directory, so the same file system), are flushed, then
    renamed over it: a reader (or a kill at any moment) sees the old file
    or the new one, whole.
  - publish(out_dir, staged, names): make the files `names` of the
    directory `staged` the current set in `out_dir` in one rename.  Each
    out_dir/NAME is a symlink to .current/NAME and .current a symlink to
    the set's own directory (.set-N), so replacing .current (rename(2) of
    a new symlink over it) swaps every file at once; older sets are then
    removed.  The first publish into a directory that still has plain
    files turns them into links one by one (once).
No locks: one writer per output directory (a campaign or a report).
"""
import os
import shutil

CURRENT = '.current'


def atomic_write(path, data):
    """Write `data` (str or bytes) to `path` through a temporary name and a rename."""
    tmp = f'{path}.tmp-{os.getpid()}'
    mode = 'wb' if isinstance(data, (bytes, bytearray)) else 'w'
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_stage(out_dir):
    """A fresh hidden directory in out_dir to write the next set into."""
    os.makedirs(out_dir, exist_ok=True)
    n = 0
    while os.path.exists(os.path.join(out_dir, f'.set-{n}')):
        n += 1
    path = os.path.join(out_dir, f'.set-{n}')
    os.mkdir(path)
    return path


def publish(out_dir, staged, names):
    """Make staged/NAME (for each of names) what out_dir/NAME shows, all at
    once; returns the out_dir paths."""
    cur = os.path.join(out_dir, CURRENT)
    old = os.path.realpath(cur) if os.path.islink(cur) else None
    tmp = f'{cur}.tmp-{os.getpid()}'
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.basename(staged), tmp)
    os.replace(tmp, cur)                                  # the one step that changes the set
    paths = []
    for name in names:
        link = os.path.join(out_dir, name)
        target = os.path.join(CURRENT, name)
        if not (os.path.islink(link) and os.readlink(link) == target):
            ltmp = f'{link}.tmp-{os.getpid()}'
            if os.path.lexists(ltmp):
                os.remove(ltmp)
            os.symlink(target, ltmp)
            os.replace(ltmp, link)
        paths.append(link)
    for d in os.listdir(out_dir):                         # files of the old set not in this one
        link = os.path.join(out_dir, d)
        if d not in names and os.path.islink(link) and os.readlink(link).startswith(CURRENT + os.sep):
            os.remove(link)
    if old and os.path.isdir(old) and old != os.path.realpath(staged):
        shutil.rmtree(old, ignore_errors=True)
    for d in os.listdir(out_dir):                         # sets left by killed runs
        p = os.path.join(out_dir, d)
        if d.startswith('.set-') and os.path.realpath(p) != os.path.realpath(staged):
            shutil.rmtree(p, ignore_errors=True)
    return paths
