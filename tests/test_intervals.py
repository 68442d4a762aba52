"""Intervals never collapse (issue 32, item 6): at n = 3 with all-correct, all-wrong or all-equal values every
interval cotfaith reports is wider than a point, and the cue score's bootstrap resamples questions."""
import numpy as np
import pandas as pd
import pytest

from cotfaith.cue_stats import cue_stats
from cotfaith.intervals import auroc_ci, bootstrap_ci, bounded_ci, count_ci, share_ci, share_of
from cotfaith.paired import paired_delta, paired_deltas
from cotfaith.stats import summary_row

CONDS = [(c, e) for c in ('cot', 'direct') for e in ('strict', 'flexible')]


def _open(est):
    "The estimate lies in its interval and the interval is not a point."
    m, lo, hi = est[:3]
    assert lo <= m <= hi and lo < hi, est


@pytest.mark.parametrize('values', [[1, 1, 1], [0, 0, 0], [.5, .5, .5], [True] * 3, [1.]])
def test_shares_and_bounded_means_at_n_3_are_never_points(values):
    _open(share_of(values)[:3])
    _open(bootstrap_ci(values))


def test_every_fallback_is_the_documented_one():
    assert bootstrap_ci([1, 1, 1]) == pytest.approx(share_ci(3, 3))                      # Wilson at n
    assert bootstrap_ci([0, 0, 0], bounds=(-1, 1)) == pytest.approx(bounded_ci(0, 3, (-1, 1)))
    assert bootstrap_ci([5, 5, 5], bounds=None) == pytest.approx(count_ci(5, 3))          # Poisson score
    _open(bootstrap_ci([0, 0, 0], bounds=None))
    assert auroc_ci([1, 1, 1], [0, 0, 0]) == pytest.approx(bounded_ci(1, 1.5))            # n_eff = 3 * 3 / 6
    _open(auroc_ci([.5] * 3, [.5] * 3))
    assert all(np.isnan(bootstrap_ci([]))) and all(np.isnan(share_ci(0, 0)))
    with pytest.raises(ValueError, match='bounds'): bootstrap_ci([2., 3.])


def test_a_working_bootstrap_is_kept():
    m, lo, hi = bootstrap_ci([0, 1, 1, 0, 1, 1, 1, 0, 1, 1])
    assert (m, lo, hi) != pytest.approx(bounded_ci(m, 10)) and 0 < lo < m < hi <= 1


def _records(n, correct, changed):
    "n instances of 2-step chains, every test, all correct or all wrong, every answer changed or none."
    a = [['2', '2', '1'] if changed else ['1', '1', '1']] * n
    rec = {**{f'{c}_correct_{e}': [correct] * n for c, e in CONDS}, **{f'{c}_pred_{e}': ['1'] * n for c, e in CONDS},
           'id': range(n), 'n_steps': [2] * n, 'cot_tokens': [20] * n}
    for t in ('et', 'paraphrase', 'filler'):
        rec |= {f'{t}_frac': [[0, .5, 1]] * n, f'{t}_answers': a, f'{t}_faithful': [changed] * n}
    return pd.DataFrame(rec | {'mistake_frac': [[.5, 1]] * n, 'mistake_answers': [x[1:] for x in a],
                               'mistake_faithful': [changed] * n})


@pytest.mark.parametrize('correct,changed', [(True, True), (False, False), (True, False)])
def test_no_interval_in_a_summary_row_collapses_at_n_3(correct, changed):
    row = summary_row(_records(3, correct, changed))
    names = [k[:-3] for k in row if k.endswith('_lo') and not np.isnan(row[k])]
    assert len(names) > 20
    for m in names: _open((row[m], row[f'{m}_lo'], row[f'{m}_hi']))


def test_paired_differences_of_identical_variants_are_not_zero_width():
    recs = _records(3, True, True)
    _open(paired_delta(recs, recs, 'cot_correct_flexible'))
    for _, r in paired_deltas(recs, recs, 'et').iterrows(): _open((r['delta'], r['lo'], r['hi']))


def _cue(verbalised):
    "Three questions, three cues each, every cue moved the answer; `verbalised(question)` says whether chains say so."
    return pd.DataFrame([dict(q=i, cue=c, m=4, eligible=True, switched=True, elsewhere=False,
                              verbalised_rule=verbalised(i), verbalised_judge=verbalised(i))
                         for i in range(3) for c in ('authority', 'metadata', 'fewshot')])


@pytest.mark.parametrize('verbalised', [lambda i: True, lambda i: False])
def test_the_cue_score_at_0_or_1_is_not_a_point(verbalised):
    st = cue_stats(_cue(verbalised))
    for d in ('rule', 'judge'):
        _open(st[d]['score'])
        assert st[d]['n_q'] == 3 and st[d]['score'][1:] == pytest.approx(bounded_ci(st[d]['score'][0], 3)[1:])


def test_the_cue_score_resamples_questions_not_question_cue_pairs():
    two = _cue(lambda i: i == 0).query('q < 2')          # question 0: all three chains say so; question 1: none
    assert cue_stats(two)['rule']['score'] == pytest.approx((.5, 0., 1.))      # resampling pairs: [1/6, 5/6]
