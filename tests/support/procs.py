"""Real acklog processes for fault tests: started, awaited until ready, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support import REPO
from tests.support.apps import DATA_DIR

ROOT = str(REPO)

#: seconds the children of a stopped ``acklog serve`` may take to follow it: the kernel's
#: SIGTERM (PR_SET_PDEATHSIG), then at most their bounded shutdown (25 s for a server)
ORPHAN_SECONDS = 40.0


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
    except OSError:
        return 32768
    return int(text.split()[0])


#: where ``free_port`` draws from: below the ephemeral range, so the kernel never gives one of
#: these ports to an outgoing connection (acklog's to PostgreSQL, a client's) between the draw
#: and the server's bind
PORTS = range(10000, max(_ephemeral_low(), 10001))
#: every port handed out in this run: never handed out twice (two draws in one test, e.g. a
#: proxy's HTTP and HTTPS ports, were once the same port, and nginx refused the configuration)
_HANDED: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never returned before in this run."""
    for port in random.sample(PORTS, len(PORTS)):
        if port in _HANDED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _HANDED.add(port)
        return port
    raise RuntimeError(f"no free port in {PORTS}")


class Process:
    """An ``acklog`` subcommand in its own process; ``ready`` is set when ``marker`` is printed."""

    def __init__(
        self, args: Sequence[str], dsn: str, marker: str | None = None, **env: str
    ) -> None:
        self.args = list(args)
        self.env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "ACKLOG_DATA_DIR": str(DATA_DIR),  # generated files stay out of the working tree
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.marker = marker
        self.ready = asyncio.Event()
        self.lines: list[str] = []
        self._line = asyncio.Condition()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60) -> Process:
        self.ready.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.cli",
            *self.args,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its process group holds its children, for _orphans_gone
        )
        self._reader = asyncio.create_task(self._read(self.proc))
        if self.marker is None:
            self.ready.set()
        async with asyncio.timeout(timeout):
            await self.ready.wait()
        return self

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if self.marker and self.marker in line:
                self.ready.set()
            async with self._line:
                self._line.notify_all()

    async def wait_lines(self, predicate: Callable[[list[str]], bool], timeout: float = 30) -> None:
        """Return once ``predicate(lines)`` holds for the lines printed so far."""
        async with asyncio.timeout(timeout), self._line:
            await self._line.wait_for(lambda: predicate(self.lines))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._orphans_gone()

    async def stop(self) -> None:
        """SIGTERM, and SIGKILL if still running 15 s later."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._orphans_gone()

    async def _orphans_gone(self) -> None:
        """Wait for the end of the output, which the children of ``acklog serve`` share: they
        must exit once their supervisor has (a SIGTERM from the kernel, then their bounded
        shutdown, within ``ORPHAN_SECONDS``). Children still there are killed, and the test
        fails: an orphan keeps its port and, before, hung this wait for ever."""
        if self._reader is None:
            return
        try:
            async with asyncio.timeout(ORPHAN_SECONDS):
                with contextlib.suppress(Exception):
                    await self._reader
        except TimeoutError:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the group is its own
            raise AssertionError(
                f"processes of acklog (pid {self.proc.pid}) outlived it by {ORPHAN_SECONDS:.0f} s;"
                " last lines:\n" + "\n".join(self.lines[-40:])
            ) from None


async def _command(
    dsn: str, args: Sequence[str], stdin: bytes | None, merged: bool, env: dict[str, str]
) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": dsn, "ACKLOG_DATA_DIR": str(DATA_DIR), **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merged else asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate(stdin or b"")
    assert proc.returncode is not None
    return proc.returncode, out, err or b""


async def command(
    dsn: str, *args: str, stdin: bytes | None = None, **env: str
) -> tuple[int, str, str]:
    """One ``acklog`` command run to its end (at most 120 s): exit code, stdout, stderr."""
    code, out, err = await _command(dsn, args, stdin, False, env)
    return code, out.decode(), err.decode()


async def command_output(
    dsn: str, *args: str, stdin: bytes | None = None, **env: str
) -> tuple[int, str]:
    """:func:`command` with stderr in the same output, in the order written."""
    code, out, _ = await _command(dsn, args, stdin, True, env)
    return code, out.decode()


def serve(dsn: str, port: int, **env: str) -> Process:
    return Process(["serve", "--port", str(port)], dsn, marker="acklog listening", **env)


def project(dsn: str) -> Process:
    return Process(["project"], dsn)
