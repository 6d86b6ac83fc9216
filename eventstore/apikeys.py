"""The named API keys: the one owner of the SQL on ``api_keys`` (never a key, only its hash).

Several keys may be valid at once, so clients move from one to the next without a restart
(``acklog keys add``, then ``keys revoke``). A key is random, shown once, stored as SHA-256
and revoked rather than deleted, so a name is never reused. Driver errors are translated
here: a refused name or a repeated one is an ``ApiKeyError``, anything else one of
``eventstore.errors``' kinds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

import asyncpg
import msgspec

from eventstore.errors import store_boundary

#: a key's name: the CHECK of ``api_keys.name`` (sql/083_api_keys.sql)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: every acklog API key starts so (the log redaction knows the shape)
PREFIX = "acklog_"


class ApiKeyError(ValueError):
    """A key operation was refused (bad or repeated name, no such key…)."""


class KeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A named key as ``keys list`` shows it: never the key, nor its hash."""

    name: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str | bytes) -> bytes:
    """Keys are 256-bit random strings, so a plain SHA-256 is a safe, fast at-rest form."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


async def add(conn: asyncpg.Connection, name: str) -> str:
    """A new key named ``name``; returns it (shown once, stored hashed)."""
    if not NAME_RE.match(name):
        raise ApiKeyError(f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    key = new_key()
    with store_boundary():
        try:
            await conn.execute(
                "INSERT INTO api_keys (name, key_hash) VALUES ($1, $2)", name, key_hash(key)
            )
        except asyncpg.UniqueViolationError:
            raise ApiKeyError(
                f"an API key named {name!r} exists (revoked keys keep their names)"
            ) from None
        except asyncpg.CheckViolationError as exc:
            raise ApiKeyError(f"invalid API key: {exc.constraint_name}") from None
    return key


async def revoke(conn: asyncpg.Connection, name: str) -> None:
    """Revoke a key: refused from the next refresh of every process on (~2 s)."""
    with store_boundary():
        status = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name
        )
    if status != "UPDATE 1":
        raise ApiKeyError(f"no active API key named {name!r}")


async def describe(conn: asyncpg.Connection | asyncpg.Pool) -> list[KeyInfo]:
    """Every named key, oldest first, revoked ones included."""
    with store_boundary():
        rows = await conn.fetch(
            "SELECT name, created_at, revoked_at FROM api_keys ORDER BY created_at, name"
        )
    return [
        KeyInfo(name=r["name"], created_at=r["created_at"], revoked_at=r["revoked_at"])
        for r in rows
    ]


async def active(conn: asyncpg.Connection | asyncpg.Pool) -> dict[bytes, str]:
    """The hash of every key not revoked → its name (what a checker compares against)."""
    with store_boundary():
        rows = await conn.fetch("SELECT key_hash, name FROM api_keys WHERE revoked_at IS NULL")
    return {bytes(r["key_hash"]): r["name"] for r in rows}
