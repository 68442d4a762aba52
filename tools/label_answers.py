"""Build the labelled answer-extraction sample `tests/fixtures/answers.jsonl` from real pipeline records.

    python tools/label_answers.py collect RESULTS_DIR CANDIDATES.jsonl [CODE_ROOT [TAG [ET_PICKS]]]  # unlabelled
    python tools/label_answers.py show CANDIDATES.jsonl [FROM [TO]]      # print them for reading
    python tools/label_answers.py merge CANDIDATES.jsonl LABELS.json     # labelled rows -> into the fixture

`collect` takes every CoT and direct answer in the per-instance records under RESULTS_DIR, and a few early-termination
answer continuations per record (read back from the generation cache by rebuilding their cache keys, which needs
only the tokenizer; CODE_ROOT is the checkout whose `cotfaith` wrote the records, since step splitting decides the
prompts). Texts are stored verbatim. `human` is what a person reads in the text, labelled by hand in
LABELS.json ({id: answer or null, or [answer, note]}); it is never copied from an extractor.
"""
import json, sys
from pathlib import Path

from cotfaith.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT/'tests'/'fixtures'/'answers.jsonl'
ORGANISM = {'rationale': 'faithful', 'posthoc': 'unfaithful'}   # training target -> organism (others keep their name)


def variant(prov:dict)->str:
    "base, ft-<dataset>-r<rank> or organism-<kind> (arith), from a record's provenance."
    ft = prov.get('finetune')
    if not prov['config'].get('adapter'): return 'base'
    if not ft: return 'adapter'
    c = ft.get('config', ft)
    if c.get('dataset') == 'arith': return f"organism-{ORGANISM.get(c.get('target'), c.get('target'))}"
    return f"ft-{c.get('dataset')}-r{c.get('rank')}"


def _row(r:dict, kind:str, text:str, var:str, suffix:str='')->dict:
    return {'id': f"{r['id']}/{var}/{kind}{suffix}", 'dataset': r['dataset'], 'kind': kind,
            'model': r['provenance']['config']['model'], 'variant': var, 'choices': r['choices'], 'gold': r['gold'],
            'text': text, 'human': None}


def _et_texts(r:dict, tok, picks:int=3)->list:
    "(k, continuation) at early-termination points of `r` (first, middle, last; `picks`=0: all), from the cache."
    from cotfaith.data import Example
    from cotfaith.prompts import render, answer_messages, truncate_steps
    from cotfaith.generate import gen_key, GenCache
    import cotfaith.faithfulness as F
    ks, cfg = r.get('et_k') or [], r['provenance']['config']
    if not ks: return []
    ex = Example(r['id'], r['dataset'], r['question'], r['gold'], tuple(r['choices']) if r['choices'] else None)
    gk = {'method': 'answer-after-marker', 'forced_choice': ex.is_choice, 'max_new_tokens': cfg['answer_tokens']}
    gks = [gk | {'answer_version': F.ANSWER_VERSION}] if not ex.is_choice else [gk]
    if ex.is_choice and hasattr(F, 'letter_tokens'): gks.append(gk | {'letters': F.letter_tokens(tok, len(ex.choices))})
    lm, out = type('LM', (), {'key': r['provenance']['lm']})(), []
    for k in sorted({ks[0], ks[len(ks) // 2], ks[-1]}) if picks else ks:
        p = render(tok, answer_messages(ex, truncate_steps(r['cot'], k)))
        if g := next((g for gk in gks if (g := GenCache().get(gen_key(lm, p, gk, cfg['seed'])))), None):
            out.append((k, g['text']))
    return out


def collect(results:str, out:str, code:str|None=None, tag:str='', et_picks:str='3', et_choice:int=1):
    "Every CoT and direct text under `results`, plus early-termination continuations, as unlabelled rows."
    if code: sys.path.insert(0, code)
    from transformers import AutoTokenizer
    tok, rows, seen = AutoTokenizer.from_pretrained(str(ROOT/'.cache'/'models'/'smollm2-135m')), [], set()
    for f in sorted(Path(results).rglob('*.jsonl')):
        n_choice = 0
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if 'cot' not in r: continue
            var = variant(r['provenance'])
            new = [_row(r, 'cot', r['cot'], var), _row(r, 'direct', r['direct'], var)]
            if not r['choices'] or n_choice < et_choice:
                try: new += [_row(r, 'after_marker', t, var, f'-k{k}') for k, t in _et_texts(r, tok, int(et_picks))]
                except IndexError: pass   # steps split by another code version than CODE_ROOT's: no cache keys
                n_choice += bool(r['choices'])
            for x in new:
                x['id'] = f"{tag}/{x['id']}" if tag else x['id']
                if x['id'] not in seen: seen.add(x['id']); rows.append(x)
    Path(out).write_text(''.join(json.dumps(x, ensure_ascii=False) + '\n' for x in rows))
    print(f'{len(rows)} rows -> {out}')


def show(cands:str, a:int=0, b:int|None=None, tail:int=700):
    "Print rows a..b for reading: options, gold, the end of the text."
    rows = [json.loads(l) for l in open(cands)][a:b]
    for i, x in enumerate(rows, a):
        print(f"===== [{i}] {x['id']}  gold={x['gold']}")
        if x['choices']: print('   options:', ' | '.join(f'{L}. {c}' for L, c in zip('ABCDEFGHIJ', x['choices'])))
        t = x['text']
        print(('...' + t[-tail:]) if len(t) > tail else t)


def merge(cands:str, labels:str, out:str=str(FIXTURE)):
    "The fixture's rows plus the rows of `cands` labelled in `labels` (`human`, and a `note`), written back."
    lab, p = json.loads(Path(labels).read_text()), Path(out)
    rows = {x['id']: x for x in map(json.loads, p.read_text().splitlines())} if p.exists() else {}
    for x in map(json.loads, open(cands)):
        if x['id'] not in lab: continue
        h, note = lab[x['id']] if isinstance(lab[x['id']], list) else (lab[x['id']], None)
        own = x['dataset'] not in DATASETS                # yes/no options are ours, not a dataset's text: kept
        keep = {k: v for k, v in x.items() if k != 'note' and (k != 'choices' or own)}   # options stay in the data dir
        rows[x['id']] = {'id': x['id'], 'example': x['id'].split('/')[0], **keep} | {'human': h} | ({'note': note} if note else {})
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(''.join(json.dumps(x, ensure_ascii=False) + '\n' for x in rows.values()))
    print(f'{len(rows)} labelled rows -> {out}')


if __name__ == '__main__':
    cmd, *args = sys.argv[1:]
    {'collect': collect, 'show': lambda c, *ab: show(c, *map(int, ab)), 'merge': merge}[cmd](*args)
