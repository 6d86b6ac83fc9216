"""Process roles and the small supervisor ``acklog serve`` runs them under.

Roles (docs/design.md, "Process roles" and "Beyond one machine"; invariant 12):

- ``ingest``: ``/hooks/*`` and health, its own pool and appender; stateless, any number of
  them share the public port (``SO_REUSEPORT``: the kernel spreads connections). Every other
  path is relayed to the API process (``service.http.proxy``).
- ``api``: query API, console, ``/openapi.json`` and ``/metrics`` (summed over every process),
  its own pool and the metrics snapshot; listens on a unix socket for the relay and, with
  ``ACKLOG_API_PORT``, on a TCP port of its own.
- ``projector``: the leader folds the log; others stand by on its advisory lock. With
  ``ACKLOG_PROJECTOR_SHARDS`` n > 1, one process per shard (``--shard k``), each leading on
  its own lock (``projections.runner``); a projector process without ``--shard`` runs all
  n shards on its one event loop.
- ``feed``: the canonical feed (``service.feed.role``): the outbox projector and the
  delivery of subscriptions, each leading on its own advisory lock; restarted like the
  projector. A slow receiver costs this process only.
- ``retention``: with ``ACKLOG_RETENTION`` only, a retention run every
  ``ACKLOG_RETENTION_INTERVAL`` (``projections.retention.scheduled``); runs on several
  machines take turns on their advisory lock.

``acklog serve`` starts the API, ``--workers N`` ingest workers and the projector as child
processes, prints the banner once all are ready, restarts a child that dies (with backoff)
and, on SIGTERM/SIGINT, stops them all: ingest workers close their socket and answer every
request they accepted before exiting. ``acklog serve --role R`` runs one role alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from eventstore.pool import connect
from projections.readmodel import checkpoints
from projections.readmodel.checkpoints import ShardsMismatch
from projections.rebuild import bulk_load
from projections.runner import Projector
from service.core import eventloop, lifetime
from service.core.config import Settings
from service.core.embedded import Embedded, RestartFailed
from service.http import server
from service.metrics.observe import observe_batch
from service.runtime import sdnotify

log = logging.getLogger(__name__)

Role = Literal["ingest", "api", "projector", "feed", "retention"]
ROLES: tuple[Role, ...] = ("ingest", "api", "projector", "feed", "retention")

#: the pipe a supervised child writes "<role> <pid>" to once it serves
READY_FD = "ACKLOG_READY_FD"
SUPERVISOR_PID = "ACKLOG_SUPERVISOR_PID"
#: seconds children get to finish what they accepted after SIGTERM, then SIGKILL
STOP_GRACE = 30.0
#: a child that ran this long before dying is restarted at once; quicker deaths back off
HEALTHY_AFTER = 10.0
#: seconds a single-leader child (projector, feed) gets to stop after SIGTERM before it
#: leaves by itself: its supervisor may be dead (one SIGTERM, nobody to SIGKILL it)
SHUTDOWN_GRACE = 5.0
_PR_SET_PDEATHSIG = 1


# --- in a child ------------------------------------------------------------------------


def die_with_supervisor() -> None:
    """A supervised child gets SIGTERM when its supervisor dies, even by SIGKILL (Linux)."""
    parent = os.environ.get(SUPERVISOR_PID)
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):  # the supervisor died before prctl took effect
        sys.exit(0)


def _notify_ready(role: Role) -> None:
    fd = os.environ.get(READY_FD)
    if fd:
        os.write(int(fd), f"{role} {os.getpid()}\n".encode())


#: the ingest worker's young generation (CPython's default is 700): see ``settle_heap``
INGEST_GC_YOUNG = 20_000


def settle_heap() -> None:
    """Once an ingest worker serves: what it built at start-up (modules, routes, caches,
    pools) goes to the collector's permanent generation (``gc.freeze``), and the young
    generation grows to ``INGEST_GC_YOUNG`` objects. Each webhook allocates objects that live
    for its request only (a few ms, held across the commit wait); with 700 they were
    promoted with every request in flight, and the full collections then walked the whole
    start-up heap (issue 25: 9 % of the worker's CPU was the collector's under 32- and
    256-connection load, 0.3 % after; docs/performance.md).
    Nothing else changes: reference counting frees the rest as before, and cycles are
    still collected, only later."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(INGEST_GC_YOUNG, middle, old)


