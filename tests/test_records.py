"""Committed records (issue 33): a grid packed on one machine is redrawn on another with no forward pass, and continued
there computing only what no pack holds."""
import gzip
import json
import shutil
from pathlib import Path

import pytest

from cotfaith import store
from cotfaith.batch import BatchError, run_batch
from cotfaith.core import file_sha256
from cotfaith.pack import pack
from cotfaith.pipeline import ExperimentConfig, run_experiment
from cotfaith.records import NotCommitted, RecordsError, committed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def machine(tmp_path, monkeypatch):
    "A machine of its own: results, cache (with the converted model, so nothing is converted again) and records dir."
    from cotfaith.core import cache_dir
    models = cache_dir()/'models'
    env = {'COTFAITH_RESULTS_DIR': tmp_path/'results', 'COTFAITH_CACHE_DIR': tmp_path/'cache',
           'COTFAITH_RECORDS_DIR': tmp_path/'records', 'COTFAITH_FIGURES_DIR': tmp_path/'figures'}
    for k, v in env.items(): monkeypatch.setenv(k, str(v))
    (tmp_path/'cache').mkdir()
    if models.exists(): (tmp_path/'cache'/'models').symlink_to(models)
    return tmp_path


def _fresh(m:Path):
    "Another machine with the same repository: nothing but the committed records."
    shutil.rmtree(m/'results', ignore_errors=True)
    shutil.rmtree(m/'cache'/'generations', ignore_errors=True)


def _local_keys(m:Path)->set:
    return {f.stem for f in (m/'cache'/'generations').glob('*/*.json')}


CFG = dict(dataset='gsm8k', max_new_tokens=24, answer_tokens=6, tests='et')


def test_a_grid_continued_elsewhere_computes_only_what_no_pack_holds(machine, monkeypatch):
    first = run_experiment(ExperimentConfig(n=2, **CFG), progress=False)           # machine A: two questions
    a_keys = _local_keys(machine)
    made = pack()
    assert made['results'][1] == 4 and made['generations'][1] == len(a_keys) and made['adapters'][1] == 0
    # B: a change of how answers are read re-keys the results, not the generations: redrawn with no forward pass
    _fresh(machine)
    monkeypatch.setenv('COTFAITH_COMMITTED_ONLY', '1')
    monkeypatch.setitem(store.READING_VERSIONS, 'extract_version', 10_000)
    reread = run_experiment(ExperimentConfig(n=2, **CFG), progress=False)
    assert _local_keys(machine) == set()
    cols = ['id', 'cot', 'direct', 'cot_pred_flexible', 'et_answers', 'et_score']
    assert reread[cols].to_dict() == first[cols].to_dict()
    with pytest.raises(NotCommitted, match='generations of smollm2-135m'):                # a third question is not
        run_experiment(ExperimentConfig(n=3, **CFG), progress=False)
    # B goes on to three questions: it computes the third only
    monkeypatch.delenv('COTFAITH_COMMITTED_ONLY')
    run_experiment(ExperimentConfig(n=3, **CFG), progress=False)
    b_keys = _local_keys(machine)
    # C: the three questions from nothing
    monkeypatch.setenv('COTFAITH_RECORDS_DIR', str(machine/'no-records'))
    _fresh(machine)
    run_experiment(ExperimentConfig(n=3, **CFG), progress=False)
    c_keys = _local_keys(machine)
    assert a_keys < c_keys and b_keys == c_keys - a_keys


