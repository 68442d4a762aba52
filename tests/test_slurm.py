"""The CI grid through a real one-node SLURM cluster (12b_slurm): every step a job that crosses sbatch, the figures
byte for byte those of the local executor, a job killed mid-step recomputed alone on the rerun, no process left, and a
failing job tried again, then named with its log, the steps after it not run, the others going on."""
import json, os, re, shutil, signal, subprocess, time
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


def _state(env: dict, batch: str = 'ci') -> dict:
    f = next(Path(env['COTFAITH_CACHE_DIR'], 'slurm').glob(f'{batch}-*/state.json'))
    return json.loads(f.read_text())


def _sacct(env: dict, job: str) -> str:
    out = subprocess.run(['sacct', '-n', '-P', '-X', '-o', 'State', '-j', job], env=env, capture_output=True, text=True)
    return (out.stdout.split() or ['?'])[0]


def _times(env: dict, job: str) -> tuple:
    "(start, end) of a job in `sacct`, as ISO times (they sort as text)."
    out = subprocess.run(['sacct', '-n', '-P', '-X', '-o', 'Start,End', '-j', job], env=env, capture_output=True,
                         text=True).stdout
    return tuple(out.strip().split('|'))


def _until(what: str, check, timeout: float = 180):
    t0 = time.time()
    while not (got := check()):
        assert time.time() - t0 < timeout, f'{what}: not after {timeout} s'
        time.sleep(0.5)
    return got


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


FAILING = """notebook: {nb}
defaults: {{model: smollm2-135m, n: 2, seed: 0, max_new_tokens: 48, answer_tokens: 6}}
runs:
  - {{dataset: gsm8k}}
  - {{dataset: cosmosqa, max_new_tokens: 100000}}
cluster:
  retries: 1
  eval: {{gpus: 0, cpus: 1, mem_gb: 0, minutes: 30}}
  figure: {{gpus: 0, cpus: 1, mem_gb: 0, minutes: 30}}
"""


def _role(label: str) -> str:
    "'eval' or 'figure', and ' bad' for the failing run's."
    return label.split(' ')[0] + (' bad' if 'cosmosqa' in label else '')


def test_a_failing_job_is_tried_again_then_named_with_its_log_the_steps_after_it_not_run_and_the_others_go_on(
        cluster, tmp_path):
    """The second run fails in its job every time (its budget does not fit the model's context, which only the model
    knows, so the plan accepts it): tried again once, then named with its log, its figure not run. The first run goes
    on, and two of its jobs are cancelled from outside, as a preemption would: its figure while it waits for its
    evaluation, then the evaluation while it runs. Each is tried again, and the figure's new job waits for the
    evaluation's new one."""
    (batch := tmp_path/'grid.yaml').write_text(FAILING.format(nb=ROOT/'analysis'/'accuracy_et.ipynb'))
    env = _stores(tmp_path/'stores', cluster.env | {'OMP_NUM_THREADS': '1'})
    with open(tmp_path/'out', 'w') as out, open(tmp_path/'err', 'w') as err:
        p = subprocess.Popen([BATCH, '--batch', str(batch), '--executor', 'slurm'], env=env, stdout=out, stderr=err,
                             text=True, cwd=ROOT)
    try:
        states = Path(env['COTFAITH_CACHE_DIR'], 'slurm')
        first = _until('the jobs submitted', lambda: list(states.glob('grid-*/state.json')) and _state(env, 'grid'))
        key = {_role(v['label']): k for k, v in first.items()}
        label, job = ({r: first[k][f] for r, k in key.items()} for f in ('label', 'job'))
        subprocess.run(['scancel', job['figure']], env=env, check=True)          # pending: its evaluation runs
        _until("the figure's new job", lambda: _state(env, 'grid')[key['figure']]['job'] != job['figure'])
        _until('the evaluation running', lambda: _sacct(env, job['eval']) == 'RUNNING')
        subprocess.run(['scancel', job['eval']], env=env, check=True)
        p.wait(900)
    finally:
        if p.poll() is None: p.kill()
    out, err = (tmp_path/'out').read_text(), (tmp_path/'err').read_text()
    assert p.returncode == 1, out + err
    last = _state(env, 'grid')
    now = {r: last[k]['job'] for r, k in key.items()}
    # the failing run: two jobs, both FAILED, then one line naming it and its last job's log, which holds the error
    tried = re.findall(re.escape(label['eval bad']) + r': FAILED \(job (\d+), log \S+\), tried again \(1 of 1\) '
                       r'as job (\d+)', out)
    assert tried == [(job['eval bad'], now['eval bad'])], out
    assert [_sacct(env, j) for j in tried[0]] == ['FAILED', 'FAILED']
    log = Path(last[key['eval bad']]['log'])
    assert "DataError: none of the 2 questions fits the model's context window" in log.read_text()
    assert len(err.splitlines()) == 1 and err.startswith('cotfaith: error: 2 of 4 jobs failed or were not run: '), err
    assert f"{label['eval bad']} (FAILED: " in err and f', log {log})' in err, err
    # its figure: not run, its job cancelled, nothing drawn
    assert f"{label['figure bad']}: not run (job {job['figure bad']} cancelled)" in out, out
    assert f"{label['figure bad']} (not run: " in err and _sacct(env, job['figure bad']) == 'CANCELLED'
    # the other run: its two cancelled jobs tried again and done, the figure's after the evaluation's, the figure drawn
    assert [_sacct(env, job[r]) for r in ('eval', 'figure')] == ['CANCELLED', 'CANCELLED']
    assert [_sacct(env, now[r]) for r in ('eval', 'figure')] == ['COMPLETED', 'COMPLETED']
    assert f"{label['eval']}: done in" in out and f"{label['figure']}: done in" in out, out
    assert _times(env, now['figure'])[0] >= _times(env, now['eval'])[1], (now, out)
    figs = sorted(f.name for f in Path(env['COTFAITH_FIGURES_DIR']).glob('*.png'))
    assert len(figs) == 1 and '__gsm8k__accuracy_et__' in figs[0], figs


def test_ctrl_c_cancels_every_job_it_submitted(cluster, tmp_path):
    "Interrupted while it waits for its jobs, the batch cancels each of them by its id (scancel) and says how to go on."
    (batch := tmp_path/'grid.yaml').write_text(FAILING.format(nb=ROOT/'analysis'/'accuracy_et.ipynb'))
    env = _stores(tmp_path/'stores', cluster.env | {'OMP_NUM_THREADS': '1'})
    p = subprocess.Popen([BATCH, '--batch', str(batch), '--executor', 'slurm'], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        states = Path(env['COTFAITH_CACHE_DIR'], 'slurm')
        jobs = _until('the jobs submitted', lambda: list(states.glob('grid-*/state.json')) and _state(env, 'grid'))
        ids = [v['job'] for v in jobs.values()]
        _until('a job running', lambda: 'RUNNING' in [_sacct(env, j) for j in ids])
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode != 0 and f"cancelled the {len(ids)} jobs it submitted (scancel {' '.join(ids)})" in err, err
    assert 'Rerun to go on' in err
    _until('every job cancelled', lambda: {_sacct(env, j) for j in ids} == {'CANCELLED'}, timeout=60)
    _until('the queue empty', lambda: not _queue(env), timeout=60)          # a running job ends its COMPLETING state
