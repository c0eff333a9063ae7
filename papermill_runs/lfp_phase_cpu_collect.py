"""Commit the results of `neuronb sweep run papermill_runs/lfp_phase_cpu.yaml`: copies its results.csv to
papermill_runs/results/lfp_phase_cpu.csv and concatenates each non-null ViT run's phase_maps.csv, with a `run` column,
in run-name order and rounded to 6 decimals, into papermill_runs/results/lfp_phase_cpu_maps.csv. Refuses (before
writing anything) unless every run of the spec ran to the end ('completed', or 'stale' when the code changed since).

    .venv/bin/python papermill_runs/lfp_phase_cpu_collect.py
"""
import os
import sys

import pandas as pd
import yaml

from neuronb.core import atomic_write

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    spec = yaml.safe_load(open(os.path.join(HERE, 'lfp_phase_cpu.yaml')))
    folder = os.path.join(HERE, 'lfp_phase_cpu')
    table = pd.read_csv(os.path.join(folder, 'results.csv'))
    names = [r['name'] for r in spec['runs']]
    missing = sorted(set(names) - set(table.run))
    unfinished = table[table.run.isin(names) & ~table.status.isin(['completed', 'stale'])]  # stale: ran, code changed since
    if missing or len(unfinished):
        raise SystemExit(f"{folder}/results.csv: runs not finished: missing {missing}, "
                         f"{unfinished[['run', 'status']].values.tolist()}; finish the sweep first")
    with_maps = [r['name'] for r in spec['runs'] if not r['name'].startswith('null_') and r['parameters'].get('model') != 'baseline']
    absent = [n for n in with_maps if not os.path.isfile(os.path.join(folder, n, 'phase_maps.csv'))]
    if absent: raise SystemExit(f"{folder}: no phase_maps.csv yet for {absent}; finish the sweep first")
    maps = []
    for run in spec['runs']:
        if run['name'] not in with_maps: continue
        m = pd.read_csv(os.path.join(folder, run['name'], 'phase_maps.csv'))
        m.insert(0, 'run', run['name'])
        maps.append(m)
    maps = pd.concat(maps, ignore_index=True).sort_values('run', kind='stable').round(6)
    results = os.path.join(HERE, 'results')
    with atomic_write(os.path.join(results, 'lfp_phase_cpu.csv'), 'w') as f: table.to_csv(f, index=False)
    with atomic_write(os.path.join(results, 'lfp_phase_cpu_maps.csv'), 'w') as f: maps.to_csv(f, index=False)
    print(f"wrote results/lfp_phase_cpu.csv ({len(table)} runs) and results/lfp_phase_cpu_maps.csv ({maps.run.nunique()} runs)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
