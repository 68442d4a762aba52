"""Chain generation at two batch sizes: the same 20 CoT prompts (n = 20, the default grid's evaluation), greedy,
256 new tokens, the embedded model through transformers. Prints each batch size's time and whether every chain is
identical to the first's (the generation cache's key holds no batch size: batching must change no output).
Usage: python bench/gen_batch.py gsm8k 8 20
"""
import _no_records  # first: the committed records must not answer a benchmark's generations
import sys
import time


def main(dataset: str, sizes: list):
    from cotfaith.data import load_examples
    from cotfaith.load import load_engine
    from cotfaith.prompts import cot_messages
    lm = load_engine('smollm2-135m')
    prompts = sorted((lm.render(cot_messages(e)) for e in load_examples(dataset, 'test', n=20, seed=0)), key=len,
                     reverse=True)                                      # as `generate` orders them
    lm.generate(prompts[:2], {'max_new_tokens': 8, 'do_sample': False}, seed=0)            # warm-up
    texts = {}
    for bs in sizes:
        t0, out = time.perf_counter(), []
        for i in range(0, len(prompts), bs):
            out += lm.generate(prompts[i:i + bs], {'max_new_tokens': 256, 'do_sample': False}, seed=0)
        texts[bs] = [o['text'] for o in out]
        same = sum(a == b for a, b in zip(texts[sizes[0]], texts[bs]))
        print(f'{dataset} batch {bs}: {time.perf_counter() - t0:.1f} s, {sum(o["n_tokens"] for o in out)} tokens, '
              f'{same} of {len(prompts)} chains identical to batch {sizes[0]}', flush=True)


if __name__ == '__main__':
    main(sys.argv[1], [int(s) for s in sys.argv[2:]] or [8, 20])
