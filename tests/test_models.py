"The real embedded model: conversion once, loading, generation, batching, 4-bit, and clear errors."
import os
import subprocess
import sys

from pathlib import Path

import pytest
import torch

from cotfaith.data import load_examples
from cotfaith.generate import GenCache, generate
from cotfaith.models import ModelError, embedded_dir, load_model, resolve_spec
from cotfaith.prompts import cot_messages, direct_messages, render
from cotfaith.transformers_engine import _shared_prefix_batch

CLI = str(Path(sys.executable).parent/'cotfaith-run')


def test_embedded_default_is_converted_once(lm):
    marker = embedded_dir()/'cotfaith.json'
    before = marker.stat().st_mtime_ns
    again = load_model()
    assert marker.stat().st_mtime_ns == before                  # no second conversion
    assert again.fingerprint == lm.fingerprint and lm.fingerprint.startswith('gguf-sha256:')
    assert (embedded_dir()/'model.safetensors').exists()


def test_generates_real_text_and_stops(lm, tmp_path):
    ex = load_examples('gsm8k', n=1, seed=5)[0]
    g = generate(lm, [render(lm.tok, direct_messages(ex))], max_new_tokens=12, cache=GenCache(tmp_path))[0]
    assert g['text'].strip() and g['n_tokens'] <= 12 and g['finish'] in ('eos', 'length') and not g['cached']


def test_batched_equals_unbatched(lm, tmp_path):
    exs = load_examples('medqa', n=3, seed=1)
    prompts = [render(lm.tok, cot_messages(e)) for e in exs]
    assert _shared_prefix_batch(lm, prompts) is not None        # the batch encodes its common prefix once ...
    batched = generate(lm, prompts, max_new_tokens=24, batch_size=3, cache=GenCache(tmp_path/'a'))
    alone = [generate(lm, [p], max_new_tokens=24, batch_size=1, cache=GenCache(tmp_path/'b'))[0] for p in prompts]
    assert [g['text'] for g in batched] == [g['text'] for g in alone]


def test_one_budget_per_prompt_shares_batches_and_is_cached_as_if_alone(lm, tmp_path):
    exs = load_examples('gsm8k', n=3, seed=2)
    prompts = [render(lm.tok, cot_messages(e)) for e in exs]
    mixed = generate(lm, prompts, max_new_tokens=[6, 20, 12], batch_size=3, cache=GenCache(tmp_path), progress=False)
    assert [g['n_tokens'] for g in mixed] == [6, 20, 12] and {g['finish'] for g in mixed} == {'length'}
    alone = [generate(lm, [p], max_new_tokens=b, cache=GenCache(tmp_path), progress=False)[0]
             for p, b in zip(prompts, (6, 20, 12))]
    assert all(g['cached'] for g in alone)                      # the same keys as one budget at a time ...
    fresh = [generate(lm, [p], max_new_tokens=b, cache=GenCache(tmp_path/'alone'), progress=False)[0]
             for p, b in zip(prompts, (6, 20, 12))]
    assert [g['text'] for g in fresh] == [g['text'] for g in mixed]   # ... and the same text


def test_four_bit_base_loads_and_generates(tmp_path):
    lm4 = load_model(load_in_4bit=True)
    assert lm4.key['quant'] == 'nf4'
    assert any('4bit' in type(m).__name__ for m in lm4.model.modules())
    g = generate(lm4, [render(lm4.tok, [{'role': 'user', 'content': 'Say hello.'}])], max_new_tokens=8, cache=GenCache(tmp_path))
    assert g[0]['text'].strip()


def test_hub_only_spec_offline_is_one_clear_error():
    with pytest.raises(ModelError, match=r"model 'meta-llama/Meta-Llama-3-8B-Instruct' is not a local folder.*hf download"):
        resolve_spec('meta-llama/Meta-Llama-3-8B-Instruct')


def test_cli_reports_an_unavailable_model_without_a_hub_traceback(tmp_outputs):
    r = subprocess.run([CLI, '--model', 'nobody/no-such-model', '--n', '1'],
                       capture_output=True, text=True, env=os.environ | {'HF_HUB_OFFLINE': '1'})
    assert r.returncode != 0
    assert "model 'nobody/no-such-model' is not a local folder" in r.stderr
    assert 'Traceback' not in r.stderr and 'cotfaith: error: model' in r.stderr


def test_local_folder_spec_has_a_weight_fingerprint(lm, tmp_path):
    lm.model.save_pretrained(tmp_path/'m'); lm.tok.save_pretrained(tmp_path/'m')
    path, fp = resolve_spec(str(tmp_path/'m'))
    assert fp.startswith('folder:')
    with torch.no_grad(): next(lm.model.parameters())[0, 0] += 1
    try:
        lm.model.save_pretrained(tmp_path/'m')
        assert resolve_spec(str(tmp_path/'m'))[1] != fp
    finally:
        with torch.no_grad(): next(lm.model.parameters())[0, 0] -= 1


@pytest.mark.parametrize('name', ['generation_config.json', 'tokenizer_config.json', 'tokenizer.json', 'chat_template.jinja'])
def test_editing_any_file_that_changes_outputs_changes_the_fingerprint(tmp_path, name):
    "Generation config, tokenizer files and chat template change what a model writes: editing one misses the caches."
    from cotfaith.tiny import make_tiny_model
    d = make_tiny_model(tmp_path/'tiny')
    before = resolve_spec(str(d))[1]
    f = d/name
    f.write_text(f.read_text() + '\n' if f.exists() else '{{ messages[0].content }}')   # an edit, or a new template file
    assert resolve_spec(str(d))[1] != before
