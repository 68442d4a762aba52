"""Can llama.cpp evaluate prompts in batches and still give bit-identical numbers under prefix reuse? (issue 33)

The servers cotfaith starts evaluate prompts one token at a time (`n_ubatch = 1`, 03e_server): a token's keys and
values are then computed by the same kernels whether it arrives in a fresh prompt, in the part of a prompt after a
reused prefix, or as a generated token, so every answer is a pure function of its prompt. This script measures what
that costs and whether a batched configuration keeps the identity.

For each server configuration (micro-batch size, weight repacking, flash attention), on a fresh server with one
thread and one slot:
  scratch   every answer prompt evaluated with `cache_prompt: false` (from position 0, in micro-batches from 0);
  chain     the question's chain generated greedily (its tokens decoded one at a time), then every answer prompt
            (question + the first k steps' text + the answer cue) sent with reuse on, in order of k: each reuses
            the question and the generated chain's prefix, as early termination does;
  shuffled  the same answer prompts again in a seeded random order: each reuses a prefix that ends elsewhere.
An answer is the top-10 next-token probabilities; two runs agree when every probability is the same float.
The prompt speed is llama.cpp's own timing (`prompt_per_second`) for the scratch prompts.

Usage: python bench/prompt_batch.py [--model smollm2-135m|qwen2.5-coder-1.5b] [--n 4] [--out runs/prompt-batch.json]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cotfaith.data import load_examples

CONFIGS = 'ub1,ub2,ub4,ub8,ub16,ub512,ub512-norepack,ub512-nofa'   # micro-batch, weight repacking off, flash off


def config(name: str) -> dict:
    "`ub<n>[-norepack][-nofa]`: llama.cpp's micro-batch size, weight repacking off, flash attention off."
    ub = int(name.split('-')[0][2:])
    return dict(ubatch=ub, batch=2048, norepack='norepack' in name, fa='disabled' if 'nofa' in name else 'auto')

SERVE = """
import json, os, signal, sys
import xllamacpp as xlc
from cotfaith.server import gguf_path
c = json.loads(sys.argv[1])
p = xlc.CommonParams()
p.model.path = str(gguf_path(c['model']))
p.hostnames, p.port, p.n_parallel, p.n_ctx = ['127.0.0.1'], 0, 1, 4096
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = c['threads']
p.n_gpu_layers, p.fit_params, p.endpoint_props, p.verbosity = 0, False, True, 0
p.n_ubatch, p.n_batch, p.no_extra_bufts = c['ubatch'], c['batch'], c['norepack']
p.flash_attn_type = getattr(xlc.llama_flash_attn_type, 'LLAMA_FLASH_ATTN_TYPE_' + c['fa'].upper())
s = xlc.Server(p)
print('READY', s.listening_address, flush=True)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True: signal.pause()
"""


def post(url, body):
    req = urllib.request.Request(url + '/completion', json.dumps(body).encode(), {'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=600) as r: return json.loads(r.read())


def answer(url, prompt, reuse):
    "The top-10 (token, log-probability) pairs of the next token, and llama.cpp's timings of the request."
    r = post(url, {'prompt': prompt, 'n_predict': 1, 'temperature': 0, 'n_probs': 10, 'cache_prompt': reuse})
    first = r['completion_probabilities'][0]
    return [(p['token'], p['logprob']) for p in first['top_logprobs']], r['timings']


def prompts_of(url, model, n, tokens):
    "The questions' chains (greedy, reuse on) and, per question, the answer prompts after 0..all of its lines."
    out = []
    for e in load_examples('gsm8k', n=n, seed=0):
        q = f"<|im_start|>user\n{e.question}\nThink step by step.<|im_end|>\n<|im_start|>assistant\n"
        chain = post(url, {'prompt': q, 'n_predict': tokens, 'temperature': 0, 'cache_prompt': True})['content']
        lines = chain.split('\n')
        out.append((q, chain, [q + '\n'.join(lines[:k]) + '\nSo the answer is' for k in range(len(lines) + 1)]))
    return out


def run(model, name, n, tokens, threads=1):
    cfg = dict(model=model, threads=threads) | config(name)
    proc = subprocess.Popen([sys.executable, '-c', SERVE, json.dumps(cfg)], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL, env=os.environ | {'OMP_NUM_THREADS': str(threads)})
    try:
        url = proc.stdout.readline().split()[1]
        t0 = time.time()
        qs = prompts_of(url, model, n, tokens)           # generates each chain: its KV is then in the slot
        chain, scratch, speed = {}, {}, []
        for q, c, ps in qs:                               # reuse, in order of k, right after the chain was generated
            post(url, {'prompt': q, 'n_predict': tokens, 'temperature': 0, 'cache_prompt': True})
            for p in ps: chain[p] = answer(url, p, True)[0]
        allp = [p for _, _, ps in qs for p in ps]
        shuffled = {p: answer(url, p, True)[0] for p in random.Random(0).sample(allp, len(allp))}
        for p in allp:
            scratch[p], t = answer(url, p, False)
            speed.append((t['prompt_n'], t['prompt_ms']))
        toks, ms = sum(s[0] for s in speed), sum(s[1] for s in speed)
        same = lambda a, b: sum(a[p] == b[p] for p in allp)
        return {'config': name, 'threads': threads, 'prompts': len(allp), 'chain_vs_scratch': same(chain, scratch),
                'shuffled_vs_scratch': same(shuffled, scratch), 'chain_vs_shuffled': same(chain, shuffled),
                'scratch_prompt_tok_s': round(1000 * toks / ms, 1), 'seconds': round(time.time() - t0, 1),
                'last_prompt_top3': scratch[allp[-1]][:3]}
    finally:
        proc.terminate()
        proc.wait()


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default='smollm2-135m')
    ap.add_argument('--n', type=int, default=4)
    ap.add_argument('--tokens', type=int, default=96)
    ap.add_argument('--configs', default=CONFIGS)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    rows = []
    for name in a.configs.split(','):
        rows.append(run(a.model, name, a.n, a.tokens, a.threads))
        print(json.dumps(rows[-1]), flush=True)
    if a.out: Path(a.out).write_text(json.dumps(rows, indent=1) + '\n')