def run_ingest(settings: Settings, dsn: str, *, announce: bool) -> None:
    # late: each role process loads only what it runs (the supervisor, the projector and the
    # CLI, which imports this module, never build an aiohttp app); no circle (lint-imports)
    from service.runtime.app import ingest_app

    def ready() -> None:
        settle_heap()
        _notify_ready("ingest")
        if announce:
            print(f"acklog ingest worker listening on {settings.base_url}", flush=True)

    eventloop.run(
        server.serve_forever(
            ingest_app(settings, dsn),
            settings.host,
            settings.port,
            reuse_port=True,
            on_ready=ready,
        ),
        settings.loop,
    )


def run_api(settings: Settings, dsn: str, *, supervised: bool) -> None:
    """Supervised: the unix socket, plus ``ACKLOG_API_PORT`` if set. Alone: ``ACKLOG_API_PORT``
    or else ``--port``, plus ``ACKLOG_API_SOCKET`` if set (ingest workers on this host)."""
    # late, as in run_ingest: only the API process builds the API app
    from service.runtime.app import api_app

    port = settings.api_port if supervised else (settings.api_port or settings.port)

    def ready() -> None:
        _notify_ready("api")
        if not supervised:
            print(f"acklog API listening on {settings.host}:{port}", flush=True)

    eventloop.run(
        server.serve_forever(
            api_app(settings, dsn),
            settings.host,
            port,
            metrics_port=settings.metrics_port,
            unix_path=settings.api_socket,
            on_ready=ready,
        ),
        settings.loop,
    )


