"LoRA fine-tuning of the real embedded model: the loss falls, outputs change, adapters are cached, guards hold."
import json

import pytest
import torch

from cotfaith.finetune import FinetuneConfig, finetune, _train
from cotfaith.targets import tokenize_example, training_messages
from cotfaith.data import load_examples
from cotfaith.generate import GenCache, generate
from cotfaith.models import load_model
from cotfaith.prompts import cot_messages, render

TINY = dict(n_train=16, max_length=256, batch_size=4, lr=1e-3, epochs=2)


@pytest.fixture(scope='module')
def adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp('adapters')
    return finetune(FinetuneConfig(**TINY), root=root), root


def test_training_lowers_the_loss(adapter):
    losses = [h['loss'] for h in json.loads((adapter[0]/'train_log.json').read_text())]
    assert len(losses) == 8                                   # 16 examples / batch 4 * 2 epochs
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2


def test_tuned_model_answers_differently(adapter, lm, tmp_path):
    tuned = load_model(adapter=adapter[0])
    p = [render(lm.tok, cot_messages(e)) for e in load_examples('gsm8k', n=3, seed=7)]
    base = generate(lm, p, max_new_tokens=40, cache=GenCache(tmp_path))
    after = generate(tuned, p, max_new_tokens=40, cache=GenCache(tmp_path))
    assert [g['text'] for g in base] != [g['text'] for g in after]
    assert not any(g['cached'] for g in after)                # the adapter is part of the cache key


def test_cached_adapter_is_reused_and_a_changed_setting_is_not(adapter):
    path, root = adapter
    stamp = (path/'meta.json').stat().st_mtime_ns
    assert finetune(FinetuneConfig(**TINY), root=root) == path
    assert (path/'meta.json').stat().st_mtime_ns == stamp
    from cotfaith.finetune import adapter_dir, train_examples
    from cotfaith.models import resolve_spec
    fp, ids = resolve_spec('default')[1], [e.id for e in train_examples(FinetuneConfig(**TINY))]
    for change in [dict(rank=16), dict(lr=2e-3), dict(seed=1), dict(target='answer'), dict(max_length=200)]:
        assert adapter_dir(FinetuneConfig(**{**TINY, **change}), fp, ids, root) != path


def test_answer_targets_label_only_the_answer_and_the_end_token(lm):
    ex = load_examples('medqa', 'train', n=1)[0]
    t = tokenize_example(lm.tok, training_messages(ex, 'answer'), 1024)
    labelled = lm.tok.decode([i for i, l in zip(t['input_ids'], t['labels']) if l != -100])
    assert labelled.startswith(f'Final answer: {ex.answer}<|im_end|>')


def test_nan_loss_stops_training_with_a_clear_error(tmp_path):
    lm = load_model()
    with torch.no_grad():
        for p in lm.model.parameters(): p.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match='training loss is nan'):
        _train(lm, FinetuneConfig(**TINY).resolved(), load_examples('gsm8k', 'train', n=4), tmp_path)
    assert not (tmp_path/'adapter').exists()


def test_four_bit_lora_trains_after_an_inference_forward(tmp_path):
    "The bitsandbytes CPU-repack pitfall: evaluate first, then train; the loss must still move."
    lm4 = load_model(load_in_4bit=True)
    generate(lm4, [render(lm4.tok, [{'role': 'user', 'content': 'Hi'}])], max_new_tokens=2, cache=GenCache(tmp_path/'g'))
    cfg = FinetuneConfig(**{**TINY, 'n_train': 8, 'epochs': 2}, load_in_4bit=True).resolved()
    log = _train(lm4, cfg, load_examples('gsm8k', 'train', n=8), tmp_path/'w')
    assert len(log) == 4 and log[-1]['loss'] != log[0]['loss']


def test_a_served_model_is_trained_on_its_gguf_weights_dequantised(tmp_path):
    "A `llama.cpp:` model is fine-tuned on its GGUF file, dequantised into the cache: the same weights as the default."
    from cotfaith.finetune import trained_weights
    from cotfaith.models import embedded_gguf, resolve_spec
    weights = trained_weights('llama.cpp:smollm2-135m')
    assert weights == str(embedded_gguf().resolve()) and trained_weights('smollm2-135m') == 'smollm2-135m'
    folder, fp = resolve_spec(weights)
    assert fp == resolve_spec('default')[1] and folder.name.startswith('gguf-')     # keyed by the GGUF's digest
    path = finetune(FinetuneConfig(model='llama.cpp:smollm2-135m', n_train=4, batch_size=4, max_length=256), root=tmp_path)
    meta = json.loads((path/'meta.json').read_text())
    assert meta['base_fingerprint'] == fp and meta['config']['load_in_4bit'] is False and (path/'adapter_model.safetensors').exists()


