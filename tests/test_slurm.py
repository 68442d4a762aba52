"""The CI grid through a real one-node SLURM cluster (12b_slurm): every step a job that crosses sbatch, the figures
byte for byte those of the local executor, a job killed mid-step recomputed alone on the rerun, no process left."""
import json, os, shutil, subprocess, time
from pathlib import Path

import pytest

import slurm_cluster

ROOT = Path(__file__).resolve().parents[1]
BATCH = str(ROOT/'.venv'/'bin'/'cotfaith-batch')

try: import submitit  # noqa: F401
except ImportError: submitit = None
WHY = 'submitit is not installed (pip install -e ".[slurm]")' if submitit is None else slurm_cluster.why_not()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(WHY), reason=WHY or 'ok')]


def _stores(base: Path, env: dict) -> dict:
    "Empty stores under `base` (the converted models hard-linked, not converted again)."
    (base/'records').mkdir(parents=True)
    (base/'cache').mkdir()
    models = ROOT/'.cache'/'models'
    if models.exists(): subprocess.run(['cp', '-al', str(models), str(base/'cache'/'models')], check=True)
    return env | {k: str(base/v) for k, v in [('COTFAITH_RECORDS_DIR', 'records'), ('COTFAITH_RESULTS_DIR', 'results'),
                                              ('COTFAITH_FIGURES_DIR', 'figures'), ('COTFAITH_CACHE_DIR', 'cache')]}


def _batch(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([BATCH, '--batch', str(ROOT/'params'/'ci.yaml'), *args], env=env, capture_output=True,
                          text=True, cwd=ROOT)


def _state(env: dict) -> dict:
    f = next(Path(env['COTFAITH_CACHE_DIR'], 'slurm').glob('ci-*/state.json'))
    return json.loads(f.read_text())


def _sacct(env: dict, job: str) -> str:
    out = subprocess.run(['sacct', '-n', '-P', '-X', '-o', 'State', '-j', job], env=env, capture_output=True, text=True)
    return (out.stdout.split() or ['?'])[0]


def _queue(env: dict) -> list:
    "'job reason' of each job still in the queue."
    out = subprocess.run(['squeue', '-h', '-o', '%i %r'], env=env, capture_output=True, text=True).stdout
    return out.splitlines()


@pytest.fixture(scope='module')
def cluster():
    c = slurm_cluster.Cluster(cpus=2).start()
    yield c
    left = c.stop()
    jobs = subprocess.run(['pgrep', '-f', 'submitit.core._submit'], capture_output=True, text=True).stdout.split()
    assert not left and not jobs, f'processes outlived the daemons: {left} {jobs}'


def test_the_ci_grid_on_slurm_draws_the_local_executors_figures_and_a_killed_job_is_all_the_rerun_does(cluster, tmp_path):
    env = _stores(tmp_path/'slurm', cluster.env | {'OMP_NUM_THREADS': '1'})
    r = _batch(env, '--executor', 'slurm', '--detach')
    assert r.returncode == 0 and 'jobs submitted' in r.stdout, r.stderr
    state = _state(env)
    first = next(iter(state.values()))                       # a train step: killed mid-step
    t0 = time.time()
    while _sacct(env, first['job']) != 'RUNNING' and time.time() - t0 < 120: time.sleep(1)
    time.sleep(5)
    subprocess.run(['scancel', first['job']], env=env, check=True)
    while _sacct(env, first['job']) != 'CANCELLED' and time.time() - t0 < 180: time.sleep(1)
    s = _batch(env, '--status')
    assert f"job {first['job']} {first['label']}: CANCELLED" in s.stdout, s.stdout + s.stderr
    # the others go on: wait until only the jobs after it are left (waiting for it forever), then cancel those
    settled = 0                                     # twice in a row: nothing runs, every job left waits on it
    while settled < 2 and time.time() - t0 < 1200:
        time.sleep(3)
        settled = settled + 1 if all(r.split()[1].startswith('Dependency') for r in _queue(env)) else 0
    assert _queue(env), 'no job waited for the killed one'
    subprocess.run(['scancel', *[v['job'] for v in state.values()]], env=env)
    plan = _batch(env, '--plan').stdout.splitlines()[1:]
    todo = {l.split('] ', 1)[1].rsplit(', after', 1)[0].rsplit(': ', 1)[0] for l in plan if l.endswith('to run')}
    assert first['label'] in todo
    rerun = _batch(env, '--executor', 'slurm')
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    ran = {l.split('] ', 1)[1].rsplit(': ', 1)[0] for l in rerun.stdout.splitlines() if ': done in ' in l and 'job' in l}
    assert ran == todo                                        # the killed step and what waited for it, nothing else
    assert 0 < len(todo) < len(state)                         # the steps that did not need it were done before
    assert all(l.endswith(': done') for l in _batch(env, '--plan').stdout.splitlines()[1:])

    loc = _stores(tmp_path/'local', {k: v for k, v in os.environ.items() if k != 'SLURM_CONF'})
    r = _batch(loc, '--executor', 'local')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    a, b = Path(env['COTFAITH_FIGURES_DIR']), Path(loc['COTFAITH_FIGURES_DIR'])
    names = sorted(p.name for p in a.iterdir() if p.suffix in ('.png', '.pdf', '.svg', '.csv'))
    assert names and names == sorted(p.name for p in b.iterdir() if p.suffix in ('.png', '.pdf', '.svg', '.csv'))
    assert [n for n in names if (a/n).read_bytes() != (b/n).read_bytes()] == []
