"""Read-model queries the web console needs beyond the query API's.

Each is bounded and served by an index of ``sql/003_read_models.sql``: quarantine by its
primary key or ``(channel, position)``, instance history by its primary key. The health
figures of the channels page are one pass over ``rm.messages`` (the same pass the channel
counts make), grouped by channel.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias

import asyncpg
import msgspec

from projections.readmodel import LIVE
from projections.readmodel.columns import QUARANTINE
from projections.readmodel.query import QuarantineRecord
from projections.rules.deadlines import WAITS, Stage, stage_overdue_sql

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

#: "missed acks in the last hour": deadlines that fell due in this window and were missed
MISSED_WINDOW = dt.timedelta(hours=1)


class Health(msgspec.Struct, frozen=True, kw_only=True):
    overdue_sent: int = 0
    overdue_delivered: int = 0
    missed_sent_recent: int = 0
    missed_delivered_recent: int = 0

    @property
    def overdue(self) -> int:
        return self.overdue_sent + self.overdue_delivered

    @property
    def missed_recent(self) -> int:
        return self.missed_sent_recent + self.missed_delivered_recent


def _missed_recent_sql(stage: Stage) -> str:
    """A deadline of ``stage`` fell due in ``($2, $1]`` and was missed: on record (the ack
    came late), or the message still waits (the sweep marks it on its next round)."""
    wait = WAITS[stage]
    return (
        f"count(*) FILTER (WHERE {wait.due} > $2 AND {wait.due} <= $1"
        f" AND ({wait.missed} OR state = '{wait.state}')) AS missed_{stage}_recent"
    )


HEALTH_SQL = (
    "SELECT channel, "
    + ", ".join(
        [f"count(*) FILTER (WHERE {stage_overdue_sql(s, '$1')}) AS overdue_{s}" for s in WAITS]
        + [_missed_recent_sql(s) for s in WAITS]
    )
    + f" FROM {LIVE}.messages WHERE "
    + " OR ".join(f"{w.due} <= $1" for w in WAITS.values())
    + " GROUP BY channel"
)


async def health(conn: Conn, now: dt.datetime) -> dict[str, Health]:
    """Overdue right now and deadlines missed in the last hour, per channel (our clock)."""
    rows = await conn.fetch(HEALTH_SQL, now, now - MISSED_WINDOW)
    return {
        r["channel"]: Health(
            overdue_sent=r["overdue_sent"],
            overdue_delivered=r["overdue_delivered"],
            missed_sent_recent=r["missed_sent_recent"],
            missed_delivered_recent=r["missed_delivered_recent"],
        )
        for r in rows
    }


def quarantine_newest_sql(channel: str | None) -> str:
    where = "position < $1" + (" AND channel = $3" if channel is not None else "")
    return (
        f"SELECT {QUARANTINE.select_list()} FROM {LIVE}.quarantine"
        f" WHERE {where} ORDER BY position DESC LIMIT $2"
    )


async def quarantine_newest(
    conn: Conn, before: int, limit: int, channel: str | None
) -> tuple[list[QuarantineRecord], int | None]:
    """Quarantined events below ``before``, newest first, and where the next page starts."""
    args: list[object] = [before, limit + 1] + ([channel] if channel is not None else [])
    rows = await conn.fetch(quarantine_newest_sql(channel), *args)
    items = [QuarantineRecord(**{f: r[f] for f in QUARANTINE.names}) for r in rows[:limit]]
    return items, (items[-1].position if len(rows) > limit else None)
