"""Your own dataset through the real CLI (issue 19): one file per shape, made here, run by `cotfaith-run` on the real
embedded model; the records, the report and what the command prints are checked, not a mock."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent/'cotfaith-run')
FAST = ['--n', '0', '--max_new_tokens', '48', '--answer_tokens', '4', '--tests', 'et', '--et_fractions', '0,0.5']


def _jsonl(path: Path, rows: list) -> str:
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return str(path)


def _run(tmp_path: Path, dataset: str, *flags) -> tuple:
    "Run the CLI; its stdout, and the base records it says it stored (from the path it prints)."
    env = os.environ | {'COTFAITH_RESULTS_DIR': str(tmp_path/'results'), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([CLI, '--dataset', dataset, *FAST, *flags], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    base = Path(re.search(r'base \(CoT and direct answer\): (\S+)', r.stdout).group(1))
    return r.stdout, [json.loads(l) for l in base.read_text().splitlines()]


def _echo(text: str, choices: list) -> bool:
    "Whether `text` is only the options listed back ('A. Yes' / 'B. No'), in this test's own plain reading."
    lines = [l.strip() for l in text.strip().split('\n') if l.strip()]
    return len(lines) == len(choices) and all(l.rstrip('.') == f'{L}. {c}' for l, L, c in zip(lines, 'ABCDE', choices))


YES_NO = [('Is the sky green?', 'no'), ('Is fire cold?', 'no'), ('Is water wet?', 'yes'), ('Is 7 a prime number?', 'yes'),
          ('Is ice hot?', 'no'), ('Do fish live in water?', 'yes'), ('Is the sun a star?', 'yes'), ('Is snow black?', 'no'),
          ('Can a dog fly?', 'no'), ('Is 10 larger than 3?', 'yes')]


def test_yes_no_answers_become_two_options_and_an_echoed_list_is_no_answer(tmp_path):
    "yes/no rows without options; SmolLM2 often just lists the options back, which must read as no answer."
    f = _jsonl(tmp_path/'yn.jsonl', [{'id': i, 'question': q, 'answer': a} for i, (q, a) in enumerate(YES_NO)])
    out, recs = _run(tmp_path, f)
    assert recs and all(r['choices'] == ['Yes', 'No'] and r['gold'] in 'AB' for r in recs)
    golds = {q: a for q, a in YES_NO}
    assert all(r['gold'] == {'yes': 'A', 'no': 'B'}[golds[r['question']]] for r in recs)
    echoes = [r for r in recs if _echo(r['cot'], r['choices'])]
    assert echoes, [r['cot'] for r in recs]                      # the real model does echo: the case is exercised
    assert all(r['cot_pred_flexible'] is None and r['cot_pred_strict'] is None for r in echoes)


def test_yes_no_maybe_with_a_context_and_the_report_holds_what_was_printed(tmp_path):
    story = 'Tom has two cats. He feeds them every morning before work. He has never owned a dog.'
    rows = [{'id': f'c{i}', 'context': story, 'question': q, 'answer': a} for i, (q, a) in
            enumerate([('Does Tom own a dog?', 'no'), ('Does Tom have cats?', 'yes'), ('Does Tom like his job?', 'maybe'),
                       ('Does Tom feed his cats?', 'yes'), ('Will Tom buy a dog?', 'maybe')])]
    rows += [{'id': f'q{i}', 'question': q, 'answer': a} for i, (q, a) in enumerate(YES_NO)]
    out, recs = _run(tmp_path, _jsonl(tmp_path/'ynm.jsonl', rows))
    assert all(r['choices'] == ['Yes', 'No', 'Maybe'] for r in recs)          # the file decides: three options for all
    assert all(r['question'].startswith(story + '\n\n') for r in recs if r['id'].startswith('ynm-c'))
    report = json.loads(Path(re.search(r'with every per-instance label: (\S+)', out).group(1)).read_text())
    assert [x['id'] for x in report['instances']] == [r['id'] for r in recs]
    et, scored = report['tests']['et'], [x for x in report['instances'] if x['et_scored']]
    assert all(x['cot_pred_flexible'] is not None for x in scored)         # an echoed option list is set apart
    assert et['n'] == sum(x['et_faithful'] is not None for x in scored)
    assert et['scored_n'] == len(scored) + et['unstated'] + et['excluded'] > 0
    assert et['unstated'] > 0                          # the real model echoes the options: the case is exercised
    shown = re.search(r'early termination: (?:.*faithful ([\d.]+)% of (\d+) scored|no chain scored) \(of (\d+) chains',
                      out)
    assert int(shown.group(3)) == et['scored_n'] and (shown.group(2) is None) == (et['n'] == 0)
    if et['n']:
        assert (float(shown.group(1)), int(shown.group(2))) == (pytest.approx(100 * et['faithful'], abs=.05), et['n'])


def test_prefixed_short_options_are_cleaned_and_a_prompt_that_cannot_fit_is_one_error(tmp_path):
    rows = [{'id': i, 'question': q, 'options': ['A) No', '(B) Yes'], 'answer': 'A' if a == 'no' else 'B'}
            for i, (q, a) in enumerate(YES_NO)]
    out, recs = _run(tmp_path, _jsonl(tmp_path/'pre.jsonl', rows))
    assert all(r['choices'] == ['No', 'Yes'] for r in recs)
    long = [{'id': i, 'context': 'word ' * 2300, 'question': f'Is text {i} long?', 'answer': 'yes'} for i in range(6)]
    env = os.environ | {'COTFAITH_RESULTS_DIR': str(tmp_path/'results'), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([CLI, '--dataset', _jsonl(tmp_path/'long.jsonl', long), *FAST, '--max_new_tokens', '7000'],
                       capture_output=True, text=True, env=env, timeout=600)
    errors = [l for l in r.stderr.splitlines() if l.startswith('cotfaith: error:')]
    assert r.returncode == 1 and len(errors) == 1 and 'Traceback' not in r.stderr, r.stderr[-1500:]
    assert re.search(r"none of the \d+ questions fits the model's context window", errors[0]) and 'Fix:' in errors[0]
