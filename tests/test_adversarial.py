"""A hostile user's inputs (issue 14), table-driven: for each, the exit status, exactly one `cotfaith: error:` line
with a `Fix:` and no traceback, and every stored file (results, cache, adapter, batch outputs) byte-identical after.

The commands run for real, in subprocesses, on a tiny random Llama (`make_tiny_model`) with a results store and an
adapter made by real runs; nothing is mocked."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotfaith.core import slug
from cotfaith.finetune import FinetuneConfig, finetune
from cotfaith.models import embedded_gguf, gguf_dir
from cotfaith.tiny import make_tiny_gguf, make_tiny_model
from cotfaith.pipeline import ExperimentConfig, run_experiment
from cotfaith.store import store_kind

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ACC = ROOT/'analysis'/'accuracy_et.ipynb'


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    "A tiny model, a results store and an adapter made by real runs, in folders of their own."
    root = tmp_path_factory.mktemp('world')
    env = {'COTFAITH_RESULTS_DIR': str(root/'results'), 'COTFAITH_CACHE_DIR': str(root/'cache'),
           'COTFAITH_FIGURES_DIR': str(root/'figures')}
    tiny, other = make_tiny_model(root/'tiny'), make_tiny_model(root/'tiny-other', seed=1)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        run_experiment(ExperimentConfig(model=str(tiny), n=1, max_new_tokens=8, tests='et'), progress=False)
        ad = finetune(FinetuneConfig(model=str(tiny), n_train=4, batch_size=4, max_length=384, epochs=1))
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    (root/'inputs').mkdir()
    return {'root': root, 'env': env, 'tiny': str(tiny), 'other': str(other), 'adapter': str(ad)}


def _snapshot(root: Path) -> dict:
    "sha256 of every stored file under `root`: not the inputs a case made, lock files, or the memo of file hashes."
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*'))
            if p.is_file() and not {'inputs', 'hashes'} & set(p.relative_to(root).parts) and not p.name.endswith('.lock')}


def _file(w, name, content) -> str:
    p = w['root']/'inputs'/name
    if isinstance(content, bytes): p.write_bytes(content)
    else: p.write_text(content)
    return str(p)


def _folder(w, name, files=()) -> str:
    p = w['root']/'inputs'/name
    p.mkdir(parents=True, exist_ok=True)
    for f in files: shutil.copy(Path(w['tiny'])/f, p/f)
    return str(p)


def _adapter_without(w, name, drop) -> str:
    "A copy of the world's adapter with the files `drop` removed."
    p = w['root']/'inputs'/name
    shutil.copytree(w['adapter'], p)
    for f in drop: (p/f).unlink()
    return str(p)


def _results_file(w) -> Path:
    return next(p for p in sorted((w['root']/'results').rglob('*.jsonl')))


def _batch(w, name, text) -> list:
    return ['--batch', _file(w, name, text)]


GOOD_RUN = f"notebook: {ACC}\nruns:\n  - {{n: 1}}\n"

# name: (command, args(w) -> argv after the command, extra env(w) or None, regex the error line must match)
CASES = {
    # ---- cotfaith-run: flags and values, before anything loads ----
    'unknown flag': ('run', lambda w: ['--modle', 'x'], None, r'unrecognized arguments: --modle x'),
    'flag value of the wrong type': ('run', lambda w: ['--n', 'twenty'], None, r"argument --n: invalid int value: 'twenty'"),
    'negative n': ('run', lambda w: ['--n', '-1'], None, r"parameter 'n' must be at least 0"),
    'zero CoT budget': ('run', lambda w: ['--max_new_tokens', '0'], None, r"'max_new_tokens' must be at least 1"),
    'zero batch size': ('run', lambda w: ['--batch_size', '0'], None, r"'batch_size' must be at least 1"),
    'unknown no-answer rule': ('run', lambda w: ['--no_answer', 'sometimes'], None, r"'no_answer' must be one of"),
    'unknown test': ('run', lambda w: ['--tests', 'et,telepathy'], None, r"unknown test\(s\) \['telepathy'\]"),
    'unknown dataset name': ('run', lambda w: ['--dataset', 'squad'], None, r"unknown dataset 'squad'"),
    # ---- datasets ----
    'dataset path is a folder': ('run', lambda w: ['--dataset', _folder(w, 'dir.jsonl')], None, r'dir.jsonl.*is a folder'),
    'empty dataset file': ('run', lambda w: ['--dataset', _file(w, 'empty.jsonl', b'')], None, r'empty.jsonl.*no examples'),
    'dataset of blank lines': ('run', lambda w: ['--dataset', _file(w, 'blank.jsonl', '\n  \n\n')], None, r'blank.jsonl.*no examples'),
    'dataset row not an object': ('run', lambda w: ['--dataset', _file(w, 'list.jsonl', '["q", "a"]\n')], None,
                                  r'list.jsonl:1: .*object'),
    'dataset row not JSON': ('run', lambda w: ['--dataset', _file(w, 'nojson.jsonl', 'question: 1+1?\n')], None,
                             r'nojson.jsonl:1: not valid JSON'),
    'options as a string': ('run', lambda w: ['--dataset', _file(w, 'optstr.jsonl', '{"question": "q?", "options": "ab", "answer": "A"}\n')],
                            None, r"optstr.jsonl:1: field 'options'"),
    'unknown field in a row': ('run', lambda w: ['--dataset', _file(w, 'extra.jsonl', '{"question": "q?", "answer": "2", "anwser": "3"}\n')],
                               None, r"extra.jsonl:1: unknown field\(s\) \['anwser'\]"),
    'duplicate ids': ('run', lambda w: ['--dataset', _file(w, 'dup.jsonl', '{"id": "a", "question": "q?", "answer": "1"}\n'
                                                                             '{"id": "a", "question": "r?", "answer": "2"}\n')],
                      None, r"dup.jsonl:2: id 'dup-a' is also the id of line 1"),
    'data dir is a file': ('run', lambda w: ['--dataset', 'medqa'], lambda w: {'COTFAITH_DATA_DIR': _file(w, 'datafile', 'x')},
                           r'COTFAITH_DATA_DIR'),
    # ---- models and adapters ----
    'model folder without a tokenizer': ('run', lambda w: ['--model', _folder(w, 'notok', ['config.json', 'model.safetensors'])],
                                         None, r'notok.*tokenizer'),
    'empty model folder': ('run', lambda w: ['--model', _folder(w, 'emptymodel')], None, r'emptymodel'),
    'model path is a file': ('run', lambda w: ['--model', _file(w, 'model.bin', b'\0' * 16)], None, r'model.bin'),
    'adapter folder that does not exist': ('run', lambda w: ['--adapter', str(w['root']/'inputs'/'nothere')], None, r'nothere'),
    'adapter without its weights': ('run', lambda w: ['--adapter', _adapter_without(w, 'noweights', ['adapter_model.safetensors'])],
                                    None, r'noweights.*weights'),
    'adapter without its config': ('run', lambda w: ['--adapter', _adapter_without(w, 'noconfig', ['adapter_config.json'])],
                                   None, r'noconfig.*adapter_config.json'),
    'adapter of another base': ('run', lambda w: ['--model', w['other'], '--adapter', w['adapter']], None, r'trained on .*tiny'),
    'adapter of another base, no meta.json': ('run', lambda w: ['--model', w['other'], '--adapter',
                                                                _adapter_without(w, 'nometa', ['meta.json'])], None,
                                              r'nometa.*(base|shape)'),
    # ---- the folders it writes ----
    'cache dir is a file': ('run', lambda w: [], lambda w: {'COTFAITH_CACHE_DIR': _file(w, 'cachefile', 'x')}, r'COTFAITH_CACHE_DIR'),
    'results dir is a file': ('run', lambda w: ['--n', '2'], lambda w: {'COTFAITH_RESULTS_DIR': _file(w, 'resultsfile', 'x')},
                              r'COTFAITH_RESULTS_DIR'),
    'results dir under a file': ('run', lambda w: ['--n', '2'], lambda w: {'COTFAITH_RESULTS_DIR': _file(w, 'rf2', 'x') + '/sub'},
                                 r'COTFAITH_RESULTS_DIR'),
    # ---- damaged stores ----
    'results row of the wrong schema': ('run', lambda w: _damage(w, lambda b: b'["not", "a", "record"]\n' + b), None,
                                        r'not a whole record'),
    'results row without an id': ('run', lambda w: _damage(w, lambda b: b'{"cot": "x"}\n' + b), None,
                                  r'not a whole record'),
    'results row with an id of the wrong type': ('run', lambda w: _damage(w, lambda b: b'{"id": {"a": 1}}\n' + b), None,
                                                 r'not a whole record'),
    # issue 35.2: valid JSON with the id of a real record but none of its fields would hide that record
    'base record without its fields': ('run', lambda w: _damage(w, _stub, kind='base'), None,
                                       r"-[0-9a-f]{16}\.jsonl:1: not a whole record .*'cot' and 'direct', or 'skipped"),
    'corrupt results line': ('run', lambda w: _damage(w, lambda b: b'{"id": "bro\n' + b), None, r'corrupt record'),
    'results subfolder is a file': ('run', lambda w: [], lambda w: {'COTFAITH_RESULTS_DIR': _blocked_results(w)},
                                    r"the results folder of this run is .*, but .*tiny is a file, not a folder\. Fix: "
                                    r"move .* away, or set COTFAITH_RESULTS_DIR elsewhere"),
    'cache entry of the wrong type': ('run', lambda w: _damage_cache(w, '{"text": 3, "n_tokens": "x", "finish": null}'), None,
                                      r'corrupt cache entry'),
    # ---- issue 35.4: the tracebacks left, by class ----
    'cache entry missing a field': (
        'run', lambda w: _damage_cache(w, '{"text": "x", "finish": "eos"}'), None,
        r"\.json: corrupt cache entry \(no \['n_tokens'\]\)\. Fix: delete this file"),
    'served model that cannot be reached': (
        'run', lambda w: ['--model', f'openai:m@http://127.0.0.1:{_closed_port()}/v1'], None,
        r'cannot reach http://127\.0\.0\.1:\d+/v1\. Fix: start the server'),
    'GGUF model file cut short': (
        'run', lambda w: ['--model', _file(w, 'cut.gguf', embedded_gguf().read_bytes()[:1000])], None,
        r'cut\.gguf cannot be read as a GGUF model \(error: .*\)\. Fix: a file damaged or cut short must be fetched'),
    'disk full while a model is converted': (
        'run-small-disk', lambda w: ['--model', str(_tiny_gguf(w))], None,
        r'no space left to convert .*tiny\.gguf \(File too large\), nothing was kept\. '
        r'Fix: free about 2 MB in .*models, or point COTFAITH_CACHE_DIR elsewhere'),
    'cue test on a dataset without options': (
        'run', lambda w: ['--tests', 'et,cue'], None,
        r"the cue test needs multiple-choice questions, and none of the 1 questions of gsm8k has options\. "
        r"Fix: drop 'cue' from tests"),
    # ---- issue 35.1: every row accounted for ----
    'every row set aside for fine-tuning': (
        'run', lambda w: ['--dataset', _aside_file(w)], None,
        r"aside\.jsonl: all 3 rows fall in its train slice, set aside for fine-tuning: none is left to evaluate\. "
        r"Fix: add rows .*, or pass --eval_only"),
    'eval_only with the train split': (
        'run', lambda w: ['--dataset', 'medqa', '--split', 'train', '--eval_only'], None,
        r"eval_only makes the whole of medqa the test split, and split 'train' asks for its train slice\. Fix: drop"),
    # ---- cotfaith-batch: the batch file ----
    'batch file missing': ('batch', lambda w: ['--batch', str(w['root']/'inputs'/'none.yaml')], None, r'none.yaml does not exist'),
    'batch file is a folder': ('batch', lambda w: ['--batch', _folder(w, 'b.yaml')], None, r'b.yaml is a folder'),
    'batch file empty': ('batch', lambda w: _batch(w, 'e.yaml', ''), None, r'e.yaml: no runs'),
    'batch file malformed': ('batch', lambda w: _batch(w, 'm.yaml', 'runs: [ {n: 1\n'), None, r'm.yaml: not valid YAML'),
    'batch file a list': ('batch', lambda w: _batch(w, 'l.yaml', '- n: 1\n'), None, r'l.yaml: no runs'),
    'batch runs not mappings': ('batch', lambda w: _batch(w, 'r.yaml', f'notebook: {ACC}\nruns: [1, 2]\n'), None,
                                r"'runs' must be a list of mappings"),
    'batch with an unknown key': ('batch', lambda w: _batch(w, 'k.yaml', GOOD_RUN + 'defualts: {n: 1}\n'), None,
                                  r"unknown key\(s\) \['defualts'\]"),
    'batch run without a notebook': ('batch', lambda w: _batch(w, 'nn.yaml', 'runs:\n  - {n: 1}\n'), None, r'run 1 names no notebook'),
    'batch notebook that does not exist': ('batch', lambda w: _batch(w, 'nx.yaml', 'notebook: analysis/nope.ipynb\nruns: [{n: 1}]\n'),
                                           None, r'nope.ipynb does not exist'),
    'batch with an unknown parameter': ('batch', lambda w: _batch(w, 'u.yaml', f'notebook: {ACC}\nruns:\n  - {{modle: x}}\n'), None,
                                        r"unknown parameter\(s\) \['modle'\]"),
    'batch with an unknown default': ('batch', lambda w: _batch(w, 'ud.yaml', f'notebook: {ACC}\ndefaults: {{sed: 1}}\nruns: [{{n: 1}}]\n'),
                                      None, r"unknown parameter\(s\) \['sed'\]"),
    'batch unknown flag': ('batch', lambda w: ['--modle', 'x'], None, r'unrecognized arguments: --modle x'),
}


def _damage(w, edit, kind=None) -> list:
    "Replace a results file of the world's run (of store `kind`: any if None) by `edit(its bytes)`, in a copy."
    res = w['root']/'inputs'/f'results-{len(list((w["root"]/"inputs").iterdir()))}'
    shutil.copytree(w['root']/'results', res)
    f = next(p for p in sorted(res.rglob('gsm8k/*.jsonl'))
             if p.parent.parent.name.endswith('tiny') and kind in (None, store_kind(p)))              # the world's run
    f.write_bytes(edit(f.read_bytes()))
    w['case_env'] = {'COTFAITH_RESULTS_DIR': str(res)}
    return []


def _aside_file(w) -> str:
    "A file of three rows whose ids all fall in its train slice (`data.in_train_slice`): none is left to evaluate."
    from cotfaith.data import in_train_slice
    ids = [i for i in range(200) if in_train_slice(f'aside-{i}', 0.2)][:3]
    return _file(w, 'aside.jsonl', ''.join(json.dumps({'id': i, 'question': f'What is {i} + 1?', 'answer': str(i + 1)})
                                           + '\n' for i in ids))


def _stub(data: bytes) -> bytes:
    "A line with the id of the file's first record and nothing else a record has, put before it."
    return json.dumps({'id': json.loads(data.split(b'\n')[0])['id'], 'provenance': {}}).encode() + b'\n' + data


def _damage_cache(w, text) -> list:
    "A copy of the cache with every generation entry replaced by `text`, and no results (so the cache is read)."
    cache = w['root']/'inputs'/f'cache-{len(list((w["root"]/"inputs").iterdir()))}'
    shutil.copytree(w['root']/'cache', cache, ignore=shutil.ignore_patterns('*.lock'))
    for entry in (cache/'generations').rglob('*.json'): entry.write_text(text)
    w['case_env'] = {'COTFAITH_CACHE_DIR': str(cache), 'COTFAITH_RESULTS_DIR': str(cache) + '-results'}
    return []


def _blocked_results(w) -> str:
    "A results dir where the run's model folder would go is a file."
    res = w['root']/'inputs'/'results-blocked'
    res.mkdir()
    (res/slug(w['tiny'])).write_text('not a folder')
    return str(res)


def _tiny_gguf(w) -> Path:
    "A GGUF model of 335 kB (`tiny.make_tiny_gguf`), among the case's inputs."
    return make_tiny_gguf(w['root']/'inputs'/'tiny.gguf')


def _closed_port() -> int:
    "A port on 127.0.0.1 that nothing listens on."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _command(w, kind, args) -> list:
    if kind == 'run-small-disk':              # a file-size limit of 100 kB (512-byte blocks) stands for a full disk
        return ['sh', '-c', 'ulimit -f 200 && exec "$@"', 'sh', *_command(w, 'run', args)]
    if kind == 'run':
        return [str(BIN/'cotfaith-run'), '--model', w['tiny'], '--n', '1', '--max_new_tokens', '8', '--tests', 'et', *args]
    return [str(BIN/'cotfaith-batch'), *args]


@pytest.mark.parametrize('case', list(CASES))
def test_a_bad_input_is_one_clear_error_that_keeps_every_stored_file(case, world):
    kind, args, env, match = CASES[case]
    world.pop('case_env', None)
    argv = _command(world, kind, args(world))
    extra = (env(world) if env else {}) | world.pop('case_env', {})
    before = _snapshot(world['root'])
    r = subprocess.run(argv, capture_output=True, text=True, env=os.environ | world['env'] | extra, cwd=world['root'], timeout=600)
    out = r.stdout + r.stderr
    errors = [l for l in out.splitlines() if l.startswith('cotfaith: error:')]
    assert r.returncode == 1, f'exit {r.returncode}: {out[-1500:]}'
    assert len(errors) == 1 and 'Traceback' not in out, out[-1500:]
    assert re.search(match, errors[0]) and 'Fix:' in errors[0], errors[0]
    assert _snapshot(world['root']) == before


def test_a_misspelt_papermill_parameter_stops_the_notebook_before_it_runs(tmp_path):
    "35.7: papermill run by hand prints its own traceback; its last line is ours, with the fix, and nothing is drawn."
    env = os.environ | {'COTFAITH_FIGURES_DIR': str(tmp_path/'figures'),
                        'COTFAITH_RESULTS_DIR': str(tmp_path/'results')}
    r = subprocess.run([str(BIN/'papermill'), str(ACC), str(tmp_path/'out.ipynb'), '-k', 'cotfaith', '-p', 'modle', 'x',
                        '-p', 'n', '1'], cwd=ACC.parent, env=env, capture_output=True, text=True, timeout=600)
    last = [l for l in r.stderr.splitlines() if l.strip()][-1]
    assert r.returncode == 1, r.stderr[-1500:]
    assert last == ("ConfigError: unknown parameter(s) ['modle'] for this notebook. "
                    "Fix: use the names of its parameters cell")
    assert not (tmp_path/'figures').exists() and not (tmp_path/'results').exists()


def test_sigterm_is_handled_like_ctrl_c(world, tmp_path):
    env = os.environ | world['env'] | {'COTFAITH_RESULTS_DIR': str(tmp_path/'results')}
    p = subprocess.Popen(_command(world, 'run', ['--n', '40', '--max_new_tokens', '64', '--batch_size', '1']), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path/'results').exists() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
    time.sleep(1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-1500:]
    assert 'cotfaith: interrupted. Kept:' in err and 'Traceback' not in err


def test_a_valid_last_record_without_its_newline_is_kept(world, tmp_path):
    env = os.environ | world['env'] | {'COTFAITH_RESULTS_DIR': str(tmp_path/'results')}
    run = lambda: subprocess.run(_command(world, 'run', ['--n', '2']), capture_output=True, text=True, env=env)
    assert run().returncode == 0
    f = next((tmp_path/'results').rglob('*.jsonl'))
    first = f.read_bytes().split(b'\n')[0]
    f.write_bytes(first)                                                  # one whole record, its newline lost
    r = run()                                                             # reads it, computes the other, appends
    assert r.returncode == 0, r.stderr[-1500:]
    lines = f.read_bytes().split(b'\n')
    assert lines[0] == first and len([l for l in lines if l]) == 2       # kept, not cut and recomputed


def test_files_are_written_with_the_users_umask(world, tmp_path):
    env = os.environ | world['env'] | {'COTFAITH_RESULTS_DIR': str(tmp_path/'results'), 'COTFAITH_CACHE_DIR': str(tmp_path/'cache')}
    r = subprocess.run(['sh', '-c', 'umask 002 && exec "$@"', 'sh', *_command(world, 'run', [])], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-1500:]
    files = [p for p in tmp_path.rglob('*') if p.is_file() and not p.name.endswith('.lock')]
    assert files and all(p.stat().st_mode & 0o777 == 0o664 for p in files), {str(p): oct(p.stat().st_mode) for p in files}


def test_a_converted_model_and_a_fine_tuned_adapter_keep_the_users_umask(world, tmp_path, monkeypatch):
    "35.6: safetensors writes its weights 0600; a GGUF model converted here and the world's adapter have open()'s mode."
    monkeypatch.setenv('COTFAITH_CACHE_DIR', str(tmp_path/'cache'))
    gguf = make_tiny_gguf(tmp_path/'tiny.gguf')
    old = os.umask(0o002)
    try: folder = gguf_dir(gguf)
    finally: os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
    assert 'model.safetensors' in modes and set(modes.values()) == {'0o664'}, modes
    adapter = {p.name: p.stat().st_mode & 0o777 for p in Path(world['adapter']).iterdir()}   # trained under this umask
    assert 'adapter_model.safetensors' in adapter and set(adapter.values()) == {0o666 & ~old}, adapter


def _figure_project(root: Path) -> Path:
    "A project of its own whose one template draws figure `dot_<x>` (a file that says `y`), as `plots.save_fig` does."
    import nbformat
    root.mkdir()
    (root/'settings.ini').write_text('[DEFAULT]\nlib_name = elsewhere\n')
    draw = ("import json, os\nfrom pathlib import Path\n"                  # save_fig's protocol, no plotting stack
            "(d := Path(os.environ['COTFAITH_FIGURES_DIR'])).mkdir(parents=True, exist_ok=True)\n"
            "(d/f'dot_{x}.png').write_text(f'y = {y}')\n"
            "with open(os.environ['COTFAITH_RUN_LOG'], 'a') as f: f.write(json.dumps({'figure': f'dot_{x}', "
            "'files': [f'dot_{x}.png']}) + '\\n')")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1\ny = 1', metadata={'tags': ['parameters']}),
                                         nbformat.v4.new_code_cell(draw)])
    nb.metadata['kernelspec'] = {'name': 'cotfaith', 'display_name': 'cotfaith', 'language': 'python'}
    nbformat.write(nb, root/'t.ipynb')
    return root


def test_two_runs_drawing_one_figure_stop_the_batch_and_the_second_never_reaches_the_figures(tmp_path):
    """35.5: run 2 draws into a scratch folder, finds that run 1 of the batch drew dot_4, and stops the batch: the file
    run 1 drew and the manifest that names it stay as they were."""
    proj = _figure_project(tmp_path/'proj')
    env = {k: v for k, v in os.environ.items() if k != 'COTFAITH_FIGURES_DIR'}
    env['COTFAITH_CACHE_DIR'] = str(tmp_path/'cache')
    (figs := proj/'figures').mkdir()                     # run 1 drew dot_4 in an earlier batch, which was committed
    (figs/'dot_4.png').write_bytes(b'drawn by run 1')
    sha = hashlib.sha256(b'drawn by run 1').hexdigest()
    (figs/'manifest.json').write_text(json.dumps({'dot_4': {'notebook': 't.ipynb', 'parameters': {'x': 4, 'y': 1},
                                                            'files': ['dot_4.png'], 'sha256': {'dot_4.png': sha}}}))
    before = _snapshot(figs)
    (proj/'grid.yaml').write_text('short_names: true\nnotebook: t.ipynb\nruns:\n  - {x: 4, y: 2}\n  - {x: 4, y: 1}\n')
    r = subprocess.run([str(BIN/'cotfaith-batch'), '--batch', 'grid.yaml'], cwd=proj, env=env, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    errors = [l for l in out.splitlines() if l.startswith('cotfaith: error:')]
    assert r.returncode == 1 and len(errors) == 1 and 'Traceback' not in out, out[-1500:]
    assert re.search(r"t\.ipynb model__x-4__y-2 drew \['dot_4'\], which \['model__x-4__y-1'\] of this batch drew "
                     r"too: none of its figures was moved into .*figures, and the manifest is as it was\. "
                     r"Fix: give the runs distinct figure_name parameters", errors[0]), errors[0]
    assert _snapshot(figs) == before and '[2/2]' not in r.stdout         # nothing moved, and the batch stopped there


def test_two_runs_that_would_draw_one_figure_stop_the_batch_before_either_runs(tmp_path):
    """35.5: a short_names grid of the real accuracy_et template with two n: both would draw
    smollm2-135m__gsm8k__accuracy_et. Found from the template's `figures` cell before any run starts (`09e_plan`):
    one line naming both runs, no notebook executed, the committed figure and the manifest byte-identical."""
    proj = tmp_path/'proj'
    (proj/'analysis').mkdir(parents=True)
    (proj/'settings.ini').write_text('[DEFAULT]\nlib_name = elsewhere\n')
    shutil.copy(ACC, proj/'analysis'/ACC.name)
    (figs := proj/'figures').mkdir()                                     # committed by an earlier batch
    (figs/'smollm2-135m__gsm8k__accuracy_et.png').write_bytes(b'drawn with n=20')
    (figs/'manifest.json').write_text(json.dumps({'smollm2-135m__gsm8k__accuracy_et': {
        'notebook': 'analysis/accuracy_et.ipynb', 'parameters': {'model': 'smollm2-135m', 'n': 20},
        'files': ['smollm2-135m__gsm8k__accuracy_et.png'],
        'sha256': {'smollm2-135m__gsm8k__accuracy_et.png': hashlib.sha256(b'drawn with n=20').hexdigest()}}}))
    before = _snapshot(figs)
    (proj/'grid.yaml').write_text('short_names: true\nnotebook: analysis/accuracy_et.ipynb\ndefaults: {model: smollm2-135m}\n'
                                  'runs:\n  - {n: 2}\n  - {dataset: medqa}\n  - {n: 3}\n')
    env = {k: v for k, v in os.environ.items() if k != 'COTFAITH_FIGURES_DIR'} | {'COTFAITH_CACHE_DIR': str(tmp_path/'cache')}
    r = subprocess.run([str(BIN/'cotfaith-batch'), '--batch', 'grid.yaml'], cwd=proj, env=env, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    errors = [l for l in out.splitlines() if l.startswith('cotfaith: error:')]
    assert r.returncode == 1 and len(errors) == 1 and 'Traceback' not in out, out[-1500:]
    assert errors[0] == ("cotfaith: error: grid.yaml: runs 1 (accuracy_et.ipynb smollm2-135m__n-2) and 3 "
                         "(accuracy_et.ipynb smollm2-135m__n-3) would both draw 'smollm2-135m__gsm8k__accuracy_et': no run "
                         "was started, so no figure was drawn and the manifest is as it was. Fix: give the runs distinct "
                         "figure_name parameters, or remove short_names from the batch file"), errors[0]
    assert _snapshot(figs) == before and not (proj/'runs').exists() and '[1/3]' not in r.stdout


def _damaged_checkpoint(ckpt: Path, how: str):
    "`ckpt` as a kill at point `how` of its write would leave it (HF writes the weights, optimizer, rng, then the state)."
    if how == 'weights only':
        for f in ckpt.iterdir():
            if not f.name.startswith('adapter'): f.unlink()
    elif how == 'optimizer torn':
        (ckpt/'optimizer.pt').write_bytes((ckpt/'optimizer.pt').read_bytes()[:100])
        (ckpt/'trainer_state.json').unlink()
    elif how == 'state torn':
        (ckpt/'trainer_state.json').write_text((ckpt/'trainer_state.json').read_text()[:40])


@pytest.mark.parametrize('state', ['weights only', 'optimizer torn', 'state torn', 'whole, then a newer one torn', 'whole'])
def test_a_fine_tune_killed_while_writing_a_checkpoint_resumes_to_the_same_adapter(state, world, tmp_path):
    "14.8: a kill at any point of a checkpoint write; the run resumes from the newest whole checkpoint (or from scratch)."
    from cotfaith.finetune import _train, adapter_dir, train_examples
    from cotfaith.models import load_model, resolve_spec
    cfg = FinetuneConfig(model=world['tiny'], n_train=24, batch_size=4, max_length=384, epochs=1, seed=3)   # 6 steps
    ref = finetune(cfg, root=tmp_path/'ref')
    c = cfg.resolved()
    exs = train_examples(c)
    first = tmp_path/'first'                                             # a real run's last checkpoint, left by _train
    _train(load_model(c.model), c, exs, first)
    ckpt = max(first.glob('checkpoint-*'), key=lambda d: int(d.name.split('-')[1]))
    work = adapter_dir(c, resolve_spec(c.model)[1], [e.id for e in exs], tmp_path/'run')
    work = work.with_name(work.name + '.partial')
    shutil.copytree(ckpt, work/ckpt.name)
    if state == 'whole, then a newer one torn':
        newer = work/f"checkpoint-{int(ckpt.name.split('-')[1]) + 1}"
        shutil.copytree(ckpt, newer)
        _damaged_checkpoint(newer, 'optimizer torn')
    elif state != 'whole':
        _damaged_checkpoint(work/ckpt.name, state)
    done = finetune(cfg, root=tmp_path/'run')
    assert (done/'adapter_model.safetensors').read_bytes() == (ref/'adapter_model.safetensors').read_bytes()
    assert json.loads((done/'train_log.json').read_text()) == json.loads((ref/'train_log.json').read_text())


def test_a_question_too_long_for_the_context_is_skipped_before_generation(world, tmp_path):
    "14.9: no minutes of attention over a prompt that cannot fit; the record says why and no share counts it."
    from cotfaith.data import in_train_slice
    from cotfaith.stats import accuracy_table
    long_q = 'Add one more apple. ' * 1200                                  # far over the tiny model's 2,048 positions
    data = tmp_path/'long.jsonl'
    lid = next(f'q{i}' for i in range(100) if not in_train_slice(f'long-q{i}', 0.2))   # an id of the test slice
    data.write_text(json.dumps({'id': lid, 'question': long_q + 'How many?', 'answer': '1200'}) + '\n'
                    + ''.join(json.dumps({'id': f's{i}', 'question': f'What is {i} + 1?', 'answer': str(i + 1)}) + '\n'
                              for i in range(9)))
    env = {'COTFAITH_RESULTS_DIR': str(tmp_path/'results'), 'COTFAITH_CACHE_DIR': str(tmp_path/'cache')}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        t0 = time.time()
        recs = run_experiment(ExperimentConfig(model=world['tiny'], dataset=str(data), n=0, max_new_tokens=8, answer_tokens=4,
                                               tests='et,filler'), progress=False)
        seconds = time.time() - t0
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    skipped = recs[recs['id'] == f'long-{lid}']
    assert len(skipped) == 1 and skipped['skipped'].iloc[0].startswith('longer than the context') and skipped['cot'].isna().all()
    assert skipped['et_skipped'].iloc[0] == skipped['filler_skipped'].iloc[0] == skipped['skipped'].iloc[0]
    assert int(accuracy_table(recs)['n'].iloc[0]) == len(recs) - 1 and seconds < 120


def test_a_full_disk_is_one_clear_error_that_says_what_was_kept_and_tears_nothing(world, tmp_path):
    "Out of space (here: the file-size limit, EFBIG) while writing records: one line, exit 1, and a clean resume."
    env = os.environ | world['env'] | {'COTFAITH_RESULTS_DIR': str(tmp_path/'results'), 'COTFAITH_CACHE_DIR': str(tmp_path/'cache')}
    argv = _command(world, 'run', ['--n', '6'])
    r = subprocess.run(['sh', '-c', 'ulimit -f 4 && exec "$@"', 'sh', *argv], capture_output=True, text=True, env=env)
    errors = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith('cotfaith: error:')]
    assert r.returncode == 1 and len(errors) == 1 and 'Traceback' not in r.stderr, r.stderr[-1500:]
    assert re.search(r'no space left to write .*Kept: base \d/6(, \w+ \d/6)* instances.*Fix: free some space', errors[0]), errors[0]
    again = subprocess.run(argv, capture_output=True, text=True, env=env)            # the space is back: it resumes
    assert again.returncode == 0, again.stderr[-1500:]
    for f in (tmp_path/'results').rglob('*.jsonl'):                                 # base records and every test's
        ids = [json.loads(l)['id'] for l in f.read_text().splitlines()]
        assert len(ids) == len(set(ids)) == 6, f


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads every file: an unreadable dataset only exists for other users')
def test_an_unreadable_dataset_is_one_clear_error(world):
    f = Path(_file(world, 'locked.jsonl', '{"question": "1+1?", "answer": "2"}\n'))
    f.chmod(0)
    r = subprocess.run(_command(world, 'run', ['--dataset', str(f)]), capture_output=True, text=True,
                       env=os.environ | world['env'], cwd=world['root'], timeout=600)
    errors = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith('cotfaith: error:')]
    assert r.returncode == 1 and len(errors) == 1 and 'locked.jsonl' in errors[0] and 'not readable' in errors[0], r.stderr
