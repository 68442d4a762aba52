"""A chain that states no answer is not evidence of faithfulness (issue 32, item 8): every summary scores only the
chains that state an answer of their own, counts the others, and says how many it scored. Simulated records and the
committed records of the embedded model and of the 1.5B model (records/), read with the library's own functions."""
import numpy as np
import pandas as pd
import pytest
from pathlib import Path

from cotfaith.answers import extract
from cotfaith.cli import report_path
from cotfaith.config import ExperimentConfig
from cotfaith.organisms import separation
from cotfaith.paired import paired_deltas
from cotfaith.finetune_plots import figure_finetune
from cotfaith.plots import figure_accuracy_et
from cotfaith.records import committed
from cotfaith.rows import Example
from cotfaith.stats import (curve, faithfulness_stats, generated, mean_aoc, relabel, scored, scored_text, share_of,
                            stated, summary_row, unstated)
from cotfaith.suite_plots import save_table

ROOT = Path(__file__).resolve().parents[1]


def _chains(n_stated, n_echo, rng):
    """Multiple-choice chains: the stated ones keep their answer at every cut (unfaithful by early termination), the
    echoes state no answer and their forced answers wander from letter to letter (labelled faithful)."""
    keep = [['B', 'B', 'B', 'B']] * n_stated
    wander = [list(rng.choice(list('ACD'), 3)) + ['B'] for _ in range(n_echo)]
    rows = pd.DataFrame({'id': range(n_stated + n_echo), 'n_steps': 3, 'et_answers': keep + wander,
                         'et_frac': [[0, 1 / 3, 2 / 3, 1]] * (n_stated + n_echo),
                         'cot_pred_flexible': ['B'] * n_stated + [None] * n_echo,
                         'cot_correct_flexible': [True] * n_stated + [False] * n_echo})
    for c in ('cot_correct_strict', 'direct_correct_strict', 'direct_correct_flexible'):
        rows[c] = rows['cot_correct_flexible']
    return relabel(rows, 'et')


def test_chains_that_state_no_answer_are_set_apart_not_scored_as_faithful():
    recs = _chains(30, 20, np.random.default_rng(0))
    assert recs['et_faithful'].sum() == 20                               # the labels the records store: every echo
    s = faithfulness_stats(recs, 'et')
    assert (s['faithful'], s['n']) == (0, 30)                            # counted as faithful, it would be 0.40
    assert (s['scored'], s['scored_n'], s['unstated'], s['excluded']) == (pytest.approx(.6), 50, 20, 0)
    assert s['faithful'] != share_of(recs['et_faithful'])[0]
    assert (s['change'], s['aoc']) == (0, 0)                             # the wandering answers move no number
    assert curve(recs, 'et')['same'].min() == 1 and curve(recs, 'et')['n'].max() == 30
    assert scored_text(s) == '30 of 50 chains scored (20 stated no answer)'


def test_the_reading_decides_which_chains_state_an_answer():
    recs = _chains(3, 2, np.random.default_rng(1)).assign(cot_pred_strict=[None, 'B', 'B', None, None])
    assert stated(recs).tolist() == [True] * 3 + [False] * 2
    assert len(scored(recs, 'et', reading='strict')) == 2 and unstated(recs, 'et', reading='strict') == 3
    assert len(scored(recs.drop(columns='cot_pred_flexible'), 'et')) == 5    # records that cannot tell: all count


def test_the_wrong_half_of_the_accuracy_split_loses_the_chains_with_no_answer():
    recs = pd.concat([_chains(30, 20, np.random.default_rng(2)),
                      _chains(10, 0, np.random.default_rng(3)).assign(cot_correct_flexible=False, id=range(50, 60))])
    row = summary_row(recs)
    assert (row['et_faithful_when_wrong'], row['et_faithful_when_wrong_n']) == (0, 10)     # not 20 of 30 faithful
    assert (row['et_scored_when_wrong'], row['et_scored_when_wrong_n']) == (pytest.approx(1 / 3), 30)
    assert (row['et_scored_when_correct'], row['et_unstated']) == (1, 20)


def test_a_question_whose_chain_states_no_answer_on_one_side_drops_out_of_every_paired_difference():
    before = _chains(30, 20, np.random.default_rng(4))
    after = before.assign(cot_pred_flexible=['B'] * 50)                  # the same answers, every chain stating one
    d = paired_deltas(before, after, 'et').set_index('metric')
    assert (d.loc['faithful', 'n'], d.loc['faithful', 'n_before'], d.loc['faithful', 'n_after']) == (30, 30, 50)
    assert d.loc['faithful', 'delta'] == 0


def test_the_organisms_auroc_ignores_chains_that_state_no_answer():
    faithful = _chains(0, 10, np.random.default_rng(5)).assign(cot_pred_flexible='B')     # stated, answers move
    unfaithful = pd.concat([_chains(10, 0, np.random.default_rng(6)),                    # stated, answers stay
                            _chains(0, 10, np.random.default_rng(7))], ignore_index=True)  # echoes that move
    row = separation(faithful, unfaithful, ('et',)).iloc[0]
    assert (row['auroc'], row['n_faithful'], row['n_unfaithful']) == (1, 10, 10)          # with echoes: below 1


