"The analysis templates: one literal parameters cell each, tags that survive nbdev_clean, and a real papermill run."
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import papermill as pm
import pytest

from cotfaith.batch import batch_runs, run_batch
from cotfaith.plan import figure_names
from cotfaith.status import eval_files, needs, status

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((ROOT/'analysis').glob('*.ipynb'))


def _param_cells(nb):
    return [c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]


@pytest.mark.parametrize('path', TEMPLATES, ids=lambda p: p.name)
def test_template_has_one_parameters_cell_of_literals(path):
    cells = _param_cells(json.loads(path.read_text()))
    assert len(cells) == 1
    for node in ast.parse(''.join(cells[0]['source'])).body:
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)                            # raises if a value is computed
    assert pm.inspect_notebook(str(path))                          # papermill sees the parameters


@pytest.mark.parametrize('path', TEMPLATES, ids=lambda p: p.name)
def test_parameters_tag_survives_nbdev_clean(path, tmp_path):
    shutil.copytree(ROOT, tmp_path/'repo', ignore=shutil.ignore_patterns('.venv', '.cache', 'results', 'runs', '.git', 'figures'))
    copy = tmp_path/'repo'/'analysis'/path.name
    subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(copy)], check=True, cwd=tmp_path/'repo')
    assert len(_param_cells(json.loads(copy.read_text()))) == 1


def test_batch_files_name_existing_notebooks_and_their_parameters():
    for batch in (ROOT/'params').glob('*.yaml'):
        runs = batch_runs(batch)
        assert runs and len({(nb.stem, name) for nb, _, name in runs}) == len(runs)
        for nb, params, _ in runs:
            declared = pm.inspect_notebook(str(nb))
            assert nb.exists() and set(params) <= set(declared), (nb.name, set(params) - set(declared))


