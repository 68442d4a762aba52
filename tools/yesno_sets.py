"""Yes/no versions of two of the paper's datasets, for the labelled answer sample (issue 19): real model outputs on
questions answered yes or no, with and without a passage. The files are written where you say (never into the repo:
they hold the datasets' text), from the local copies in COTFAITH_DATA_DIR.

    python tools/yesno_sets.py OUT_DIR [N]

- `yn-gsm8k.jsonl`: a GSM8K question, then "Is the answer X?", X the gold number (yes) or the gold plus 1 to 7 (no);
- `yn-cosmosqa.jsonl`: a CosmosQA passage as `context`, then its question and "Is the answer: <option>?", the option
  the gold one (yes) or another (no).
Every second row is a yes, so a reader that always says yes (or no) scores 50%."""
import json, random, sys
from pathlib import Path

from cotfaith.data import load_examples


def gsm8k_rows(n:int)->list:
    rows = []
    for i, e in enumerate(load_examples('gsm8k', 'test', n, seed=19)):
        x = e.answer if i % 2 == 0 else str(int(float(e.answer)) + 1 + i % 7)
        rows.append({'id': e.id, 'question': f'{e.question}\n\nIs the answer {x}?', 'answer': 'yes' if i % 2 == 0 else 'no'})
    return rows


def cosmosqa_rows(n:int)->list:
    rows, rng = [], random.Random(19)
    for i, e in enumerate(load_examples('cosmosqa', 'test', n, seed=19)):
        passage, q = e.question.split('\n\n', 1)
        gold = 'ABCD'.index(e.answer)
        pick = gold if i % 2 == 0 else rng.choice([j for j in range(len(e.choices)) if j != gold])
        rows.append({'id': e.id, 'context': passage, 'question': f'{q} Is the answer: "{e.choices[pick]}"?',
                     'answer': 'yes' if pick == gold else 'no'})
    return rows


if __name__ == '__main__':
    out, n = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (('yn-gsm8k', gsm8k_rows(n)), ('yn-cosmosqa', cosmosqa_rows(n))):
        (out/f'{name}.jsonl').write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows))
        print(f'{len(rows)} rows -> {out/name}.jsonl')
