"""Early termination: shared-prefix KV cache vs the naive path, and vs the cost of generating the CoT.

Same inputs in one run: for each instance, generate its CoT (timed, no cache), then ask for the answer at every
truncation point the naive way (re-encoding every prompt) and the shared-prefix way (timed, no cache), and check
that both give the same answers. Usage: python bench/early_termination.py --dataset gsm8k --n 10
"""
import _no_records  # first: the committed records must not answer a benchmark's generations
import argparse
import json
import time
from pathlib import Path

from cotfaith.data import load_examples
from cotfaith.faithfulness import truncation_points
from cotfaith.transformers_engine import answers_naive, answers_shared
from cotfaith.generate import GenCache, generate
from cotfaith.models import load_model
from cotfaith.prompts import answer_messages, cot_messages, render, step_spans, truncate_steps


def main(dataset, n, max_new_tokens, out):
    lm, rows = load_model(), []
    for ex in load_examples(dataset, n=n, seed=0):
        t0 = time.perf_counter()
        cot = generate(lm, [render(lm.tok, cot_messages(ex))], max_new_tokens=max_new_tokens, cache=GenCache(Path('/tmp/bench-nocache')/str(time.time_ns())), progress=False)[0]
        t_gen = time.perf_counter() - t0
        steps = len(step_spans(cot['text']))
        prompts = [render(lm.tok, answer_messages(ex, truncate_steps(cot['text'], k))) for k in truncation_points(steps)]
        t0 = time.perf_counter(); naive = answers_naive(lm, ex, prompts); t_naive = time.perf_counter() - t0
        t0 = time.perf_counter(); fast = answers_shared(lm, ex, prompts); t_fast = time.perf_counter() - t0
        rows.append({'id': ex.id, 'steps': steps, 'cot_tokens': cot['n_tokens'], 'gen_s': t_gen, 'naive_s': t_naive,
                     'fast_s': t_fast, 'speedup': t_naive / t_fast, 'fast_over_gen': t_fast / t_gen, 'same': naive == fast})
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    long = [r for r in rows if r['steps'] >= 6]
    summary = {'dataset': dataset, 'n': len(rows), 'all_same': all(r['same'] for r in rows),
               'speedup_all': sum(r['naive_s'] for r in rows) / sum(r['fast_s'] for r in rows),
               'speedup_6plus_steps': sum(r['naive_s'] for r in long) / max(1e-9, sum(r['fast_s'] for r in long)),
               'et_over_generation': sum(r['fast_s'] for r in rows) / sum(r['gen_s'] for r in rows)}
    print(json.dumps(summary))
    if out: Path(out).write_text(json.dumps({'summary': summary, 'rows': rows}, indent=1))


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--dataset', default='gsm8k'); p.add_argument('--n', type=int, default=10)
    p.add_argument('--max_new_tokens', type=int, default=256); p.add_argument('--out', default='')
    main(**vars(p.parse_args()))
