"""A real two-node Slurm cluster on this machine, for the slurm backend's tests.

Debian's slurm-wlm (22.05) and munge, run as root: one munged on its own socket and key, one
slurmctld, and two slurmd (``-N n1``, ``-N n2``) that share this host (``NodeAddr=127.0.0.1``,
ports 17001-17002 by default). Each node has 2 CPUs, so two tasks (one CPU each) share a node
and two 2-node gangs run at once. Every file it writes (config, key, spool, state, logs, pid
files) lives under one folder; the daemons are stopped by the pids they wrote, never by name.

    python -m tests.launcher.slurm.cluster DIR     # start one by hand; Ctrl-C stops it
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

INSTALL = "apt-get install slurm-wlm munge"
NODES = ("n1", "n2")


def missing() -> str | None:
    """Why a cluster cannot start here (what to install), or None."""
    need = ("sbatch", "squeue", "scontrol", "slurmctld", "slurmd", "munged", "mungekey")
    absent = [c for c in need if shutil.which(c) is None and not Path(f"/usr/sbin/{c}").exists()]
    if absent:
        return f"{', '.join(absent)} not found: `{INSTALL}` (Debian) runs the slurm tests"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root (SlurmUser=root)"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_ports(n: int) -> list[int]:
    """n consecutive free TCP ports on 127.0.0.1 (slurmd's NodeName=n[1-2] Port=A-B wants a
    range), then one more for slurmctld."""
    for base in range(17001, 30000, 10):
        ports = list(range(base, base + n))
        ok = True
        for p in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return ports
    raise RuntimeError("no free port range for the test cluster")


SLURM_CONF = """\
ClusterName=launchtest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobSubmitPlugins=lua
ReturnToService=2
StateSaveLocation={dir}/state
SlurmctldPidFile={dir}/slurmctld.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdSpoolDir={dir}/spool/%n
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmdLogFile={dir}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MinJobAge=3600
KillWait=30
InactiveLimit=0
MessageTimeout=20
MaxArraySize=100001
MaxJobCount=200000
NodeName=n[1-2] NodeHostname={host} NodeAddr=127.0.0.1 Port={node_ports} {node_size}
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
"""

# Stands in for the account associations of a cluster with slurmdbd: only account "lab" exists.
JOB_SUBMIT_LUA = """\
function slurm_job_submit(job_desc, part_list, submit_uid)
    if job_desc.account ~= nil and job_desc.account ~= "lab" then
        return slurm.ESLURM_INVALID_ACCOUNT
    end
    return slurm.SUCCESS
end
function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    return slurm.SUCCESS
end
"""


class Cluster:
    """Start with :meth:`start`, stop with :meth:`stop` (by pid); ``env`` is what clients need."""

    def __init__(self, root: Path):
        self.dir = Path(root)
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        # PATH as it is now: a test that hides sbatch from the launcher must not hide it here
        self.env = {"SLURM_CONF": str(self.conf), "PATH": os.environ.get("PATH", "")}
        self._started: list[Path] = []  # pid files of what this object started

    # -- start --------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Cluster:
        for sub in ("munge", "keys", "state", *(f"spool/{n}" for n in NODES)):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "keys").chmod(0o700)
        (self.dir / "munge").chmod(0o755)  # clients (root here) reach the socket through it
        key = self.dir / "keys" / "munge.key"
        if not key.exists():
            subprocess.run([_exe("mungekey"), "-c", "-k", str(key)], check=True,
                           capture_output=True)  # fmt: skip
        self._daemon(
            [_exe("munged"), "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
             f"--pid-file={self.dir / 'munge' / 'munged.pid'}",
             f"--log-file={self.dir / 'munge' / 'munged.log'}",
             f"--seed-file={self.dir / 'munge' / 'munged.seed'}"],
            self.dir / "munge" / "munged.pid",
        )  # fmt: skip
        *node_ports, ctld_port = _free_ports(len(NODES) + 1)
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(SLURM_CONF.format(
            host=host, dir=self.dir, munge_socket=self.munge_socket, ctld_port=ctld_port,
            node_ports=f"{node_ports[0]}-{node_ports[-1]}",
            node_size="CPUs=2 RealMemory=4000 State=UNKNOWN"))  # fmt: skip
        (self.dir / "job_submit.lua").write_text(JOB_SUBMIT_LUA)  # beside slurm.conf
        self._daemon([_exe("slurmctld"), "-f", str(self.conf)], self.dir / "slurmctld.pid")
        for n in NODES:
            self._daemon([_exe("slurmd"), "-f", str(self.conf), "-N", n],
                         self.dir / f"slurmd-{n}.pid")  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle_nodes() == len(NODES):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster's nodes did not come up in {timeout:g}s:\n"
                           f"{self.sinfo()}\n{self.logs()}")  # fmt: skip

    def _daemon(self, cmd: list[str], pid_file: Path, timeout: float = 20.0) -> None:
        """Start a daemon that forks and writes its pid file; wait for the file."""
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        self._started.append(pid_file)
        done = subprocess.run(cmd, capture_output=True, text=True, env=self.client_env())
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}"
                               f"\n{self.logs()}")  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _read_pid(pid_file):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{cmd[0]} wrote no pid file {pid_file}:\n{self.logs()}")

    # -- clients ------------------------------------------------------------------------------
    def client_env(self) -> dict:
        return dict(os.environ, **self.env)

    def cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.client_env(),
                              check=check, timeout=60)  # fmt: skip

    def sinfo(self) -> str:
        return self.cmd("sinfo", "-N", "-h", "-o", "%N %T", check=False).stdout

    def idle_nodes(self) -> int:
        lines = self.sinfo().splitlines()  # a node shows once per partition
        return len({line.split()[0] for line in lines if line.split()[1:] == ["idle"]})

    def logs(self) -> str:
        out = []
        for p in sorted(self.dir.glob("*.log")):
            with contextlib.suppress(OSError):
                out.append(f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-15:]))
        return "\n".join(out)

    # -- stop ---------------------------------------------------------------------------------
    def cancel_all(self, timeout: float = 60.0) -> None:
        """scancel every job on this (private) cluster and wait until none is left running, so
        no job's processes outlive the daemons."""
        self.cmd("scancel", "--full", f"--user={os.getuid()}", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.cmd("squeue", "-h", "-o", "%i", check=False).stdout.strip():
                return
            time.sleep(0.5)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM each daemon this object started, by the pid it wrote; SIGKILL what stays."""
        if _read_pid(self.dir / "slurmctld.pid"):
            self.cancel_all()
        pids = [p for p in (_read_pid(f) for f in reversed(self._started)) if p]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._started.clear()


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


if __name__ == "__main__":  # pragma: no cover - by hand
    import sys

    c = Cluster(Path(sys.argv[1]).resolve()).start()
    print(f"export SLURM_CONF={c.conf}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
