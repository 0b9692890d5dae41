"""A throw-away, single-node SLURM cluster on loopback, for tests.

Why this exists: the SLURM executor must be tested against a real scheduler (dependencies, arrays,
requeue, multi-task steps), not a mock. Debian's ``slurmctld``/``slurmd``/``munge`` packages start in
a few seconds when configured without accounting, so the suite can afford one cluster per session.

Everything the cluster writes (munge key and socket, ``slurm.conf``, state, spool, logs, pid files)
lives in one temporary directory; the daemons run in the foreground as children of this process, so
teardown kills exactly the processes it started (plus the job processes ``slurmd`` spawned, found by
the unique ``SLURM_CONF`` path in their environment) and nothing else on the machine.

Configuration choices, each for a reason:

* ``SelectTypeParameters=CR_CPU``: CPUs are the only consumable. With memory as a consumable and no
  ``--mem``, a job would be given the whole node's memory and jobs would run one at a time.
* ``DependencyParameters=kill_invalid_depend``: dependants of a failed job are CANCELLED (reason
  ``DependencyNeverSatisfied``) instead of pending forever. (In this SLURM, 22.05, the option is no
  longer read from ``SchedulerParameters``.)
* ``AuthInfo=...,cred_expire=5``: a requeued batch job may only start again once its revoked
  credential expired; SLURM sets its BeginTime to now + ``cred_expire`` (default 120 s; 5 is the
  smallest value slurmd 22.05 accepts - ``cred_expire=2`` is rejected as invalid). A requeued job
  restarts ~6 s after ``scontrol requeue`` (measured; it was ~11 s with 10).
* ``MinJobAge=300``: finished jobs stay visible to ``scontrol show job`` for 5 minutes. There is no
  accounting database, so ``sacct`` answers "Slurm accounting storage is disabled" (exit 1) and
  ``scontrol``/``squeue`` are the only sources of job states and start/end times.
* ``SchedulerParameters=sched_interval=1,bf_interval=1``: pending jobs are considered every second.
* ``KillWait=3``: a cancelled or requeued job is SIGKILLed 3 s after SIGTERM (submitit ignores SIGTERM).

submitit without sacct (measured with submitit 1.5.4 and SLURM 22.05): its watcher runs
``sacct -o JobID,State,NodeList --parsable2 -j ...``, which exits 1; submitit logs "Bypassing sacct
error ..., status may be inaccurate" and keeps no state, so ``job.state`` is ``UNKNOWN`` forever and
``job.done()`` is true only once the job's result pickle exists. Jobs that end through Python
(returned or raised) are therefore seen normally (``result()`` returns or raises FailedJobError); a job
that never runs or is killed outside Python (a cancelled dependant, scancel, a node loss) is never
"done" and ``job.result()``/``job.wait()`` would block forever. Tests (and code that must survive a
site without accounting) wait on :meth:`SlurmCluster.wait_done` (``scontrol``) first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

#: Binaries the cluster needs (Debian packages slurmctld, slurmd, slurm-client, munge).
REQUIRED_BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")

#: Job states after which a job will not run again by itself.
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
)

# A key of `scontrol show job -o`: letters, then letters/digits/_/:/ (e.g. AllocNode:Sid, CPUs/Task).
_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


class SlurmClusterError(RuntimeError):
    """The cluster could not be started or did not answer; the message carries the daemons' logs."""


def missing_binaries() -> list[str]:
    """Names of the required SLURM/munge binaries that are not on PATH (or in /usr/sbin)."""
    return [b for b in REQUIRED_BINARIES if _which(b) is None]


def in_ci() -> bool:
    """True under CI (``CI`` set to anything but empty/0/false/no), where skipping the SLURM tests
    would hide a broken set-up: `.ci/run` installs the packages and exports CI."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def require_slurm() -> None:
    """Skip the calling test (pytest) when this machine cannot run the cluster - SLURM/munge binaries
    missing, or not root - with the reason; under CI fail instead, since CI must not skip."""
    import pytest

    missing = missing_binaries()
    reason = ""
    if missing:
        reason = (
            f"SLURM/munge binaries not installed ({', '.join(missing)}); "
            "install the Debian packages slurmctld slurmd slurm-client munge (as .ci/run does)"
        )
    elif os.geteuid() != 0:
        reason = "the test SLURM cluster needs root (slurmd starts jobs as their user)"
    if reason:
        if in_ci():
            pytest.fail(f"CI must run the SLURM tests: {reason}", pytrace=False)
        pytest.skip(reason)


def _which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin folders (not on a non-root PATH)."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which(name, path=path)


def _free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mem_total_mb() -> int:
    """Physical memory in MiB, as slurmd counts it (MemTotal of /proc/meminfo)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise SlurmClusterError("MemTotal not found in /proc/meminfo")


