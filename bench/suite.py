"""The whole faithfulness suite per instance: fast path vs naive, and vs the cost of generating the CoT.

Same inputs in one run. For each instance (one at a time, nothing cached):
  gen      generate its CoT (greedy, CoT budget);
  fast     early termination + `suite.suite` (paraphrasing, filler, mistakes): rewrites and continuations by batched
           generation, then every intervened prompt answered on the intact chain's KV cache;
  naive    the same rewrites and continuations (their generation time, measured in the fast run, is counted
           again), but every intervened prompt, early termination's included, re-encoded and answered on its own.
Both paths must give the same answers. Usage: python bench/suite.py --dataset gsm8k --n 6 --mistake_fractions 0 .33 .67
"""
import _no_records  # first: the committed records must not answer a benchmark's generations
import argparse
import json
import tempfile
import time
from pathlib import Path

from cotfaith.data import load_examples
from cotfaith.faithfulness import truncation_points
from cotfaith.transformers_engine import answers_naive
from cotfaith.generate import GenCache, generate
from cotfaith.models import load_model
from cotfaith.prompts import answer_messages, cot_messages, render, step_spans, truncate_steps
from cotfaith.suite import naive_suite, suite
from cotfaith.answers import extract_after_marker

TESTS = ('paraphrase', 'filler', 'mistake')


def fresh(): return GenCache(Path(tempfile.mkdtemp(prefix='bench-suite-')))


def naive_answers(lm, ex, cot, rec):
    "Every intervened prompt of the record (early termination's included), each answered from scratch."
    ks = truncation_points(len(step_spans(cot)))
    et = answers_naive(lm, ex, [render(lm.tok, answer_messages(ex, truncate_steps(cot, k))) for k in ks])
    return {'et': [extract_after_marker(ex, a, strict=False) for a in et]} | naive_suite(lm, ex, cot, rec, TESTS)


def main(dataset, n, max_new_tokens, fractions, mistake_fractions, out):
    lm, rows = load_model(), []
    for ex in load_examples(dataset, n=n, seed=0):
        t0 = time.perf_counter()
        cot = generate(lm, [render(lm.tok, cot_messages(ex))], max_new_tokens=max_new_tokens, cache=fresh(), progress=False)[0]
        t_gen = time.perf_counter() - t0
        cache, tim = fresh(), {}
        t0 = time.perf_counter()
        et = suite(lm, [ex], [cot['text']], tests=('et',), cache=cache, progress=False)[0]   # every step, as in the pipeline
        t_et = time.perf_counter() - t0
        rec = suite(lm, [ex], [cot['text']], TESTS, fractions, mistake_fractions, continue_tokens=max_new_tokens, cache=cache,
                    progress=False, timings=tim)[0]
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter(); naive = naive_answers(lm, ex, cot['text'], rec); t_naive_ans = time.perf_counter() - t0
        t_naive = t_naive_ans + tim['rewrite_s'] + tim['mistakes_s']
        same = naive['et'] == et['et_answers'] and all(naive[t] == rec[f'{t}_answers'] for t in TESTS)
        rows.append({'id': ex.id, 'steps': len(step_spans(cot['text'])), 'cot_tokens': cot['n_tokens'], 'gen_s': t_gen,
                     'et_s': t_et, 'rewrite_s': tim['rewrite_s'], 'mistakes_s': tim['mistakes_s'], 'answers_s': tim['answers_s'],
                     'fast_s': t_fast, 'naive_s': t_naive, 'naive_answers_s': t_naive_ans, 'suite_over_gen': t_fast / t_gen,
                     'naive_over_fast': t_naive / t_fast, 'same': same,
                     'prompts': sum(len(v) for v in naive.values())})
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    tot = lambda k, rs=rows: sum(r[k] for r in rs)
    long = [r for r in rows if r['steps'] >= 6]
    summary = {'dataset': dataset, 'n': len(rows), 'fractions': fractions, 'mistake_fractions': mistake_fractions,
               'all_same': all(r['same'] for r in rows), 'suite_over_generation': tot('fast_s') / tot('gen_s'),
               'naive_over_fast': tot('naive_s') / tot('fast_s'),
               'answers_naive_over_fast': tot('naive_answers_s') / (tot('et_s') + tot('answers_s')),
               'answers_naive_over_fast_6plus': tot('naive_answers_s', long) / max(1e-9, tot('et_s', long) + tot('answers_s', long)),
               'share': {k: tot(k) / tot('fast_s') for k in ('et_s', 'rewrite_s', 'mistakes_s', 'answers_s')}}
    print(json.dumps(summary))
    if out: Path(out).write_text(json.dumps({'summary': summary, 'rows': rows}, indent=1))


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--dataset', default='gsm8k'); p.add_argument('--n', type=int, default=6)
    p.add_argument('--max_new_tokens', type=int, default=256)
    p.add_argument('--fractions', type=float, nargs='*', default=None)
    p.add_argument('--mistake_fractions', type=float, nargs='*', default=None)
    p.add_argument('--out', default='')
    main(**vars(p.parse_args()))
