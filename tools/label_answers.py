"""Build the labelled answer-extraction sample `tests/fixtures/answers.jsonl` from real pipeline records.

    python tools/label_answers.py collect RESULTS_DIR CANDIDATES.jsonl [CODE_ROOT [TAG [ET_PICKS]]]  # unlabelled
    python tools/label_answers.py show CANDIDATES.jsonl [FROM [TO]]      # print them for reading
    python tools/label_answers.py merge CANDIDATES.jsonl LABELS.json     # labelled rows -> into the fixture
    python tools/label_answers.py cache CACHE_DIR CANDIDATES.jsonl MODEL [DATASET ...]   # from a generation cache

`collect` takes every CoT and direct answer in the per-instance records under RESULTS_DIR, and a few early-termination
answer continuations per record (read back from the generation cache by rebuilding their cache keys, which needs
only the tokenizer; CODE_ROOT is the checkout whose `cotfaith` wrote the records, since step splitting decides the
prompts). Texts are stored verbatim. `human` is what a person reads in the text, labelled by hand in
LABELS.json ({id: answer or null, or [answer, note], or {"human": null, "note": ..., "hedge": true} for a text that
names more than one answer}); it is never copied from an extractor.

`cache` reads a generation cache alone (a grid still running, whose records are not written yet): each file's text,
as a chain (`cot`: long, or many tokens), a direct answer (`direct`: short, with a finish reason) or an answer after
the marker (`after_marker`: short, without one); a chain is matched to its question among `load_examples(d, 'test',
n=100, seed=0)` of each DATASET by the numbers and words it shares with it (unmatched rows keep the file's hash in
their id and no `example`); multiple-choice rows are kept only where matched, since their options come from there.
"""
import json, re, sys
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
        y = lab[x['id']]
        h, note = y if isinstance(y, list) else (y['human'], y.get('note')) if isinstance(y, dict) else (y, None)
        own = x['dataset'] not in DATASETS                # yes/no options are ours, not a dataset's text: kept
        keep = {k: v for k, v in x.items() if k != 'note' and (k != 'choices' or own)}   # options stay in the data dir
        rows[x['id']] = ({'id': x['id'], 'example': x['id'].split('/')[0], **keep} | {'human': h}
                         | ({'note': note} if note else {})
                         | ({'hedge': True} if isinstance(y, dict) and y.get('hedge') else {}))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(''.join(json.dumps(x, ensure_ascii=False) + '\n' for x in rows.values()))
    print(f'{len(rows)} labelled rows -> {out}')


def _words(t:str)->set: return set(re.findall(r"[a-z]{4,}|\d+(?:\.\d+)?", t.lower().replace(',', '')))


def _match(text:str, exs:list)->tuple:
    "(example, score) of the question `text` shares the most numbers and words with (shared / sqrt(its own))."
    w = _words(text)
    scored = sorted(((len((q := _words(e.question + ' ' + ' '.join(e.choices or ()))) & w) / max(len(q), 1) ** 0.5, i)
                     for i, e in enumerate(exs)), reverse=True)
    (best, i), second = scored[0], scored[1][0]
    return (exs[i], best) if best >= 1.5 and best >= 1.2 * second else (None, best)


def cache(folder:str, out:str, model:str, *datasets):
    "Unlabelled rows from the generation cache `folder` (`*/*.json`), chains matched to questions of `datasets`."
    from cotfaith.data import load_examples
    exs = {d: load_examples(d, 'test', n=100, seed=0) for d in datasets or ('gsm8k',)}
    rows = []
    for f in sorted(Path(folder).glob('*/*.json'), key=lambda f: (f.stat().st_mtime, f.name)):
        g = json.loads(f.read_text())
        long = len(g['text']) > 150 or g.get('n_tokens', 0) > 40
        kind = 'cot' if long else 'direct' if 'finish' in g else 'after_marker'
        ex = max((_match(g['text'], e) for e in exs.values()), key=lambda m: m[1])[0] if kind == 'cot' else None
        letter = re.fullmatch(r'\s*\(?[A-J]\)?\.?\s*', g['text']) is not None
        if ex is None and (letter or kind == 'cot' and not re.search(r'\d', g['text'])): continue   # options unknown
        d = ex.dataset if ex else 'gsm8k'
        rows.append({'id': f"{model}/{ex.id if ex else f.stem[:12]}/base/{kind}", 'example': ex and ex.id, 'dataset': d,
                     'kind': kind, 'model': model, 'variant': 'base', 'choices': ex and ex.choices,
                     'gold': ex.answer if ex else None, 'text': g['text'], 'human': None})
    Path(out).write_text(''.join(json.dumps(x, ensure_ascii=False) + '\n' for x in rows))
    print(f'{len(rows)} rows -> {out} ({sum(r["example"] is not None for r in rows)} matched to their question)')


if __name__ == '__main__':
    cmd, *args = sys.argv[1:]
    {'collect': collect, 'show': lambda c, *ab: show(c, *map(int, ab)), 'merge': merge, 'cache': cache}[cmd](*args)
