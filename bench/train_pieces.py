"""One training step's forward and backward on a batch of 8 real training chats, three ways: HF's loss on the whole
padded batch (what `finetune` did before FT_VERSION 2), logits only where a label is, and that in pieces of two rows
of similar length (what `finetune` does on CPU). The adapter is `finetune`'s (LoRA on all linear layers, dropout on).
Usage: python bench/train_pieces.py medqa    (or gsm8k, medmcqa, cosmosqa, org: the faithful organism's chats)
"""
import sys
import time


def main(which: str, reps: int = 2):
    from transformers import DataCollatorForSeq2Seq
    from cotfaith.finetune import FinetuneConfig, _kept_loss, _lora_model, _pieces, train_examples
    from cotfaith.models import load_model
    from cotfaith.organisms import organism_config
    from cotfaith.targets import target_kind, tokenize_example, training_messages
    lm = load_model('smollm2-135m')
    c = (organism_config('faithful') if which == 'org' else FinetuneConfig(dataset=which, n_train=64)).resolved()
    net = _lora_model(lm, c).train()
    rows = [tokenize_example(lm.tok, training_messages(e, kind=target_kind(c, e)), c.max_length)
            for e in train_examples(c)[:8]]
    batch = DataCollatorForSeq2Seq(lm.tok, label_pad_token_id=-100, padding=True)(rows)
    n = (batch['labels'][:, 1:] != -100).sum()

    def plain(): net(**batch).loss.backward()

    def kept(pieces):
        for p in pieces: _kept_loss(net(**{k: v for k, v in p.items() if k != 'labels'}), p['labels'], n).backward()

    ways = {'HF loss, whole padded batch': plain, 'logits where a label is': lambda: kept(_pieces(batch, len(rows))),
            'and pieces of two rows': lambda: kept(_pieces(batch, 2))}
    print(f"{which}: {len(rows)} chats, {sum(len(r['input_ids']) for r in rows)} tokens, "
          f"{batch['input_ids'].numel()} padded, {int(n)} labelled")
    for name, step in ways.items():
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            net.zero_grad()
            times.append(time.perf_counter() - t0)
        print(f"  {name}: {', '.join(f'{t:.1f}' for t in times)} s", flush=True)


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'medqa')
