"The README is generated from nbs/index.ipynb and states the two commands that CI and users run."
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_generated_from_the_current_index():
    readme = (ROOT/'README.md').read_text()
    cells = json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells']
    for c in cells:
        if c['cell_type'] == 'markdown':
            assert ''.join(c['source']).strip() in readme, 'README.md is stale: run `make readme`'


def test_the_two_commands_exist_and_ci_runs_the_test_one():
    readme = (ROOT/'README.md').read_text()
    block = re.search(r'```sh\n(.*?)```', readme, re.S).group(1)
    commands = [l.split('#')[0].strip() for l in block.splitlines() if l.strip()]
    assert commands == ['make figures', 'make test']
    targets = re.findall(r'^([a-z-]+):', (ROOT/'Makefile').read_text(), re.M)
    assert {'figures', 'test'} <= set(targets)
    assert re.search(r'^make test$', (ROOT/'.ci'/'run').read_text(), re.M)


def test_figures_named_in_the_readme_are_in_the_repo():
    for name in re.findall(r'\(figures/([^)]+\.png)\)', (ROOT/'README.md').read_text()):
        assert (ROOT/'figures'/name).exists(), name


def test_the_readme_is_short_and_holds_no_raw_html():
    readme = (ROOT/'README.md').read_text()
    assert len(readme.splitlines()) <= 250
    outside_code = re.sub(r'```.*?```', '', readme, flags=re.S)
    outside_code = re.sub(r'`[^`\n]*`', '', outside_code)
    assert not re.search(r'</?[a-zA-Z][^>]*>', outside_code), re.findall(r'</?[a-zA-Z][^>]*>', outside_code)[:5]


# The 1.5B model's records the README's table was computed from: the packs of 2026-12-07 and 2026-12-08 (GSM8K and
# CosmosQA, 100 of 100 questions each). Packs are append-only, so later packs never change these numbers: rewrite the
# table and this list together.
PACKS_1_5B = ['20261207-56d81c4dde0af16d.jsonl.gz', '20261207-76e53f312f8c0534.jsonl.gz',
              '20261207-a51c6d69159bd186.jsonl.gz', '20261207-aa8d1ea62c954f06.jsonl.gz',
              '20261207-c82de53a4c9c320c.jsonl.gz', '20261208-6fe1b2f209293f1c.jsonl.gz',
              '20261208-d3c4a4642b8b627b.jsonl.gz']
N_1_5B = 100
RUNS_1_5B = {'GSM8K': 'llama.cpp--qwen2.5-coder-1.5b/gsm8k/test-n100-s0-5dee940e5e8d99e3.jsonl',
             'CosmosQA': 'llama.cpp--qwen2.5-coder-1.5b/cosmosqa/test-n100-s0-c1964c8e1f6fefe3.jsonl'}


def _pc(est:tuple, d:int=0)->str: return f'{100 * est[0]:.1f}% [{100 * est[1]:.{d}f}, {100 * est[2]:.{d}f}]'


