"End to end on the real embedded model: records, the results store, cache reuse, the CLI."
import json
import os
import re
import subprocess
import sys

from pathlib import Path

import pytest

import cotfaith.pipeline as pipeline
from cotfaith.data import load_examples
from cotfaith.generate import GenCache
from cotfaith.pipeline import ExperimentConfig, run_experiment
from cotfaith.store import ResultsError, ResultsStore, experiment_path
from cotfaith.config import ConfigError
from cotfaith.models import resolve_spec

TINY = dict(n=3, max_new_tokens=40, answer_tokens=6, seed=0, tests='et')

CLI = str(Path(sys.executable).parent/'cotfaith-run')


def test_records_have_every_field_and_provenance(tmp_outputs):
    recs = run_experiment(ExperimentConfig(dataset='medmcqa', **{**TINY, 'tests': 'et,paraphrase,filler,mistake'}), progress=False)
    assert list(recs['id']) == [e.id for e in load_examples('medmcqa', n=3, seed=0)]
    for col in ['cot', 'cot_pred_strict', 'cot_pred_flexible', 'cot_correct_strict', 'direct', 'direct_pred_flexible',
                'direct_correct_flexible', 'n_steps', 'et_k', 'et_frac', 'et_answers', 'et_score', 'et_faithful', 'gold',
                'paraphrase_steps', 'mistake_edits'] + [f'{t}_{f}' for t in ('paraphrase', 'filler', 'mistake') for f in ('k', 'frac', 'answers', 'score', 'faithful')]:
        assert col in recs
    r = recs.iloc[0]
    assert len(r['et_answers']) == len(r['et_k']) == r['n_steps'] + 1 and r['et_k'][-1] == r['n_steps']
    prov = r['provenance']
    assert prov['lm']['fingerprint'].startswith('gguf-sha256:') and prov['config']['dataset'] == 'medmcqa'
    assert prov['packages']['transformers'] and prov['prompt_version']


def test_rerun_recomputes_nothing(tmp_outputs, monkeypatch):
    cfg = ExperimentConfig(dataset='gsm8k', **TINY)
    first = run_experiment(cfg, progress=False)
    def no_model(*a, **k): raise AssertionError('a complete experiment must not load the model')
    monkeypatch.setattr(pipeline, 'load_engine', no_model)
    again = run_experiment(cfg, progress=False)
    assert first.to_json() == again.to_json()


def test_lost_results_are_rebuilt_from_the_generation_cache(tmp_outputs, monkeypatch):
    cfg = ExperimentConfig(dataset='cosmosqa', **TINY)
    first = run_experiment(cfg, progress=False)
    experiment_path(cfg, resolve_spec(cfg.model)[1]).unlink()
    # The cache folder is shared with the other pytest workers, so count what this process writes, not the files.
    written, put = [], GenCache.put
    monkeypatch.setattr(GenCache, 'put', lambda self, key, value: (written.append(key), put(self, key, value)))
    again = run_experiment(cfg, progress=False)
    assert written == []                                                    # every generation came from the cache
    assert first.drop(columns='provenance').to_json() == again.drop(columns='provenance').to_json()


def test_a_changed_setting_writes_a_new_results_file(tmp_outputs):
    from conftest import write_adapter
    fp = resolve_spec('default')[1]
    a = experiment_path(ExperimentConfig(**TINY), fp)
    assert a == experiment_path(ExperimentConfig(**TINY, batch_size=2), fp)      # batch size changes no output
    for same in [dict(threshold=.6), dict(tests='et,filler'), dict(fractions=[0]), dict(et_fractions=[0, .5]),
                 dict(paraphraser='x')]:   # labels and the tests live elsewhere
        assert experiment_path(ExperimentConfig(**{**TINY, **same}), fp) == a
    for change in [dict(answer_tokens=7), dict(seed=1), dict(adapter=write_adapter(tmp_outputs/'a')), dict(load_in_4bit=True)]:
        assert experiment_path(ExperimentConfig(**{**TINY, **change}), fp) != a
    assert experiment_path(ExperimentConfig(**TINY), fp + 'x') != a


