"""The columns of every read-model table, written once.

``sql/003_read_models.sql`` creates these tables; :func:`drift` compares a live schema with
this table (a test runs it on a migrated database), and the upserts, the fold's load
SELECT and the API's SELECT lists are all generated from here. A new column is one line
here, one in the DDL, and the field on the Struct that carries it.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg


class Column(NamedTuple):
    name: str
    #: SQL type as written in casts (``timestamptz``, ``float8``, …)
    type: str
    nullable: bool = False
    #: derived by the fold from other columns: written, never loaded back into the fold
    derived: bool = False


class Table(NamedTuple):
    name: str
    columns: tuple[Column, ...]
    #: primary key: what identifies a row (upsert conflict target, diff reports)
    key: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def select_list(self, names: tuple[str, ...] | None = None, alias: str = "") -> str:
        """``a, b, c::text AS c``: jsonb read as text, decoded by :mod:`.codecs` once."""
        prefix = f"{alias}." if alias else ""
        out = []
        for name in names if names is not None else self.names:
            c = self.column(name)
            out.append(
                f"{prefix}{name}::text AS {name}" if c.type == "jsonb" else f"{prefix}{name}"
            )
        return ", ".join(out)

    def unnest_upsert(self, schema: str, update: str = "") -> str:
        """INSERT … SELECT FROM unnest(one array parameter per column) ON CONFLICT (key)."""
        cols = ", ".join(self.names)
        params = ", ".join(
            f"${i + 1}::{'text' if c.type == 'jsonb' else c.type}[]"
            for i, c in enumerate(self.columns)
        )
        select = ", ".join(
            f"{c.name}::jsonb" if c.type == "jsonb" else c.name for c in self.columns
        )
        sets = ", ".join(f"{n} = excluded.{n}" for n in self.names if n not in self.key)
        return (
            f"INSERT INTO {schema}.{self.name} ({cols})"
            f" SELECT {select} FROM unnest({params}) AS t({cols})"
            f" ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {sets}{update}"
        )


def _c(name: str, type_: str, *, null: bool = False, derived: bool = False) -> Column:
    return Column(name, type_, null, derived)


#: Current state of every message: one row per (channel, provider message id).
MESSAGES = Table(
    "messages",
    (
        _c("channel", "text"),
        _c("key", "text"),
        _c("provider", "text"),
        _c("direction", "text", derived=True),
        _c("state", "text", derived=True),
        _c("rank", "smallint", derived=True),
        _c("state_at", "timestamptz", derived=True),
        _c("milestones", "jsonb"),
        _c("failures", "jsonb"),
        _c("observed_in", "boolean"),
        _c("observed_out", "boolean"),
        _c("chat", "text", null=True),
        _c("sender", "text", null=True),
        _c("kind", "text", null=True),
        _c("text", "text", null=True),
        _c("media", "text", null=True),
        _c("quoted", "text", null=True),
        _c("derived_key", "boolean"),
        _c("first_position", "bigint"),
        _c("last_position", "bigint"),
        _c("first_seen_at", "timestamptz"),
        _c("last_seen_at", "timestamptz"),
        # missed acks (see .deadlines): all of them are MissedAcks fields
        _c("sent_due_at", "timestamptz", null=True),
        _c("sent_by", "timestamptz", null=True),
        _c("missed_sent", "boolean"),
        _c("delivered_due_at", "timestamptz", null=True),
        _c("delivered_by", "timestamptz", null=True),
        _c("missed_delivered", "boolean"),
        # added by later migrations (sql/06x…), each at the end: MessageState properties
        _c("failure_class", "text", null=True, derived=True),
        # group receipts (sql/061): distinct participants, and those at each receipt
        _c("participants", "integer"),
        _c("delivered_to", "integer"),
        _c("read_by", "integer"),
        _c("played_by", "integer"),
        # incoming messages: customer or system (sql/062)
        _c("origin", "text", null=True, derived=True),
        # anomalies (sql/065_anomalies.sql): the acks' first/last positions per status, and
        # what MessageState.anomalies derives from the row
        _c("acks", "jsonb"),
        _c("anomalies", "jsonb", derived=True),
    ),
    ("channel", "key"),
)

#: Every status reported about a message, in log order (fields of ``rows.TimelineRow``).
TIMELINE = Table(
    "timeline",
    (
        _c("channel", "text"),
        _c("key", "text"),
        _c("position", "bigint"),
        _c("seq", "integer"),
        _c("received_at", "timestamptz"),
        _c("provider_time", "float8", null=True),
        _c("fact", "text"),
        _c("status", "text"),
        _c("raw", "text"),
        _c("participant", "text", null=True),
        _c("error_code", "text", null=True),
        _c("error_text", "text", null=True),
        _c("advanced", "boolean"),
        _c("duplicate_of", "bigint", null=True),
    ),
    ("channel", "key", "position", "seq"),
)

#: Per-participant receipts of group messages.
RECEIPTS = Table(
    "receipts",
    (
        _c("channel", "text"),
        _c("key", "text"),
        _c("participant", "text"),
        _c("state", "text"),
        _c("milestones", "jsonb"),
    ),
    ("channel", "key", "participant"),
)

#: Connection status per channel: the latest report by log position wins.
INSTANCE_STATUS = Table(
    "instance_status",
    (
        _c("channel", "text"),
        _c("provider", "text"),
        _c("status", "text"),
        _c("raw", "text"),
        _c("reason", "text", null=True),
        _c("position", "bigint"),
        _c("received_at", "timestamptz"),
        _c("provider_time", "float8", null=True),
        # instance health (sql/066_instance_health.sql, see .health)
        _c("changed_at", "timestamptz", null=True),
        _c("stable_status", "text", null=True),
    ),
    ("channel",),
)

#: Every connection report (the first nine fields of ``rows.InstanceRow``).
INSTANCE_HISTORY = Table(
    "instance_history",
    (
        _c("channel", "text"),
        _c("position", "bigint"),
        _c("seq", "integer"),
        _c("status", "text"),
        _c("raw", "text"),
        _c("reason", "text", null=True),
        _c("received_at", "timestamptz"),
        _c("provider_time", "float8", null=True),
        _c("changed", "boolean"),
    ),
    ("channel", "position", "seq"),
)

#: Events no decoder could read (fields of ``rows.QuarantineRow``).
QUARANTINE = Table(
    "quarantine",
    (
        _c("position", "bigint"),
        _c("channel", "text"),
        _c("provider", "text"),
        _c("reason", "text"),
        _c("received_at", "timestamptz"),
    ),
    ("position",),
)

#: Messages that ever missed a deadline, per channel and stage (a monotonic counter).
MISSED_COUNTS = Table(
    "missed_counts",
    (_c("channel", "text"), _c("stage", "text"), _c("n", "bigint")),
    ("channel", "stage"),
)

#: Messages that have each anomaly now, per channel and kind (rows at zero are deleted).
ANOMALY_COUNTS = Table(
    "anomaly_counts",
    (_c("channel", "text"), _c("kind", "text"), _c("n", "bigint")),
    ("channel", "kind"),
)

#: Failures recorded per channel, provider and class (``projections.failures``): a
#: monotonic counter, each failure counted once when it is first on record.
FAILURE_COUNTS = Table(
    "failure_counts",
    (_c("channel", "text"), _c("provider", "text"), _c("class", "text"), _c("n", "bigint")),
    ("channel", "provider", "class"),
)

#: Each channel's latest outgoing message and latest ack, our clock (fields of
#: ``rows.ActivityRow``; a max of each, so any batching gives the same row).
CHANNEL_ACTIVITY = Table(
    "channel_activity",
    (
        _c("channel", "text"),
        _c("last_out_at", "timestamptz", null=True),
        _c("last_ack_at", "timestamptz", null=True),
    ),
    ("channel",),
)

#: Every read-model table (``verify`` compares them in this order).
TABLES: tuple[Table, ...] = (
    MESSAGES,
    TIMELINE,
    RECEIPTS,
    INSTANCE_STATUS,
    INSTANCE_HISTORY,
    QUARANTINE,
    MISSED_COUNTS,
    ANOMALY_COUNTS,
    FAILURE_COUNTS,
    CHANNEL_ACTIVITY,
)

# format_type() spelling of the cast names used above
_FORMAT_TYPE = {
    "timestamptz": "timestamp with time zone",
    "float8": "double precision",
}


def _spelled(c: Column) -> tuple[str, str, bool]:
    return (c.name, _FORMAT_TYPE.get(c.type, c.type), c.nullable)


async def drift(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Every difference between the tables of ``schema`` and this module (empty: none)."""
    rows = await conn.fetch(
        "SELECT c.relname AS table, a.attname AS name,"
        " format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY c.relname, a.attnum",
        schema,
    )
    actual: dict[str, list[tuple[str, str, bool]]] = {}
    for r in rows:
        actual.setdefault(r["table"], []).append((r["name"], r["type"], r["nullable"]))
    problems = []
    for table in TABLES:
        want = [_spelled(c) for c in table.columns]
        got = actual.pop(table.name, None)
        if got is None:
            problems.append(f"{schema}.{table.name}: missing")
        elif got != want:
            problems.append(f"{schema}.{table.name}: database has {got}, columns.py has {want}")
    problems.extend(f"{schema}.{name}: not in columns.py" for name in sorted(actual))
    return problems
