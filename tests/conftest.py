"Shared setup: real data from the data dir, no hub retries, results and figures in temporary folders."
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('COTFAITH_DATA_DIR', str((ROOT.parent/'shared'/'data').resolve()))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
# The committed records (records/, `00c_records`) would answer for the computing paths the tests exercise: the tests
# see an empty records dir unless they make one of their own (tests/test_records.py).
os.environ.setdefault('COTFAITH_RECORDS_DIR', tempfile.mkdtemp(prefix='cotfaith-no-records-'))


# The files that take longest on a fresh clone (organisms trains its models; trust, adversarial and papermill kill
# and rerun whole runs), started first: with two workers taking whole files (--dist loadfile) in collection order, a
# long file left to the end keeps one worker busy while the other waits (CI, fresh clone: 15 idle minutes). The
# Makefile passes --no-loadscope-reorder, or xdist would order files by their number of tests instead.
LONGEST_FIRST = ('test_organisms.py', 'test_trust.py', 'test_adversarial.py', 'test_papermill.py', 'test_finetune.py')


def pytest_collection_modifyitems(items):
    items.sort(key=lambda it: LONGEST_FIRST.index(it.path.name) if it.path.name in LONGEST_FIRST else len(LONGEST_FIRST))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: slow and covered elsewhere; `make test` skips it, `make test-slow` runs it')


@pytest.fixture
def tmp_outputs(tmp_path, monkeypatch):
    "Results and figures of a test go to a temporary folder, never to the checkout's figures/."
    monkeypatch.setenv('COTFAITH_RESULTS_DIR', str(tmp_path/'results'))
    monkeypatch.setenv('COTFAITH_FIGURES_DIR', str(tmp_path/'figures'))
    return tmp_path


@pytest.fixture(scope='session')
def lm():
    "The real embedded default model (SmolLM2-135M-Instruct), loaded once."
    from cotfaith.models import load_model
    return load_model()


def write_adapter(folder, weights:bytes=b'w1'):
    "An adapter folder as peft saves it (config + weights), for tests of what identifies an adapter; never loaded."
    from pathlib import Path
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    (folder/'adapter_config.json').write_text('{"r": 8, "peft_type": "LORA"}')
    (folder/'adapter_model.safetensors').write_bytes(weights)
    return str(folder)
