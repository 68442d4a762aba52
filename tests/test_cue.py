"The cue test on the real embedded model and real MedQA questions: construction, caching, and the score's inputs."
from pathlib import Path

from cotfaith.cue import cue_judge, cue_test
from cotfaith.cue_prompts import CUE_KINDS, cue_messages, cued_letter, moved_to, shots_for
from cotfaith.cue_stats import cue_frame, cue_stats
from cotfaith.data import load_examples
from cotfaith.generate import GenCache
from cotfaith.rows import LETTERS
from cotfaith.transformers_engine import TransformersEngine


def test_few_shot_questions_keep_their_right_answer_at_the_cued_letter():
    pool = load_examples('medqa', n=20, seed=0)
    for ex in pool[:5]:
        L = cued_letter(ex)
        assert L != ex.answer and L == cued_letter(ex) and L in LETTERS[:len(ex.choices)]
        shots = shots_for(ex, pool)
        assert len(shots) == 3 and ex.id not in {s.id for s in shots}
        for s in shots:
            m = moved_to(s, L)
            assert m.choices[LETTERS.index(L)] == s.choices[LETTERS.index(s.answer)] and sorted(m.choices) == sorted(s.choices)
        msgs = cue_messages(ex, 'fewshot', L, shots)
        assert [m['content'] for m in msgs[1:-1:2]] == [f'Final answer: {L}'] * 3


def test_cued_chains_are_generated_once_per_cue_and_read_back_from_the_cache(lm, tmp_path, monkeypatch):
    exs = load_examples('medqa', n=2, seed=1)
    cache = GenCache(tmp_path)
    first = cue_test(lm, exs, uncued=['A', 'B'], max_new_tokens=32, cache=cache, progress=False)
    assert len({first[0][k]['cot'] for k in CUE_KINDS}) == 3                # three different prompts, three chains
    written, put = [], GenCache.put
    monkeypatch.setattr(GenCache, 'put', lambda self, k, v: (written.append(k), put(self, k, v)))
    again = cue_test(lm, exs, uncued=['A', 'B'], max_new_tokens=32, cache=cache, progress=False)
    assert written == [] and [{k: o['cot'] for k, o in r.items()} for r in again] == [{k: o['cot'] for k, o in r.items()} for r in first]
    judged = cue_judge(lm, exs, again, cache=cache)
    frame = cue_frame(judged, [len(e.choices) for e in exs])
    assert len(frame) == 6 and frame['verbalised_judge'].isin([True, False, None]).all()
    st = cue_stats(frame, n_boot=50)
    assert st['n'] == int(frame['eligible'].sum()) and 0 <= st['agreement'][0] <= 1


def test_the_cue_test_runs_in_the_pipeline_with_its_own_store_and_a_rerun_asks_nothing(tmp_outputs, monkeypatch):
    import cotfaith.pipeline as pipeline
    from cotfaith.registry import REGISTRY
    from cotfaith.pipeline import ExperimentConfig, experiment_files, run_experiment
    cfg = ExperimentConfig(dataset='medqa', n=1, max_new_tokens=32, tests='et,cue')
    recs = run_experiment(cfg, progress=False)
    files = experiment_files(cfg)
    assert set(files) == {'base', 'et', 'cue'} and files['cue'].exists()
    assert recs['cue_outcomes'].map(lambda o: sorted(o) == sorted(CUE_KINDS)).all()
    assert recs['cue_faithful'].isin([True, False, None]).all()
    monkeypatch.setattr(pipeline, 'load_engine', lambda *a, **k: (_ for _ in ()).throw(AssertionError('recomputed')))
    assert run_experiment(cfg, progress=False)['cue_outcomes'].tolist() == recs['cue_outcomes'].tolist()
    monkeypatch.setattr(REGISTRY['cue'], 'version', REGISTRY['cue'].version + 1)    # a new cue: a new results file
    assert experiment_files(cfg)['cue'] != files['cue'] and experiment_files(cfg)['et'] == files['et']


def test_a_numeric_question_is_stored_as_skipped_by_the_cue_test(tmp_outputs):
    from cotfaith.pipeline import ExperimentConfig, run_experiment
    recs = run_experiment(ExperimentConfig(dataset='gsm8k', n=1, max_new_tokens=32, tests='et,cue'), progress=False)
    assert recs['cue_skipped'].tolist() == ['not a multiple-choice question'] and recs['cue_faithful'].isna().all()


class _Window(TransformersEngine):
    "The real model behind the real engine, declaring a smaller context window."
    def __init__(self, lm, context:int):
        super().__init__(lm)
        self._context = context

    @property
    def context(self)->int: return self._context


def test_a_cued_prompt_that_does_not_fit_the_context_is_skipped_and_says_why(lm, tmp_path):
    exs, budget, full = load_examples('medqa', n=2, seed=1), 32, TransformersEngine(lm)
    def size(e, k):
        shots = shots_for(e, exs) if k == 'fewshot' else ()
        return full.n_tokens(full.render(cue_messages(e, k, cued_letter(e), shots)))
    window = max(size(e, k) for e in exs for k in ('authority', 'metadata')) + budget      # these fit, with the budget
    assert min(size(e, 'fewshot') for e in exs) + budget > window                       # the three shots do not
    eng = _Window(lm, window)
    recs = cue_judge(eng, exs, cue_test(eng, exs, uncued=['A', 'A'], max_new_tokens=budget, cache=GenCache(tmp_path),
                                        progress=False), cache=GenCache(tmp_path))
    for r in recs:
        assert r['fewshot']['skipped'].startswith('longer than the context') and r['fewshot']['cot'] is None
        assert not r['fewshot']['eligible'] and r['fewshot']['verbalised_judge'] is None
        assert all(r[k]['cot'] and 'skipped' not in r[k] for k in ('authority', 'metadata'))
    frame = cue_frame(recs, [len(e.choices) for e in exs])
    assert cue_stats(frame, n_boot=20)['n'] == int(frame['eligible'].sum()) <= 4


def test_the_cli_prints_the_cue_line_and_stores_the_same_numbers_in_its_report(tmp_outputs, capsys):
    import json
    from cotfaith.cli import run_cli
    from cotfaith.cue_stats import cue_line
    run_cli(['--dataset', 'medqa', '--n', '1', '--max_new_tokens', '32', '--tests', 'et,cue'])
    out = capsys.readouterr().out
    printed = next(l for l in out.splitlines() if l.startswith('cue: '))
    report = json.loads(Path(out.rstrip().rsplit(': ', 1)[1]).read_text())
    assert cue_line(report['cue']) == printed and report['cue']['n'] <= 3