def test_ci_grid_runs_through_papermill_and_writes_the_figures(tmp_outputs):
    outs = run_batch(ROOT/'params'/'ci.yaml', out_dir=tmp_outputs/'runs')
    assert [o.parent.name for o in outs] == ['accuracy_et', 'accuracy_et', 'finetune', 'transfer', 'rank_ablation', 'faithfulness', 'summary']
    figs = sorted(p.name for p in (tmp_outputs/'figures').iterdir())
    stems = ['smollm2-135m__gsm8k__accuracy_et', 'smollm2-135m__cosmosqa__accuracy_et', 'smollm2-135m__ft-gsm8k-r8__before_after',
             'smollm2-135m__transfer-r8', 'smollm2-135m__rank-ablation-gsm8k', 'smollm2-135m__faithfulness-gsm8k__ft-gsm8k-r8',
             'smollm2-135m__summary']
    assert figs == sorted([f'{s}.{x}' for s in stems for x in ('pdf', 'png')] + ['manifest.json', 'smollm2-135m__summary.csv',
                                                                                'smollm2-135m__summary.md'])
    executed = json.loads(outs[0].read_text())
    injected = [c for c in executed['cells'] if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert "n = 2" in ''.join(injected[0]['source'])
    # the steps `status.needs` spells out for each run are the ones its template ran: same results files, and done
    manifest = json.loads((tmp_outputs/'figures'/'manifest.json').read_text())
    for nb, params, name in batch_runs(ROOT/'params'/'ci.yaml'):
        files = {str(f.relative_to(tmp_outputs/'results')) for s in needs(nb, params) if s[0] == 'eval'
                 for f in eval_files(s).values()}
        read = {r for e in manifest.values() if e['parameters'] == params and e['notebook'] == f'analysis/{nb.name}'
                for r in e['results']}
        assert files == read, (name, files ^ read)
    assert all(' done: ' in line or 'counted in the runs above' in line for line in status(ROOT/'params'/'ci.yaml')[:-1])
    for nb, params, name in batch_runs(ROOT/'params'/'ci.yaml'):       # the names a batch checks first are the drawn ones
        drew = sorted(f for f, e in manifest.items() if e['parameters'] == params and e['notebook'] == f'analysis/{nb.name}')
        assert figure_names(nb, params) == drew, (name, figure_names(nb, params), drew)


def test_a_served_model_runs_every_test_as_it_is_with_no_fine_tuned_side(tmp_outputs):
    "The paper's GPT rows: faithfulness.ipynb with ft_dataset 'none' (and the cue test), through a llama.cpp server."
    nb = ROOT/'analysis'/'faithfulness.ipynb'
    out = pm.execute_notebook(nb, tmp_outputs/'served.ipynb', kernel_name='cotfaith', cwd=nb.parent, progress_bar=False,
                              parameters={'model': 'llama.cpp:smollm2-135m', 'ft_dataset': 'none', 'n': 2,
                                          'dataset': 'medmcqa', 'tests': 'et,paraphrase,filler,mistake,cue',
                                          'max_new_tokens': 48, 'figure_name': 'served'})
    code = [c for c in out['cells'] if c['cell_type'] == 'code']
    per_test = next(o for c in code if 'per_test = ' in ''.join(c['source']) for o in c['outputs'])['data']['text/plain']
    for name in ('early termination', 'paraphrasing', 'filler', 'adding mistakes'):
        assert name in per_test.lower() and 'fine-tuned' not in per_test
    assert sorted(p.name for p in (tmp_outputs/'figures').glob('served*')) == ['served.pdf', 'served.png', 'served__cue.pdf',
                                                                              'served__cue.png']


def test_a_fine_tuned_model_behind_a_server_is_compared_as_served_and_nothing_is_trained(tmp_outputs, monkeypatch):
    "At scale: base and LoRA module served (here two llama.cpp servers), finetune and faithfulness train nothing."
    from cotfaith.core import slug
    from cotfaith.finetune import FinetuneConfig, finetune
    from cotfaith.lora_gguf import adapter_gguf
    from cotfaith.server import gguf_path, start_server
    ad = finetune(FinetuneConfig(dataset='gsm8k', n_train=8, rank=4, max_length=384, epochs=1, load_in_4bit=False))
    lora = adapter_gguf(str(ad), gguf_path('smollm2-135m'))                  # trained and converted before, elsewhere
    monkeypatch.setenv('COTFAITH_CACHE_DIR', str(tmp_outputs/'cache'))       # the runs' own: to see what they train
    with start_server(alias='smollm2-135m') as base, start_server(alias='tuned', lora=(lora,)) as tuned:
        model, tuned_model = f'openai:smollm2-135m@{base.url}', f'openai:tuned@{tuned.url}'
        common = {'model': model, 'tuned_model': tuned_model, 'ft_dataset': 'gsm8k', 'n': 2, 'max_new_tokens': 32}
        at_scale = {'model': model, 'n': 2, 'max_new_tokens': 32}                # the grid's other two: one served each
        outs = [pm.execute_notebook(ROOT/'analysis'/f'{name}.ipynb', tmp_outputs/f'{name}.ipynb', cwd=ROOT/'analysis',
                                    kernel_name='cotfaith', progress_bar=False, parameters=params)
                for name, params in (('finetune', common | {'eval_datasets': ['medmcqa']}),    # short questions
                                     ('faithfulness', common | {'dataset': 'medmcqa', 'n': 1, 'tests': 'et,paraphrase'}),
                                     ('transfer', at_scale | {'datasets': ['medmcqa'], 'tuned_models': {'medmcqa': tuned_model}}),
                                     ('rank_ablation', at_scale | {'dataset': 'medmcqa', 'ranks': [4], 'tuned_models': {4: tuned_model}}))]
    printed = json.dumps(outs[0]['cells'])
    assert 'nothing is trained here' in printed and not (tmp_outputs/'cache'/'adapters').exists()
    stem = f'{slug(model)}__vs-{slug(tuned_model)}'
    faith = f'{slug(model)}__faithfulness-medmcqa__vs-{slug(tuned_model)}'
    drawn = {p.name for p in (tmp_outputs/'figures').glob('*.png')}
    assert {f'{stem}__before_after.png', f'{faith}.png'} < drawn and len(drawn) == 4
    assert {n.split('-vs-served-')[0] for n in drawn if '-vs-served-' in n} == {f'{slug(model)}__transfer-r8',
                                                                              f'{slug(model)}__rank-ablation-medmcqa'}
    served = {p.name: p.read_text() for p in (tmp_outputs/'results'/slug(tuned_model)).rglob('*.jsonl')}
    records = [t for name, t in served.items() if name.count('.') == 1]      # CoT and direct answers (not a test's)
    assert len(records) == 2 and all('"lora"' in t for t in records)         # keyed by the served adapter
    assert any(f'"paraphraser": "{model}"' in t for t in served.values())    # rewritten by the base, as the base is


def test_a_tuned_model_with_no_tuned_side_stops_the_run_with_one_clear_line(tmp_outputs):
    nb = ROOT/'analysis'/'faithfulness.ipynb'
    with pytest.raises(pm.PapermillExecutionError, match="tuned_model needs a tuned side"):
        pm.execute_notebook(nb, tmp_outputs/'none.ipynb', kernel_name='cotfaith', cwd=nb.parent, progress_bar=False,
                            parameters={'ft_dataset': 'none', 'tuned_model': 'openai:tuned@http://127.0.0.1:9/v1'})


def test_a_wrongly_typed_parameter_fails_the_run(tmp_outputs):
    nb = ROOT/'analysis'/'accuracy_et.ipynb'
    with pytest.raises(pm.PapermillExecutionError, match="parameter 'n' must be int, got 'twenty'"):
        pm.execute_notebook(nb, tmp_outputs/'bad.ipynb', parameters={'n': 'twenty'}, kernel_name='cotfaith', cwd=nb.parent, progress_bar=False)


def test_a_test_s_own_setting_reaches_the_run_through_papermill_and_is_checked_by_its_test(tmp_outputs):
    "`settings` carries any test's settings (`registry.SETTINGS`) into the config, which checks them before any work."
    nb = ROOT/'analysis'/'faithfulness.ipynb'
    with pytest.raises(pm.PapermillExecutionError, match=r"parameter 'anchor_temperature' must be a number in \(0, 2\]"):
        pm.execute_notebook(nb, tmp_outputs/'bad.ipynb', kernel_name='cotfaith', cwd=nb.parent, progress_bar=False,
                            parameters={'ft_dataset': 'none', 'tests': 'et,anchor', 'settings': {'anchor_temperature': 5}})


def _code(path):
    return '\n'.join(''.join(c['source']) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code')


@pytest.mark.parametrize('path', [p for p in TEMPLATES if 'run_finetuned(' in _code(p)], ids=lambda p: p.name)
def test_every_base_vs_tuned_comparison_runs_the_base_at_the_tuned_precision(path):
    "The base side is `run_base(ft, cfg)` (the tuned model's precision and quantisation), never a bare `run_experiment`."
    code = _code(path)
    assert 'run_experiment(' not in code, f'{path.name}: use run_base(ft, cfg) for the base side of a comparison'
    assert 'run_base(' in code or path.name == 'organisms.ipynb'        # the organisms compare fine-tunes with each other


def test_every_template_stops_on_a_misspelt_parameter():
    for path in TEMPLATES:
        code = [''.join(c['source']) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code']
        first = next(i for i, c in enumerate(code) if 'check_parameters()' in c)
        assert first == 1, path.name                                    # the first cell after the parameters


def test_a_batch_names_figures_per_parameter_set_and_runs_from_any_folder(tmp_path):
    "14.3 and 14.7: two seeds draw two figures; a redrawn or overwritten figure is noticed; folders resolve against the cwd."
    from cotfaith.tiny import make_tiny_model
    tiny = make_tiny_model(tmp_path/'tiny')
    acc = ROOT/'analysis'/'accuracy_et.ipynb'
    batch = tmp_path/'grid'/'seeds.yaml'
    batch.parent.mkdir()
    batch.write_text(f"notebook: {acc}\ndefaults: {{model: {tiny}, n: 1, max_new_tokens: 8, answer_tokens: 4}}\n"
                     "runs:\n  - {seed: 0}\n  - {seed: 1}\n")
    (tmp_path/'elsewhere').mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith('COTFAITH_') or k == 'COTFAITH_DATA_DIR'}
    env |= {'COTFAITH_RESULTS_DIR': 'res', 'COTFAITH_FIGURES_DIR': '../figs', 'COTFAITH_CACHE_DIR': str(tmp_path/'cache')}
    cli = [str(Path(sys.executable).parent/'cotfaith-batch'), '--batch', '../grid/seeds.yaml']
    run = lambda: subprocess.run(cli, cwd=tmp_path/'elsewhere', env=env, capture_output=True, text=True)
    r = run()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    figs = sorted(p.name for p in (tmp_path/'figs').glob('*.png'))
    assert len(figs) == 2 and all(re.fullmatch(r'.*tiny__gsm8k__accuracy_et__p-[0-9a-f]{8}\.png', f) for f in figs), figs
    assert list((tmp_path/'elsewhere'/'res').rglob('*.jsonl')) and not (acc.parent/'res').exists()
    assert (tmp_path/'grid'/'runs'/'accuracy_et').is_dir()                # beside the batch file, not in the cwd
    manifest = json.loads((tmp_path/'figs'/'manifest.json').read_text())
    assert all(set(m['sha256']) == set(m['files']) for m in manifest.values())
    assert run().stdout.count('done, skipped') == 2
    (tmp_path/'figs'/figs[0]).write_bytes(b'overwritten by someone else')
    out = run().stdout
    assert out.count('done, skipped') == 1 and (tmp_path/'figs'/figs[0]).read_bytes() != b'overwritten by someone else'


def test_a_short_names_batch_keeps_short_names_unless_overridden():
    from cotfaith.batch import figure_tag
    grid = ROOT/'params'/'default.yaml'
    (_, params, _), = [r for r in batch_runs(grid) if r[1].get('dataset') == 'gsm8k' and 'accuracy' in r[0].name]
    assert figure_tag(grid, params) == '' and figure_tag(grid, params, model=None, n=None) == ''
    smoke = figure_tag(grid, params | {'n': 2}, n=2)
    assert smoke.startswith('p-') and smoke != figure_tag(grid, params | {'n': 3}, n=3)


def _tiny_batch(tmp_path, defaults):
    "A batch of two accuracy_et runs (seeds 0 and 1) on a tiny random model, and the env that keeps its files in tmp_path."
    from cotfaith.tiny import make_tiny_model
    tiny = make_tiny_model(tmp_path/'tiny')
    batch = tmp_path/'b.yaml'
    batch.write_text(f"notebook: {ROOT/'analysis'/'accuracy_et.ipynb'}\ndefaults: {{model: {tiny}, {defaults}}}\n"
                     "runs:\n  - {seed: 0}\n  - {seed: 1}\n")
    env = os.environ | {'COTFAITH_RESULTS_DIR': str(tmp_path/'res'), 'COTFAITH_FIGURES_DIR': str(tmp_path/'figs'),
                        'COTFAITH_CACHE_DIR': str(tmp_path/'cache')}
    return batch, env


def test_two_batches_on_one_grid_compute_each_run_once(tmp_path):
    "14: a lock per run; the second batch waits for a run the first is computing, then finds it done."
    batch, env = _tiny_batch(tmp_path, 'n: 1, max_new_tokens: 8, answer_tokens: 4')
    cli = [str(Path(sys.executable).parent/'cotfaith-batch'), '--batch', str(batch)]
    ps = [subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in ps]
    assert [p.returncode for p in ps] == [0, 0], outs
    assert sum(o.count('  -> ') for o in outs) == 2 and sum(o.count('done, skipped') for o in outs) == 2, outs


@pytest.mark.parametrize('sig,code', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_batch_alone_stops_it_and_leaves_the_run_not_done(sig, code, tmp_path):
    "`kill -INT <batch>` (not the whole process group): papermill swallows the interrupt; the batch must not go on."
    batch, env = _tiny_batch(tmp_path, 'n: 40, max_new_tokens: 64, answer_tokens: 4, batch_size: 1')
    p = subprocess.Popen([str(Path(sys.executable).parent/'cotfaith-batch'), '--batch', str(batch)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((tmp_path/'cache').rglob('generations/*/*.json')) and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    assert p.returncode == code, out[-1500:] + err[-1500:]
    assert 'cotfaith: interrupted during accuracy_et.ipynb' in err and '[2/2]' not in out
    assert not list((tmp_path/'runs').rglob('*.done.json'))
    assert not [l for l in err.splitlines() if l.startswith('cotfaith: error:')] and 'Traceback' not in err, err[-3000:]
    assert list((tmp_path/'runs').rglob('*.kernel.log'))             # the kernel's own log (zmq shutdown noise) goes here


def _one_figure_project(root: Path) -> Path:
    "A project of its own (a settings.ini) with one template that draws one figure named after its parameter."
    import nbformat
    root.mkdir()
    (root/'settings.ini').write_text('[DEFAULT]\nlib_name = elsewhere\n')
    draw = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nfrom cotfaith.plots import save_fig\n"
            "save_fig(plt.figure(figsize=(1, 1)), f'dot_{x}')")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1', metadata={'tags': ['parameters']}),
                                         nbformat.v4.new_code_cell(draw)])
    nb.metadata['kernelspec'] = {'name': 'cotfaith', 'display_name': 'cotfaith', 'language': 'python'}
    nbformat.write(nb, root/'t.ipynb')
    return root/'t.ipynb'


def test_only_a_committed_grid_draws_into_the_committed_figures_folder(tmp_path, monkeypatch):
    "19: papermill by hand and an ad-hoc batch draw into runs/figures; a short_names grid as committed into figures/."
    monkeypatch.delenv('COTFAITH_FIGURES_DIR', raising=False)
    monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/'res'))
    nb = _one_figure_project(tmp_path/'proj')
    proj = nb.parent
    monkeypatch.chdir(proj)
    pm.execute_notebook(nb, tmp_path/'out.ipynb', parameters={'x': 2}, kernel_name='cotfaith', cwd=proj, progress_bar=False)
    assert (proj/'runs'/'figures'/'dot_2.png').exists() and not (proj/'figures').exists()
    (proj/'adhoc.yaml').write_text('notebook: t.ipynb\nruns:\n  - {x: 3}\n')
    run_batch(proj/'adhoc.yaml')
    assert list((proj/'runs'/'figures').glob('dot_3__p-*.png')) and not (proj/'figures').exists()
    (proj/'grid.yaml').write_text('short_names: true\nnotebook: t.ipynb\nruns:\n  - {x: 4}\n')
    run_batch(proj/'grid.yaml')
    assert (proj/'figures'/'dot_4.png').exists() and 'dot_4' in json.loads((proj/'figures'/'manifest.json').read_text())


