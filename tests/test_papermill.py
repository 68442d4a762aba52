"The analysis templates: one literal parameters cell each, tags that survive nbdev_clean, and a real papermill run."
import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest

from cotfaith.pipeline import batch_runs, run_batch

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


def test_a_wrongly_typed_parameter_fails_the_run(tmp_outputs):
    nb = ROOT/'analysis'/'accuracy_et.ipynb'
    with pytest.raises(pm.PapermillExecutionError, match="parameter 'n' must be int, got 'twenty'"):
        pm.execute_notebook(nb, tmp_outputs/'bad.ipynb', parameters={'n': 'twenty'}, kernel_name='cotfaith', cwd=nb.parent, progress_bar=False)


def _code(path):
    return '\n'.join(''.join(c['source']) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code')


@pytest.mark.parametrize('path', [p for p in TEMPLATES if 'run_finetuned(' in _code(p)], ids=lambda p: p.name)
def test_every_base_vs_tuned_comparison_runs_the_base_at_the_tuned_precision(path):
    "The base side is `run_base(ft, cfg)` (the tuned model's precision and quantisation), never a bare `run_experiment`."
    code = _code(path)
    assert 'run_experiment(' not in code, f'{path.name}: use run_base(ft, cfg) for the base side of a comparison'
    assert 'run_base(' in code or path.name == 'organisms.ipynb'        # the organisms compare fine-tunes with each other
