"""Greedy generation speed on 1 vs 2 torch threads: one batch of 8 GSM8K CoT prompts, 128 new tokens, the embedded
model through transformers. Usage: python bench/gen_threads.py 1; python bench/gen_threads.py 2 (each in its own
process, since torch fixes its thread pool at start). Training's counterpart: OMP_NUM_THREADS=N bench/lora_step.py.
"""
import _no_records  # first: the committed records must not answer a benchmark's generations
import sys
import time

import torch


def main(threads: int):
    torch.set_num_threads(threads)
    from cotfaith.data import load_examples
    from cotfaith.load import load_engine
    from cotfaith.prompts import cot_messages
    lm = load_engine('smollm2-135m')
    prompts = [lm.render(cot_messages(e)) for e in load_examples('gsm8k', 'test', n=8, seed=3)]
    lm.generate(prompts[:2], {'max_new_tokens': 8, 'do_sample': False}, seed=0)            # warm-up
    t0 = time.perf_counter()
    outs = lm.generate(prompts, {'max_new_tokens': 128, 'do_sample': False}, seed=0)
    print(f'{threads} thread(s): {time.perf_counter() - t0:.1f} s, {sum(o["n_tokens"] for o in outs)} tokens')


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
