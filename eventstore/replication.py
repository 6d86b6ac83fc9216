"""Whether promoting a standby could lose commits this primary already acknowledged."""

from __future__ import annotations

import asyncpg

#: ``synchronous_commit`` values whose commits wait for a synchronous standby
_WAITING = ("on", "remote_write", "remote_apply")


async def failover_risk(conn: asyncpg.Connection) -> str | None:
    """A sentence when standbys stream from this server but its commits wait for none of
    them, so a failover could lose what was answered 200 (and what the feed delivered);
    None when there is no standby or one is synchronous.

    ``sync_state`` is shown only to roles with ``pg_read_all_stats``: without it, a standby
    named in ``synchronous_standby_names`` is taken to be synchronous. Call this before the
    session changes ``synchronous_commit`` (it reads the session's value).
    """
    rows = await conn.fetch("SELECT application_name, sync_state FROM pg_stat_replication")
    if not rows:
        return None
    names = ", ".join(sorted(str(r["application_name"] or "?") for r in rows))
    commit = await conn.fetchval("SELECT current_setting('synchronous_commit')")
    standby_names = await conn.fetchval("SELECT current_setting('synchronous_standby_names')")
    if not standby_names.strip():
        why = "synchronous_standby_names is empty"
    elif commit not in _WAITING:
        why = f"synchronous_commit is {commit!r}"
    elif all(r["sync_state"] in ("async", "potential") for r in rows):
        why = f"none of them is synchronous now (synchronous_standby_names = {standby_names!r})"
    else:
        return None
    return (
        f"standbys stream from this primary ({names}) but commits do not wait for them:"
        f" {why}; promoting one could lose webhooks answered 200 and feed events already"
        " delivered (docs/operations.md, 'Database failover')"
    )