def test_two_jobs_run_two_notebooks_at_once_and_each_once(tmp_path):
    "`--jobs 2`: a second batch process takes the runs the first has not; both run at the same time, each run once."
    batch, env = _tiny_batch(tmp_path, 'n: 2, max_new_tokens: 8, answer_tokens: 4')
    env.pop('OMP_NUM_THREADS', None)                                       # the batch sets it for its kernels
    r = subprocess.run([str(Path(sys.executable).parent/'cotfaith-batch'), '--batch', str(batch), '--jobs', '2'],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count('  -> ') == 2 and r.stdout.count('done, skipped') == 2, r.stdout   # each, the other's run
    nbs = sorted((tmp_path/'runs'/'accuracy_et').glob('*.ipynb'))
    times = [json.loads(p.read_text())['metadata']['papermill'] for p in nbs]
    assert len(nbs) == 2 and max(t['start_time'] for t in times) < min(t['end_time'] for t in times)   # at once
    assert len(json.loads((tmp_path/'figs'/'manifest.json').read_text())) == 2


def test_jobs_below_one_is_refused_before_anything_runs(tmp_path):
    from cotfaith.batch import BatchError
    with pytest.raises(BatchError, match=r"jobs is 0\. Fix: 1 or more"):
        run_batch(ROOT/'params'/'ci.yaml', out_dir=tmp_path/'runs', jobs=0)
    assert not (tmp_path/'runs').exists()
