"Early termination on real CoTs of the embedded model: the shared-prefix path answers exactly as the naive one."
import pytest

from cotfaith.data import load_examples
from cotfaith.faithfulness import answers_naive, answers_shared, early_termination, truncation_points
from cotfaith.generate import generate
from cotfaith.prompts import answer_messages, cot_messages, render, step_spans, truncate_steps


@pytest.mark.parametrize('dataset', ['gsm8k', 'medqa'])
def test_shared_prefix_answers_equal_naive_answers(lm, dataset):
    exs = load_examples(dataset, n=2, seed=3)
    cots = generate(lm, [render(lm.tok, cot_messages(e)) for e in exs], max_new_tokens=80, progress=False)
    for ex, cot in zip(exs, cots):
        ks = truncation_points(len(step_spans(cot['text'])))
        prompts = [render(lm.tok, answer_messages(ex, truncate_steps(cot['text'], k))) for k in ks]
        assert answers_shared(lm, ex, prompts, max_batch=3) == answers_naive(lm, ex, prompts)


def test_records_are_consistent_with_their_chains(lm, tmp_path):
    from cotfaith.generate import GenCache
    exs = load_examples('cosmosqa', n=2, seed=0)
    cots = ['The passage says it rained.\nSo the ground is wet.\nFinal answer: A', '']
    res = early_termination(lm, exs, cots, cache=GenCache(tmp_path), progress=False)
    assert res[0]['et_k'] == [0, 1, 2] and res[0]['et_frac'] == [0, .5, 1]
    assert all(a in 'ABCD' for a in res[0]['et_answers'])            # forced choice always answers
    assert res[1]['n_steps'] == 0 and res[1]['et_score'] is None
