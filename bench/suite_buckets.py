"""The suite's cost as chains grow: suite time / generation time per chain-length bucket, batched as the pipeline runs.

For one dataset, the pipeline's settings (`ExperimentConfig` defaults: CoT budget 256, four paraphrase and filler
points, one mistake point, batches of 8):
  1. generate the CoTs of `n` questions (batched, fresh cache) and put each in a bucket by its number of steps
     (up to 8, 9 to 20, over 20);
  2. per bucket, time generating that bucket's chains again (batched, fresh cache) and then the whole suite on them
     (early termination at every step, paraphrasing, filler, adding mistakes; batched across the bucket's instances,
     fresh cache), as `pipeline` calls it. Ratio = suite / generation.
With --scaling N [N ...]: the whole experiment (`run_experiment`: chains, direct answers, every test; fresh cache
and results folders) at each n, for the growth in n.
Usage: python bench/suite_buckets.py --dataset gsm8k --n 24 [--scaling 20 40 80] [--out runs/bench.json]
(--n 0 --scaling ...: the scaling alone)
"""
import _no_records  # first: the committed records must not answer a benchmark's generations
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cotfaith.config import ExperimentConfig
from cotfaith.data import load_examples
from cotfaith.generate import GenCache, generate
from cotfaith.models import load_model
from cotfaith.prompts import cot_messages, render, step_spans
from cotfaith.suite import suite

TESTS = ('et', 'paraphrase', 'filler', 'mistake')
BUCKETS = {'up to 8': (0, 8), '9-20': (9, 20), 'over 20': (21, 10**6)}


def fresh(): return GenCache(Path(tempfile.mkdtemp(prefix='bench-buckets-')))


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def chains(lm, exs, cfg):
    prompts = [render(lm.tok, cot_messages(e)) for e in exs]
    return generate(lm, prompts, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed,
                    cache=fresh(), progress=False)


def bucket_rows(lm, dataset, n):
    cfg = ExperimentConfig(dataset=dataset, n=n)
    exs = load_examples(dataset, n=n, seed=cfg.seed)
    steps = [len(step_spans(g['text'])) for g in chains(lm, exs, cfg)]
    rows = []
    for name, (lo, hi) in BUCKETS.items():
        b = [e for e, s in zip(exs, steps) if lo <= s <= hi]
        if not b: continue
        gens, t_gen = timed(lambda: chains(lm, b, cfg))
        tim = {}
        _, t_suite = timed(lambda: suite(lm, b, [g['text'] for g in gens], tests=TESTS, fractions=cfg.fractions,
                                         mistake_fractions=cfg.mistake_fractions, et_fractions=cfg.et_fractions,
                                         answer_tokens=cfg.answer_tokens, continue_tokens=cfg.max_new_tokens,
                                         seed=cfg.seed, cache=fresh(), batch_size=cfg.batch_size, progress=False,
                                         timings=tim))
        rows.append({'dataset': dataset, 'bucket': name, 'n': len(b),
                     'steps': sum(len(step_spans(g['text'])) for g in gens) / len(b),
                     'tokens': sum(g['n_tokens'] for g in gens) / len(b), 'gen_s': t_gen, 'suite_s': t_suite,
                     'suite_over_gen': t_suite / t_gen,
                     **{k: v / t_suite for k, v in tim.items() if k.endswith('_s')}})
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    return rows


def scaling_rows(dataset, ns):
    from cotfaith.pipeline import run_experiment
    rows = []
    for n in ns:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as results:
            os.environ.update(COTFAITH_CACHE_DIR=cache, COTFAITH_RESULTS_DIR=results)
            recs, t = timed(lambda: run_experiment(ExperimentConfig(dataset=dataset, n=n, tests=','.join(TESTS)),
                                                   progress=False))
        rows.append({'dataset': dataset, 'n': n, 'seconds': t, 'seconds_per_question': t / n,
                     'cot_tokens': float(recs['cot_tokens'].sum()) if 'cot_tokens' in recs else None})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(dataset, n, scaling, out):
    lm = load_model()
    res = {'buckets': bucket_rows(lm, dataset, n) if n else []}      # --n 0: only the scaling
    if scaling: res['scaling'] = scaling_rows(dataset, scaling)
    if out: Path(out).write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--dataset', default='gsm8k')
    p.add_argument('--n', type=int, default=24)
    p.add_argument('--scaling', type=int, nargs='*', default=[])
    p.add_argument('--out', default='')
    main(**vars(p.parse_args()))
