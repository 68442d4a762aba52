"Rerunning for a new model and a user's own dataset, and a batch that skips what is done and keeps a manifest."
import json
import os
from pathlib import Path

import papermill as pm
import pytest

from cotfaith.core import slug
from cotfaith.tiny import make_tiny_model
from cotfaith.batch import BatchError, batch_runs, run_batch

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT/'analysis'/'accuracy_et.ipynb'


def _papermill(nb, out, **params):
    return pm.execute_notebook(nb, out, parameters=params, kernel_name='cotfaith', cwd=nb.parent, progress_bar=False)


def _write_jsonl(path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path


def test_own_jsonl_dataset_runs_through_a_notebook_with_one_parameter(tmp_outputs):
    rows = [{'question': f'Tom has {i} apples and buys {i + 2} more. How many apples does he have?', 'answer': str(2 * i + 2),
             'rationale': f'{i} + {i + 2} = {2 * i + 2}.'} for i in range(8)]
    rows += [{'question': 'Which of these is a prime number?', 'options': ['4', '7', '9'], 'answer': 'B', 'id': 'prime'}]
    data = _write_jsonl(tmp_outputs/'my_task.jsonl', rows)
    _papermill(ACC, tmp_outputs/'out.ipynb', dataset=str(data), n=3, max_new_tokens=24, answer_tokens=6)
    assert sorted(p.name for p in (tmp_outputs/'figures').glob('*.png')) == ['smollm2-135m__my_task__accuracy_et.png']
    recs = [json.loads(l) for f in (tmp_outputs/'results').rglob('*.jsonl') if '.' not in f.stem      # the base records
            for l in f.read_text().splitlines()]
    assert len(recs) == 3 and all(r['dataset'] == 'my_task' and r['id'].startswith('my_task-') for r in recs)


def test_own_dataset_in_the_wrong_shape_names_the_line_and_field(tmp_outputs):
    data = _write_jsonl(tmp_outputs/'bad.jsonl', [{'question': 'What is 1 + 1?', 'answer': '2'}, {'prompt': 'What is 2 + 2?', 'answer': '4'}])
    with pytest.raises(pm.PapermillExecutionError, match=r"bad.jsonl:2: unknown field\(s\) \['prompt'\]"):
        _papermill(ACC, tmp_outputs/'out.ipynb', dataset=str(data), n=2)


@pytest.mark.slow      # 80 s; test_papermill runs the same grid, and the skip of a done run is tested there too
def test_a_second_model_runs_the_ci_grid_by_one_override_and_a_rerun_skips_it(tmp_outputs):
    tiny = str(make_tiny_model(tmp_outputs/'tiny-random'))
    outs = run_batch(ROOT/'params'/'ci.yaml', out_dir=tmp_outputs/'runs', model=tiny)
    assert len(outs) == 7 and all(o.name.startswith(slug(tiny)) for o in outs)
    figs = sorted(p.stem for p in (tmp_outputs/'figures').glob('*.png'))
    assert len(figs) == 7 and all(f.startswith(slug(tiny) + '__') for f in figs)
    manifest = json.loads((tmp_outputs/'figures'/'manifest.json').read_text())
    assert sorted(manifest) == figs                                # the summary's table shares the figure's stem
    for fig, m in manifest.items():
        assert m['parameters']['model'] == tiny and m['notebook'].startswith('analysis/') and m['packages']['torch']
        assert m['results'] and all((tmp_outputs/'results'/r).exists() for r in m['results'])
    stamps = [o.stat().st_mtime_ns for o in outs]
    again = run_batch(ROOT/'params'/'ci.yaml', out_dir=tmp_outputs/'runs', model=tiny)
    assert again == outs and [o.stat().st_mtime_ns for o in outs] == stamps         # done runs are skipped, not re-executed


def test_a_failed_run_is_reported_in_one_line_and_the_batch_exits_nonzero(tmp_outputs, capsys):
    batch = tmp_outputs/'batch.yaml'
    batch.write_text(f"notebook: {ACC}\ndefaults: {{n: 2}}\nruns:\n  - {{model: /no/such/model}}\n")
    with pytest.raises(BatchError, match='1 of 1 runs failed'):
        run_batch(batch, out_dir=tmp_outputs/'runs')
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith('cotfaith: error:')]
    assert len(line) == 1 and 'ModelError' in line[0] and "'/no/such/model'" in line[0]
    assert not (tmp_outputs/'figures'/'manifest.json').exists()


def test_model_override_names_every_run_after_the_model():
    runs = batch_runs(ROOT/'params'/'default.yaml', model='org/other-model')
    assert all(p['model'] == 'org/other-model' and name.split('__')[0] == 'org--other-model' for _, p, name in runs)
    assert len({(nb.stem, name) for nb, _, name in runs}) == len(runs)
