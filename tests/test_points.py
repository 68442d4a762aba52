"""Every intervention point counts (issue 32, item 2): an instance is scored only where every point it asked for has
an answer, so a model whose steps are harder to paraphrase does not get another score for the same dependence on its
chain; records say which points were kept and why; the kept and no-answer shares per point are shown (item 9), and
the no-answer rule's effect on every number is one table."""
from itertools import product

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cotfaith.faithfulness import change_score
from cotfaith.registry import point_fields, requested_points
from cotfaith.paired import paired_deltas
from cotfaith.points import changed_points, excluded, intervened, point_table, scored
from cotfaith.stats import faithfulness_stats, no_answer_sensitivity, relabel, summary_row
from cotfaith.suite_plots import figure_suite

PATTERN = (.9, .7, .3, .1)     # chance that the answer changes at the points 0, 25, 50, 75% of a 4-step chain
REQ = [0, 1, 2, 3, 4]


def _record(valid, changed, i=0):
    "A paraphrasing record of a 4-step chain whose step j has a valid paraphrase where valid[j]."
    ks = [k for k in range(4) if all(valid[k:])] + [4]
    rec = {'id': i, 'n_steps': 4, 'paraphrase_k': ks, 'paraphrase_frac': [k / 4 for k in ks],
           'paraphrase_steps': ['x' if v else None for v in valid],
           'paraphrase_answers': ['b' if changed[k] else 'a' for k in ks[:-1]] + ['a']}
    rec |= point_fields(rec, 'paraphrase', REQ)
    return rec | {'paraphrase_score': change_score(rec['paraphrase_answers'], kept=rec['paraphrase_kept'])}


def _exact(s, which):
    "E[change score] over the instances `which` keeps, every validity and change pattern weighted by its probability."
    pats = list(product(product([0, 1], repeat=4), repeat=2))
    recs = pd.DataFrame([_record(v, c) for v, c in pats])
    w = pd.Series([np.prod([s if x else 1 - s for x in v]) * np.prod([p if x else 1 - p for p, x in zip(PATTERN, c)])
                   for v, c in pats])
    ok = which(recs, 'paraphrase')
    score = [np.mean(changed_points(f, a)[1]) for f, a in zip(ok['paraphrase_frac'], ok['paraphrase_answers'])]
    return float(np.average(score, weights=w[ok.index]))


def test_two_styles_with_one_change_pattern_get_the_same_expected_score_and_did_not_before():
    new = {s: _exact(s, scored) for s in (.9, .7, .5)}
    old = {s: _exact(s, intervened) for s in (.9, .7, .5)}                 # the mean over the points that survived
    assert all(v == pytest.approx(np.mean(PATTERN)) for v in new.values()), new
    assert (old[.9], old[.7], old[.5]) == (pytest.approx(.422, abs=1e-3), pytest.approx(.297, abs=1e-3),
                                          pytest.approx(.208, abs=1e-3))


def _style(s, n, rng):
    "n sampled chains of one writing style: each step paraphrased validly with probability s, the same PATTERN."
    recs = [_record(rng.random(4) < s, rng.random(4) < PATTERN, i) for i in range(n)]
    return relabel(pd.DataFrame(recs), 'paraphrase')


def test_sampled_styles_agree_on_every_number_the_records_give():
    rng = np.random.default_rng(0)
    easy, hard = _style(.9, 3000, rng), _style(.6, 3000, rng)
    e, h = faithfulness_stats(easy, 'paraphrase'), faithfulness_stats(hard, 'paraphrase')
    for m in ('change', 'aoc', 'faithful'):
        assert e[f'{m}_lo'] < h[m] < e[f'{m}_hi'] or h[f'{m}_lo'] < e[m] < h[f'{m}_hi'], (m, e[m], h[m])
    assert e['change'] == pytest.approx(.5, abs=.02) and h['change'] == pytest.approx(.5, abs=.05)
    assert e['n'] + e['excluded'] == h['n'] + h['excluded'] == 3000 and h['n'] < e['n'] / 4   # the price: n
    old = [np.mean([np.mean(changed_points(f, a)[1]) for f, a in zip(r['paraphrase_frac'], r['paraphrase_answers'])
                    if len(a) > 1]) for r in (easy, hard)]
    assert old[0] - old[1] > .1                                        # what averaging over survivors reported
    assert h['kept_0'] < h['kept_25-50'] < h['kept_50-75'] < h['kept_75-100'] and h['kept_0_n'] == 3000


def test_records_say_which_points_were_kept_and_why():
    para = point_fields({'paraphrase_k': [2, 3, 4], 'paraphrase_steps': ['a', None, 'c', 'd']}, 'paraphrase', REQ)
    assert para['paraphrase_kept'] == [False, False, True, True, True]
    assert para['paraphrase_dropped'] == ['step 2 has no valid paraphrase'] * 2 + [None] * 3
    res = point_fields({'resample_k': [1, 0], 'resample_steps': ['a', None, 'c']}, 'resample', [1, 2, 3, 0])
    assert res['resample_dropped'] == [None, 'step 2 has no valid paraphrase', 'step 2 has no valid paraphrase', None]
    mis = point_fields({'mistake_k': [3], 'mistake_edits': [{'k': 1, 'how': 'unchanged'}]}, 'mistake', [1, 3])
    assert mis == {'mistake_requested': [1, 3], 'mistake_kept': [False, True],
                   'mistake_dropped': ['the mistake model returned the step unchanged', None]}
    assert requested_points('resample', 4, [0, .25, .5, .75]) == [1, 2, 3, 4, 0]


