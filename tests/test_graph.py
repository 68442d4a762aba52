"The batch as a graph (12a_graph): `cotfaith-batch --plan` on the real CI grid, each step once, what is done not run."
import os, subprocess
from pathlib import Path

import pytest
import yaml

from cotfaith.batch import BatchError, batch_runs
from cotfaith.core import cache_dir
from cotfaith.graph import batch_graph, critical_path, plan_lines, run_step
from cotfaith.records import masked_results
from cotfaith.slurm import cluster_settings
from cotfaith.status import needs

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT/'params'/'ci.yaml'


def test_plan_prints_each_step_once_after_what_it_needs_with_shared_work_shared(tmp_path):
    env = os.environ | {'COTFAITH_RESULTS_DIR': str(tmp_path/'res')}      # no records: no evaluation is done
    r = subprocess.run([str(ROOT/'.venv'/'bin'/'cotfaith-batch'), '--batch', str(CI), '--plan'], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    head, *lines = r.stdout.splitlines()
    runs = batch_runs(CI)
    assert len(lines) == int(head.split(': ')[1].split()[0])
    figures = [l for l in lines if '] figure ' in l]
    assert len(figures) == len(runs)                                     # one figure step per run
    assert all(l.endswith(': to run') for l in lines if '] train ' not in l)   # (an adapter may be in the cache)
    trains = [l for l in lines if '] train ' in l]
    assert len(trains) == 3                                  # gsm8k rank 8 (shared by five runs), cosmosqa, rank 16
    first = trains[0].split(']')[0] + ']'
    assert sum(first in l.split('after')[-1] for l in lines if 'after' in l) >= 5    # one adapter feeds many steps
    asked = sum(s[0] == 'eval' for nb, p, _ in runs for s in needs(nb, p))
    assert sum('] eval ' in l for l in lines) < asked                    # evaluations shared between runs, once each


def test_a_step_whose_records_are_stored_is_done_and_the_rest_still_runs(tmp_path, monkeypatch):
    monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/'res'))
    steps = batch_graph(CI, n=1)
    by = {s.key: s for s in steps}
    first = next(s for s in steps if s.kind == 'eval' and not s.after)   # a base evaluation, needing no adapter
    run_step(first.work)
    again = {s.key: s for s in batch_graph(CI, n=1)}
    assert again[first.key].done and not by[first.key].done
    assert [k for k, s in again.items() if s.done and s.kind != 'train'] == [first.key]     # only that one
    fig = next(s for s in again.values() if s.kind == 'figure' and first.key in s.after)
    assert not fig.done
    secs = {s.key: 1.0 for s in steps}
    assert len(steps) > critical_path(steps, secs) >= 3                  # train, eval, figure: a chain of three


def test_a_cluster_key_that_is_not_understood_is_one_clear_error(tmp_path):
    bad = tmp_path/'b.yaml'
    bad.write_text(CI.read_text().replace('  retries: 1', '  retries: 1\n  gpu: 2'))
    with pytest.raises(BatchError, match="cluster key .*Fix: a mapping with keys"): cluster_settings(bad)
    bad.write_text(CI.read_text().replace('mem_gb: 0, minutes: 30}', 'mem: 0}', 1))
    with pytest.raises(BatchError, match=r"cluster\.train is not a mapping of"): cluster_settings(bad)
    assert cluster_settings(ROOT/'params'/'paper.yaml')['train']['gpus'] == 1


def test_a_job_that_cannot_see_the_stores_stops_with_one_line_before_any_work(tmp_path):
    from cotfaith.core import SettingError
    from cotfaith.slurm import run_job
    with pytest.raises(SettingError, match=r"cannot see the stores .*Fix: put COTFAITH_CACHE_DIR") as e:
        run_job(('train', None), {}, str(tmp_path/'elsewhere'/'stores.json'))    # a train of None would fail
    assert '\n' not in str(e.value)


@pytest.mark.slow
def test_one_llama_cpp_server_for_a_base_and_its_adapters_computes_the_records_one_server_each_computes(tmp_path,
                                                                                                      monkeypatch):
    """Issue 37, item 4: the CI grid's rank ablation (a base and two adapters) on llama.cpp, grouped (one server) and
    not (a server per evaluation), each from an empty generation cache: the same results files, record for record.
    (Fast check of the same property: `03g_load`'s example, in `make nbtest`.)"""
    batch = tmp_path/'ablation.yaml'
    spec = yaml.safe_load(CI.read_text())
    spec['runs'] = [r | {'notebook': str(ROOT/r['notebook'])} for r in spec['runs']
                    if r.get('notebook') == 'analysis/rank_ablation.ipynb']
    batch.write_text(yaml.safe_dump(spec))
    cache, got = tmp_path/'cache', {}
    cache.mkdir()
    if (models := cache_dir()/'models').exists(): subprocess.run(['cp', '-al', str(models), str(cache)], check=True)
    monkeypatch.setenv('COTFAITH_CACHE_DIR', str(cache))            # one cache: the adapters trained once, same paths
    for way in ('grouped', 'ungrouped'):
        if (cache/'generations').exists(): (cache/'generations').rename(cache/f'generations-before-{way}')
        monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/way))
        steps = [s for s in batch_graph(batch, model='llama.cpp:smollm2-135m', group=way == 'grouped')
                 if s.kind != 'figure']
        evals = [s for s in steps if s.kind == 'eval']
        assert len(evals) == (1 if way == 'grouped' else 3), [s.label for s in evals]     # base, rank 8, rank 16
        for s in steps: run_step(s.work)
        got[way] = masked_results(tmp_path/way)
    assert len(got['grouped']) == 6 and got['grouped'] == got['ungrouped']         # base and et stores of 3 evaluations


def test_the_evaluations_of_a_llama_cpp_base_and_its_adapters_are_one_step_and_one_server(tmp_path, monkeypatch):
    monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/'res'))
    grouped = batch_graph(CI, model='llama.cpp:smollm2-135m', group=True)
    alone = batch_graph(CI, model='llama.cpp:smollm2-135m')                   # the default: a step each
    one = [s for s in grouped if s.kind == 'eval']
    each = [s for s in alone if s.kind == 'eval']
    assert len(one) == 1 and len(one[0].work[2]) == len(each) == 11 and 'and 3 adapters on one server' in one[0].label
    assert set(one[0].after) == {s.key for s in alone if s.kind == 'train'}
    assert all(s.after == tuple(dict.fromkeys(one[0].key if k.startswith('eval:') else k for k in t.after))
               for s, t in zip([s for s in grouped if s.kind == 'figure'], [s for s in alone if s.kind == 'figure']))