def test_store_skips_a_torn_last_line_but_refuses_a_corrupt_one(tmp_path):
    s = ResultsStore(tmp_path/'r.jsonl')
    s.append([{'id': 'a'}, {'id': 'b'}])
    with open(s.path, 'a') as f: f.write('{"id": "c", ')
    assert sorted(s.read()) == ['a', 'b']
    s.path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ResultsError, match=r'r.jsonl:2: corrupt record'):
        s.read()


def test_cli_runs_an_experiment_and_prints_the_summary(tmp_outputs):
    r = subprocess.run([CLI, '--dataset', 'gsm8k', '--n', '2', '--max_new_tokens', '40', '--tests', 'et,filler'],
                       capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-2000:]
    for t in ('early termination', 'filler substitution'):    # its numbers, or none scored: chains of 40 tokens
        assert re.search(rf'{t}: (AOC .*, faithful .* of \d+ scored|no chain scored) \(of 2 chains', r.stdout), r.stdout
    assert 'flexible' in r.stdout
    assert len(list((tmp_outputs/'results').rglob('*.jsonl'))) == 3     # base records, early termination, filler


def test_no_answer_can_be_treated_as_missing_without_recomputing(tmp_outputs, monkeypatch):
    from cotfaith.faithfulness import change_score
    cfg = ExperimentConfig(dataset='gsm8k', **TINY)
    first = run_experiment(cfg, progress=False)
    monkeypatch.setattr(pipeline, 'load_engine', lambda *a, **k: pytest.fail('rescoring must not load the model'))
    again = run_experiment(ExperimentConfig(dataset='gsm8k', no_answer='missing', **TINY), progress=False)
    assert list(again['et_score']) == [change_score(a, 'missing') if isinstance(a, list) else None for a in first['et_answers']]
    with pytest.raises(ConfigError, match="no_answer"):
        ExperimentConfig(no_answer='drop')


@pytest.mark.parametrize('load_in_4bit', [True, False])
def test_the_base_side_of_a_comparison_takes_the_tuned_models_precision(load_in_4bit):
    from cotfaith.finetune import FinetuneConfig
    from cotfaith.pipeline import base_config
    ft = FinetuneConfig(load_in_4bit=load_in_4bit)
    base = base_config(ft, ExperimentConfig(load_in_4bit=not load_in_4bit, adapter='/some/adapter'))
    assert (base.model, base.adapter, base.load_in_4bit) == (ft.model, None, load_in_4bit)



def test_a_served_base_is_never_asked_for_in_4_bit():
    "QLoRA's NF4 base applies to a model loaded here: a served base (a vLLM model under its LoRA modules) is as served."
    from cotfaith.finetune import FinetuneConfig
    from cotfaith.pipeline import base_config
    ft = FinetuneConfig(model='openai:meta-llama/Meta-Llama-3-8B-Instruct@http://127.0.0.1:8000/v1', load_in_4bit=True)
    assert base_config(ft, ExperimentConfig()).load_in_4bit is False

def test_base_and_tuned_are_paraphrased_by_the_same_model(tmp_outputs):
    "Both sides of a comparison are paraphrased by the base model (without adapter), not each by itself."
    from cotfaith.finetune import FinetuneConfig
    from cotfaith.pipeline import run_base, run_finetuned
    ft = FinetuneConfig(n_train=4, max_length=256, batch_size=4, load_in_4bit=False)
    cfg = ExperimentConfig(dataset='gsm8k', n=1, max_new_tokens=24, answer_tokens=4, tests='et,paraphrase', fractions=[0.5])
    tuned, base = run_finetuned(ft, cfg, progress=False), run_base(ft, cfg, progress=False)
    assert tuned.iloc[0]['provenance']['lm']['adapter'] and not base.iloc[0]['provenance']['lm']['adapter']
    suite_prov = [json.loads(f.read_text().splitlines()[0])['provenance']['paraphraser']
                  for f in sorted((tmp_outputs/'results').rglob('*.paraphrase-*.jsonl'))]
    assert len(suite_prov) == 2 and suite_prov[0] == suite_prov[1] and suite_prov[0]['adapter'] is None