def test_the_pipeline_gives_a_record_stored_before_the_fields_the_suite_writes_now():
    from cotfaith.config import ExperimentConfig
    from cotfaith.pipeline import _label
    rec = _record([0, 1, 1, 1], [1, 1, 0, 0])
    old = {k: v for k, v in rec.items() if not k.endswith(('_requested', '_kept', '_dropped', '_score'))}
    _label(old, 'paraphrase', ExperimentConfig(fractions=[0, .25, .5, .75]))
    assert {k: old[k] for k in rec} == rec and old['paraphrase_faithful'] is None     # point 0 lost: no score, no label
    full = {k: v for k, v in _record([1] * 4, [1, 1, 0, 0]).items() if not k.endswith(('_kept', '_score'))}
    _label(full, 'paraphrase', ExperimentConfig())
    assert (full['paraphrase_score'], full['paraphrase_faithful']) == (.5, False)


def test_a_test_that_never_drops_a_point_scores_as_before():
    answers = [['1', '2', '2'], [None, '2', '2'], ['2', '2', '2']]
    recs = pd.DataFrame({'et_frac': [[0, .5, 1]] * 3, 'et_answers': answers,
                         'et_kept': [[True] * 3] * 3, 'et_requested': [[0, 1, 2]] * 3, 'n_steps': 2})
    s = faithfulness_stats(recs, 'et')
    assert (s['n'], s['excluded'], s['kept'], s['change']) == (3, 0, 1, pytest.approx(1 / 3))
    assert len(scored(recs, 'et')) == len(intervened(recs, 'et')) == 3
    assert excluded(recs.drop(columns='et_kept'), 'et') == 0


def test_paired_differences_compare_the_complete_instances_only():
    base = pd.DataFrame([_record([1] * 4, [1, 1, 0, 0], i) for i in range(6)])
    tuned = pd.DataFrame([_record([i % 2] + [1] * 3, [1, 1, 0, 0], i) for i in range(6)])    # half lost point 0
    d = paired_deltas(relabel(base, 'paraphrase'), relabel(tuned, 'paraphrase'), 'paraphrase').set_index('metric')
    assert d.loc['change', ['n', 'n_before', 'n_after', 'delta']].tolist() == [3, 6, 3, 0]


def _with_answers(rec, none_at):
    "`rec` with no answer at its kept points `none_at` (indices into the intervened answers)."
    return rec | {'paraphrase_answers': [None if i in none_at else a for i, a in enumerate(rec['paraphrase_answers'])]}


def test_the_no_answer_table_has_both_rules_every_test_base_and_tuned():
    base = pd.DataFrame([_with_answers(_record([1] * 4, [0, 0, 0, 0], i), {0, 1}) for i in range(4)])
    base = base.assign(et_frac=base['paraphrase_frac'], et_answers=base['paraphrase_answers'])
    tuned = base.assign(paraphrase_answers=[['a'] * 5] * 4, et_answers=[['a'] * 5] * 4)
    sens = no_answer_sensitivity({'base': base, 'tuned': tuned}, tests=('et', 'paraphrase', 'filler'))
    assert len(sens) == 2 * 2 * 3 * 2 and set(sens['rule']) == {'changed', 'missing'}        # filler not run: none
    v = sens.set_index(['variant', 'test', 'metric', 'rule'])['value']
    assert (v['base', 'paraphrase', 'change', 'changed'], v['base', 'paraphrase', 'change', 'missing']) == (.5, 0)
    assert (v['base', 'et', 'faithful', 'changed'], v['base', 'et', 'faithful', 'missing']) == (1, 0)
    assert (v['tuned'].groupby(level=[0, 1]).nunique() == 1).all()                      # no missing answer: one value
    assert sens.set_index(['variant', 'test'])['no_answer'].loc[('base', 'et')].eq(.5).all()


def test_the_suite_figure_draws_the_kept_and_no_answer_shares_per_point():
    rng = np.random.default_rng(1)
    easy, hard = _style(1., 8, rng), _style(.5, 8, rng)
    hard = hard.assign(paraphrase_answers=[[None] + a[1:] if len(a) > 2 else a for a in hard['paraphrase_answers']])
    rows = {'cot_correct_flexible': True, 'cot_correct_strict': True, 'direct_correct_flexible': False,
            'direct_correct_strict': False}
    fig = figure_suite({'base': easy.assign(**rows), 'tuned': hard.assign(**rows)}, 'x/y', 'toy', ('paraphrase',))
    points = next(a for a in fig.axes if a.get_ylabel() == 'requested points kept')
    kept = point_table(hard, 'paraphrase').set_index('point')['kept']
    heights = [round(b.get_height(), 6) for b in points.patches]
    assert heights[:4] == [1] * 4 and heights[4:] == [round(k, 6) for k in kept.drop('all')]
    assert 'no answer (of kept)' in [t.get_text() for t in points.get_legend().texts]
    assert summary_row(hard.assign(**rows))['paraphrase_excluded'] == excluded(hard, 'paraphrase') > 0
    plt.close(fig)


def test_a_run_whose_chains_have_no_intervention_point_still_tabulates():
    # a one-question run whose chain has no step: no point to intervene at, only the intact chain (a tiny model's)
    from cotfaith.points import no_answer_table
    t = no_answer_table(pd.DataFrame([{'id': 'a', 'et_frac': [1.0], 'et_answers': ['3'], 'n_steps': 0}]), 'et')
    assert list(t['point']) == ['all intervened', 'intact chain'] and list(t['n']) == [0, 1]
