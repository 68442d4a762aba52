"Answer extraction against a careful reader: the labelled sample of real outputs, and one case per known defect."
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from cotfaith.answers import (EXTRACT_VERSION, extract, extract_after_marker, extract_letter, extract_number,
                              is_correct, normalize_number)
from cotfaith.reading import agreement, agrees, read_labelled
from cotfaith.data import Example

FIXTURE = Path(__file__).parent/'fixtures'/'answers.jsonl'
ROWS = read_labelled(FIXTURE)                  # options come from the data dir, not the fixture
FORMS = read_labelled(Path(__file__).parent/'fixtures'/'answers_forms.jsonl')   # hand-made: hedges and forms (issue 32)
OPTS = ('Acute myelogenous leukemia', 'Cholecystitis', 'Renal papillary necrosis', 'Splenic sequestration crisis')


def _read(r:dict, strict:bool):
    ex = Example(r['id'], r['dataset'], '', str(r['gold']), tuple(r['choices']) if r['choices'] else None)
    return (extract if r['kind'] == 'cot' else extract_after_marker)(ex, r['text'], strict)


def test_fixture_covers_the_grid():
    "At least 300 real outputs, every dataset, base and fine-tuned, all three kinds, labelled answers and no-answers."
    assert len(ROWS) >= 300
    assert len({r['id'] for r in ROWS}) == len(ROWS)
    assert {'gsm8k', 'medqa', 'medmcqa', 'cosmosqa'} <= {r['dataset'] for r in ROWS}
    variants = {r['variant'] for r in ROWS}
    assert 'base' in variants and any(v.startswith('ft-') for v in variants)
    assert {r['kind'] for r in ROWS} == {'cot', 'direct', 'after_marker'}
    humans = Counter(r['human'] is None for r in ROWS)
    assert humans[True] >= 30 and humans[False] >= 200
    big = [r for r in ROWS if r['model'] == 'qwen2.5-coder-1.5b']          # issue 32: a model that reasons
    assert len(big) >= 200 and {r['kind'] for r in big} == {'cot', 'direct', 'after_marker'}
    for r in ROWS:
        h = r['human']
        if h is None: continue
        assert (h in 'ABCDEFGHIJ'[:len(r['choices'])] if r['choices'] else normalize_number(h) == h), r['id']


def test_agreement_with_the_human_reading():
    "Flexible agrees with the reader on >= 98% of the sample; strict never reads an answer the reader does not."
    t = agreement(ROWS, ('model', 'dataset'))
    assert t['all']['flexible'] >= 0.98, t
    for d, o in t.items(): assert o['n'] < 20 or o['flexible'] >= 0.95, (d, o)     # per model and dataset, n >= 20
    strict_wrong = [r['id'] for r in ROWS if (a := _read(r, strict=True)) is not None and not agrees(a, r['human'])]
    assert not strict_wrong, strict_wrong


@pytest.mark.parametrize('text', ['final answer: c', 'FINAL ANSWER: (C)', 'Final Answer: Option C', 'Final answer: [C]',
                                  '**Final answer:** C', 'Final answer: c) renal papillary necrosis'])
def test_marker_and_letter_any_case_and_form(text):
    "Defect 1: the marker and the letter in any case, through brackets, bold and 'Option', strict and flexible."
    assert extract_letter(text, OPTS) == 'C'
    assert extract_letter(text, OPTS, strict=False) == 'C'


def test_answer_is_lowercase_letter():
    assert extract_letter('The answer is (c)', OPTS, strict=False) == 'C'


def test_numbers_by_value():
    "Defect 2: canonical by value; the sign kept however it is written; is_correct by value."
    pairs = [('3.50', '3.5'), ('1,000', '1000'), ('7.0', '7'), ('0.10', '0.1'), ('$1,250.00', '1250')]
    assert [normalize_number(a) for a, _ in pairs] == [normalize_number(b) for _, b in pairs] == [b for _, b in pairs]
    assert [normalize_number(s) for s in ['\u22125', '-$5', '$-5', '\u20135']] == ['-5'] * 4
    assert extract_number('Final answer: \u22125') == '-5'
    assert extract_number('Final answer: -$5') == '-5'
    assert extract_number('Final answer: 12%') == '12'
    g = Example('g', 'gsm8k', 'q', '3.5')
    assert is_correct(g, '3.50') and is_correct(Example('g', 'gsm8k', 'q', '1000'), '1,000')
    assert not is_correct(g, '-3.5')