def test_results_are_keyed_by_the_adapters_content_not_its_folder_name(tmp_outputs):
    "Two adapters saved as .../adapter, or one retrained in place, never share a results file."
    from conftest import write_adapter
    from cotfaith.models import ModelError
    cfg, fp = ExperimentConfig(**TINY), resolve_spec('default')[1]
    path = lambda a: experiment_path(ExperimentConfig(**TINY, adapter=a), fp)
    one, two = write_adapter(tmp_outputs/'run1'/'adapter', b'w1'), write_adapter(tmp_outputs/'run2'/'adapter', b'w2')
    assert path(one) != path(two)
    before = path(one)
    write_adapter(one, b'w3')                                               # retrained in place
    assert path(one) != before
    assert path(write_adapter(tmp_outputs/'copy'/'elsewhere', b'w2')) == path(two)   # the same content, wherever it lives
    (Path(two)/'adapter_model.safetensors').unlink()
    with pytest.raises(ModelError, match='holds no weights.*Fix:'):
        path(two)


@pytest.mark.parametrize('field,value', [('n', -1), ('max_new_tokens', 0), ('answer_tokens', 0), ('batch_size', 0), ('chunk', 0),
                                         ('threshold', 1.5), ('threshold', -0.1), ('fractions', [0, 2]), ('et_fractions', [-0.5]),
                                         ('mistake_fractions', [1.01]), ('anchor_rollouts', 0), ('anchor_temperature', 2.5)])
def test_out_of_range_values_are_refused_before_anything_runs(field, value):
    with pytest.raises(ConfigError, match=f"parameter '{field}' must be"):
        ExperimentConfig(**{field: value})


def test_the_cli_reports_an_out_of_range_value_in_one_line(tmp_outputs):
    r = subprocess.run([CLI, '--n', '-3'], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert r.stderr.strip().splitlines() == ["cotfaith: error: parameter 'n' must be at least 0 (0 means all), got -3. Fix: pass n >= 0"]
    r = subprocess.run([CLI, '--anchor_temperature', '0'], capture_output=True, text=True, env=dict(os.environ))
    assert r.stderr.strip().splitlines() == ["cotfaith: error: parameter 'anchor_temperature' must be a number in (0, 2], "
                                             "got 0.0. Fix: pass 0.7, say"]        # a test's own flag, checked by its test
    assert not (tmp_outputs/'results').exists()


def test_two_processes_asking_for_one_experiment_compute_it_once(tmp_outputs):
    "Two runs of a batch at once (`--jobs 2`) that need the same records: one computes them, the other waits and reads."
    from cotfaith.core import cache_dir
    cache = tmp_outputs/'cache'                                  # no generation cached yet, the converted model shared
    cache.mkdir()
    (models := cache_dir().resolve()/'models').mkdir(parents=True, exist_ok=True)
    (cache/'models').symlink_to(models)
    env = dict(os.environ) | {'COTFAITH_CACHE_DIR': str(cache)}
    args = [CLI, '--dataset', 'gsm8k', '--n', '4', '--max_new_tokens', '40', '--tests', 'et,filler']
    ps = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], [e[-2000:] for _, e in outs]
    waited = [e for _, e in outs if 'another process is computing' in e]
    assert len(waited) == 1 and 'instance' not in waited[0].split('waiting for it')[1]      # no progress bar: nothing computed
    assert outs[0][0] == outs[1][0]                                                        # the same summary, read once stored
    base = [f for f in (tmp_outputs/'results').rglob('*.jsonl') if f.name.count('.') == 1]
    assert len(base) == 1 and len(base[0].read_text().splitlines()) == 4
