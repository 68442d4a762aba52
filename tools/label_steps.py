"""Hand-label the reasoning steps of real chains of thought, for `tests/fixtures/steps.jsonl`.

The labels are a reader's judgement, not a splitter's output. To make reading and marking quick, each chain's
reasoning (the text before `Final answer:`) is cut at EVERY place a step could end (each line break, and each
`.`, `!`, `?`, `:` or `;` followed by a space), which over-splits on purpose; the pieces ("atoms") are numbered.
The labeller then writes one line per chain saying how atoms group into steps:

    <id>: 0-1 2 x3 4-6 .7-9 /2:10-15
      # atoms 0..1 are one step, 2 is one, 3 is not a step (markup only), 4..6 one step,
      # 7, 8 and 9 one step each, and 10..15 in steps of two atoms (a list label and its text, say)

Every atom must be covered. `build` turns these groupings into the fixture, one JSON line per chain:
`{"id", "source", "split", "cot", "steps"}`, where `steps` are the labelled step texts (whitespace-stripped
substrings of `cot`, in order). Sources: `base-<dataset>`, `ft-<fine-tune dataset>-r<rank>`, `organism-<name>`.
`split` is `dev` for chains read while the splitter's rules were being written, `heldout` for chains read after they
were frozen (the honest measure).

How the chains were read (a step is a unit of reasoning: one claim or one computation):
- each sentence is a step (as in Lanham et al.), and so is each line that is not a sentence (`2 + 3 = 5`, an
  option restated, a line of code);
- a list label (`1.`, `A.`, `Step 2:`), a heading, or a short lead-in on its own line (`The answer is:`) belongs to
  the step it introduces; an option letter inside a sentence (`the answer is D. Gout.`) does not end it;
- a display-math block belongs to the step that introduces it;
- markup-only lines (`**`, a code fence) and a cut-off label fragment at the end of a chain are not steps; a cut-off
  sentence is.

    python tools/label_steps.py show RESULTS_DIR --source base-gsm8k --n 20 --out /tmp/chains.jsonl > /tmp/chains.txt
    python tools/label_steps.py build /tmp/labels.txt /tmp/chains.jsonl --split dev > tests/fixtures/steps.jsonl
"""
import argparse
import json
import re
import sys
from pathlib import Path

ORGANISM_OF_TARGET = {'rationale': 'faithful', 'posthoc': 'unfaithful', 'silent': 'silent'}
_MARKER = re.compile(r'final\s+answer\s*[:：]', re.I)
_CUT = re.compile(r'\n|[.!?:;][*)"\']*(?=\s)')


def reasoning(cot:str)->str:
    m = _MARKER.search(cot)
    return cot[:m.start()] if m else cot


def atoms(cot:str)->list:
    "(start, end) spans of the non-blank pieces of the reasoning, cut at every possible step end."
    text, cuts = reasoning(cot), [0]
    cuts += [m.end() for m in _CUT.finditer(text)] + [len(text)]
    out = []
    for a, b in zip(cuts, cuts[1:]):
        piece = text[a:b]
        if piece.strip():
            s = a + len(piece) - len(piece.lstrip())
            out.append((s, s + len(piece.strip())))
    return out


def marked(cot:str)->str:
    "The reasoning with each atom's number inserted before it, layout kept (for reading)."
    text, out, at = reasoning(cot), '', 0
    for i, (a, b) in enumerate(atoms(cot)):
        out += text[at:a] + f'⟦{i}⟧' + text[a:b]
        at = b
    return out + text[at:]


def source_of(rec:dict)->str:
    "base-<dataset>, ft-<fine-tune dataset>-r<rank>, or organism-<name> (a fine-tune on the synthetic `arith` task)."
    prov = rec.get('provenance') or {}
    cfg = prov.get('config') or {}
    ds = rec.get('dataset') or cfg.get('dataset')
    if not cfg.get('adapter'):
        return f'base-{ds}'
    ft = ((prov.get('finetune') or {}).get('config')) or {}
    if ft.get('dataset') == 'arith':                      # the model organisms of `11_organisms`, by their name
        return f"organism-{ORGANISM_OF_TARGET.get(ft.get('target'), ft.get('target'))}"
    return f"ft-{ft.get('dataset')}-r{ft.get('rank')}"


def records(root:Path):
    for p in sorted(root.rglob('*.jsonl')):
        if re.search(r'\.(paraphrase|filler|mistake)-', p.name):
            continue
        for line in p.read_text().splitlines():
            r = json.loads(line)
            if r.get('cot') is not None:
                yield p, r


def show(args):
    seen = set()
    with open(args.out, 'a') as f:
        for p, r in records(Path(args.root)):
            src = source_of(r)
            if args.source and src != args.source:
                continue
            uid = f"{src}/{r['id']}"
            if uid in seen or len(seen) >= args.n:
                continue
            seen.add(uid)
            f.write(json.dumps({'id': uid, 'source': src, 'cot': r['cot']}) + '\n')
            print(f'=== {uid}')
            print(marked(r['cot']))


def parse(spec:str, n:int)->list:
    "Groups of atom indices from '0-1 2 x3 4-6'; None marks an excluded atom."
    groups, covered = [], []
    for tok in spec.split():
        size, _, rng = tok.rpartition(':') if tok.startswith('/') else ('', '', tok)
        a, _, b = rng.lstrip('x.').partition('-')
        idx = list(range(int(a), int(b or a) + 1))
        covered += idx
        if tok.startswith('x'): groups.append(None)
        elif tok.startswith('.'): groups += [[i] for i in idx]
        elif size: groups += [idx[j:j + int(size[1:])] for j in range(0, len(idx), int(size[1:]))]
        else: groups.append(idx)
    if covered != list(range(n)):
        raise ValueError(f'atoms covered {covered}, want 0..{n - 1}')
    return groups


def build(args):
    chains = {json.loads(l)['id']: json.loads(l) for l in open(args.chains)}
    for line in open(args.labels):
        line = re.sub(r'\s+#\s.*$', '', line).strip()          # ' # ' starts a comment (ids may hold '#')
        if not line:
            continue
        uid, _, spec = line.partition(': ')
        c = chains[uid.strip()]
        ats = atoms(c['cot'])
        steps = [c['cot'][ats[g[0]][0]:ats[g[-1]][1]] for g in parse(spec, len(ats)) if g]
        row = {'id': c['id'], 'source': c['source'], 'split': args.split, 'cot': c['cot'], 'steps': steps}
        print(json.dumps(row, ensure_ascii=False))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(required=True)
    s = sub.add_parser('show')
    s.add_argument('root')
    s.add_argument('--source')
    s.add_argument('--n', type=int, default=20)
    s.add_argument('--out', default='/tmp/chains.jsonl', help='chains shown are appended here, for `build`')
    s.set_defaults(f=show)
    b = sub.add_parser('build')
    b.add_argument('labels')
    b.add_argument('chains')
    b.add_argument('--split', default='dev', choices=['dev', 'heldout'])
    b.set_defaults(f=build)
    a = ap.parse_args()
    a.f(a)