def test_damaged_edited_and_cut_packs_are_one_error_naming_the_file(machine):
    run_experiment(ExperimentConfig(n=1, **CFG), progress=False)
    p = pack()['results'][0]
    data = gzip.decompress(p.read_bytes())
    good = p.read_bytes()
    cases = {'edited': gzip.compress(data.replace(b'"gsm8k"', b'"GSM8K"', 1)), 'cut short': good[:len(good) // 2],
             'not gzip': data, 'a line that is no row': gzip.compress(data + b'{"id": 1}\n')}
    for what, bad in cases.items():
        p.write_bytes(bad)
        with pytest.raises(RecordsError, match=p.name) as e:
            committed('results')
        assert 'Fix:' in str(e.value), what
    p.write_bytes(good)
    assert len(committed('results')) == 2                                   # the base record and its ET record


def _project(tmp:Path, runs:str)->Path:
    "A clone of the repository's analysis templates with a committed grid of its own."
    tmp.mkdir()
    (tmp/'settings.ini').write_text('[DEFAULT]\n')
    shutil.copytree(ROOT/'analysis', tmp/'analysis')
    (tmp/'params').mkdir()
    (tmp/'params'/'grid.yaml').write_text('short_names: true\nnotebook: analysis/accuracy_et.ipynb\n'
                                          f'defaults: {{n: 2, max_new_tokens: 24, answer_tokens: 6}}\nruns:\n{runs}')
    return tmp/'params'/'grid.yaml'


def test_make_figures_redraws_the_committed_figures_byte_for_byte_with_no_forward_pass(machine, monkeypatch, capsys):
    monkeypatch.delenv('COTFAITH_FIGURES_DIR')                                   # a committed grid draws into figures/
    grid = _project(machine/'clone', '  - {dataset: gsm8k}\n')
    run_batch(grid, out_dir=machine/'runs')                                      # computed, drawn, in the manifest
    manifest = json.loads((machine/'clone'/'figures'/'manifest.json').read_text())
    [(fig, entry)] = manifest.items()
    pack()
    _fresh(machine)
    shutil.rmtree(machine/'runs')
    (machine/'clone'/'figures'/f'{fig}.png').unlink()
    run_batch(grid, out_dir=machine/'runs', committed=True)
    assert _local_keys(machine) == set()                                         # nothing decoded
    assert {x: file_sha256(machine/'clone'/'figures'/x) for x in entry['files']} == entry['sha256']
    mpath = machine/'clone'/'figures'/'manifest.json'
    assert json.loads(mpath.read_text())[fig]['from_records'] is True             # checked once: checked from now on
    # records missing: a checked figure fails; one never checked stays as drawn, said to be unchecked
    (machine/'records').rename(machine/'away')
    with pytest.raises(BatchError, match='1 of 1 runs failed'):
        run_batch(grid, out_dir=machine/'runs', committed=True)
    mpath.write_text(json.dumps(manifest))
    capsys.readouterr()
    run_batch(grid, out_dir=machine/'runs', committed=True)
    assert 'its records are not all committed yet' in capsys.readouterr().out
    (machine/'away').rename(machine/'records')
    # a committed figure that the records do not reproduce fails, and the manifest is left as it is
    entry['sha256'][f'{fig}.png'] = '0' * 64
    (machine/'clone'/'figures'/'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(BatchError, match='1 of 1 runs failed'):
        run_batch(grid, out_dir=machine/'runs', committed=True)
    assert 'the committed records do not reproduce them' in capsys.readouterr().out
    assert json.loads((machine/'clone'/'figures'/'manifest.json').read_text()) == manifest


def test_a_fine_tuned_model_known_by_its_committed_receipt_is_re_read_with_no_weights(machine, monkeypatch):
    from cotfaith.finetune import FinetuneConfig
    from cotfaith.pipeline import run_finetuned
    ft = FinetuneConfig(n_train=8, max_length=256, batch_size=8)                      # one training step
    cfg = ExperimentConfig(n=1, **CFG)
    first = run_finetuned(ft, cfg, progress=False)                                  # machine A trains and evaluates
    made = pack()
    assert made['adapters'][1] == 1
    _fresh(machine)
    cols = ['id', 'cot', 'direct', 'cot_pred_flexible', 'et_answers']
    # B': the adapter trained here apart from the committed one (another cache path in its config, as before issue
    # 37's fix): `make figures` reads the committed receipt, not this folder (it failed with NotCommitted before)
    conf = next((machine/'cache'/'adapters').glob('*/*/adapter_config.json'))
    conf.write_text(json.dumps(json.loads(conf.read_text()) | {'base_model_name_or_path': '/elsewhere/model'}))
    monkeypatch.setenv('COTFAITH_COMMITTED_ONLY', '1')
    assert run_finetuned(ft, cfg, progress=False)[cols].to_dict() == first[cols].to_dict()
    _fresh(machine)
    shutil.rmtree(machine/'cache'/'adapters')                                       # B: no adapter weights at all
    monkeypatch.setitem(store.READING_VERSIONS, 'extract_version', 10_000)          # re-keyed results, same chains
    again = run_finetuned(ft, cfg, progress=False)
    assert again[cols].to_dict() == first[cols].to_dict() and _local_keys(machine) == set()
    monkeypatch.delenv('COTFAITH_COMMITTED_ONLY')
    with pytest.raises(RecordsError, match='is a receipt of committed records'):     # a new question needs the weights
        run_finetuned(ft, ExperimentConfig(n=2, **CFG), progress=False)


def test_committed_adapter_weights_are_restored_checked_and_not_trained_again(machine, monkeypatch):
    "A grid continued on another machine finds a committed adapter's weights (the 1.5B grid's), not a receipt only."
    from cotfaith.finetune import FinetuneConfig, finetune
    from cotfaith.models import adapter_fingerprint
    ft = FinetuneConfig(n_train=8, max_length=256, batch_size=8)                      # one training step
    a = finetune(ft)                                                                 # machine A trains it
    trained = {f: (a/f).read_bytes() for f in ('adapter_model.safetensors', 'adapter_config.json')}
    made = pack(weights='nothing-matches/*')
    assert made['adapters'][1] == 1 and made['weights'] == (None, 0)                  # a receipt, no weights
    assert pack(weights='smollm2-135m/*')['weights'][1] == 1                          # weights added to the receipt
    assert pack(weights='smollm2-135m/*')['weights'][1] == 0                          # written once
    meta = json.loads((a/'meta.json').read_text())
    shutil.rmtree(machine/'cache'/'adapters')                                       # machine B: no adapter at all
    b = finetune(ft)
    assert b == a and {f: (b/f).read_bytes() for f in trained} == trained             # the same bytes, restored
    assert json.loads((b/'meta.json').read_text())['train_seconds'] == meta['train_seconds']   # not trained again
    assert adapter_fingerprint(b) == adapter_fingerprint(machine/'records'/'weights'/'smollm2-135m'/a.name)
    # a receipt left by an earlier run (before the weights were committed) is completed with them
    (b/'adapter_model.safetensors').unlink()
    (b/'receipt.json').write_text(json.dumps({'fingerprint': 'f00d'}))
    assert (finetune(ft)/'adapter_model.safetensors').read_bytes() == trained['adapter_model.safetensors']
    # `make figures` (committed work only) gets the committed adapter apart from this one, weights included, so that
    # the 1.5B model's committed chains are re-read under today's code (a receipt alone cannot be loaded)
    monkeypatch.setenv('COTFAITH_COMMITTED_ONLY', '1')
    c = finetune(ft)
    assert c != a and 'receipts' in c.parts
    assert (c/'adapter_model.safetensors').read_bytes() == trained['adapter_model.safetensors']
    monkeypatch.delenv('COTFAITH_COMMITTED_ONLY')
    # weights that are not the ones the receipt names are one error, and nothing is left that looks trained
    shutil.rmtree(machine/'cache'/'adapters')
    w = machine/'records'/'weights'/'smollm2-135m'/a.name/'adapter_model.safetensors'
    w.write_bytes(w.read_bytes()[:-8] + b'\0' * 8)
    with pytest.raises(RecordsError, match='these weights are not the adapter the records name'):
        finetune(ft)
    assert not a.exists()
