"The documentation site: every notebook cleaned as nbdev's sites show it, bad notebooks named; the built site in Chromium."
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
pytest.importorskip('latex2mathml', reason="the docs extra is not installed: pip install -e '.[docs]' (make extras)")
pytest.importorskip('mkdocs')
from docs_hooks import SKIP, NotebookError, clean_notebook  # noqa: E402

NBS = [p for p in sorted((ROOT/'nbs').glob('*.ipynb')) if p.name not in SKIP]


def _site_paths()->set:
    files = ['README.md', 'bench/README.md', 'records/README.md'] + [f'nbs/{p.name}' for p in NBS]
    return set(files) | {f'{d}/{p.name}' for d in ('docs', 'figures') for p in (ROOT/d).iterdir()}


def _exists(target:str)->bool:
    return os.path.normpath(f'nbs/{target}') in _site_paths()


def test_every_notebook_is_shown_as_nbdev_shows_it():
    for p in NBS:
        raw, nb = json.loads(p.read_text()), clean_notebook(p, _exists)
        hidden = sum(bool(re.search(r'^\s*#\|\s*hide\b', ''.join(c['source']), re.M)) for c in raw['cells'])
        text = '\n'.join(c['source'] for c in nb['cells'])
        assert not re.search(r'^\s*#\|', text, re.M), p.name                  # no directive shown
        assert len([c for c in nb['cells'] if c['cell_type'] == 'code']) <= \
            len([c for c in raw['cells'] if c['cell_type'] == 'code']) - hidden, p.name
        assert not re.search(r'\]\((?!https?:)[^)]*\.(ipynb|md)[)#]', text), p.name     # links point at pages
    stats = '\n'.join(c['source'] for c in clean_notebook(ROOT/'nbs'/'08_stats.ipynb', _exists)['cells'])
    assert '**`mean_aoc`**' in stats and '| `no_answer` | `str` | `changed` |' in stats      # docments, as a table
    assert '<math' in stats and '$$' not in stats                                         # math as MathML


def test_a_notebook_that_cannot_be_rendered_is_named_with_its_cell(tmp_path):
    nb = json.loads((ROOT/'nbs'/'08_stats.ipynb').read_text())
    cases = {'damaged.ipynb': '{"cells": [', 'no_cells.ipynb': json.dumps({'metadata': {}})}
    bad_link = json.loads(json.dumps(nb))
    bad_link['cells'][3] = {'cell_type': 'markdown', 'metadata': {}, 'source': 'See [this](99_missing.ipynb).'}
    bad_math = json.loads(json.dumps(nb))
    bad_math['cells'][4] = {'cell_type': 'markdown', 'metadata': {}, 'source': r'A sum $\frac{1}{$ here.'}
    cases |= {'bad_link.ipynb': json.dumps(bad_link), 'bad_math.ipynb': json.dumps(bad_math)}
    want = {'damaged.ipynb': 'not a readable notebook', 'no_cells.ipynb': 'not a notebook',
            'bad_link.ipynb': 'cell 3: links to 99_missing.ipynb', 'bad_math.ipynb': 'cell 4: cannot be rendered'}
    for name, text in cases.items():
        (tmp_path/name).write_text(text)
        with pytest.raises(NotebookError) as e: clean_notebook(tmp_path/name, _exists)
        assert str(e.value).startswith(name) and want[name] in str(e.value) and 'Fix:' in str(e.value), str(e.value)


@pytest.mark.slow
def test_the_built_site_renders_in_chromium(tmp_path):
    from browser import Browser, free_port
    site = tmp_path/'site'
    p = subprocess.run([str(Path(sys.executable).parent/'mkdocs'), 'build', '--strict', '-d', str(site)], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'})
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(list((site/'nbs').glob('*.html'))) == len(NBS)
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    images = "[...document.images].filter(i => i.complete && i.naturalWidth > 0 && i.src.includes('figures/')).length"
    try:
        with Browser() as b:
            b.goto(f'http://127.0.0.1:{port}/index.html')
            assert 'Two commands' in b.wait_text('What the 1.5B model shows')
            assert b.js("getComputedStyle(document.querySelector('.md-header')).position") == 'sticky'   # themed
            b.goto(f'http://127.0.0.1:{port}/nbs/07a_suite.html')
            text = b.wait_text('Every intervention point counts')
            assert b.js("document.querySelectorAll('.jp-CodeCell .highlight, .jp-InputArea pre').length") > 5
            assert b.js("document.querySelectorAll('.jp-OutputArea-output').length") > 3 and '#|' not in text
            assert b.js(images) >= 1                                               # the organisms' figure loaded
            b.goto(f'http://127.0.0.1:{port}/docs/reasoning.html')
            assert '44.0% [35, 54]' in b.wait_text('What the committed records show')   # CosmosQA, README's table
    finally: srv.shutdown()
