"""A real PostgreSQL primary and its synchronous streaming standby, for failover tests.

Both clusters live in a temporary directory owned by ``postgres`` and are run with the
server's own programs (``initdb``, ``pg_ctl``, ``pg_basebackup`` of ``ACKLOG_PG_BIN``, by
default Debian's PostgreSQL 15), as user ``postgres`` (through ``runuser`` when the tests run
as root). Each listens on a free port of 127.0.0.1 with trust authentication there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil

from tests.support.procs import free_port

PG_BIN = Path(os.environ.get("ACKLOG_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: the standby's name in the primary's ``synchronous_standby_names``
STANDBY_NAME = "standby1"

#: settings of both clusters (the standby's copy comes with ``pg_basebackup``)
COMMON_CONF = """
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sockets}'
wal_level = replica
max_wal_senders = 4
hot_standby = on
synchronous_commit = on
shared_buffers = 16MB
max_connections = 100
"""
HBA = """
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


def run_as_postgres() -> list[str] | None:
    """The prefix that runs a command as ``postgres`` here (None: this user cannot)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    if pwd.getpwuid(os.geteuid()).pw_name == "postgres":
        return []
    return None


def unavailable() -> str | None:
    """Why two clusters cannot be run here, or None when they can."""
    if not (PG_BIN / "pg_ctl").exists():
        return f"no PostgreSQL server programs in {PG_BIN} (set ACKLOG_PG_BIN)"
    if run_as_postgres() is None:
        return "PostgreSQL clusters must run as user postgres: run the tests as root or postgres"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no user postgres on this machine"
    return None


class Node:
    """One cluster: its data directory, port and log file."""

    def __init__(self, base: Path, name: str) -> None:
        self.base = base
        self.name = name
        self.dir = base / name
        self.log = base / f"{name}.log"
        self.port = free_port()
        #: the processes of a postmaster killed with SIGKILL (its backends outlive it a while)
        self.orphans: list[psutil.Process] = []
        self.killed: psutil.Process | None = None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def pg(self, program: str, *args: str) -> str:
        """Run a server program as ``postgres``; its output, or AssertionError with it."""
        prefix = run_as_postgres()
        assert prefix is not None
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            str(PG_BIN / program),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.base,
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        assert proc.returncode == 0, f"{program} {' '.join(args)} exited {proc.returncode}:\n{text}"
        return text

    async def start(self, *settings: str) -> None:
        """Start and wait (``pg_ctl -w``) until it accepts connections; ``settings`` are
        ``name=value`` for this node only (the command line, never copied to a standby)."""
        options = " ".join([f"-p {self.port}", *(f"-c {s}" for s in settings)])
        try:
            await self.pg(
                "pg_ctl",
                "-D",
                str(self.dir),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.name} log:\n{self.log_text()}") from None

    def postmaster_pid(self) -> int:
        return int((self.dir / "postmaster.pid").read_text().split("\n", 1)[0])

    def kill9(self) -> None:
        """SIGKILL the postmaster, as a crash of its machine would stop it."""
        postmaster = psutil.Process(self.postmaster_pid())
        self.orphans = postmaster.children(recursive=True)
        postmaster.kill()
        self.killed = postmaster

    async def orphans_gone(self, timeout: float = 30.0) -> None:
        """Return once the killed postmaster's processes have noticed and exited (they hold
        its port's connections until then)."""
        _, alive = await asyncio.to_thread(psutil.wait_procs, self.orphans, timeout)
        assert not alive, f"{self.name}: processes outlived the postmaster: {alive}"

    def postmaster_gone(self) -> bool:
        """The killed postmaster is no more (a zombie counts: nobody may have reaped it)."""
        p = self.killed
        if p is None:
            return False
        try:
            return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    async def promote(self) -> None:
        await self.pg("pg_ctl", "-D", str(self.dir), "-w", "-t", "60", "promote")

    async def stop(self) -> None:
        if (self.dir / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, ProcessLookupError):
                await self.pg("pg_ctl", "-D", str(self.dir), "-m", "immediate", "-w", "stop")
        for p in self.orphans:  # by pid, each checked against its start time (psutil)
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def configure(datadir: Path, sockets: Path) -> None:
    """The settings both clusters share (a standby copies them) and the trust rules."""
    conf = datadir / "postgresql.conf"
    conf.write_text(conf.read_text() + COMMON_CONF.format(sockets=sockets))
    (datadir / "pg_hba.conf").write_text(HBA)


async def until_streaming(primary: Node, sync_state: str, timeout: float = 30.0) -> None:
    """Return once the primary's ``pg_stat_replication`` shows its standby streaming in
    ``sync_state`` (short polls of the catalog: PostgreSQL has no notification for it)."""
    conn = await asyncpg.connect(primary.dsn())
    last: list[asyncpg.Record] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await conn.fetch(
                    "SELECT application_name, state, sync_state FROM pg_stat_replication"
                )
                if any(
                    r["application_name"] == STANDBY_NAME
                    and r["state"] == "streaming"
                    and r["sync_state"] == sync_state
                    for r in last
                ):
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"the standby was not streaming ({sync_state}) within {timeout:g}s;"
            f" pg_stat_replication: {[dict(r) for r in last]}"
        ) from None
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def primary_and_standby(synchronous: bool = True) -> AsyncIterator[tuple[Node, Node]]:
    """A primary with ``synchronous_standby_names = standby1`` (unless not ``synchronous``)
    and that standby, made by ``pg_basebackup -R``, streaming when this yields."""
    base = Path(tempfile.mkdtemp(prefix="acklog-failover-"))
    owner = pwd.getpwnam("postgres")
    os.chown(base, owner.pw_uid, owner.pw_gid)
    primary, standby = Node(base, "primary"), Node(base, "standby")
    try:
        await primary.pg(
            "initdb",
            "-D",
            str(primary.dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        configure(primary.dir, sockets=base)
        # only the primary names a synchronous standby: the promoted standby must not wait
        # for one that is gone
        await primary.start(*[f"synchronous_standby_names={STANDBY_NAME}"] * synchronous)
        await standby.pg(
            "pg_basebackup",
            "-d",
            f"host=127.0.0.1 port={primary.port} user=postgres application_name={STANDBY_NAME}",
            "-D",
            str(standby.dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        auto = (standby.dir / "postgresql.auto.conf").read_text()
        assert f"application_name={STANDBY_NAME}" in auto, auto
        await standby.start()
        await until_streaming(primary, "sync" if synchronous else "async")
        yield primary, standby
    finally:
        for node in (standby, primary):
            await node.stop()
        shutil.rmtree(base, ignore_errors=True)
