"""A one-node Slurm cluster on this host, in a folder of its own: for the launcher's tests (issue 33).

    python tests/slurm_cluster.py start /tmp/slurm    # prints: export SLURM_CONF=/tmp/slurm/slurm.conf
    python tests/slurm_cluster.py stop /tmp/slurm

`munged` (its own key and socket), `slurmctld` and `slurmd` run in the foreground as child
processes, their ids written to `pids`; stopping kills exactly those ids. The configuration is
the smallest that runs batch jobs: this host's short name and CPU count, process tracking by
/proc (no cgroups), no task binding, no accounting, state and spool folders inside the folder.
Clients find it through SLURM_CONF. Needs root and Debian's `slurm-wlm` and `munge` packages
(`make slurm`).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
START_TIMEOUT_S = 60.0  # until `sinfo` shows the node idle
PARTITION = "debug"

SLURM_CONF = """\
ClusterName=grokutils-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why a one-node cluster cannot start here (None if it can)."""
    if os.geteuid() != 0:
        return "not root (slurmd runs jobs as their users; munged and slurmd need root)"
    absent = [name for name in (*DAEMONS, "mungekey", "sbatch", "sinfo", "scontrol") if shutil.which(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed (Debian: apt-get install slurm-wlm munge; `make slurm`)"
    return None


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


class OneNodeCluster:
    """munged + slurmctld + slurmd for this host, configured and run inside `folder`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        self.conf = self.folder / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]

    @property
    def environment(self) -> dict[str, str]:
        """What a client (sbatch, squeue, submitit) needs: SLURM_CONF."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        """Write the configuration and key, start the three daemons, wait for the node to be idle."""
        for name in ("munge", "state", "spool", "log"):
            (self.folder / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        key = self.folder / "munge" / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True)
        self.conf.write_text(SLURM_CONF.format(host=self.host, cpus=os.cpu_count() or 1, folder=self.folder,
                                               ctld_port=free_port(), slurmd_port=free_port(), partition=PARTITION))
        munge = self.folder / "munge"
        commands = {
            "munged": ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge}/munge.socket",
                       f"--pid-file={munge}/munged.pid", f"--log-file={self.folder}/log/munged.log",
                       f"--seed-file={munge}/munged.seed"],
            "slurmctld": ["slurmctld", "-D", "-i", "-f", str(self.conf)],
            "slurmd": ["slurmd", "-D", "-f", str(self.conf)],
        }
        pids = []
        for name in DAEMONS:
            with open(self.folder / "log" / f"{name}.out", "ab") as out:
                process = subprocess.Popen(commands[name], stdout=out, stderr=subprocess.STDOUT,
                                           env={**os.environ, **self.environment}, start_new_session=True)
            pids.append(f"{name} {process.pid}")
            (self.folder / "pids").write_text("\n".join(pids) + "\n")
            time.sleep(1.0 if name == "munged" else 0.5)
        self._wait_idle()

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            state = self.run("sinfo", "--noheader", "-o", "%t", check=False).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                return
            time.sleep(1.0)
        logs = "\n".join(f"--- {path.name}\n{path.read_text()[-1500:]}"
                         for path in sorted((self.folder / "log").iterdir()))
        self.stop()
        raise RuntimeError(f"the one-node Slurm in {self.folder} did not become idle in {START_TIMEOUT_S:.0f} s "
                           f"(sinfo: {state!r}):\n{logs}")

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60,
                              env={**os.environ, **self.environment})

    def stop(self) -> None:
        """Kill the daemons by the ids `start` recorded (SIGTERM, then SIGKILL after 10 s)."""
        pid_file = self.folder / "pids"
        if not pid_file.exists():
            return
        pids = [int(line.split()[1]) for line in pid_file.read_text().split("\n") if line.strip()]
        for pid in reversed(pids):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        for pid in job_processes(self.folder):  # job steps outlive slurmd: slurmstepd, job scripts, srun
            _signal(pid, signal.SIGKILL)
        pid_file.unlink()


def job_processes(folder: Path) -> list[int]:
    """Processes with the cluster's `folder` in their command line or open files (slurmstepd
    keeps slurmd's log open, job scripts run from its spool), and all their descendants; never
    this process or its ancestors (`python tests/slurm_cluster.py stop FOLDER` names it too)."""
    parents, found = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            marks = [(entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")]
            marks += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except (OSError, IndexError, ValueError):
            continue
        if any(str(folder) in mark for mark in marks):
            found.add(int(entry.name))
    mine, pid = set(), os.getpid()
    while pid > 1:  # this process and its ancestors
        mine.add(pid)
        pid = parents.get(pid, 0)
    found -= mine
    while True:  # add descendants until none is new
        more = {pid for pid, parent in parents.items() if parent in found} - found - mine
        if not more:
            return sorted(found)
        found |= more


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own children; others raise ChildProcessError
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm_cluster.py start|stop FOLDER", file=sys.stderr)
        return 2
    cluster = OneNodeCluster(Path(argv[1]))
    if argv[0] == "stop":
        cluster.stop()
        return 0
    reason = missing()
    if reason:
        print(f"cannot start a one-node Slurm here: {reason}", file=sys.stderr)
        return 1
    cluster.start()
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
