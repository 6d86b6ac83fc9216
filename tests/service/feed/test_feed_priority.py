"""The feed process runs at the lowest CPU priority (``ACKLOG_FEED_NICE``, default ``idle``:
Linux ``SCHED_IDLE``), read back from the kernel: ``sched_getscheduler`` and the policy and
nice fields of ``/proc/<pid>/stat``. The other roles keep the normal policy."""

from __future__ import annotations

import os

import pytest

from tests.service.runtime.test_roles import role_pids, started
from tests.support.procs import Process

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies only"
)


def stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from field 3 on (the command name may hold spaces)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()


def policy(pid: int) -> int:
    from_stat = int(stat_fields(pid)[41 - 3])  # field 41: policy
    assert from_stat == os.sched_getscheduler(pid)
    return from_stat


def nice(pid: int) -> int:
    return int(stat_fields(pid)[19 - 3])  # field 19: nice


async def test_the_feed_role_runs_under_sched_idle(dsn: str) -> None:
    feed = await Process(["serve", "--role", "feed"], dsn, marker="CPU priority").start()
    try:
        assert policy(feed.pid) == os.SCHED_IDLE
        assert any("CPU priority SCHED_IDLE" in line for line in feed.lines)
    finally:
        await feed.stop()


async def test_the_supervised_feed_child_is_idle_and_the_other_roles_are_not(dsn: str) -> None:
    server = await started(dsn)
    try:
        (feed,) = role_pids(server.pid, "feed")
        assert policy(feed) == os.SCHED_IDLE
        others = [p for r in ("ingest", "api", "projector") for p in role_pids(server.pid, r)]
        assert others and all(policy(p) == os.SCHED_OTHER for p in [server.pid, *others])
    finally:
        await server.stop()


async def test_a_number_is_a_nice_value_under_the_normal_policy(dsn: str) -> None:
    feed = await Process(
        ["serve", "--role", "feed"], dsn, marker="CPU priority", ACKLOG_FEED_NICE="7"
    ).start()
    try:
        assert policy(feed.pid) == os.SCHED_OTHER
        assert nice(feed.pid) == 7
    finally:
        await feed.stop()