def test_an_adapter_trained_by_an_earlier_trainer_version_is_not_reused(tmp_path, monkeypatch):
    "FT_VERSION is in the adapter's key: adapters trained before steps went in pieces (version 1) are trained again."
    import cotfaith.finetune as ft
    from cotfaith.finetune import adapter_dir, train_examples
    from cotfaith.models import resolve_spec
    cfg = FinetuneConfig(**TINY)
    fp, ids = resolve_spec('default')[1], [e.id for e in train_examples(cfg)]
    now = adapter_dir(cfg, fp, ids, tmp_path)
    monkeypatch.setattr(ft, 'FT_VERSION', 1)
    assert adapter_dir(cfg, fp, ids, tmp_path) != now


def test_a_step_in_pieces_gives_the_whole_batchs_loss_and_gradient(tmp_path):
    "The trainer's step (rows in pieces of two, logits only where a label is) = HF's loss on the padded batch."
    from transformers import DataCollatorForSeq2Seq
    from cotfaith.finetune import _lora_model, _pieces, _trainer, _training_args
    c = FinetuneConfig(dataset='medqa', dropout=0.0).resolved()            # no dropout: both paths see one network
    lm = load_model()
    net = _lora_model(lm, c)
    for name, p in net.named_parameters():                                 # B starts at 0, which hides A's gradient
        if 'lora_B' in name: torch.nn.init.normal_(p, std=0.02)
    rows = [tokenize_example(lm.tok, training_messages(e, 'answer'), 512)
            for e in load_examples('medqa', 'train', n=5, seed=3)]
    batch = DataCollatorForSeq2Seq(lm.tok, label_pad_token_id=-100, padding=True)(rows)
    pieces = _pieces(batch, 2)
    assert len(pieces) == 3 and sum(p['input_ids'].numel() for p in pieces) < batch['input_ids'].numel()
    n = (batch['labels'][:, 1:] != -100).sum()
    trainer = _trainer(model=net, args=_training_args(c, tmp_path), train_dataset=rows)
    ours = trainer.training_step(net, dict(batch), n)
    g_ours = {k: p.grad.clone() for k, p in net.named_parameters() if p.requires_grad}
    net.zero_grad()
    plain = net(**batch).loss
    plain.backward()
    assert abs(ours.item() - plain.item()) < 1e-5
    worst = max(((g_ours[k] - p.grad).abs().max() / p.grad.abs().max()).item()
                for k, p in net.named_parameters() if p.requires_grad)
    # float order only: the vocabulary's backward over a few kept rows sums in another order (~1e-4 of the largest
    # gradient measured; the forward's logits are bit-identical); a wrong shift or normalisation is off by O(1)
    assert worst < 1e-3, worst


def test_the_same_adapter_trained_under_two_caches_names_the_same_results_files(tmp_path, monkeypatch):
    """Issue 37: peft wrote the base's folder in the cache into adapter_config.json, part of the adapter's fingerprint,
    so a SLURM job's cache and a laptop's named the results of the same weights apart."""
    import subprocess
    from cotfaith.core import cache_dir
    from cotfaith.models import adapter_fingerprint
    from cotfaith.pipeline import ExperimentConfig, experiment_files
    monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/'results'))
    models, seen = cache_dir()/'models', []
    for side in ('laptop', 'cluster'):
        (tmp_path/side).mkdir()
        if models.exists(): subprocess.run(['cp', '-al', str(models), str(tmp_path/side/'models')], check=True)
        monkeypatch.setenv('COTFAITH_CACHE_DIR', str(tmp_path/side))
        a = finetune(FinetuneConfig(n_train=2, batch_size=2, rank=2, max_length=160, load_in_4bit=False))
        named = json.loads((a/'adapter_config.json').read_text())['base_model_name_or_path']
        files = {k: f.name for k, f in experiment_files(ExperimentConfig(n=2, adapter=str(a), tests='et')).items()}
        seen.append((adapter_fingerprint(a), files, named))
    assert seen[0] == seen[1] and seen[0][2] == 'smollm2-135m', seen
