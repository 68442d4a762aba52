"""Run the API notebooks and keep the outputs of their worked examples, so that GitHub shows what each example prints.

Kept: results and displays (figures, tables, values) and what a cell prints to stdout; dropped: stderr (progress
bars, warnings) and the outputs of hidden cells. A cell whose output differs from one run to the next (a time, a
temporary path) would churn on every rerun: `--check` runs every notebook twice and lists such cells, and their
outputs are not kept (09_plots cannot run twice in one process: check it on its own). Usage: python tools/outputs.py [--check] [nbs/03a_engine.ipynb ...]; then nbdev_clean.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

from execnb.nbio import read_nb
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = re.compile(r'^\s*#\|\s*(hide|export)', re.M)


def _kept(cell)->list:
    if HIDDEN.search(''.join(cell.source)): return []
    return [o for o in cell.get('outputs', []) if not (o.get('output_type') == 'stream' and o.get('name') == 'stderr')]


def run(path:Path)->list:
    "The kept outputs of every code cell of the notebook at `path`, after running it."
    nb, here = read_nb(path), os.getcwd()
    os.chdir(path.parent)                               # as nbdev_test runs it: relative paths from the notebook's folder
    try: CaptureShell(path=path.parent).run_all(nb, exc_stop=True)
    finally: os.chdir(here)
    return [_kept(c) if c.cell_type == 'code' else None for c in nb.cells]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('notebooks', nargs='*')
    ap.add_argument('--check', action='store_true', help='run twice; keep only outputs that are the same both times')
    a = ap.parse_args()
    paths = [Path(p).resolve() for p in a.notebooks] or sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))
    for p in paths:
        first = run(p)
        second = run(p) if a.check else first
        nb = json.loads(p.read_text())
        unstable = 0
        for c, x, y in zip(nb['cells'], first, second):
            if c['cell_type'] != 'code': continue
            same = json.dumps(x, sort_keys=True, default=str) == json.dumps(y, sort_keys=True, default=str)
            unstable += not same
            c['outputs'] = [dict(o) for o in x] if same else []
        p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
        print(f'{p.name}: outputs kept, {unstable} cell(s) left empty (not the same twice)', file=sys.stderr)


if __name__ == '__main__':
    main()
