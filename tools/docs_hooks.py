"""MkDocs hook of `make docs` (mkdocs.yml: `hooks:`): the site's files, laid out as the repository is.

nbdev's own site generator needs quarto, which cannot be installed here, and mkdocs-jupyter shows every cell as it
is. So before mkdocs-jupyter sees a notebook (`on_files`, run first by its priority), each one in `nbs/` is written
cleaned to `.cache/docs/nbs/`, as nbdev's sites show it: `#| hide` cells dropped, no `#|` line shown, each exported
function and class followed by a table of its parameters (its docments), math as MathML (no script, works offline),
and links to other notebooks and pages pointed at their pages. A notebook that cannot be read or rendered, or that
links to a file the site lacks, stops the build with one line naming the notebook and the cell.

The README is the home page (mkdocs makes README.md an index); docs/*.md, bench/README.md, records/README.md and the figures keep their repository
paths, so every relative link works the same on GitHub and on the site.
"""
import ast
import importlib
import inspect
import json
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT/'.cache'/'docs'
SKIP = {'index.ipynb'}                        # the README is the home page
DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)')
LINK = re.compile(r'(\]\()([^)#\s]+?\.(?:ipynb|md|png))(#[^)\s]*)?(\))')
CODE = re.compile(r'(```.*?```|`[^`\n]*`)', re.S)
DISPLAY = re.compile(r'\$\$(.+?)\$\$', re.S)
INLINE = re.compile(r'(?<![\\$\w])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?![\w$])')


class NotebookError(PluginError):
    "A notebook the site cannot show, named with its cell."


def _mathml(text:str)->str:
    "Markdown `text` with its $...$ and $$...$$ math as MathML, code spans and blocks left alone."
    from latex2mathml.converter import convert
    block = lambda m: '\n\n' + convert(m.group(1).strip(), display='block') + '\n\n'
    parts = CODE.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = INLINE.sub(lambda m: convert(m.group(1)), DISPLAY.sub(block, parts[i]))
    return ''.join(parts)


def _links(text:str, exists)->str:
    "Markdown `text` with links to notebooks and pages pointed at their pages, images checked (`exists`)."
    def page(m):
        target = m.group(2)
        if re.match(r'\w+:', target): return m.group(0)
        if not exists(target): raise FileNotFoundError(target)
        html = re.sub(r'\.(ipynb|md)$', '.html', re.sub(r'README\.md$', 'index.html', target))
        return m.group(1) + html + (m.group(3) or '') + m.group(4)
    return LINK.sub(page, text)


def _docments(mod, src:str)->str:
    "A Markdown table of the parameters of each public function and class defined in exported cell `src`."
    from fastcore.docments import docments
    out = []
    for node in ast.parse(src).body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith('_'): continue
        obj = getattr(mod, node.name, None)
        if obj is None: continue
        try: params = docments(obj, full=True, returns=True)
        except Exception: params = {}
        doc = (inspect.getdoc(obj) or '').split('\n')[0]
        rows = [f"| `{k}` | {_fmt(v.get('anno'))} | {_fmt(v.get('default'))} | {v.get('docment') or ''} |"
                for k, v in params.items() if k not in ('self', 'return')]
        ret = params.get('return') or {}
        head = f"**`{node.name}`**" + (f' *{doc}*' if doc else '')
        if ret.get('anno') not in (None, inspect.Parameter.empty) or ret.get('docment'):
            head += f" Returns {_fmt(ret.get('anno'))}" + (f": {ret['docment']}" if ret.get('docment') else '') + '.'
        table = ['', '| parameter | type | default | details |', '|---|---|---|---|', *rows] if rows else []
        out.append('\n'.join([head, *table]))
    return '\n\n'.join(out)


def _fmt(v)->str:
    if v is None or v is inspect.Parameter.empty or v is inspect._empty: return ''
    s = v if isinstance(v, str) else getattr(v, '__name__', None) or repr(v)
    return '`' + str(s).replace('|', '\\|') + '`'


def clean_notebook(path:Path, exists=lambda target: True)->dict:
    "The notebook at `path` as the site shows it (see the module's docstring)."
    try: nb = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotebookError(f'{path.name}: not a readable notebook ({e}). Fix: restore it (git checkout) and rerun')
    if not isinstance(nb, dict) or not isinstance(nb.get('cells'), list):
        raise NotebookError(f"{path.name}: not a notebook (no list of cells). Fix: restore it (git checkout)")
    mod, cells = None, []
    for i, c in enumerate(nb['cells']):
        try:
            src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
            dirs = [m.group(1) for line in src.splitlines() if (m := DIRECTIVE.match(line))]
            if 'default_exp' in dirs: mod = importlib.import_module('cotfaith.' + src.split('default_exp')[1].split()[0])
            if 'hide' in dirs: continue
            body = '\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l)).strip('\n')
            if not body.strip(): continue
            if c['cell_type'] == 'markdown': body = _links(_mathml(body), exists)
            cells.append({**c, 'source': body})
            if c['cell_type'] == 'code' and mod and {'export', 'exports'} & set(dirs) and (doc := _docments(mod, body)):
                cells.append({'cell_type': 'markdown', 'metadata': {}, 'source': doc, 'id': f"{c.get('id', i)}-doc"})
        except FileNotFoundError as e:
            raise NotebookError(f'{path.name}, cell {i}: links to {e.args[0]}, which the site lacks. '
                                'Fix: correct the link') from None
        except Exception as e:
            raise NotebookError(f'{path.name}, cell {i}: cannot be rendered ({type(e).__name__}: {e}). '
                                'Fix: correct the cell') from None
    return nb | {'cells': cells}


def _repo_files()->list:
    "Repository paths of every page and image of the site besides the notebooks."
    out = ['README.md', 'bench/README.md', 'records/README.md']
    for folder in ('docs', 'figures'):
        out += [f'{folder}/{p.name}' for p in sorted((ROOT/folder).iterdir()) if p.suffix in ('.md', '.png')]
    return out


@event_priority(100)                          # before mkdocs-jupyter wraps the notebooks it finds
def on_files(files:Files, config)->Files:
    repo, kw = _repo_files(), {'dest_dir': config['site_dir'], 'use_directory_urls': config['use_directory_urls']}
    nbs = [p for p in sorted((ROOT/'nbs').glob('*.ipynb')) if p.name not in SKIP]
    site = set(repo) | {f'nbs/{p.name}' for p in nbs}
    (BUILD/'nbs').mkdir(parents=True, exist_ok=True)
    theme = [f for f in files if not f.src_dir or Path(f.src_dir).resolve() != Path(config['docs_dir']).resolve()]
    out = Files(theme + [File(uri, src_dir=str(ROOT), **kw) for uri in repo])    # real files: mkdocs-jupyter reads paths
    for p in nbs:
        exists = lambda t: _norm(Path('nbs')/t) in site
        (BUILD/'nbs'/p.name).write_text(json.dumps(clean_notebook(p, exists), ensure_ascii=False))
        out.append(File(f'nbs/{p.name}', src_dir=str(BUILD), **kw))
    return out


def _norm(p:Path)->str:
    "A relative site path with its '..' resolved ('nbs/../docs/x.md' -> 'docs/x.md')."
    parts = []
    for part in p.parts:
        if part == '..' and parts: parts.pop()
        elif part != '.': parts.append(part)
    return '/'.join(parts)
