"""Chain length must not move a faithfulness score (issue 32, item 1): the step area's expectation is the same at
3 and 10 steps for one change pattern, Lanham's trapezoid's is not; two variants that differ only in chain length
show no paired difference beyond noise."""
from itertools import product

import numpy as np
import pandas as pd
import pytest

from cotfaith.faithfulness import change_score
from cotfaith.paired import paired_delta, paired_deltas
from cotfaith.plots import figure_accuracy_et
from cotfaith.stats import faithfulness_stats, instance_aoc, summary_row, trapezoid_aoc


def _chain(changed):
    "Early termination at every step of a chain whose answer after k steps changed where changed[k]."
    n = len(changed)
    return [k / n for k in range(n + 1)], ['b' if c else 'a' for c in changed] + ['a']


def _expected(area, n, p):
    "E[area] over every change pattern of an n-step chain whose cuts each change the answer with probability p."
    return sum(p**sum(c) * (1 - p)**(n - sum(c)) * area(*_chain(c)) for c in product([0, 1], repeat=n))


@pytest.mark.parametrize('p', [.2, .5, .8, 1.])
def test_the_same_change_pattern_at_3_and_10_steps_has_the_same_expected_area(p):
    assert _expected(instance_aoc, 3, p) == pytest.approx(_expected(instance_aoc, 10, p)) == pytest.approx(p)
    three, ten = _expected(trapezoid_aoc, 3, p), _expected(trapezoid_aoc, 10, p)
    assert (three, ten) == (pytest.approx(p - p / 6), pytest.approx(p - p / 20))     # the c0 / (2n) confound
    assert three < ten


def test_an_answer_that_needs_the_same_share_of_its_chain_scores_the_same():
    needs = lambda j, n: _chain([1] * j + [0] * (n - j))
    assert instance_aoc(*needs(2, 3)) == pytest.approx(instance_aoc(*needs(6, 9))) == pytest.approx(2 / 3)
    assert trapezoid_aoc(*needs(2, 3)) != pytest.approx(trapezoid_aoc(*needs(6, 9)))


def test_with_every_step_the_area_is_the_change_score_and_the_trapezoid_is_that_minus_c0_over_2n():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 7, 10):
        c = list(rng.integers(0, 2, n))
        fr, ans = _chain(c)
        assert instance_aoc(fr, ans) == pytest.approx(change_score(ans))
        assert trapezoid_aoc(fr, ans) == pytest.approx(change_score(ans) - c[0] / (2 * n))


def _variant(p, lengths, rng):
    "Records of questions whose cuts change the answer with probability p[i], on chains of lengths[i] steps."
    ans = [['b' if rng.random() < pi else 'a' for _ in range(n)] + ['a'] for pi, n in zip(p, lengths)]
    return pd.DataFrame({'id': range(len(p)), 'n_steps': lengths, 'cot_tokens': [30 * n for n in lengths],
                         'et_frac': [list(np.arange(n + 1) / n) for n in lengths], 'et_answers': ans,
                         'et_faithful': [np.mean([x != 'a' for x in a[:-1]]) >= .5 for a in ans]})


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_two_variants_that_differ_only_in_chain_length_differ_by_noise_alone(seed):
    rng = np.random.default_rng(seed)
    p = rng.beta(4, 1, 300)
    base, tuned = _variant(p, rng.integers(8, 13, 300), rng), _variant(p, rng.integers(2, 6, 300), rng)
    d = paired_deltas(base, tuned, 'et').set_index('metric')
    for m in ('change', 'aoc'):
        assert d.loc[m, 'lo'] < 0 < d.loc[m, 'hi'], d
        assert d.loc[m, 'n'] == d.loc[m, 'n_before'] == d.loc[m, 'n_after'] == 300
    trap = [r.assign(trap=[trapezoid_aoc(f, a) for f, a in zip(r['et_frac'], r['et_answers'])]) for r in (base, tuned)]
    assert paired_delta(*trap, 'trap')[2] < 0                   # the old area: a drop that is chain length alone
    b, t = faithfulness_stats(base, 'et'), faithfulness_stats(tuned, 'et')
    assert b['steps'] == pytest.approx(10, abs=.3) and t['steps'] == pytest.approx(3.5, abs=.2)   # reported beside it
    assert t['tokens_hi'] < b['tokens_lo']


def test_chain_length_stands_next_to_every_faithfulness_number():
    rng = np.random.default_rng(0)
    recs = _variant(np.full(6, .5), [3] * 6, rng).assign(
        **{f'{c}_correct_{e}': True for c in ('cot', 'direct') for e in ('strict', 'flexible')},
        **{f'{c}_pred_{e}': '1' for c in ('cot', 'direct') for e in ('strict', 'flexible')})
    row = summary_row(recs)
    for name in ('steps', 'tokens', 'et_steps', 'et_tokens'):
        assert {name, f'{name}_lo', f'{name}_hi', f'{name}_n'} <= set(row)
    assert (row['steps'], row['et_tokens'], row['et_steps_n']) == (3, 90, 6)
    fig = figure_accuracy_et(recs, 'x/y', 'toy')
    assert '3.0 steps, 90 tokens' in fig.axes[1].get_legend().texts[0].get_text()


def test_paired_deltas_leave_out_questions_one_side_did_not_score():
    rng = np.random.default_rng(0)
    base = _variant(np.full(10, .5), [4] * 10, rng)
    tuned = _variant(np.full(10, .5), [4] * 10, rng).iloc[:7]                        # 3 questions it never ran
    no_chain = {'et_frac': [1.0], 'et_answers': ['a'], 'et_faithful': None}           # and 1 with nothing to score
    tuned = tuned.assign(**{k: [v] + list(tuned[k][1:]) for k, v in no_chain.items()})
    d = paired_deltas(base, tuned, 'et').set_index('metric')
    assert d['n'].tolist() == [6, 6, 6] and d['n_before'].tolist() == [10] * 3 and d['n_after'].tolist() == [6] * 3
