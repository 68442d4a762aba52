"Early termination on real CoTs of the embedded model: the shared-prefix path answers exactly as the naive one."
import pytest

from cotfaith.data import load_examples
from cotfaith.faithfulness import truncation_points
from cotfaith.suite import suite
from cotfaith.transformers_engine import answers_naive, answers_shared
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
    res = suite(lm, exs, cots, tests=('et',), cache=GenCache(tmp_path), progress=False)
    assert res[0]['et_k'] == [0, 1, 2] and res[0]['et_frac'] == [0, .5, 1]
    assert all(a in 'ABCD' for a in res[0]['et_answers'])            # forced choice always answers
    assert res[1]['et_k'] == [0] and res[1]['et_score'] is None


def _sentencepiece_tokenizer():
    "A SentencePiece-style tokenizer (Metaspace + Unigram) whose vocabulary has no '▁A': ' A' encodes as '▁', 'A'."
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast
    pieces = ['<unk>', '</s>', '▁', 'A', 'B', 'C', 'D', '▁Final', '▁answer', ':', '▁The', '▁sky', '▁is', '▁blue', '.']
    tk = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=0))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement='▁', prepend_scheme='always')
    tk.decoder = decoders.Metaspace(replacement='▁', prepend_scheme='always')
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token='<unk>', eos_token='</s>', pad_token='</s>', padding_side='left')


def test_forced_choice_reads_each_letters_own_token_with_a_sentencepiece_tokenizer():
    from cotfaith.transformers_engine import letter_tokens
    tok = _sentencepiece_tokenizer()
    naive_first = [tok(' ' + L, add_special_tokens=False).input_ids[0] for L in 'ABCD']
    assert len(set(naive_first)) == 1                                   # the old rule: every letter is the bare '▁'
    prefix, ids = letter_tokens(tok, 4)
    assert tok.convert_ids_to_tokens(prefix) == ['▁'] and tok.convert_ids_to_tokens(ids) == ['A', 'B', 'C', 'D']


def test_forced_choice_with_a_sentencepiece_tokenizer_answers_on_a_real_model_path():
    "A tiny random Llama with that tokenizer: the shared and naive paths agree and do not read every answer as A."
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from cotfaith.data import Example
    from cotfaith.models import LM
    tok = _sentencepiece_tokenizer()
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=256, eos_token_id=1, pad_token_id=1,
                      initializer_range=1.0)            # large random weights: the letters' logits differ by prompt
    lm = LM(LlamaForCausalLM(cfg).eval(), tok, 'tiny-sp', 'test')
    ex = Example('sp-1', 'toy', 'The sky is blue.', 'A', ('a', 'b', 'c', 'd'))
    prompts = [' '.join(['The sky is blue.'] * k + ['Final answer:']) for k in range(12)]
    shared, naive = answers_shared(lm, ex, prompts), answers_naive(lm, ex, prompts)
    assert shared == naive and len(set(shared)) > 1                    # the old rule read ' A' for every prompt


def _sliding_window_model(window:int=16):
    import json, torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM
    from cotfaith.models import LM, embedded_dir
    ref = json.loads((embedded_dir()/'config.json').read_text())
    cfg = MistralConfig(vocab_size=ref['vocab_size'], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048, sliding_window=window,
                        eos_token_id=ref['eos_token_id'], tie_word_embeddings=True)
    torch.manual_seed(0)
    return LM(MistralForCausalLM(cfg).eval(), AutoTokenizer.from_pretrained(embedded_dir(), padding_side='left'), 'tiny-swa', 'test')


def test_sliding_window_models_fall_back_to_naive_answering(lm):
    from cotfaith.data import Example
    from cotfaith.transformers_engine import attention_window
    swa = _sliding_window_model(16)
    assert attention_window(swa) == 16 and attention_window(lm) is None
    ex = Example('t-1', 'toy', 'Ann has 2 apples. Bob gives her 3 more, then she buys 4. How many?', '9')
    cot = 'Ann starts with 2 apples.\nBob gives her 3, so she has 2 + 3 = 5.\nShe buys 4, so she has 5 + 4 = 9.'
    prompts = [render(swa.tok, answer_messages(ex, truncate_steps(cot, k))) for k in range(4)]
    assert answers_shared(swa, ex, prompts) == answers_naive(swa, ex, prompts)
    mc = Example('t-2', 'toy', 'Which animal barks?', 'B', ('cat', 'dog', 'cow'))
    mc_prompts = [render(swa.tok, answer_messages(mc, p)) for p in ['', 'Cats meow.', 'Cats meow. Dogs bark.']]
    assert answers_shared(swa, mc, mc_prompts) == answers_naive(swa, mc, mc_prompts)
