"""One llama.cpp server for a base and its adapters vs a server each (issue 37, item 4), on the CI grid.

The CI grid (`params/ci.yaml`) with `model: llama.cpp:smollm2-135m`: its adapters are trained once, in a fresh cache
(the converted model hard-linked in); then its evaluate steps run twice in this process, grouped (one server loads
the base and every adapter, `12a_graph.group_evals`) and ungrouped (a server per model and adapter), each from an
empty generation cache and an empty results folder. Figure steps are left out (the same work either way). Prints
per way the wall time, the servers started and the seconds they took to start, and whether every results file is
the same, record for record, with the seconds each record took masked.
Usage: OMP_NUM_THREADS=1 python bench/group.py [--batch params/ci.yaml] [--dir /tmp/bench-group]
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import cotfaith.load as load
from cotfaith.core import cache_dir
from cotfaith.graph import batch_graph, run_step
from cotfaith.records import masked_results

MODEL = 'llama.cpp:smollm2-135m'


def main(batch: Path, root: Path):
    starts, start = [], load.start_server
    def counted(*a, **kw):
        t0 = time.perf_counter()
        srv = start(*a, **kw)
        starts.append(time.perf_counter() - t0)
        return srv
    load.start_server = counted
    models, cache = cache_dir()/'models', root/'cache'
    cache.mkdir(parents=True)
    if models.exists(): subprocess.run(['cp', '-al', str(models), str(cache)], check=True)
    os.environ['COTFAITH_CACHE_DIR'] = str(cache)
    t0 = time.perf_counter()
    for s in batch_graph(batch, model=MODEL):
        if s.kind == 'train': run_step(s.work)
    print(f'trained the adapters in {time.perf_counter() - t0:.0f} s', flush=True)
    got = {}
    for way in ('grouped', 'ungrouped'):
        if (cache/'generations').exists(): (cache/'generations').rename(cache/f'generations-before-{way}')
        os.environ['COTFAITH_RESULTS_DIR'] = str(root/way)
        steps = [s for s in batch_graph(batch, model=MODEL, group=way == 'grouped') if s.kind == 'eval']
        del starts[:]
        t0 = time.perf_counter()
        for s in steps: run_step(s.work)
        wall = time.perf_counter() - t0
        got[way] = masked_results(root/way)
        print(f'{way}: {len(steps)} evaluate steps in {wall:.0f} s, {len(starts)} servers started '
              f'({sum(starts):.1f} s starting them), {len(got[way])} results files', flush=True)
    print('the same records:', got['grouped'] == got['ungrouped'], flush=True)


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', default='params/ci.yaml')
    ap.add_argument('--dir', default=None, help='work folder (default: a temporary one, removed)')
    a = ap.parse_args()
    root = Path(a.dir or tempfile.mkdtemp(prefix='bench-group-'))
    try: main(Path(a.batch), root)
    finally:
        if not a.dir: shutil.rmtree(root, ignore_errors=True)
