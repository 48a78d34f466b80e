"""The report's plots (PNG, matplotlib Agg): readable without the code.

Every plot: the claim it tests in the title, labelled axes with units,
CPU counts on a linear axis with a tick at each count run, counts
normalised (per MiB written, per page reclaimed), the median over seeds
with min..max error bars, and every series visible (distinct markers and
sizes, so two series at 0 do not hide each other; a note says which are 0).

plots(results, out_dir) -> {scenario: [(file name, caption)]}
"""
import os
import statistics

MiB = 1 << 20
STYLE = {('kmap', 1024): dict(marker='o', color='#cc3311', ms=7, ls='-'),
         ('kmap', 4096): dict(marker='s', color='#ee7733', ms=7, ls='--'),
         ('atomic_fallback', None): dict(marker='^', color='#0077bb', ms=11, ls='-', mfc='none', mew=1.5),
         ('kmap_local', None): dict(marker='v', color='#009988', ms=6, ls=':')}


def _med(vals):
    return statistics.median(vals) if vals else 0


def _by_variant(rs):
    out = {}
    for r in rs:
        out.setdefault(tuple(sorted(r['variant'].items())), []).append(r)
    return out


def _series_points(ks, path, pool, fn):
    """[(cpus, median, min, max)] of fn(counters) for a write path (and pool)."""
    pts = {}
    for r in ks:
        v = r['variant']
        if v.get('write_path') != path or (pool is not None and v.get('pkmap') != pool):
            continue
        pts.setdefault(v['cpus'], []).append(fn(r['counters']))
    return [(c, _med(vals), min(vals), max(vals)) for c, vals in sorted(pts.items())]


def _series(ks):
    combos = sorted({(r['variant'].get('write_path'), r['variant'].get('pkmap')
                      if r['variant'].get('write_path') == 'kmap' else None) for r in ks},
                    key=lambda c: (c[0] != 'kmap', c[0], c[1] or 0))
    return combos


def _per_mib(key):
    return lambda c: c.get(key, 0) / (c.get('file_write_bytes', 0) / MiB) if c.get('file_write_bytes') else 0


def _cpu_axis(ax, cpus):
    ax.set_xticks(cpus)
    ax.set_xlim(0, max(cpus) + 1)
    ax.set_xlabel('CPUs (each runs one writer writing 4 MiB of fresh pages)')
    ax.grid(alpha=0.3)


def _draw(ax, ks, fn):
    zero = []
    for path, pool in _series(ks):
        pts = _series_points(ks, path, pool, fn)
        if not pts:
            continue
        st = dict(STYLE.get((path, pool), dict(marker='x', ls='-')))
        name = f'{path}, {pool} slots' if pool else f'{path} (no pool)'
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        if all(y == 0 for y in ys):
            zero.append(path)
            name += ': 0 at every CPU count'
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, label=name, capsize=3, **st)
    ax.set_ylim(bottom=0)
    return zero


def plot_flushes(plt, ks, out_dir, ratio_text):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    cpus = sorted({r['variant']['cpus'] for r in ks})
    _draw(a1, ks, _per_mib('global_flushes'))
    a1.set_ylabel('global TLB flushes (flush_tlb_all) per MiB written')
    a1.set_title('global flushes', fontsize=10)
    _draw(a2, ks, _per_mib('ipis_sent'))
    a2.set_ylabel('IPIs sent per MiB written')
    a2.set_title('IPIs (each global flush interrupts every other CPU)', fontsize=10)
    for ax in (a1, a2):
        _cpu_axis(ax, cpus)
    a1.legend(fontsize=8, loc='center right')
    a2.legend(fontsize=8, loc='upper left')
    fig.suptitle('Claim (Bligh, 2002): a 4x pkmap pool (1024 -> 4096) cuts global TLB flushes ~10x; '
                 f'atomic kmaps need none.  Here: {ratio_text}', fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, out_dir, 'flushes_ipis.png')


def plot_waits(plt, ks, out_dir):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    cpus = sorted({r['variant']['cpus'] for r in ks})
    _draw(a1, ks, _per_mib('kmap_lock_spin_insns'))
    a1.set_ylabel('kmap_lock spin instructions per MiB written')
    a1.set_title('kmap_lock spin (measured instructions)', fontsize=10)
    _draw(a2, ks, lambda c: (c.get('call_function_wait_insns', 0) + c.get('tlb_ack_wait_insns', 0))
          / (c['file_write_bytes'] / MiB) if c.get('file_write_bytes') else 0)
    a2.set_ylabel('IPI-ack wait instructions per MiB written')
    a2.set_title('IPI waits: flush_tlb_all / flush_tlb_others (measured instructions)', fontsize=10)
    for ax in (a1, a2):
        _cpu_axis(ax, cpus)
    a1.legend(fontsize=8, loc='upper left')
    fig.suptitle('Claim (wli, 2002): on 16 CPUs kmap locking dominates the profile '
                 '(.text.lock.highmem 63.8% of samples)', fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, out_dir, 'kmap_waits.png')


