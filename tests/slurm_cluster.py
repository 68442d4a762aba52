"""A one-node SLURM cluster on 127.0.0.1 with accounting (munge, mariadb, slurmdbd, slurmctld, slurmd), for the tests.

Debian's packages, installed with apt-get where missing (as root). Every daemon is started here and stopped by its PID.
"""
import os, shutil, socket, subprocess, tempfile, time
from pathlib import Path

PACKAGES = ('slurmctld', 'slurmd', 'munge', 'slurmdbd', 'mariadb-server', 'slurm-client')
DAEMONS = ('munged', 'mariadbd', 'slurmdbd', 'slurmctld', 'slurmd', 'sbatch', 'sacct')

def why_not() -> str:
    "'' where a cluster can be started here, else why not."
    if os.geteuid() != 0: return 'the SLURM tests start daemons as root'
    if all(shutil.which(d) for d in DAEMONS): return ''
    if not shutil.which('apt-get'): return 'SLURM is not installed and there is no apt-get to install it'
    env = os.environ | {'DEBIAN_FRONTEND': 'noninteractive'}
    r = subprocess.run(['apt-get', 'install', '-y', '-q', *PACKAGES], capture_output=True, text=True, env=env)
    if r.returncode:
        subprocess.run(['apt-get', 'update', '-q'], capture_output=True, env=env)
        r = subprocess.run(['apt-get', 'install', '-y', '-q', *PACKAGES], capture_output=True, text=True, env=env)
    if r.returncode: return f'apt-get install {" ".join(PACKAGES)} failed: {r.stderr.strip()[-200:]}'
    return '' if all(shutil.which(d) for d in DAEMONS) else 'apt-get installed SLURM, but a daemon is missing'

def _port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def _wait(what, check, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if check(): return
        time.sleep(0.3)
    raise RuntimeError(f'{what} did not come up in {timeout} s')

def _ok(*cmd, env=None) -> bool:
    return subprocess.run(cmd, capture_output=True, env=env).returncode == 0

class Cluster:
    "Start with `start()`, stop with `stop()`: `env` holds SLURM_CONF for the commands (sbatch, sacct, scancel)."
    def __init__(self, cpus: int = 2):
        self.dir, self.cpus, self.procs = Path(tempfile.mkdtemp(prefix='cotfaith-slurm-')), cpus, {}
        self.name = 'cotfaith'

    def _spawn(self, name, cmd, user=None, **kw):
        log = open(self.dir/f'{name}.log', 'ab')
        p = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, user=user, env=self.env, **kw)
        self.procs[name] = p
        return p

    def start(self):
        d, host = self.dir, socket.gethostname()
        self.env = os.environ | {'SLURM_CONF': str(d/'slurm.conf')}
        os.chmod(d, 0o755)                    # munge and mysql go through it
        for sub in ('munge', 'db', 'state', 'spool', 'run'): (d/sub).mkdir()
        shutil.chown(d/'munge', 'munge', 'munge')
        os.chmod(d/'munge', 0o700)
        key = d/'munge'/'munge.key'
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, 'munge', 'munge')
        os.chmod(key, 0o400)
        run = Path('/run/munge')                 # the clients (sacctmgr, sbatch) look for munged's socket there
        run.mkdir(exist_ok=True)
        shutil.chown(run, 'munge', 'munge')
        self.socket = run/'munge.socket.2'
        self._spawn('munged', ['munged', '-F', '--key-file', str(key), '--socket', str(self.socket),
                               '--pid-file', str(d/'munge'/'munged.pid'), '--log-file', str(d/'munge'/'munged.log'),
                               '--seed-file', str(d/'munge'/'seed'), '--force'], user='munge')
        _wait('munged', lambda: self.socket.exists())
        # mariadb in a folder of its own, on 127.0.0.1
        db, dbport = d/'db', _port()
        shutil.chown(db, 'mysql', 'mysql')
        subprocess.run(['mariadb-install-db', f'--datadir={db}/data', '--user=mysql', '--auth-root-authentication-method=normal',
                        '--skip-test-db'], check=True, capture_output=True)
        self._spawn('mariadbd', ['mariadbd', '--no-defaults', f'--datadir={db}/data', '--user=mysql', '--bind-address=127.0.0.1',
                                 f'--port={dbport}', f'--socket={db}/mysql.sock', f'--pid-file={db}/mariadbd.pid'])
        _wait('mariadbd', lambda: _ok('mariadb', f'--socket={db}/mysql.sock', '-uroot', '-e', 'select 1'))
        subprocess.run(['mariadb', f'--socket={db}/mysql.sock', '-uroot', '-e',
                        "create user 'slurm'@'127.0.0.1' identified by 'slurm'\x3b grant all on *.* to 'slurm'@'127.0.0.1'"],
                       check=True, capture_output=True)
        auth = 'AuthType=auth/munge\n'
        dbdport = _port()
        conf = d/'slurmdbd.conf'
        conf.write_text(f'{auth}DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={dbdport}\nSlurmUser=root\n'
                        f'PidFile={d}/run/slurmdbd.pid\nLogFile={d}/slurmdbd.log\n'
                        f'StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={dbport}\n'
                        'StorageUser=slurm\nStoragePass=slurm\nStorageLoc=slurm_acct_db\n')
        os.chmod(conf, 0o600)
        ctl, node = _port(), _port()
        (d/'slurm.conf').write_text(
            f'ClusterName={self.name}\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={ctl}\nSlurmdPort={node}\n'
            f'{auth}SlurmUser=root\nSlurmdUser=root\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n'
            f'SlurmctldPidFile={d}/run/slurmctld.pid\nSlurmdPidFile={d}/run/slurmd.pid\n'
            f'SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n'
            'ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n'
            'SelectTypeParameters=CR_Core\nMpiDefault=none\nReturnToService=2\nSchedulerType=sched/backfill\n'
            'JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/slurmdbd\n'
            f'AccountingStorageHost=127.0.0.1\nAccountingStoragePort={dbdport}\nJobCompType=jobcomp/none\n'
            'MinJobAge=300\nKillWait=5\nInactiveLimit=0\nSchedulerParameters=sched_interval=1\n'
            f'NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 State=UNKNOWN\n'
            f'PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n')
        self._spawn('slurmdbd', ['slurmdbd', '-D'])
        _wait('slurmdbd', lambda: _ok('sacctmgr', '-i', 'add', 'cluster', self.name, env=self.env)
              or b'already exists' in subprocess.run(['sacctmgr', '-i', 'add', 'cluster', self.name],
                                                     capture_output=True, env=self.env).stdout)
        self._spawn('slurmctld', ['slurmctld', '-D', '-i'])
        _wait('slurmctld', lambda: _ok('scontrol', 'ping', env=self.env))
        self._spawn('slurmd', ['slurmd', '-D', '-N', host])
        _wait('slurmd', lambda: b'idle' in subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True,
                                                          env=self.env).stdout)
        return self

    def stop(self) -> list:
        "Stop every daemon by its PID (slurmd last-but-one, so jobs end with it): the PIDs of job processes left over."
        subprocess.run(['scancel', '--full', '-u', 'root'], capture_output=True, env=self.env)
        for name in ('slurmd', 'slurmctld', 'slurmdbd', 'mariadbd', 'munged'):
            if (p := self.procs.get(name)) and p.poll() is None:
                p.terminate()
                try: p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        left = [int(x) for x in subprocess.run(['pgrep', '-f', str(self.dir)], capture_output=True,
                                               text=True).stdout.split()]
        return left
