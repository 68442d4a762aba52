"""Answer agreement between the llama.cpp server (quantised kernels) and transformers (fp32, dequantised weights) on
the same slice, for the same model file: CoT answers, direct answers and early-termination answers.

Both sides run through `pipeline.run_experiment` with early termination only; the transformers side is usually in
the cache already (the default grid). Agreement, not identity, is the goal: llama.cpp computes with Q4 kernels.
Usage: python bench/agreement.py --datasets gsm8k medqa --n 20 [--out agreement.json]
"""
import _no_records  # first: the committed records must not answer a benchmark's generations
import argparse
import json
import time

from cotfaith.pipeline import ExperimentConfig, run_experiment


def agreement(a, b, col):
    "Share of instances where column `col` is equal, with n (lists are compared element by element)."
    pairs = [(x, y) for x, y in zip(a[col], b[col]) if isinstance(x, (str, list)) or isinstance(y, (str, list))]
    if col.endswith('_answers'):
        same = [u == v for x, y in pairs if isinstance(x, list) and isinstance(y, list) and len(x) == len(y)
                for u, v in zip(x, y)]
        return sum(same) / max(1, len(same)), len(same)
    return sum(x == y for x, y in pairs) / max(1, len(pairs)), len(pairs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--datasets', nargs='+', default=['gsm8k', 'medqa'])
    ap.add_argument('--n', type=int, default=20)
    ap.add_argument('--model', default='smollm2-135m', help='a short name or GGUF the server and transformers both load')
    ap.add_argument('--max_new_tokens', type=int, default=256)
    ap.add_argument('--out')
    a = ap.parse_args()
    rows = []
    for d in a.datasets:
        cfg = dict(dataset=d, n=a.n, max_new_tokens=a.max_new_tokens, tests='et')
        t0 = time.perf_counter()
        local = run_experiment(ExperimentConfig(model=a.model, **cfg), progress=False)
        t1 = time.perf_counter()
        served = run_experiment(ExperimentConfig(model=f'llama.cpp:{a.model}', **cfg), progress=False)
        t2 = time.perf_counter()
        local, served = local.set_index('id'), served.set_index('id').loc[local['id'] if 'id' in local else local.index]
        row = {'dataset': d, 'n': a.n, 'transformers_s': round(t1 - t0, 1), 'server_s': round(t2 - t1, 1)}
        for col in ('cot', 'cot_pred_flexible', 'direct_pred_flexible', 'et_answers'):
            share, n = agreement(local, served, col)
            row[f'{col}_agree'], row[f'{col}_n'] = round(share, 3), n
        row['cot_correct_transformers'] = round(float(local['cot_correct_flexible'].mean()), 3)
        row['cot_correct_server'] = round(float(served['cot_correct_flexible'].mean()), 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out: open(a.out, 'w').write(json.dumps(rows, indent=1) + '\n')


if __name__ == '__main__':
    main()