def _lead_until_signal(role: Role, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``work`` (a lead-or-stand-by loop) until SIGTERM/SIGINT cancels it.

    Cancelling rolls back a batch in flight, never loses it. A shutdown that still has not
    finished ``SHUTDOWN_GRACE`` seconds later (seen with the database hung: a cancelled
    query's cancel request, a graceful close) ends the process anyway, from a thread, so a
    child whose supervisor died cannot linger as an orphan.
    """

    async def main() -> None:
        task = asyncio.create_task(work())
        loop = asyncio.get_running_loop()

        def stop() -> None:
            task.cancel()
            lifetime.leave_after(SHUTDOWN_GRACE, role)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        _notify_ready(role)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def run_retention(settings: Settings, dsn: str) -> None:
    """Retention every ``retention_interval`` until SIGTERM/SIGINT (a run cut short is
    resumed by the next; docs/retention.md)."""
    import datetime as dt

    from projections import retention

    if settings.retention is None:
        raise SystemExit("the retention role needs ACKLOG_RETENTION (such as 90d)")
    keep = settings.readmodel_retention
    schedule = retention.Schedule(
        older_than=dt.timedelta(seconds=settings.retention),
        interval=dt.timedelta(seconds=settings.retention_interval),
        archive_url=settings.archive_url,
        readmodel_keep=dt.timedelta(seconds=keep) if keep is not None else None,
        rate=settings.retention_rate,
    )
    retention_priority()
    _lead_until_signal("retention", lambda: retention.scheduled(dsn, schedule))


def run_projector(settings: Settings, dsn: str, shard: int | None = None) -> None:
    """Lead or stand by until SIGTERM/SIGINT; a batch in flight is rolled back, never lost.

    ``shard``: fold that shard of ``ACKLOG_PROJECTOR_SHARDS`` (None: all of them, each on
    its own task). A number of shards other than the one recorded ends the process before
    it is ready, saying how to change it (``ShardsMismatch``)."""
    check_shard(settings, shard)
    try:
        asyncio.run(claim_shards(settings, dsn))
        _lead_until_signal("projector", lambda: projectors(settings, dsn, shard))
    except ShardsMismatch as exc:
        raise SystemExit(f"error: {exc}") from None


async def claim_shards(settings: Settings, dsn: str) -> None:
    """Check the recorded number of shards (and record it while nothing is folded)."""
    conn = await connect(dsn)
    try:
        await checkpoints.claim(conn, settings.projector_shards)
    finally:
        await conn.close()


def check_shard(settings: Settings, shard: int | None) -> None:
    """``--shard`` names one of ``ACKLOG_PROJECTOR_SHARDS``' shards, or says which exist."""
    n = settings.projector_shards
    if shard is not None and not 0 <= shard < n:
        raise SystemExit(f"--shard must be between 0 and {n - 1} (ACKLOG_PROJECTOR_SHARDS={n})")


async def projectors(settings: Settings, dsn: str, shard: int | None = None) -> None:
    """Shard ``shard``'s projector, or every shard's on this loop (None), until cancelled."""
    n = settings.projector_shards
    which = range(n) if shard is None else (shard,)
    # gather, not a TaskGroup: a ShardsMismatch comes out as itself (then the process ends)
    await asyncio.gather(*(projector(settings, dsn, k).run() for k in which))


def projector(settings: Settings, dsn: str, shard: int = 0) -> Projector:
    """The live projector of ``shard`` as the settings configure it (its shards, cold start
    in bulk, its workers)."""
    return Projector(
        dsn,
        shard=shard,
        shards=settings.projector_shards,
        on_batch=observe_batch,
        bulk_catchup=settings.bulk_catchup,
        bulk_load=functools.partial(bulk_load, workers=settings.rebuild_workers or None),
    )


def feed_priority(setting: str) -> str:
    """Lower this process's CPU priority as ``ACKLOG_FEED_NICE`` says; returns what it got.

    ``idle`` (the default): Linux ``SCHED_IDLE``, the feed runs only on CPU time nothing
    else at normal priority wants, so a burst of webhooks keeps both cores and the feed
    catches up after it (falls back to nice 19 where the policy is not available). A number
    N: the normal policy at nice N (``0``: the same priority as ingest)."""
    return lower_priority(setting, "feed", "ACKLOG_FEED_NICE")


def lower_priority(setting: str, who: str, variable: str) -> str:
    """``idle``: ``SCHED_IDLE`` (nice 19 where refused); a number N: nice N. What it got."""
    value = setting.strip().lower() or "idle"
    if value == "idle":
        policy = getattr(os, "SCHED_IDLE", None)
        if policy is not None:
            try:
                os.sched_setscheduler(0, policy, os.sched_param(0))
                return "SCHED_IDLE"
            except OSError as exc:
                log.warning("%s: SCHED_IDLE refused (%s); nice 19 instead", who, exc)
        value = "19"
    try:
        nice = int(value)
    except ValueError:
        raise SystemExit(f"{variable} must be 'idle' or a number, got {setting!r}") from None
    with contextlib.suppress(OSError):
        os.nice(nice - os.nice(0))
    return f"nice {os.nice(0)}"


def retention_priority() -> str:
    """Retention runs on CPU time nothing else wants (``SCHED_IDLE``): archiving a partition
    is work that can wait, webhooks cannot (bench lifecycle: at normal priority, ingest fell
    to 0.54x during a run on 2 cores)."""
    got = lower_priority("idle", "retention", "retention")
    log.info("retention: CPU priority %s", got)
    return got


def run_feed(settings: Settings, dsn: str) -> None:
    """The outbox projector and delivery until SIGTERM/SIGINT (service.feed.role), at the
    lowest CPU priority (:func:`feed_priority`): ingest and the read-model projector always
    go first, and the feed catches up after them."""
    # late, as in run_ingest: only the feed process loads delivery (aiohttp client, tenacity)
    from service.feed import role as feed_role

    got = feed_priority(settings.feed.nice)
    log.info("feed: CPU priority %s", got)
    _lead_until_signal("feed", lambda: feed_role.run(dsn, settings.feed))


# --- the supervisor --------------------------------------------------------------------


class Child:
    def __init__(self, role: Role, argv: list[str], shard: int | None = None) -> None:
        self.role = role
        self.argv = argv
        #: the projection shard a projector child folds
        self.shard = shard
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.started = 0.0
        self.failures = 0  # quick deaths in a row, for the backoff

    @property
    def name(self) -> str:
        shard = "" if self.shard is None else f" shard {self.shard}"
        return f"{self.role}{shard}[{self.proc.pid if self.proc else '-'}]"


class Supervisor:
    def __init__(
        self, settings: Settings, dsn: str, roles: list[Role], embedded: Embedded | None = None
    ) -> None:
        self.settings = settings
        self.dsn = dsn
        self.roles = roles
        #: the embedded PostgreSQL this supervisor started (watched and restarted like a child)
        self.embedded = embedded
        self.stopping = asyncio.Event()
        self.children: list[Child] = []
        self.by_pid: dict[int, Child] = {}
        self.restarts = 0
        self.signalled = False

    def _signal(self) -> None:
        self.signalled = True
        self.stopping.set()
        sdnotify.notify("STOPPING=1")

    def _argv(self, role: Role, shard: int | None = None) -> list[str]:
        s = self.settings
        return [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--child",
            "--role",
            role,
            "--host",
            s.host,
            "--port",
            str(s.port),
            *(() if shard is None else ("--shard", str(shard))),
        ]

    def _children(self) -> list[Child]:
        """One child per role; the projector children fold shards 0, 1, … in turn."""
        shard = itertools.count()
        sharded = self.settings.projector_shards > 1
        children = []
        for role in self.roles:
            k = next(shard) if role == "projector" and sharded else None
            children.append(Child(role, self._argv(role, k), k))
        return children

    async def _spawn(self, child: Child, env: dict[str, str], wfd: int) -> None:
        child.ready.clear()
        child.proc = await asyncio.create_subprocess_exec(*child.argv, env=env, pass_fds=(wfd,))
        child.started = asyncio.get_running_loop().time()
        self.by_pid[child.proc.pid] = child

    async def _read_ready(self, rfd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(rfd, "rb", buffering=0)
        )
        while line := await reader.readline():
            _, _, pid = line.decode().strip().partition(" ")
            child = self.by_pid.get(int(pid)) if pid.isdigit() else None
            if child is not None:
                child.ready.set()

    async def _watch(self, child: Child, env: dict[str, str], wfd: int) -> None:
        """Restart the child whenever it dies, until the supervisor stops."""
        loop = asyncio.get_running_loop()
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            lived = loop.time() - child.started
            child.failures = 0 if lived >= HEALTHY_AFTER else child.failures + 1
            delay = 0.0 if child.failures == 0 else min(0.25 * 2**child.failures, 30.0)
            log.warning(
                "%s exited with %s after %.1fs; restarting in %.2fs", child.name, code, lived, delay
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()
            if self.stopping.is_set():
                return
            self.restarts += 1
            await self._spawn(child, env, wfd)

    async def _watch_database(self, embedded: Embedded) -> None:
        """Restart the embedded PostgreSQL whenever it dies, until the supervisor stops. The
        children keep their DSN (same data directory, same socket): their pools reconnect by
        themselves, and ingest answers 503 meanwhile."""
        loop = asyncio.get_running_loop()
        delay = 0.0
        while True:
            pid = embedded.pid
            await embedded.exited()
            if self.stopping.is_set():
                return
            log.warning("embedded PostgreSQL exited (postmaster pid %d gone); restarting", pid)
            down = loop.time()
            while True:
                try:
                    await asyncio.to_thread(embedded.restart)
                    break
                except RestartFailed as exc:
                    delay = min(max(delay * 2, 0.5), 30.0)
                    log.warning(
                        "embedded PostgreSQL did not start (%s); retrying in %.1fs", exc, delay
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.stopping.wait()
                if self.stopping.is_set():
                    return
            delay = 0.0
            log.info(
                "embedded PostgreSQL is back (pid %d, after %.1fs)",
                embedded.pid,
                loop.time() - down,
            )

    async def run(self, on_ready: Callable[[], None]) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal)
        workdir = tempfile.mkdtemp(prefix="acklog-serve-")
        socket_path = os.path.join(workdir, "api.sock")
        metrics_dir = os.path.join(workdir, "metrics")
        os.mkdir(metrics_dir)
        rfd, wfd = os.pipe()
        env = {
            **os.environ,
            "DATABASE_URL": self.dsn,
            "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            SUPERVISOR_PID: str(os.getpid()),
            READY_FD: str(wfd),
        }
        if "api" in self.roles:
            env["ACKLOG_API_SOCKET"] = socket_path
            env["ACKLOG_API_UPSTREAM"] = f"unix:{socket_path}"
        self.children = self._children()
        reader = asyncio.create_task(self._read_ready(rfd))
        watchers: list[asyncio.Task[None]] = []
        started = False
        try:
            for child in self.children:
                await self._spawn(child, env, wfd)
            started = await self._started()
            if started:
                watchers = [asyncio.create_task(self._watch(c, env, wfd)) for c in self.children]
                if self.embedded is not None:
                    watchers.append(asyncio.create_task(self._watch_database(self.embedded)))
                on_ready()
                sdnotify.notify("READY=1")  # for a Type=notify systemd unit
                await self.stopping.wait()
        finally:
            self.stopping.set()
            clean = await self._stop_all()
            for task in (*watchers, reader):
                task.cancel()
            await asyncio.gather(*watchers, reader, return_exceptions=True)
            os.close(wfd)
            shutil.rmtree(workdir, ignore_errors=True)
        # stopped by a signal before every child was up: a clean stop, not a failure
        return clean if started or self.signalled else 1

    async def _started(self) -> bool:
        """Every child ready, or one of them died starting (port taken, bad settings…)."""

        async def ready_or_dead(child: Child) -> bool:
            assert child.proc is not None
            ready = asyncio.create_task(child.ready.wait())
            dead = asyncio.create_task(child.proc.wait())
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait((ready, dead, stop), return_when=asyncio.FIRST_COMPLETED)
            for t in (ready, dead, stop):
                t.cancel()
            if child.ready.is_set():
                return True
            if child.proc.returncode is not None:
                log.error("%s failed to start (exit %s)", child.name, child.proc.returncode)
            return False

        oks = await asyncio.gather(*(ready_or_dead(c) for c in self.children))
        return all(oks)

    async def _stop_all(self) -> int:
        """SIGTERM to the ingest workers first (they drain, and may still relay to the API),
        then to the others; SIGKILL to a child still there after ``STOP_GRACE``. 0 when every
        child exited cleanly."""
        codes: dict[int, int] = {}
        for wave in (("ingest",), ("api", "projector", "feed", "retention")):
            children = [c for c in self.children if c.role in wave and c.proc is not None]
            for child in children:
                assert child.proc is not None
                if child.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.terminate()
            results = await asyncio.gather(*(self._reap(c) for c in children))
            codes.update(zip((id(c) for c in children), results, strict=True))
        clean = (0, -signal.SIGTERM, -signal.SIGINT)
        for child in self.children:
            code = codes.get(id(child), 0)
            if code not in clean:
                log.warning("%s stopped with exit code %s", child.name, code)
        return 0 if all(c in clean for c in codes.values()) else 1

    async def _reap(self, child: Child) -> int:
        assert child.proc is not None
        try:
            async with asyncio.timeout(STOP_GRACE):
                return await child.proc.wait()
        except TimeoutError:
            child.proc.kill()
            await child.proc.wait()
            return -signal.SIGKILL


def supervise(
    settings: Settings,
    dsn: str,
    roles: list[Role],
    on_ready: Callable[[], None],
    *,
    embedded: Embedded | None = None,
) -> int:
    """Run ``roles`` as children until SIGTERM/SIGINT; ``embedded``: the embedded PostgreSQL
    they use, restarted when it dies."""
    return asyncio.run(Supervisor(settings, dsn, roles, embedded).run(on_ready))


def child_roles(settings: Settings, *, projector: bool, feed: bool = True) -> list[Role]:
    """What ``acklog serve`` runs: the API, ``workers`` ingest workers, the projector (one
    per shard), the feed, and retention when ``ACKLOG_RETENTION`` is set."""
    roles: list[Role] = ["api", *(["ingest"] * max(settings.workers, 1))]  # type: ignore[list-item]
    if projector:
        roles.extend(["projector"] * max(settings.projector_shards, 1))
    if feed:
        roles.append("feed")
    if settings.retention is not None:
        roles.append("retention")
    return roles