def test_echoed_options_are_no_answer():
    "Defect 3a: a chain that only repeats the options (any number of them) answers nothing."
    assert extract_letter('A. Yes\nB. No', ('Yes', 'No'), strict=False) is None
    five = ('Alpha', 'Beta', 'Gamma', 'Delta', 'Epsilon')
    assert extract_letter('\n'.join(f'{L}. {o}' for L, o in zip('ABCDE', five)), five, strict=False) is None


def test_short_option_texts_are_read():
    "Defect 3b: an option text of any length is read when it is the whole answer."
    yn = ('Yes', 'No')
    assert extract_after_marker(Example('c', 'cosmosqa', 'q', 'B', yn), ' No', strict=False) == 'B'
    assert extract_letter('The answer is no.', yn, strict=False) == 'B'


def test_article_is_not_a_letter():
    "Defect 3c: 'A mouse is ...' is a direct answer, not option A."
    opts = ('In the kitchen', 'In the garden', 'Under the bed', 'Nowhere')
    ex = Example('c', 'cosmosqa', 'q', 'A', opts)
    assert extract_after_marker(ex, ' A mouse is found in the kitchen.', strict=False) is None
    assert extract_letter('A mouse is found in the kitchen.', opts, strict=False) is None


def test_overlapping_options_go_to_the_named_one():
    "Defect 3d: 'Not sure' is not 'No' because it comes first; the whole answer decides."
    opts = ('No', 'Not sure', 'Yes')
    assert extract_letter('Not sure', opts, strict=False) == 'B'
    assert extract_letter('Final answer: not sure.', opts, strict=False) == 'B'
    assert extract_letter('No', opts, strict=False) == 'A'


def test_extract_version():
    "Defect 4: results can be keyed by the extraction rules' version."
    assert EXTRACT_VERSION == 4


def test_every_hedge_is_no_answer():
    "Issue 32: every labelled hedge, real or hand-made, is read as no answer by both extractors."
    hedges = [r for r in ROWS + FORMS if r.get('hedge')]
    assert hedges and all(r['human'] is None for r in hedges)
    assert [(r['id'], _read(r, True), _read(r, False)) for r in hedges] == [(r['id'], None, None) for r in hedges]


@pytest.mark.parametrize('r', FORMS, ids=lambda r: f"{r['id']}: {r['note']}")
def test_hand_made_hedges_and_forms(r):
    "Issue 32: a hedge is no answer, strict and flexible; the forms reasoning models write are read as labelled."
    got = (_read(r, strict=True), _read(r, strict=False))
    assert agrees(got[0], r['strict']) and agrees(got[1], r['human']), (r['text'], got, (r['strict'], r['human']))


def test_the_hand_made_table_has_every_form_of_the_issue():
    notes = {r['note'] for r in FORMS}
    assert {'B or C', 'B and C', 'B, C', 'C is correct but B is also plausible', '$\\boxed{C}$', '$C$',
            'Option B is correct.', 'So the answer must be C.', 'Hence, (C) is correct.', '.5', '5/2', '3/4',
            '= 0.75 without a full stop', 'an echo cut off at its next label'} <= notes, notes
    hedges = [r for r in FORMS if r['hedge']]
    assert len(hedges) >= 20 and all(r['human'] is None and r['strict'] is None for r in hedges)
    assert {r['kind'] for r in hedges} == {'cot', 'after_marker'} and any(not r['choices'] for r in hedges)


def test_a_short_option_text_is_read_like_a_long_one_in_real_outputs():
    "19: 'No' (two letters) is read as surely as 'Yes' in the model's own yes/no chains; no bias toward either."
    said = {w: [r for r in ROWS if r['dataset'].startswith('yn') and r['kind'] == 'cot' and r['human'] == L
                and re.search(rf'answer is {w}\.', r['text']) and not re.search(r'\b[AB]\b', r['text'])]
            for w, L in (('no', 'B'), ('yes', 'A'))}
    assert said['no'] and said['yes'], {w: len(rs) for w, rs in said.items()}
    assert [_read(r, strict=False) for r in said['no']] == ['B'] * len(said['no'])
    assert [_read(r, strict=False) for r in said['yes']] == ['A'] * len(said['yes'])
