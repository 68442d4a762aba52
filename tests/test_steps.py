"Step splitting (STEP_VERSION 3): hand-labelled real chains, and the rules a step follows."
import json
from collections import Counter
from pathlib import Path

from cotfaith.prompts import STEP_VERSION, boundary_scores, locate_steps, split_steps, step_label, truncate_steps

FIXTURE = Path(__file__).parent/'fixtures'/'steps.jsonl'
ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_the_fixture_is_a_labelled_sample_of_real_chains():
    assert len(ROWS) >= 100 and len({r['id'] for r in ROWS}) == len(ROWS)
    kinds = Counter(r['source'].split('-')[0] for r in ROWS)
    assert kinds['base'] >= 40 and kinds['ft'] >= 40 and kinds['organism'] >= 1, kinds
    assert {r['source'].split('-')[1] for r in ROWS} >= {'gsm8k', 'medqa', 'medmcqa', 'cosmosqa'}
    assert Counter(r['split'] for r in ROWS)['heldout'] >= 30
    for r in ROWS:
        assert r['steps'] and locate_steps(r['cot'], r['steps'])     # every labelled step is verbatim, in order


def test_step_boundaries_match_the_labels():
    s = boundary_scores(ROWS)
    assert s['precision'] >= 0.95 and s['recall'] >= 0.95, s
    held = boundary_scores([r for r in ROWS if r['split'] == 'heldout'])    # read after the rules were frozen
    assert held['precision'] >= 0.9 and held['recall'] >= 0.9, held


def test_a_list_label_belongs_to_the_step_it_labels():
    cot = '1. Ann has 2.\n2) Bob has 3.\nStep 3: So 5.\n**Step 4:**\nDone.\n(a) Also 6.\n- Then 7. 8. Last.\nFinal answer: 7'
    assert split_steps(cot) == ['1. Ann has 2.', '2) Bob has 3.', 'Step 3: So 5.', '**Step 4:**\nDone.', '(a) Also 6.',
                                '- Then 7.', '8. Last.']
    assert len(split_steps('\n'.join(f'{i}. Step number {i}.' for i in range(1, 6)))) == 5
    assert [step_label(s) for s in ['3) x', '**Step 2:** y', '- z', '4 apples']] == ['3) ', '**Step 2:** ', '- ', '']


def test_abbreviations_and_decimals_do_not_end_a_step():
    cot = 'Mr. Li and Dr. Ng pay 3.5 each, e.g. 7 vs. 6 in total. J. Doe pays 2. Then 9.'
    assert split_steps(cot) == ['Mr. Li and Dr. Ng pay 3.5 each, e.g. 7 vs. 6 in total.', 'J. Doe pays 2.', 'Then 9.']
    assert split_steps('The correct answer is D. Gout.') == ['The correct answer is D. Gout.']


def test_markup_lines_and_empty_lines_are_not_steps():
    cot = '### Plan\nAnn has 2.\n**\n-\n---\n```python\nx = 2 + 3\n```\n\n   \nSo 5.\n'
    assert split_steps(cot) == ['### Plan\nAnn has 2.', 'x = 2 + 3', 'So 5.']


def test_a_display_math_block_stays_with_its_step():
    cot = 'The cost is:\n\\[\n3 \\times 4 = 12\n\\]\nHe pays 20, so:\n$$\n20 - 12 = 8.\n$$\nDone.\nFinal answer: 8'
    assert split_steps(cot) == ['The cost is:\n\\[\n3 \\times 4 = 12\n\\]', 'He pays 20, so:\n$$\n20 - 12 = 8.\n$$', 'Done.']
    assert split_steps('$$1 + 1 = 2$$\nSo 2.') == ['$$1 + 1 = 2$$', 'So 2.']
    assert truncate_steps(cot, 1).endswith('\\]')


def test_the_step_rules_have_a_version_of_their_own():
    assert STEP_VERSION == 3


def test_splitting_stays_linear_on_long_chains():
    import time
    t = time.perf_counter()
    assert len(split_steps('Add one more apple. ' * 5000)) == 5000 and split_steps(' ' * 50000 + '\nSo 5.') == ['So 5.']
    assert time.perf_counter() - t < 2
