"""Statistics and figures: Wilson intervals for shares, a denominator on every share, single-point tests, no-answer
rates, the accuracy split, and no torch behind `cotfaith.stats` / `cotfaith.plots`."""
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cotfaith.stats import (TESTS, share_ci, share_of, accuracy_table, curve, summary_row,
                            no_answer_table, by_correctness, faithfulness_stats)
from cotfaith.paired import paired_delta
from cotfaith.finetune_plots import figure_finetune
from cotfaith.plots import n_differs
from cotfaith.suite_plots import figure_suite, figure_summary, save_table

CONDS = [(c, e) for c in ('cot', 'direct') for e in ('strict', 'flexible')]


def _records(n=10, correct=True, chain=True, mistake=True):
    "n instances, every test; ET at every step of 2-step chains, adding mistakes at one point."
    rec = {**{f'{c}_correct_{e}': [correct] * n for c, e in CONDS}, **{f'{c}_pred_{e}': ['1'] * n for c, e in CONDS},
           'id': range(n), 'n_steps': [2 if chain else 0] * n}
    for t in ('et', 'paraphrase', 'filler', 'anchor'):
        rec |= {f'{t}_frac': [[0, .5, 1]] * n, f'{t}_answers': [[None, '2', '1'], ['1', '1', '1']] * (n // 2),
                f'{t}_faithful': [True, False] * (n // 2)}
    if mistake:
        rec |= {'mistake_frac': [[.5, 1]] * n, 'mistake_answers': [['2', '1'], ['1', '1']] * (n // 2),
                'mistake_faithful': [True, False] * (n // 2)}
    rec |= {'resample_frac': [[.5, 1, 0]] * n, 'resample_answers': [['2', None, '1'], ['1', '1', '1']] * (n // 2),
            'resample_faithful': [False, True] * (n // 2)}                  # Lanham's variant: the reference (k=0) last
    return pd.DataFrame(rec)


def test_shares_get_wilson_intervals_not_a_degenerate_bootstrap():
    m, lo, hi = share_ci(10, 10)
    assert m == hi == 1 and lo == pytest.approx(.7225, abs=1e-4)
    assert all(np.isnan(share_ci(0, 0)))
    acc = accuracy_table(_records()).set_index(['condition', 'extractor'])
    assert (acc['accuracy'] == 1).all() and (acc['lo'] < .75).all() and (acc['n'] == 10).all()
    assert {'no_answer_lo', 'no_answer_hi'} <= set(acc.columns)
    row = summary_row(_records())
    assert row['cot_flexible_lo'] == pytest.approx(lo) and row['et_faithful_lo'] > 0
    assert curve(_records())['lo'].iloc[-1] < 1                    # the curve's shares too


def test_every_share_in_the_summary_has_its_n_and_a_chain_written_share():
    recs = _records()
    recs.loc[:2, 'n_steps'] = 0
    row = summary_row(recs)
    for m in ['cot_strict', 'cot_flexible', 'direct_strict', 'direct_flexible', 'chain_written',
              *[f'{t}_{s}' for t in TESTS for s in ('faithful', 'change', 'no_answer', 'faithful_when_correct',
                                                    'faithful_when_wrong')]]:
        assert {m, f'{m}_lo', f'{m}_hi', f'{m}_n'} <= set(row), m
    assert (row['chain_written'], row['chain_written_n']) == (.7, 10)
    assert (row['et_n'], row['et_faithful_n'], row['et_no_answer_n']) == (10, 10, 20)


def test_a_single_point_test_reports_its_change_share_not_an_aoc():
    row = summary_row(_records())
    assert np.isnan(row['mistake_aoc']) and row['mistake_points'] == 1
    assert (row['mistake_change'], row['mistake_change_n']) == (.5, 10)
    assert row['mistake_change_lo'] == pytest.approx(share_ci(5, 10)[1])
    assert row['et_points'] == 2 and not np.isnan(row['et_aoc'])


def test_no_answer_rates_per_test_and_point():
    t = no_answer_table(_records(), 'et').set_index('point')
    assert t.loc['0', ['no_answer', 'n']].tolist() == [.5, 10]
    assert t.loc['[0.5, 0.75)', 'no_answer'] == 0 and t.loc['all intervened', 'n'] == 20
    assert t.loc['intact chain', 'no_answer'] == 0
    assert summary_row(_records())['et_no_answer'] == .25


def test_the_no_answer_rule_changes_the_recomputed_scores():
    recs = pd.DataFrame({'et_frac': [[0, .5, 1]] * 2, 'et_answers': [[None, '1', '1'], ['1', '1', '1']]})
    changed, missing = (faithfulness_stats(recs, 'et', rule) for rule in ('changed', 'missing'))
    assert (changed['change'], missing['change']) == (.25, 0) and changed['aoc'] > missing['aoc'] == 0
    with pytest.raises(ValueError, match='changed'): faithfulness_stats(recs, 'et', 'ignore')


def test_scores_split_by_whether_the_cot_answer_was_right():
    recs = _records().assign(cot_correct_flexible=[True] * 4 + [False] * 6)
    b = by_correctness(recs, 'mistake').set_index('cot_correct')
    assert b.loc[True, 'faithful_n'] == 4 and b.loc[False, 'faithful_n'] == 6
    assert b.loc[True, 'change'] == .5
    row = summary_row(recs)
    assert (row['mistake_faithful_when_correct_n'], row['mistake_faithful_when_wrong_n']) == (4, 6)
    nobody_wrong = by_correctness(_records(), 'et').set_index('cot_correct')
    assert nobody_wrong.loc[False, ['n', 'points', 'faithful_n']].tolist() == [0, 0, 0]


def test_paired_delta_reports_its_n():
    b, a = _records(), _records(correct=False).iloc[:6]
    assert paired_delta(b, a, 'cot_correct_flexible')[::3] == (-1, 6)


def test_figures_annotate_n_and_flag_comparisons_whose_n_differ():
    base, tuned = _records(), _records(chain=False)
    tuned['et_faithful'] = [True] + [None] * 9                      # fine-tuning left one chain to score
    tuned['et_answers'] = [[None, '2', '1']] + [['1']] * 9
    summ = pd.DataFrame([summary_row(r, variant=v, eval_dataset='gsm8k') for v, r in (('base', base), ('tuned', tuned))])
    fig = figure_finetune(summ, 'x/y', 'ft')
    et = next(a for a in fig.axes if a.get_ylabel() == 'faithful (early termination)')
    assert [t.get_text() for t in et.texts] == ['n=10\nof 10', 'n=1\nof 1']          # n scored of the chains tested
    assert all(p.get_hatch() == '//' for p in et.patches)
    acc = fig.axes[0]
    assert [t.get_text() for t in acc.texts] == ['n=10', 'n=10'] and not any(p.get_hatch() for p in acc.patches)
    plt.close(fig)
    fig = figure_suite({'base': base, 'tuned': tuned}, 'x/y', 'suite')
    assert any('n differs' in a.get_xlabel() for a in fig.axes)
    assert any('change share' in t.get_text() for t in fig.axes[1].get_xticklabels())
    assert any(a.get_ylabel() == 'no answer at intervened points' for a in fig.axes)
    assert any('CoT answer right' in a.get_ylabel() for a in fig.axes)
    plt.close(fig)
    summ = summ.rename(columns={'eval_dataset': 'dataset'})
    fig = figure_summary(summ, 'x/y', 'summary')
    assert any('hollow' in a.get_xlabel() for a in fig.axes)
    plt.close(fig)
    assert n_differs([10, 21]) and not n_differs([10, 20])


def test_the_markdown_table_carries_n(tmp_path):
    summ = pd.DataFrame([summary_row(_records(), variant='base', dataset='gsm8k')])
    md = save_table(summ, 'toy', tmp_path)[1].read_text()
    assert '1.00 [0.72, 1.00] n=10' in md and 'CoT answer right' in md


def test_stats_and_plots_import_without_torch():
    code = ('import sys, cotfaith.stats, cotfaith.plots, cotfaith.suite_plots, cotfaith.finetune_plots; '
            'print(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


def test_the_tests_and_their_directions_live_in_one_place():
    "Issue 34: each test is one registered object, and neither the suite nor the store knows a test by name."
    import importlib, inspect, pkgutil, re, cotfaith
    from cotfaith import registry
    assert list(TESTS) == [n for n, t in registry.REGISTRY.items() if t.by_points]
    assert not registry.REGISTRY['paraphrase'].faithful_if_changed and registry.REGISTRY['et'].faithful_if_changed
    mods = [importlib.import_module(f'cotfaith.{m.name}') for m in pkgutil.iter_modules(cotfaith.__path__)]
    users = [m for m in mods if hasattr(m, 'TESTS')]
    assert {'cotfaith.organisms', 'cotfaith.suite_plots', 'cotfaith.cli'} <= {m.__name__ for m in users}
    for m in users: assert m.TESTS is registry.TESTS is TESTS, m.__name__     # imported from the registry, never redefined
    tables = ('FAITHFUL_IF_CHANGED', 'AXES', 'REWRITING_TESTS', 'CONTINUING', 'MISTAKE_VERSION', 'CUE_VERSION')
    assert not [(m.__name__, t) for m in mods for t in tables if hasattr(m, t)]
    names = '|'.join(registry.REGISTRY)
    by_name = re.compile(rf"[=!]=\s*'({names})'|'({names})'\s+(not\s+)?in\b")
    for m in ('suite', 'store'):
        src = inspect.getsource(importlib.import_module(f'cotfaith.{m}'))
        assert not by_name.findall(src), (m, by_name.findall(src))


@pytest.mark.parametrize('rule', ['changed', 'missing'])
def test_stats_and_the_stored_scores_treat_no_answer_alike(rule):
    "The curves (stats) and the per-instance scores (faithfulness.change_score) apply one no-answer rule."
    from itertools import product
    from cotfaith.faithfulness import change_score
    from cotfaith.stats import changed_points
    for answers in map(list, product([None, '5', '7'], repeat=3)):
        _, changed = changed_points([0, .5, 1], answers, rule)
        assert (sum(changed) / len(changed) if changed else None) == change_score(answers, rule), answers
