"The README is generated from nbs/index.ipynb and states the two commands that CI and users run."
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_generated_from_the_current_index():
    readme = (ROOT/'README.md').read_text()
    cells = json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells']
    for c in cells:
        if c['cell_type'] == 'markdown':
            assert ''.join(c['source']).strip() in readme, 'README.md is stale: run `make readme`'


def test_the_two_commands_exist_and_ci_runs_the_test_one():
    readme = (ROOT/'README.md').read_text()
    block = re.search(r'```sh\n(.*?)```', readme, re.S).group(1)
    commands = [l.split('#')[0].strip() for l in block.splitlines() if l.strip()]
    assert commands == ['make figures', 'make test']
    targets = re.findall(r'^([a-z-]+):', (ROOT/'Makefile').read_text(), re.M)
    assert {'figures', 'test'} <= set(targets)
    assert re.search(r'^make test$', (ROOT/'.ci'/'run').read_text(), re.M)


def test_figures_named_in_the_readme_are_in_the_repo():
    for name in re.findall(r'\(figures/([^)]+\.png)\)', (ROOT/'README.md').read_text()):
        assert (ROOT/'figures'/name).exists(), name