def plot_insns_per_byte(plt, results, out_dir):
    ks = [r for r in results if r['scenario'] == 'kmap-scaling'
          and (r['variant'].get('write_path') != 'kmap' or r['variant'].get('pkmap') == 1024)]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    cpus = sorted({r['variant']['cpus'] for r in ks})
    _draw(ax, ks, lambda c: c.get('insns_per_byte', 0))
    gup = [r for r in results if r['scenario'] == 'gup-pin']
    for (path, marker, color) in (('gup_pin', 'D', 'black'), ('atomic_fallback', 'P', 'gray')):
        vals = [r['counters'].get('insns_per_byte', 0) for r in gup if r['variant'].get('write_path') == path]
        if vals:
            ax.plot([1], [_med(vals)], marker=marker, color=color, ms=9, ls='none',
                    label=f'gup-pin scenario: {path} (1 CPU, 1 writer)')
    _cpu_axis(ax, cpus)
    ax.set_ylim(bottom=0)
    ax.set_ylabel('guest instructions per byte written')
    ax.legend(fontsize=8, loc='lower right')
    ax.set_title('Claim (Morton, 2002): atomic kmaps make the copy path cheaper; (Linus) pinning with '
                 'get_user_pages costs more\n(all instructions of the run per byte written; pool 1024)',
                 fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, out_dir, 'insns_per_byte.png')


def plot_reclaim(plt, rc, out_dir):
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw={'width_ratios': [2, 1.2, 1]})
    colors = {'swap_out': '#4477aa', 'rmap': '#cc6677'}
    groups = _by_variant(rc)
    for key, rs in sorted(groups.items()):
        r = rs[0]
        name = r['variant'].get('reclaim')
        s = r.get('series') or {}
        if s.get('time_cycles'):
            a0.plot([t / 1e6 for t in s['time_cycles']], s['free_normal'], color=colors.get(name),
                    label=f'{name} (seed {r["seed"]})')
            low = r['counters'].get('pages_low_normal')
    if rc and low:
        a0.axhline(low, color='gray', ls=':', lw=1, label=f'pages_low of ZONE_NORMAL ({low})')
    a0.set_xlabel('simulated time (millions of cycles = ms at 1 GHz)')
    a0.set_ylabel('free ZONE_NORMAL pages (4 KiB each)')
    a0.set_ylim(bottom=0)
    a0.grid(alpha=0.3)
    a0.legend(fontsize=8)
    a0.set_title('lowmem over time (sampled at each tick of CPU 0)', fontsize=9)
    names = [rs[0]['variant'].get('reclaim') for _, rs in sorted(groups.items())]
    per = lambda rs, k: _med([r['counters'].get(k, 0) / max(r['counters'].get('pages_reclaimed', 0), 1)  # noqa: E731
                              for r in rs])
    width = 0.38
    xs = range(len(names))
    a1.bar([x - width / 2 for x in xs], [per(rs, 'pages_scanned') for _, rs in sorted(groups.items())],
           width, label='pages scanned', color='#bbbbbb')
    a1.bar([x + width / 2 for x in xs], [per(rs, 'ptes_visited') for _, rs in sorted(groups.items())],
           width, label='PTEs visited', color='#555555')
    a1.set_xticks(list(xs), names)
    a1.set_ylabel('per page reclaimed')
    a1.legend(fontsize=8)
    a1.set_title('scan cost per page reclaimed', fontsize=9)
    a2.bar(names, [_med([r['counters'].get('pte_chain_bytes_peak', 0) / 1024 for r in rs])
                   for _, rs in sorted(groups.items())], color=[colors.get(n) for n in names])
    a2.set_ylabel('pte_chain lowmem, peak (KiB)')
    a2.set_title('what rmap pays in lowmem', fontsize=9)
    fig.suptitle('Claim (Andrea vs Rik, 2002): rmap finds PTEs directly, but its pte_chains eat '
                 'ZONE_NORMAL; swap_out scans address spaces', fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, out_dir, 'reclaim.png')


def _save(plt, fig, out_dir, name):
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    plt.close(fig)
    return name


def plots(results, out_dir, verdicts=()):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    out = {}
    ks = [r for r in results if r['scenario'] == 'kmap-scaling']
    if ks:
        tenfold = next((v for v in verdicts if v['claim'].startswith('Pool 1024')), None)
        ratio = tenfold['lab'].split(' at ')[0] if tenfold else ''
        out['kmap-scaling'] = [
            (plot_flushes(plt, ks, out_dir, ratio), 'global flushes and IPIs per MiB written against CPUs'),
            (plot_waits(plt, ks, out_dir), 'kmap_lock spin and IPI waits per MiB written against CPUs'),
            (plot_insns_per_byte(plt, results, out_dir), 'instructions per byte written by design')]
    rc = [r for r in results if r['scenario'] == 'reclaim']
    if rc:
        out['reclaim'] = [(plot_reclaim(plt, rc, out_dir), 'ZONE_NORMAL free pages over time; scan cost')]
    return out
