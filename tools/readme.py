"""Regenerate README.md from nbs/index.ipynb: run it, drop hidden cells and directives, write Markdown.

Outputs are written as Markdown or as text (a DataFrame as its text form), never as HTML.

nbdev_readme needs the quarto binary, which cannot be installed here; this does the same job for our index.
Run with `make readme`.
"""
import re
import sys
from pathlib import Path

from execnb.nbio import read_nb
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r'^\s*#\|.*\n?', re.M)


def _outputs(cell)->str:
    parts = []
    for o in cell.get('outputs', []):
        data = o.get('data', {})
        if 'text/markdown' in data: parts.append(''.join(data['text/markdown']))
        elif 'text/plain' in data:                      # a table as text too: the README holds no raw HTML
            parts.append('```\n' + ''.join(data['text/plain']).rstrip() + '\n```')
        elif o.get('output_type') == 'stream' and o.get('name') == 'stdout': parts.append('```\n' + ''.join(o['text']).rstrip() + '\n```')
    return '\n\n'.join(parts)


def render(nb_path:Path)->str:
    nb = read_nb(nb_path)
    CaptureShell(path=nb_path.parent).run_all(nb, exc_stop=True)
    out = []
    for c in nb.cells:
        src = ''.join(c.source)
        if re.search(r'^\s*#\|\s*hide', src, re.M): continue
        body = DIRECTIVE.sub('', src).strip()
        if c.cell_type == 'markdown': out.append(body)
        elif body: out.append(f'```python\n{body}\n```' + (f'\n\n{_outputs(c)}' if c.get('outputs') else ''))
    return '\n\n'.join(out) + '\n'


if __name__ == '__main__':
    text = render(ROOT/'nbs'/'index.ipynb')
    (ROOT/'README.md').write_text(text)
    print(f'README.md: {len(text.splitlines())} lines', file=sys.stderr)