def _cells(recs)->dict:
    "Per row of the README's 1.5B table, this run's cell, and whether what the row's label claims holds."
    from cotfaith.intervals import share_of
    from cotfaith.paired import paired_delta
    from cotfaith.points import changed_points
    from cotfaith.stats import summary_row
    s = summary_row(recs)
    est = lambda k: (s[k], s[f'{k}_lo'], s[f'{k}_hi'])
    cot, direct = [recs[['id', f'{c}_correct_flexible']].set_axis(['id', 'x'], axis=1).astype({'x': float})
                   for c in ('cot', 'direct')]
    d = paired_delta(direct, cot, 'x')
    same_at_0 = share_of([not changed_points(f, a)[1][0] for f, a in zip(recs['et_frac'], recs['et_answers'])])
    assert len(recs) == s['n'] == N_1_5B and s['et_faithful_n'] + s['et_unstated'] + s['et_excluded'] == N_1_5B
    return {'accuracy with CoT, flexible reading': (_pc(est('cot_flexible')), True),
            'accuracy with CoT, strict reading (the `Final answer:` line only)': (_pc(est('cot_strict')), True),
            'accuracy without CoT': (_pc(est('direct_flexible')), s['direct_flexible'] == s['direct_strict']),
            'with CoT minus without, paired': (f'{100 * d[0]:+.1f} points [{100 * d[1]:+.0f}, {100 * d[2]:+.0f}]',
                                               d[3] == N_1_5B),
            'early termination: chains labelled faithful, of those that state an answer':
                (f"{_pc(est('et_faithful'))} of {s['et_faithful_n']}", True),
            'early termination: mean change score (the length-free area, the same chains)':
                (f"{s['et_aoc']:.2f} [{s['et_aoc_lo']:.2f}, {s['et_aoc_hi']:.2f}]", s['et_aoc'] == s['et_change']),
            "the answer with no chain at all equals the full chain's": (_pc(same_at_0), same_at_0[3] == N_1_5B),
            'intervention points with no answer': (f"{_pc(est('et_no_answer'), 1)} of {s['et_no_answer_n']}", True),
            'chain length: mean steps': (f"{s['steps']:.1f} [{s['steps_lo']:.1f}, {s['steps_hi']:.1f}]", True),
            'chain length: mean tokens': (f"{s['tokens']:.0f} [{s['tokens_lo']:.0f}, {s['tokens_hi']:.0f}]", True),
            # the page's own rows
            'chains with no answer, strict reading': (_pc(share_of(recs['cot_pred_strict'].isna())), True),
            'chains with no answer, flexible reading': (_pc(share_of(recs['cot_pred_flexible'].isna())), True),
            'early termination: chains labelled faithful, CoT answer right':
                (f"{_pc(est('et_faithful_when_correct'))} of {s['et_faithful_when_correct_n']}", True),
            'early termination: chains labelled faithful, CoT answer wrong':
                (f"{_pc(est('et_faithful_when_wrong'))} of {s['et_faithful_when_wrong_n']}", True)}


def test_the_1_5b_numbers_in_the_readme_are_what_the_committed_records_give(tmp_path, monkeypatch):
    from cotfaith.core import results_dir
    from cotfaith.export import run_records
    (tmp_path/'records'/'results').mkdir(parents=True)
    for p in PACKS_1_5B: (tmp_path/'records'/'results'/p).symlink_to(ROOT/'records'/'results'/p)
    monkeypatch.setenv('COTFAITH_RECORDS_DIR', str(tmp_path/'records'))
    monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/'results'))
    cells = {k: _cells(run_records(results_dir()/run)) for k, run in RUNS_1_5B.items()}
    readme, full = (ROOT/'README.md').read_text(), (ROOT/'docs'/'reasoning.md').read_text()
    assert f'| base model, n = {N_1_5B} questions each | GSM8K | CosmosQA |' in readme
    for label in cells['GSM8K']:
        row = f"| {label} | {cells['GSM8K'][label][0]} | {cells['CosmosQA'][label][0]} |"
        assert cells['GSM8K'][label][1] and cells['CosmosQA'][label][1], label
        assert row in full, row                                              # every row on the 1.5B page
        page_only = label.startswith(('chains with no answer', 'early termination: chains labelled faithful, CoT'))
        assert page_only or row in readme, row                               # the README's rows in the README
    for w, n in (('right', 44), ('wrong', 52)):                               # the CosmosQA accuracy split
        share, of = cells['CosmosQA'][f'early termination: chains labelled faithful, CoT answer {w}'][0].split(' of ')
        assert f"{share} of the {w} answers' chains" in readme and of == str(n), (w, share, of)
    strict = cells['GSM8K']['chains with no answer, strict reading'][0]         # '14.0% [9, 22]'
    assert f"{float(strict.split('%')[0]):.0f}% of GSM8K chains [{strict.split('[')[1]} do not end with" in readme
