"The sixth test, counterfactual step importance by on-policy resampling (issue 34 item 3), on the real small model."
from dataclasses import replace

import pytest

from cotfaith.data import load_examples
from cotfaith.generate import GenCache
from cotfaith.pipeline import ExperimentConfig, experiment_files, run_experiment
from cotfaith.anchors import step_importance
from cotfaith.protocol import FaithfulnessTest
from cotfaith.registry import REGISTRY
from cotfaith.faithfulness import change_score
from cotfaith.prompts import truncate_steps
from cotfaith.suite import naive_suite, rollout_seed, suite

COT = 'Ann has 2 apples.\nBob gives her 3, so 2 + 3 = 5.\nShe eats 1, so 5 - 1 = 4.\nFinal answer: 4'


@pytest.fixture(scope='module')
def anchored(lm, tmp_path_factory):
    "The anchor test with two rollouts at two points, on one GSM8K question with a hand-written chain."
    ex = load_examples('gsm8k', n=1, seed=2)[0]
    test = REGISTRY['anchor'].with_settings(rollouts=2)
    cache = GenCache(tmp_path_factory.mktemp('gen'))
    rec = suite(lm, [ex], [COT], (test,), fractions=[0, .5], continue_tokens=40, cache=cache, progress=False)[0]
    return ex, test, cache, rec


def test_each_point_draws_its_rollouts_and_keeps_their_answers(lm, anchored):
    ex, test, cache, rec = anchored
    assert rec['anchor_k'] == [0, 2, 3]                                      # points 0, 0.5 of 3 steps, the reference
    assert [len(a) for a in rec['anchor_rollout_answers']] == [2, 2]
    assert [e['k'] for e in rec['anchor_edits']] == [0, 2] and all(len(e['rollouts']) == 2 for e in rec['anchor_edits'])
    ref = rec['anchor_answers'][-1]
    assert rec['anchor_moved'] == [sum(a != ref for a in d) / 2 for d in rec['anchor_rollout_answers']]
    assert rec['anchor_score'] == change_score(rec['anchor_answers'])
    assert naive_suite(lm, ex, COT, rec, tests=('anchor',)) == {'anchor': rec['anchor_answers']}   # rebuilt, answered anew
    assert [(a, b) for a, b, _ in step_importance(rec)] == [(0, 2), (2, 3)]


def test_rollouts_are_sampled_per_seed_and_cached(lm, anchored, tmp_path):
    ex, test, cache, rec = anchored
    again = suite(lm, [ex], [COT], (test,), fractions=[0, .5], continue_tokens=40, cache=cache, progress=False)[0]
    assert again == rec                                                      # from the cache, the same draws
    other = suite(lm, [ex], [COT], (test,), fractions=[0], continue_tokens=40, seed=1, cache=GenCache(tmp_path),
                  progress=False)[0]                                        # the point k = 0 alone, drawn with seed 1
    assert other['anchor_edits'][0]['rollouts'] != rec['anchor_edits'][0]['rollouts']   # another seed, other draws
    assert len({rollout_seed(0, r) for r in range(8)} | {rollout_seed(1, r) for r in range(8)}) == 16


def test_its_settings_key_its_store(tmp_outputs):
    cfg = ExperimentConfig(dataset='gsm8k', n=1, tests='et,anchor')
    name = experiment_files(cfg)['anchor'].name
    assert experiment_files(replace(cfg, fractions=[0.5]))['anchor'].name != name
    more = replace(cfg, anchor_rollouts=cfg.anchor_rollouts + 1)            # its own setting, a field of the config
    assert experiment_files(more)['anchor'].name != name                     # more rollouts: another store
    assert experiment_files(replace(cfg, anchor_temperature=1.0))['anchor'].name != name
    assert experiment_files(more)['et'] == experiment_files(replace(cfg, tests='et'))['et']   # the others' unchanged


def test_the_pipeline_runs_it_like_any_test_and_a_rerun_computes_nothing(tmp_outputs, monkeypatch):
    import cotfaith.pipeline as pipeline
    cfg = ExperimentConfig(dataset='gsm8k', n=1, max_new_tokens=32, answer_tokens=6, tests='et,anchor', fractions=[0.5],
                           anchor_rollouts=2)                               # the config's setting reaches the test
    recs = run_experiment(cfg, progress=False)
    assert experiment_files(cfg)['anchor'].exists() and len(recs['anchor_rollout_answers'][0][0]) == 2
    assert recs['anchor_faithful'][0] == REGISTRY['anchor'].faithful(recs['anchor_score'][0])
    monkeypatch.setattr(pipeline, 'load_engine', lambda *a, **k: (_ for _ in ()).throw(AssertionError('recomputed')))
    assert run_experiment(cfg, progress=False)['anchor_answers'].tolist() == recs['anchor_answers'].tolist()


class DropLast(FaithfulnessTest):
    "A test written from scratch and never registered: the chain without its last step."
    name, label = 'droplast', 'dropping the last step'
    def points(self, n, fractions=None): return [max(n - 1, 0), n]
    def chain(self, ctx, cot, k, para, edits): return truncate_steps(cot, k)


def test_a_test_object_runs_through_the_suite_unregistered(lm, tmp_path):
    ex = load_examples('gsm8k', n=1, seed=2)[0]
    rec = suite(lm, [ex], [COT], (DropLast(), 'et'), cache=GenCache(tmp_path), progress=False)[0]
    assert rec['droplast_k'] == [2, 3] and rec['droplast_kept'] == [True, True]
    assert rec['droplast_answers'] == [rec['et_answers'][2], rec['et_answers'][3]]   # the same prompts as early termination
