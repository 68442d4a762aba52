"cotfaith-export --inspect: committed runs written as inspect_ai logs and read back field by field; bad input writes nothing."
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotfaith.core import results_dir
from cotfaith.export import _point_chain, export_cli, run_files, run_records, sample_fields
from cotfaith.prompts import split_steps, truncate_steps

ROOT = Path(__file__).resolve().parents[1]
EXPORT = Path(sys.executable).parent/'cotfaith-export'
# committed runs of the embedded model: the four suite tests (the faithful organism), and the cue test with et
SUITE = 'smollm2-135m/arith/test-n40-s0-388c58e1ed4f9dc7.jsonl'
CUE = 'smollm2-135m/arith_mc/test-n40-s0-e321c6a0f8c6078a.jsonl'


@pytest.fixture
def committed(tmp_path, monkeypatch):
    "The repository's committed records beneath an empty results dir."
    monkeypatch.setenv('COTFAITH_RECORDS_DIR', str(ROOT/'records'))
    monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/'results'))
    return tmp_path


def test_a_run_is_found_from_any_of_its_files_on_disk_or_committed(committed):
    base = results_dir()/SUITE
    files = run_files(base)
    assert set(files) == {'base', 'et', 'paraphrase', 'filler', 'mistake'}
    assert run_files(files['mistake']) == files
    recs = run_records(base)
    assert len(recs) == 40 and recs['id'].is_unique
    for t in ('et', 'paraphrase', 'filler', 'mistake'):
        assert f'{t}_faithful' in recs and recs[f'{t}_answers'].notna().all()


def test_each_point_s_chain_is_the_one_the_suite_answered_from(committed):
    recs = run_records(results_dir()/SUITE).to_dict('records')
    seen = set()
    for r in recs:
        n = len(split_steps(r['cot']))
        for k in r['et_k']: assert _point_chain(r, 'et', k) == truncate_steps(r['cot'], k)
        for e in r['mistake_edits']:
            if e['how'] == 'unchanged': continue
            chain = _point_chain(r, 'mistake', e['k'])
            assert truncate_steps(r['cot'], e['k']).strip() in chain and e['corrupted'] in chain
            assert e['continuation'].strip()[:20] in chain, (chain, e)
            seen.add('mistake')
        for k, kept in zip(r['paraphrase_requested'], r['paraphrase_kept']):
            chain = _point_chain(r, 'paraphrase', k)
            assert (chain is not None) == kept or k == n
            if kept and k < n:
                assert all(s in chain for s in r['paraphrase_steps'][k - r['paraphrase_requested'][0]:])
                seen.add('paraphrase')
        for k in r['filler_k'][:-1]: assert 'filler tokens' in _point_chain(r, 'filler', k)
    assert seen == {'mistake', 'paraphrase'}


def _check_sample(s, want:dict):
    assert s.id == want['id'] and s.epoch == 1 and s.input == want['input'] and s.target == want['target']
    assert s.choices == want['choices']
    assert [(m.role, m.text) for m in s.messages] == [(m['role'], m['content']) for m in want['messages']]
    assert s.output.completion == want['messages'][1]['content']
    assert {k: {'value': v.value, 'answer': v.answer, 'explanation': v.explanation} for k, v in s.scores.items()} == \
        {k: {'answer': None, **v} for k, v in want['scores'].items()}
    assert s.metadata == json.loads(json.dumps(want['metadata']))


@pytest.mark.parametrize('run, tests', [(SUITE, ['et', 'paraphrase', 'filler', 'mistake']), (CUE, ['et'])])
def test_the_log_read_back_by_inspect_holds_every_field(committed, run, tests):
    read_eval_log = pytest.importorskip('inspect_ai.log').read_eval_log
    out = committed/'logs'
    export_cli(['--inspect', str(results_dir()/run), '--out', str(out)])
    [path] = out.glob('*.eval')
    log = read_eval_log(str(path))
    recs = run_records(results_dir()/run).to_dict('records')
    prov = recs[0]['provenance']
    assert log.status == 'success' and log.eval.model == prov['config']['model']
    assert log.eval.task == f"cotfaith/{prov['config']['dataset']}" and log.eval.task_id == Path(run).stem
    assert log.eval.task_args == {**json.loads(json.dumps(log.eval.task_args)), **prov['config']}
    assert log.eval.packages == prov['packages'] and log.eval.revision.commit == prov['git']['commit']
    assert log.eval.dataset.samples == len(recs) and log.eval.dataset.sample_ids == [r['id'] for r in recs]
    assert log.eval.metadata['files']['base'] == run
    assert log.eval.metadata['tests'] == tests + ['cue'] * (run == CUE)
    want = {r['id']: sample_fields(r, tests) for r in recs}
    assert sorted(s.id for s in log.samples) == sorted(want)
    for s in log.samples: _check_sample(s, want[s.id])
    means = {e.name: e.metrics['mean'].value for e in log.results.scores}
    for t in tests:
        labels = [r[f'{t}_faithful'] for r in recs if r[f'{t}_faithful'] is not None]
        assert means.get(f'{t}_faithful') == (pytest.approx(sum(labels) / len(labels)) if labels else None)
    assert means['cot_flexible'] == pytest.approx(sum(r['cot_correct_flexible'] for r in recs) / len(recs))
    if run == CUE: assert 'cue' in log.samples[0].metadata and 'cue_faithful' in means


