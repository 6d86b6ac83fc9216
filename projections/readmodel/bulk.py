"""Bulk writes into a fresh read-model copy (the load path of rebuild and verify).

A rebuild loads tables nobody reads yet, so rows go in by binary COPY, and the indexes that
only serve queries are built once at the end instead of row by row. Only the keys the load
itself needs (messages and receipts, looked up and upserted; instance status and missed
counts, upserted) stay in place throughout.
"""

from __future__ import annotations

import asyncpg
import msgspec

from projections.readmodel import schema_name
from projections.readmodel.columns import INSTANCE_HISTORY, MESSAGES, QUARANTINE, TIMELINE

_encode = msgspec.json.Encoder()

#: append-only tables: even their keys are built after the load, like every query index
APPEND_ONLY = (TIMELINE.name, INSTANCE_HISTORY.name, QUARANTINE.name)


def _jsonb(value: object) -> bytes:
    return b"\x01" + (value if isinstance(value, bytes) else _encode.encode(value))


async def bulk_codecs(conn: asyncpg.Connection) -> None:
    """jsonb in binary, so COPY can carry it: JSON bytes (or any value) in, values out.

    Everything else acklog sends as jsonb still works on such a connection: values are
    encoded with msgspec, and the read model's own jsonb is read as ``::text``.
    """
    await conn.set_type_codec(
        "jsonb",
        encoder=_jsonb,
        decoder=lambda b: msgspec.json.decode(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def defer_indexes(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Drop what the load does not need; returns the DDL that puts it back, in order."""
    s = schema_name(schema)
    rows = await conn.fetch(
        "SELECT c.relname AS tbl, ic.relname AS idx, i.indisprimary AS pk,"
        " pg_get_indexdef(i.indexrelid) AS def, k.conname, pg_get_constraintdef(k.oid) AS cdef"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
        " JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.contype = 'p'"
        " WHERE n.nspname = $1 ORDER BY c.relname, ic.relname",
        s,
    )
    restore: list[str] = []
    for r in rows:
        if r["pk"]:
            if r["tbl"] not in APPEND_ONLY:
                continue
            await conn.execute(f'ALTER TABLE {s}.{r["tbl"]} DROP CONSTRAINT "{r["conname"]}"')
            restore.append(
                f'ALTER TABLE {s}.{r["tbl"]} ADD CONSTRAINT "{r["conname"]}" {r["cdef"]}'
            )
        else:
            await conn.execute(f'DROP INDEX {s}."{r["idx"]}"')
            restore.append(r["def"])
    return restore


async def restore_indexes(conn: asyncpg.Connection, schema: str, restore: list[str]) -> None:
    for ddl in restore:
        await conn.execute(ddl)
    for table in (MESSAGES.name, TIMELINE.name):
        await conn.execute(f"ANALYZE {schema_name(schema)}.{table}")