def parse_scontrol_line(line: str) -> dict[str, str]:
    """Parse one line of ``scontrol show job -o`` into a dict (values may contain spaces)."""
    line = line.strip()
    keys = list(_KEY_RE.finditer(line))
    out: dict[str, str] = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        out[m.group(1)] = line[m.end() : end].strip()
    return out


def parse_slurm_time(value: str | None) -> dt.datetime | None:
    """A SLURM timestamp (``2026-11-30T20:53:03``, local time) as a naive datetime; None if unset."""
    if not value or value in {"Unknown", "None", "N/A", "(null)"}:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")


class SlurmCluster:
    """One slurmctld + one slurmd + one munged, on 127.0.0.1, configured in a private temp folder.

    Use as a context manager (``with SlurmCluster() as c: ...``) or call :meth:`start`/:meth:`stop`.
    The cluster is reached by setting ``SLURM_CONF`` (see :attr:`env` and :meth:`activate`); the
    ``munged`` socket is named in ``slurm.conf`` (``AuthInfo=socket=...``) so no system-wide munge is
    involved. Jobs run as the submitting user (root in CI) on this machine, in its Python environment.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        cpus: int | None = None,
        real_memory_mb: int | None = None,
        partition: str = "debug",
        cluster_name: str = "medssltest",
        node: str | None = None,
    ) -> None:
        """Prepare (not start) a cluster.

        root: parent folder of the cluster's temp dir (default: the system temp folder). The temp dir
            must be traversable by all (munged insists), so it is made 0755.
        cpus: CPUs the node advertises (default: this machine's count). More than the machine has is
            allowed (``SlurmdParameters=config_overrides``) to run more small jobs concurrently.
        real_memory_mb: memory the node advertises (default: half of the physical memory, so that
            slurmd never finds less than configured and drains the node).
        node: the node's (and controller's) name, default ``localhost``: it is what jobs see in
            SLURM_JOB_NODELIST, and what submitit's TorchDistributedEnvironment uses as MASTER_ADDR,
            so it must resolve on any machine (a CI container's hostname may not).
        """
        self._parent = Path(root) if root is not None else None
        self.cpus = int(cpus or os.cpu_count() or 1)
        self.real_memory_mb = int(real_memory_mb or max(256, _mem_total_mb() // 2))
        self.partition = partition
        self.cluster_name = cluster_name
        self.node = node or "localhost"
        self.root: Path | None = None
        self.conf: Path | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.startup_s: float | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        """Write the configuration, start munged, slurmctld and slurmd, wait for the node to be idle.

        Raises SlurmClusterError (with the daemons' log tails) if anything is missing or does not come up
        within ``timeout`` seconds; whatever was started is stopped again before raising.
        """
        missing = missing_binaries()
        if missing:
            raise SlurmClusterError(
                "SLURM/munge binaries not found: " + ", ".join(missing)
                + " (Debian: apt-get install slurmctld slurmd slurm-client munge)"
            )
        t0 = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="slurm-", dir=self._parent))
        self.root.chmod(0o755)  # munged refuses a socket in a folder others cannot traverse
        try:
            self._start_munge()
            self.conf = self._write_conf()
            self._procs["slurmctld"] = self._popen(["slurmctld", "-D", "-i"], "slurmctld.out")
            self._wait(lambda: self.run(["scontrol", "ping"], check=False, timeout=10).returncode == 0,
                       timeout, "slurmctld to answer `scontrol ping`")
            self._procs["slurmd"] = self._popen(["slurmd", "-D", "-N", self.node], "slurmd.out")
            self.wait_idle(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Cancel all jobs, stop the daemons this object started, kill their leftover job processes,
        and remove the temp folder. Safe to call twice and after a failed start."""
        if self.root is None:
            return
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.cancel_all(timeout=15)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._kill_leftover_job_processes()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        self.conf = None

    # ----------------------------------------------------------------------------- environment
    @property
    def env_vars(self) -> dict[str, str]:
        """The variables that point a SLURM client (and submitit) at this cluster."""
        assert self.conf is not None, "cluster not started"
        return {"SLURM_CONF": str(self.conf)}

    @property
    def env(self) -> dict[str, str]:
        """A full environment for subprocesses: the current ``os.environ`` plus :attr:`env_vars`."""
        return {**os.environ, **self.env_vars}

    @contextlib.contextmanager
    def activate(self) -> Iterator["SlurmCluster"]:
        """Set ``SLURM_CONF`` in ``os.environ`` (submitit shells out to sbatch/scontrol with it and
        sbatch passes the environment on to the job), restoring the previous value afterwards."""
        saved = {k: os.environ.get(k) for k in self.env_vars}
        os.environ.update(self.env_vars)
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def run(
        self, cmd: str | Sequence[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster (a string is split like a shell would)."""
        args = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
        exe = _which(args[0])
        if exe is not None:
            args[0] = exe
        res = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise SlurmClusterError(
                f"`{shlex.join(args)}` exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return res

    # ----------------------------------------------------------------------------- queries
    def node_state(self) -> str:
        """The node's state as sinfo prints it (``idle``, ``mix``, ``alloc``, ``down*``, ...)."""
        return self.run(["sinfo", "-h", "-n", self.node, "-o", "%t"], timeout=10).stdout.strip()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until the node is idle (up, nothing allocated on it)."""
        self._wait(lambda: self._node_state_or_empty() == "idle", timeout, f"node {self.node} to be idle")

    def jobs(self, job_id: str | int) -> list[dict[str, str]]:
        """``scontrol show job -o`` records for a job id (one per task for an array's id; ``123_1``
        selects one array task). Empty once SLURM forgot the job (MinJobAge after its end)."""
        res = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False, timeout=15)
        if res.returncode != 0:
            if "Invalid job id" in res.stderr:
                return []
            raise SlurmClusterError(f"scontrol show job {job_id} failed: {res.stderr}")
        return [parse_scontrol_line(line) for line in res.stdout.splitlines() if line.strip()]

    def job(self, job_id: str | int) -> dict[str, str]:
        """The single ``scontrol show job -o`` record of a (non-array or array-task) job id."""
        records = self.jobs(job_id)
        if len(records) != 1:
            raise SlurmClusterError(f"expected one record for job {job_id}, got {len(records)}")
        return records[0]

    def state(self, job_id: str | int) -> str:
        """JobState of a job (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...)."""
        return self.job(job_id)["JobState"]

    def times(self, job_id: str | int) -> tuple[dt.datetime | None, dt.datetime | None]:
        """(StartTime, EndTime) of a job, 1-second resolution. Caution: a job cancelled while pending
        may show StartTime = EndTime = the cancel time although it never ran (or StartTime None);
        check JobState (and that its StdOut file exists) before reading a start as "it ran"."""
        rec = self.job(job_id)
        return parse_slurm_time(rec.get("StartTime")), parse_slurm_time(rec.get("EndTime"))

    def all_jobs(self) -> dict[str, dict[str, str]]:
        """Every job SLURM still knows (finished ones for MinJobAge = 300 s), keyed by job id, array
        tasks as ``<ArrayJobId>_<ArrayTaskId>`` (submitit's job_id spelling)."""
        out = self.run(["scontrol", "show", "job", "-o"], timeout=15).stdout
        jobs: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            if not line.strip() or line.startswith("No jobs"):
                continue
            rec = parse_scontrol_line(line)
            task = rec.get("ArrayTaskId")
            key = f"{rec['ArrayJobId']}_{task}" if task and "ArrayJobId" in rec else rec["JobId"]
            jobs[key] = rec
        return jobs

    def queue(self) -> list[str]:
        """Ids of all jobs SLURM still lists as pending/running/completing (array tasks as ``A_I``)."""
        out = self.run(["squeue", "-h", "-o", "%i"], timeout=15).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def wait_state(
        self, job_id: str | int, states: Iterable[str] | str, timeout: float = 60.0, poll: float = 0.25
    ) -> dict[str, str]:
        """Wait until a job is in one of ``states`` and return its record; on timeout raise with the
        last record seen and the daemons' log tails."""
        wanted = {states} if isinstance(states, str) else set(states)
        last: dict[str, str] = {}

        def check() -> bool:
            nonlocal last
            recs = self.jobs(job_id)
            last = recs[0] if len(recs) == 1 else {}
            return last.get("JobState") in wanted

        self._wait(check, timeout, f"job {job_id} to reach {sorted(wanted)} (last: {last})", poll=poll)
        return last

    def wait_done(self, job_id: str | int, timeout: float = 120.0) -> dict[str, str]:
        """Wait until a job (or each task of an array) reached a terminal state; return the record
        (for an array: the record of the last task checked)."""
        rec: dict[str, str] = {}

        def check() -> bool:
            nonlocal rec
            recs = self.jobs(job_id)
            if not recs:
                return False
            rec = recs[-1]
            return all(r.get("JobState") in TERMINAL_STATES for r in recs)

        self._wait(check, timeout, f"job {job_id} to end (last: {rec})")
        return rec

    # ----------------------------------------------------------------------------- actions
    def sbatch(self, *args: str, script: str | None = None, wrap: str | None = None) -> str:
        """Submit with sbatch (``--parsable``) and return the job id. Unless ``args`` name an output
        (``-o``/``--output``), the job's output goes to ``<cluster root>/slurm-<jobid>.out``, not the cwd."""
        assert self.root is not None, "cluster not started"
        cmd = ["sbatch", "--parsable", *args]
        if not any(a == "-o" or a.startswith(("--output", "-o")) for a in args):
            cmd.append(f"--output={self.root / 'slurm-%j.out'}")
        if wrap is not None:
            cmd += ["--wrap", wrap]
        if script is not None:
            cmd.append(script)
        return self.run(cmd).stdout.strip().split(";")[0]

    def requeue(self, job_id: str | int) -> None:
        """``scontrol requeue`` a job (SLURM kills it, then it is pending again; it can restart after
        ``cred_expire`` = 5 s, see the module docstring)."""
        self.run(["scontrol", "requeue", str(job_id)])

    def cancel_all(self, timeout: float = 30.0) -> None:
        """Cancel every job of this cluster and wait until none is listed as pending/running and the
        node is idle again (used between tests to isolate them)."""
        if self.queue():
            self.run(["scancel", "--full", "-u", str(os.getuid())], check=False)
        self._wait(lambda: not self.queue(), timeout, "all jobs to leave the queue")
        self.wait_idle(timeout)

    # ----------------------------------------------------------------------------- diagnostics
    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every daemon log, for error messages."""
        if self.root is None:
            return "(no cluster folder)"
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            p = self.root / name
            if p.exists():
                tail = p.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts) or "(no logs written)"

    # ----------------------------------------------------------------------------- internals
    def _popen(self, args: list[str], out_name: str) -> subprocess.Popen[bytes]:
        assert self.root is not None
        exe = _which(args[0])
        if exe is None:
            raise SlurmClusterError(f"{args[0]} not found")
        out = open(self.root / out_name, "wb")  # noqa: SIM115 - closed when the process is reaped
        try:
            env = {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}
            return subprocess.Popen([exe, *args[1:]], stdout=out, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        finally:
            out.close()

    def _start_munge(self) -> None:
        assert self.root is not None
        key = self.root / "munge.key"
        res = subprocess.run([_which("mungekey") or "mungekey", "--create", "--keyfile", str(key)],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise SlurmClusterError(f"mungekey failed: {res.stderr}")
        key.chmod(0o600)
        r = self.root
        self._procs["munged"] = self._popen(
            ["munged", "--foreground", f"--socket={r / 'munge.sock'}", f"--key-file={key}",
             f"--log-file={r / 'munged.log'}", f"--pid-file={r / 'munged.pid'}", f"--seed-file={r / 'munged.seed'}"]
            + (["--force"] if os.getuid() == 0 else []),
            "munged.out",
        )
        self._wait(lambda: (r / "munge.sock").exists(), 20, "munged to create its socket")

    def _write_conf(self) -> Path:
        assert self.root is not None
        r = self.root
        (r / "state").mkdir()
        (r / "spool").mkdir()
        user = _current_user()
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge.sock'},cred_expire=5",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            "DependencyParameters=kill_invalid_depend",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "MailProg=/bin/true",
            "JobRequeue=1",
            "MinJobAge=300",
            "MessageTimeout=10",
            "KillWait=3",
            "InactiveLimit=0",
            "ReturnToService=2",
            "SlurmdTimeout=60",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.real_memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        if self.cpus > (os.cpu_count() or 1):
            lines.append("SlurmdParameters=config_overrides")
        conf = r / "slurm.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _node_state_or_empty(self) -> str:
        try:
            return self.node_state()
        except (SlurmClusterError, subprocess.TimeoutExpired):
            return ""

    def _wait(self, predicate, timeout: float, what: str, poll: float = 0.2) -> None:  # type: ignore[no-untyped-def]
        """Poll ``predicate`` until true; on timeout (or a daemon dying) raise with the log tails."""
        deadline = time.monotonic() + timeout
        while True:
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                raise SlurmClusterError(
                    f"{', '.join(dead)} exited while waiting for {what}\n{self.log_tails()}"
                )
            if predicate():
                return
            if time.monotonic() > deadline:
                raise SlurmClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tails()}")
            time.sleep(poll)

    def _kill_leftover_job_processes(self) -> None:
        """SIGKILL processes whose environment names this cluster's slurm.conf (slurmstepd and job
        processes spawned by our slurmd, which outlive it): they are ours and nobody else's."""
        if self.root is None:
            return
        marker = f"SLURM_CONF={self.root / 'slurm.conf'}".encode()
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)


def _die_with_parent() -> None:
    """In the forked daemon, before exec: ask Linux for SIGTERM when the starting thread dies, so that
    a test run killed without teardown (``timeout`` sends SIGTERM, which skips Python's finally
    blocks) does not leave the daemons running. Best effort: a no-op where prctl is unavailable."""
    import ctypes

    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def _current_user() -> str:
    """Name of the user running the tests (SlurmUser/SlurmdUser; jobs run as the submitter)."""
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
