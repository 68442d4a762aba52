"""LoRA step time and peak RAM: fp32 LoRA vs 4-bit QLoRA (bitsandbytes NF4) on this machine's CPU, or on CUDA.

One optimizer step = forward + backward + AdamW update on a batch of `batch` sequences of `seq` tokens (real GSM8K
training chats, cut or padded to `seq`), through the same peft model `finetune` builds. Each mode runs in its own
process so that peak RSS is its own. Usage: python bench/lora_step.py [--steps 3] [--batch 8] [--seq 256]
[--model llama.cpp:qwen2.5-coder-1.5b --mode lora] (a served model: its GGUF dequantised, as `finetune` trains it).
"""
import argparse
import json
import resource
import subprocess
import sys
import time


def one_mode(mode, steps, batch, seq, rank, model_spec):
    import torch
    from cotfaith.data import load_examples
    from cotfaith.finetune import FinetuneConfig, _lora_model, trained_weights
    from cotfaith.targets import tokenize_example, training_messages
    from cotfaith.models import load_model
    four = mode == 'qlora'
    t0 = time.perf_counter()
    lm = load_model(trained_weights(model_spec), load_in_4bit=four)
    load_s = time.perf_counter() - t0
    cfg = FinetuneConfig(rank=rank, load_in_4bit=four).resolved()
    model = _lora_model(lm, cfg); model.train()
    exs = load_examples('gsm8k', 'train', n=batch, seed=0)
    rows = [tokenize_example(lm.tok, training_messages(e, 'rationale'), 4096) for e in exs]
    ids = torch.full((batch, seq), lm.tok.pad_token_id)
    labels = torch.full((batch, seq), -100)
    for i, r in enumerate(rows):
        x = (r['input_ids'] * (seq // len(r['input_ids']) + 1))[:seq]           # repeat to fill exactly seq tokens
        ids[i] = torch.tensor(x); labels[i] = torch.tensor(x)
    dev = lm.device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, losses = [], []
    for s in range(steps + 1):                                                  # step 0 is warm-up
        if dev.type == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=ids.to(dev), labels=labels.to(dev)).loss
        loss.backward(); opt.step(); opt.zero_grad()
        if dev.type == 'cuda': torch.cuda.synchronize()
        if s: times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    out = {'model': model_spec, 'load_s': load_s, 'mode': mode, 'device': str(dev), 'batch': batch, 'seq': seq, 'rank': rank,
           'step_s': sum(times) / len(times), 'peak_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           'loss_first': losses[0], 'loss_last': losses[-1]}
    if dev.type == 'cuda': out['peak_gpu_gib'] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--mode', default=''); p.add_argument('--steps', type=int, default=3)
    p.add_argument('--batch', type=int, default=8); p.add_argument('--seq', type=int, default=256)
    p.add_argument('--rank', type=int, default=8); p.add_argument('--model', default='smollm2-135m')
    a = p.parse_args()
    if a.mode: one_mode(a.mode, a.steps, a.batch, a.seq, a.rank, a.model)
    else:
        for m in ('lora', 'qlora'):
            subprocess.run([sys.executable, __file__, '--mode', m, '--steps', str(a.steps), '--batch', str(a.batch),
                            '--seq', str(a.seq), '--rank', str(a.rank), '--model', a.model], check=True)