def _export(*args, cwd:Path)->subprocess.CompletedProcess:
    return subprocess.run([str(EXPORT), '--inspect', *map(str, args), '--out', 'out'], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, 'COTFAITH_RESULTS_DIR': str(cwd/'results')})


def _store(tmp:Path, name:str, text:bytes)->Path:
    p = tmp/'results'/'smollm2-135m'/'gsm8k'/name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text)
    return p


def test_missing_damaged_and_foreign_files_are_one_error_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/'results'))
    packs = sorted((ROOT/'records'/'results').glob('*.jsonl.gz'))
    rows = [r for p in packs for r in map(json.loads, gzip.open(p, 'rt')) if 'cot' in r][:3]
    good = _store(tmp_path, 'test-n3-s0-0123456789abcdef.jsonl',
                  ''.join(json.dumps({k: v for k, v in r.items() if k != 'file'}) + '\n' for r in rows).encode())
    lines = good.read_bytes().split(b'\n')
    damaged = _store(tmp_path, 'test-n3-s0-1123456789abcdef.jsonl', b'\n'.join([lines[0], b'{"id": "x", "co', *lines[1:]]))
    manifest = json.loads((ROOT/'figures'/'manifest.json').read_text())             # JSON lines of another kind
    entries = manifest.values() if isinstance(manifest, dict) else manifest
    foreign = _store(tmp_path, 'test-n3-s0-2123456789abcdef.jsonl', ''.join(json.dumps(e) + '\n' for e in entries).encode())
    png = next((ROOT/'figures').glob('*.png'))
    cases = {'no such results file': tmp_path/'results'/'test-n3-s0-ffffffffffffffff.jsonl',
             'corrupt record': damaged, 'not a whole record': foreign, 'is not a cotfaith results file': png}
    for expect, path in cases.items():                           # a good run first: nothing is written for it either
        with pytest.raises(SystemExit) as e:
            export_cli(['--inspect', str(good), str(path), '--out', str(tmp_path/'out')])
        assert str(e.value.code).startswith('cotfaith: error:') and '\n' not in str(e.value.code)
        assert expect in str(e.value.code) and 'Fix:' in str(e.value.code) and path.name in str(e.value.code)
        assert not (tmp_path/'out').exists()
    p = _export(good, damaged, cwd=tmp_path)                     # the command itself: exit 1, one line on stderr
    assert p.returncode == 1 and p.stderr.startswith('cotfaith: error:') and 'corrupt record' in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and p.stdout == '' and not (tmp_path/'out').exists()


@pytest.mark.slow
def test_inspect_view_shows_a_sample_s_chain_in_chromium(committed):
    pytest.importorskip('inspect_ai')
    sys.path.insert(0, str(ROOT/'tools'))
    from browser import Browser, free_port, wait_port
    out = committed/'logs'
    export_cli(['--inspect', str(results_dir()/SUITE), '--out', str(out)])
    [log] = out.glob('*.eval')
    r = sorted(run_records(results_dir()/SUITE).to_dict('records'), key=lambda r: r['id'])[0]
    port = free_port()
    view = subprocess.Popen([str(Path(sys.executable).parent/'inspect'), 'view', 'start', '--log-dir', str(out),
                             '--host', '127.0.0.1', '--port', str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port)
        with Browser() as b:
            b.goto(f'http://127.0.0.1:{port}/#/logs/{log.name}/samples/sample/{r["id"]}/1/')
            text = b.wait_text(split_steps(r['cot'])[-1][:40])                  # the chain, as the assistant's turn
    finally:
        os.killpg(view.pid, 15)
        view.wait(timeout=30)
    assert r['question'] in text and 'et_faithful' in text
