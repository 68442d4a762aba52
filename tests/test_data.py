"The loaders on the real dataset files in the data dir, and clear errors on malformed rows."
import json
import re
import warnings
from collections import Counter

import pytest

from cotfaith.data import DataError, load_examples, read_file, parse_generic, parse_gsm8k, parse_medqa, parse_cosmosqa

FILE_ROWS = {'gsm8k': 1319, 'medqa': 1273, 'medmcqa': 2816, 'cosmosqa': 2985}


@pytest.mark.parametrize('name', FILE_ROWS)
def test_every_row_of_the_real_files_parses(name):
    exs = load_examples(name, 'test')
    assert len({e.id for e in exs}) == len(exs)
    assert all(e.question.strip() for e in exs)
    if name == 'gsm8k':
        assert len(exs) == FILE_ROWS[name] and len(load_examples('gsm8k', 'train')) == 7473
        assert all(e.choices is None and float(e.answer) == float(e.answer) for e in exs)
    else:
        assert all(len(e.choices) == 4 and e.answer in 'ABCD' for e in exs)
        assert len(Counter(e.answer for e in exs)) == 4          # all four letters occur as gold


@pytest.mark.parametrize('name', [*FILE_ROWS, 'arith'])
def test_train_and_test_slices_share_no_question_or_passage(name):
    "A model fine-tuned on the train slice never saw a test question's (normalised) text, nor its passage."
    from cotfaith.data import get_info, normalise_text
    info = get_info(name)
    keys = lambda e: {normalise_text(e.question)} | ({'passage:' + normalise_text(info.passage(e))} if info.passage else set())
    train = set().union(*(keys(e) for e in load_examples(name, 'train')))
    shared = [e.id for e in load_examples(name, 'test') if keys(e) & train]
    assert not shared, f'{len(shared)} test rows share a question or passage with train, e.g. {shared[:3]}'


@pytest.mark.parametrize('name', FILE_ROWS)
def test_train_and_test_slices_are_disjoint_by_id(name):
    train, test = ({e.id for e in load_examples(name, s)} for s in ('train', 'test'))
    assert train and test and not train & test
    if name != 'gsm8k':
        assert len(train) + len(test) == FILE_ROWS[name]
        assert 0.15 < len(train) / FILE_ROWS[name] < 0.25
    assert all(e.rationale and '<<' not in e.rationale for e in load_examples('gsm8k', 'train', n=200))


def test_gold_answers_match_the_upstream_text(tmp_path):
    "The gold letter's option text is the upstream 'answer' field (MedQA), so no letter is shifted."
    from cotfaith.core import data_dir
    rows = {f"medqa-{r['realidx']}": r for r in map(json.loads, (data_dir()/'medqa'/'test.jsonl').read_text().splitlines())}
    exs = load_examples('medqa')
    assert [e.choices['ABCD'.index(e.answer)] for e in exs] == [rows[e.id]['answer'].strip() for e in exs]


def test_subsample_is_seeded_and_deterministic():
    a, b, c = (load_examples('medmcqa', n=10, seed=s) for s in (3, 3, 4))
    assert [e.id for e in a] == [e.id for e in b] != [e.id for e in c]


ROW = {'realidx': 1, 'question': 'Q?', 'options': {'A': 'x', 'B': 'y', 'C': 'z', 'D': 'w'}, 'answer_idx': 'B'}


@pytest.mark.parametrize('row,match', [
    ({k: v for k, v in ROW.items() if k != 'question'}, "missing or empty field 'question'"),
    ({**ROW, 'question': '   '}, "missing or empty field 'question'"),
    ({**ROW, 'answer_idx': 'E'}, "gold answer 'E' is not one of the options ABCD"),
    ({**ROW, 'options': {'A': 'x'}}, 'at least two'),
])
def test_malformed_medqa_row_names_file_line_and_field(tmp_path, row, match):
    f = tmp_path/'medqa.jsonl'
    f.write_text(json.dumps(ROW) + '\n' + json.dumps(row) + '\n')
    with pytest.raises(DataError, match=rf'medqa.jsonl:2: .*{match}'):
        read_file(f, parse_medqa)


