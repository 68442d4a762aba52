"""The llama.cpp server vs transformers on the same GGUF: generation and the whole experiment, one run.

For each model spec (default: the embedded SmolLM2-135M through transformers, then through a llama.cpp server that
cotfaith starts itself), with fresh cache and results folders:
  load      load the model (transformers: the GGUF dequantised to fp32) or start the server;
  gen       generate the `n` chains of thought (greedy, the pipeline's CoT budget and batch size);
  whole     `run_experiment` with every test (chains again from a fresh cache, direct answers, early termination,
            paraphrasing, filler, adding mistakes).
Both engines get one thread (torch: OMP_NUM_THREADS=1, the server: one slot, one thread), as the pipeline runs them.
Usage: OMP_NUM_THREADS=1 python bench/engines.py --dataset gsm8k --n 20 [--out runs/bench-engines.json]
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
from cotfaith.load import load_engine
from cotfaith.pipeline import run_experiment
from cotfaith.prompts import cot_messages

TESTS = 'et,paraphrase,filler,mistake'


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def row(spec, dataset, n):
    cfg = ExperimentConfig(model=spec, dataset=dataset, n=n, tests=TESTS)
    exs = load_examples(dataset, n=n, seed=cfg.seed)
    eng, t_load = timed(lambda: load_engine(spec))
    prompts = [eng.render(cot_messages(e)) for e in exs]
    with tempfile.TemporaryDirectory() as cache:
        gens, t_gen = timed(lambda: generate(eng, prompts, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                                             batch_size=cfg.batch_size, cache=GenCache(Path(cache)), progress=False))
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as results:
        os.environ.update(COTFAITH_CACHE_DIR=cache, COTFAITH_RESULTS_DIR=results)
        recs, t_whole = timed(lambda: run_experiment(cfg, progress=False))
    tokens = sum(g['n_tokens'] for g in gens)
    return {'model': spec, 'dataset': dataset, 'n': n, 'load_s': t_load, 'gen_s': t_gen, 'cot_tokens': tokens,
            'gen_tokens_per_s': tokens / t_gen, 'whole_s': t_whole, 'whole_over_gen': t_whole / t_gen,
            'cot_accuracy': float(recs['cot_correct_flexible'].mean())}


def main(models, dataset, n, out):
    rows = []
    for spec in models:
        rows.append(row(spec, dataset, n))
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    if out: Path(out).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--models', nargs='+', default=['smollm2-135m', 'llama.cpp:smollm2-135m'])
    p.add_argument('--dataset', default='gsm8k')
    p.add_argument('--n', type=int, default=20)
    p.add_argument('--out', default='')
    main(**vars(p.parse_args()))
