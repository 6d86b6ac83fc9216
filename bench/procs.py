"""Child processes: start, wait for a port, stop by pid, and account CPU and peak memory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
ACKLOG = str(VENV_BIN / "acklog")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out.update(extra)
    return out


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serve(
    name: str, argv: list[str], port: int, logdir: Path, extra_env: dict[str, str]
) -> Iterator[Server]:
    """Run a server subprocess until the block ends (SIGTERM, then SIGKILL after 10 s)."""
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env(**extra_env))
    try:
        wait_port(port, proc)
        yield Server(name, port, proc, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (0 when it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a server and its children: ``acklog serve`` runs its roles (ingest workers, API,
    projector) as child processes, so the supervisor's own CPU alone would be near zero."""
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        children = proc.children(recursive=True)
    except psutil.Error:
        return 0.0
    own = t.user + t.system + t.children_user + t.children_system  # + children already reaped
    return float(own) + sum(cpu_seconds(c.pid) for c in children)


#: the postmaster of the PostgreSQL serving this bench run (set once by ``use_postgres``)
_postmaster: int | None = None


def use_postgres(postmaster_pid: int | None) -> None:
    """Count PostgreSQL CPU from this server only (None: not measurable, e.g. a remote one)."""
    global _postmaster
    _postmaster = postmaster_pid


def postgres_cpu_seconds(postmaster_pid: int) -> float:
    """CPU of one PostgreSQL server: its postmaster, every live child (backends, walwriter,
    checkpointer…) and the children it has already reaped (exited backends, via the
    postmaster's ``children_user``/``children_system``). Other PostgreSQL servers on the host
    are not counted."""
    try:
        master = psutil.Process(postmaster_pid)
        t = master.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        children = master.children(recursive=False)
    except psutil.Error:
        return 0.0
    return float(total) + sum(cpu_seconds(c.pid) for c in children)


async def timed_rebuild(
    rebuild: Callable[..., Awaitable[Any]],
    dsn: str,
    stages: Any,
    postmaster_pid: int | None,
    **kw: Any,
) -> dict[str, Any]:
    """``await rebuild(dsn, stages=stages, **kw)`` in this process, timed: its wall time, the
    CPU of the fold processes (this one and its workers, reaped when the load ends) and of the
    whole PostgreSQL server meanwhile, per event, and ``stages`` (a ``Stages(cpu=True)``) per
    event. Imports no acklog code: a child running another commit's rebuild uses it too."""

    def cpu_now() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    pg = postgres_cpu_seconds(postmaster_pid) if postmaster_pid else 0.0
    cpu, started = cpu_now(), time.perf_counter()
    await rebuild(dsn, stages=stages, **kw)
    seconds, cpu = time.perf_counter() - started, cpu_now() - cpu
    pg = (postgres_cpu_seconds(postmaster_pid) - pg) if postmaster_pid else 0.0
    n = max(stages.events, 1)
    return {
        "events": stages.events,
        "seconds": seconds,
        "fold_cpu_us_per_event": cpu / n * 1e6,
        "pg_cpu_us_per_event": pg / n * 1e6 if pg > 0 else None,
        "stages_us": stages.per_event_us(),
        "stages_cpu_us": stages.per_event_us(cpu=True),
    }


class CpuMeter:
    """CPU cores used by named processes (and the run's PostgreSQL server) between start/stop."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def _sample(self) -> dict[str, float]:
        out = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        if _postmaster is not None:
            out["postgres"] = postgres_cpu_seconds(_postmaster)
        return out

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        """Cores (CPU seconds per second) each used. ``postgres`` is absent when the server
        is not on this host; it includes backends that exited during the run."""
        wall = time.perf_counter() - self._t0
        end = self._sample()
        return {k: round(max(end[k] - self._start.get(k, 0.0), 0.0) / wall, 2) for k in end}


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set of a live process (``VmHWM``), in KiB; 0 when it is gone.

    Read from /proc rather than from wait4's rusage: a child's ``ru_maxrss`` starts at its
    parent's size at fork time and survives exec, so it would report the bench, not the child.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(
    argv: list[str], extra_env: dict[str, str], timeout: float
) -> tuple[int, float, int, bytes]:
    """(exit code, wall seconds, peak RSS in KiB, stdout) of a child; RSS polled every 50 ms.

    The peak is the largest of the child's process tree (a rebuild folds in shard processes
    while the child itself only hands out their tasks): each process's own VmHWM, not a sum.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env(**extra_env))
        peak = 0
        deadline = started + timeout
        while proc.poll() is None:
            # VmHWM only grows, so the last reading of each process is its peak so far
            peak = max(peak, vm_hwm_kib(proc.pid))
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                children = []
            for c in children:
                peak = max(peak, vm_hwm_kib(c.pid))
            if time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.05)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.stderr.write(stderr.decode(errors="replace")[-4000:])
    return proc.returncode, wall, peak, stdout