def test_non_utf8_and_broken_json_name_the_line(tmp_path):
    f = tmp_path/'g.jsonl'
    f.write_bytes(b'{"question": "a?", "answer": "#### 1"}\n{"question": "\xff", "answer": "#### 2"}\n')
    with pytest.raises(DataError, match='g.jsonl:2: bytes that are not UTF-8'):
        read_file(f, parse_gsm8k)
    f.write_text('{"question": "a?", "answer": "#### 1"}\n{"question": \n')
    with pytest.raises(DataError, match='g.jsonl:2: not valid JSON'):
        read_file(f, parse_gsm8k)


def test_bad_csv_label_names_the_record_line(tmp_path):
    f = tmp_path/'c.csv'
    f.write_text('id,context,question,answer0,answer1,answer2,answer3,label\n'
                 'a,"ctx\nover two lines",q?,w,x,y,z,1\n'
                 'b,ctx,q?,w,x,y,z,7\n')
    with pytest.raises(DataError, match=r"c.csv:4: field 'label' is '7'"):
        read_file(f, parse_cosmosqa)


def test_skip_mode_counts_and_reports_bad_rows(tmp_path):
    f = tmp_path/'g.jsonl'
    f.write_text('{"question": "a?", "answer": "#### 1"}\n{"question": "b?", "answer": "no marker"}\n')
    with pytest.warns(UserWarning, match='skipped 1 malformed rows'):
        assert [e.answer for e in read_file(f, parse_gsm8k, on_error='skip')] == ['1']


def test_missing_data_dir_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match='COTFAITH_DATA_DIR'):
        load_examples('cosmosqa', data=tmp_path/'nowhere')
    with pytest.raises(DataError, match='unknown dataset'):
        load_examples('squad')


def test_a_duplicate_id_is_one_error_naming_both_lines(tmp_path):
    f = tmp_path/'mine.jsonl'
    f.write_text('{"id": "q1", "question": "1 + 1?", "answer": "2"}\n{"id": "q2", "question": "2 + 2?", "answer": "4"}\n'
                 '{"id": "q1", "question": "3 + 3?", "answer": "6"}\n')
    with pytest.raises(DataError, match=r"mine.jsonl:3: id 'mine-q1' is also the id of line 1\. Fix:"):
        load_examples(str(f))


def test_options_that_cannot_be_read_right_warn_once_per_file_naming_the_lines(tmp_path):
    "Issue 32: two options with one text, or a label inside an option (`A)A)59`), load with one warning per file."
    f = tmp_path/'mine.jsonl'
    f.write_text('{"id": "a", "question": "7 + 52?", "answer": "A", "options": ["A)A)59", "B)60", "C)61"]}\n'
                 '{"id": "b", "question": "1 + 1?", "answer": "2"}\n'
                 '{"id": "c", "question": "Which?", "answer": "B", "options": ["Same", "same.", "Other"]}\n')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        for _ in range(3): assert len(read_file(f, parse_generic)) == 3
    assert len(w) == 1 and str(w[0].message).startswith(f'{f}: 2 rows whose options cannot be read right'), w
    assert re.findall(r'line (\d+): (option[^,]*)', str(w[0].message)) == [
        ('1', "option A starts with a label ('A)59')"), ('3', 'options A and B have the same text')]


UNREADABLE_ROWS = {'gsm8k': 0, 'medqa': 1, 'medmcqa': 25, 'cosmosqa': 0}    # whole file (test and train slices)


@pytest.mark.parametrize('name', FILE_ROWS)
def test_the_real_files_still_load_and_name_their_unreadable_rows(name):
    from cotfaith.rows import option_problems
    exs = load_examples(name, 'test') + (load_examples(name, 'train') if name != 'gsm8k' else [])
    assert len({e.id for e in exs}) == FILE_ROWS[name]
    assert sum(bool(option_problems(e.choices)) for e in exs) == UNREADABLE_ROWS[name]