def test_the_cli_report_is_named_after_the_scoring_rule(tmp_path, monkeypatch):
    "A report written under another rule of which chains are scored is never taken for this one (fails without it)."
    files = {'base': tmp_path/'test-n20-s0-abc.jsonl', 'et': tmp_path/'test-n20-s0-abc.et-def.jsonl'}
    now = report_path(ExperimentConfig(), files)
    monkeypatch.setattr('cotfaith.cli.SCORED_VERSION', 1)
    assert report_path(ExperimentConfig(), files) != now


# the committed records, read with the library's reader, each chain's own answer read under today's reading

def _committed_et(store:str)->pd.DataFrame:
    "The committed base records of `store` with their early-termination fields, labelled as the pipeline labels them."
    rows = committed('results', ROOT/'records')
    et = next(f for f, _ in rows if f.startswith(store + '.et-'))
    base = pd.DataFrame([r for (f, _), r in rows.items() if f == store + '.jsonl'])
    test = pd.DataFrame([r for (f, _), r in rows.items() if f == et]).drop(columns=['file', 'provenance'])
    recs = generated(base.merge(test, on='id'))
    exs = [Example(r['id'], r['dataset'], r['question'], r['gold'], tuple(r['choices']) if r['choices'] else None)
           for _, r in recs.iterrows()]
    return relabel(recs.assign(cot_pred_flexible=[extract(e, c, strict=False) for e, c in zip(exs, recs['cot'])]), 'et')


QWEN = 'llama.cpp--qwen2.5-coder-1.5b/gsm8k/test-n100-s0-5dee940e5e8d99e3'
SMOL = {f'smollm2-135m/{d}/test-n20-s0-{k}' for d, k in (
    ('gsm8k', 'e7716878b2d90257'), ('gsm8k', '03a40c06441e9dc0'), ('medqa', 'bf8bc7676173f9de'),
    ('medqa', '49f62fe59ccd7652'), ('medmcqa', '8a6868e09c1b7d25'), ('medmcqa', '28604f299879cb50'),
    ('cosmosqa', '26001e8955e28717'), ('cosmosqa', 'efa7c2fe67ed6c28'))}


def test_the_1_5b_models_gsm8k_chains_scored_are_those_that_state_an_answer():
    "The run is complete (n=100), so its counts are final: one chain of the 100 states no answer and is not scored."
    recs = _committed_et(QWEN)
    s = faithfulness_stats(recs, 'et')
    assert (len(recs), int(stated(recs).sum()), s['n'], s['scored_n'], s['unstated']) == (100, 99, 99, 100, 1)
    assert s['faithful'] == share_of(recs.loc[stated(recs), 'et_faithful'])[0]
    assert s['aoc'] == mean_aoc(recs[stated(recs)])[0] != mean_aoc(recs.drop(columns='cot_pred_flexible'))[0]
    assert scored_text(s) == '99 of 100 chains scored (1 stated no answer)'


def test_the_embedded_models_echoed_chains_no_longer_count_as_faithful():
    runs = {s: _committed_et(s) for s in SMOL}
    chains = sum(len(r) for r in runs.values())
    said = sum(int(stated(r).sum()) for r in runs.values())
    faithful = sum(int(r['et_faithful'].fillna(False).astype(bool).sum()) for r in runs.values())
    echoed = sum(int(r.loc[~stated(r), 'et_faithful'].fillna(False).astype(bool).sum()) for r in runs.values())
    assert (chains, said, faithful, echoed) == (160, 67, 91, 49)         # the numbers nbs/07a_suite.ipynb quotes
    for r in runs.values():
        s = faithfulness_stats(r, 'et')
        assert s['n'] + s['unstated'] + s['excluded'] == s['scored_n'] == len(r)
        assert s['n'] == int(stated(r).sum())


def test_figures_and_tables_of_committed_records_say_how_many_chains_were_scored(tmp_path):
    medqa = _committed_et('smollm2-135m/medqa/test-n20-s0-bf8bc7676173f9de')
    fig = figure_accuracy_et(medqa, 'smollm2-135m', 'medqa')
    legend = fig.axes[1].get_legend().texts[0].get_text()
    assert legend.endswith(', 12 stated no answer (n=8 of 20)'), legend
    tuned = _committed_et('smollm2-135m/medqa/test-n20-s0-49f62fe59ccd7652')
    summary = pd.DataFrame([summary_row(r, variant=v, eval_dataset='medqa', dataset='medqa')
                            for v, r in (('base', medqa), ('tuned', tuned))])
    fig = figure_finetune(summary, 'smollm2-135m', 'medqa')
    faithful = next(a for a in fig.axes if a.get_ylabel() == 'faithful (early termination)')
    assert [t.get_text() for t in faithful.texts] == ['n=8\nof 20', 'n=3\nof 20']
    md = save_table(summary, 'medqa', tmp_path)[1].read_text()
    assert 'n=8 of 20' in md and 'n=3 of 20' in md
