"""The channel registry: the one owner of the SQL on ``channels`` and its tokens and secrets.

A channel is a provider instance that POSTs to acklog, with its credentials, deadlines and
health thresholds. Arguments are checked by the service before they get here
(``service.ingest.channels``: the name rule, known providers, CIDRs); the tables' CHECK
constraints are the last line, reported as ``ChannelError``. Projections read deadlines and
thresholds through :func:`deadlines` and :func:`thresholds`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets

import asyncpg
import msgspec

#: a channel's name: the CHECK of ``channels.name`` (sql/002_channels.sql), checked before
#: any query (the ingest path, the API's parameters, ``channels add``)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ChannelError(ValueError):
    """A channel operation was refused (bad name, unknown provider, no such channel…)."""


class Channel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    provider: str
    basic_user: str | None = None
    allow_cidrs: tuple[str, ...] = ()
    sent_deadline_s: float = 60.0
    delivered_deadline_s: float = 600.0
    token_hashes: tuple[bytes, ...] = ()
    secrets: tuple[str, ...] = ()

    def allows(self, address: str | None) -> bool:
        """True when no allow-list is set or ``address`` falls inside one of its CIDRs."""
        if not self.allow_cidrs:
            return True
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(c, strict=False) for c in self.allow_cidrs)


def new_token() -> str:
    return "ack_" + secrets.token_urlsafe(24)


def token_hash(token: str) -> bytes:
    """Tokens are 190-bit random strings, so a plain SHA-256 is a safe, fast at-rest form."""
    return hashlib.sha256(token.encode()).digest()


async def add(
    conn: asyncpg.Connection,
    name: str,
    provider: str,
    *,
    token: str | None = None,
    basic_user: str | None = None,
    secrets_: list[str] | None = None,
    allow_cidrs: list[str] | None = None,
    sent_deadline_s: float | None = None,
    delivered_deadline_s: float | None = None,
    health: HealthSettings | None = None,
) -> str:
    """Create a channel; returns its token (printed once, stored hashed)."""
    token = token or new_token()
    async with conn.transaction():
        try:
            await conn.execute(
                "INSERT INTO channels (name, provider, basic_user, allow_cidrs, sent_deadline_s,"
                " delivered_deadline_s) VALUES ($1, $2, $3, $4::cidr[], coalesce($5::float8, 60),"
                " coalesce($6::float8, 600))",
                name,
                provider,
                basic_user,
                allow_cidrs or [],
                sent_deadline_s,
                delivered_deadline_s,
            )
        except asyncpg.UniqueViolationError:
            raise ChannelError(f"channel {name!r} already exists") from None
        except asyncpg.CheckViolationError as exc:
            raise ChannelError(f"invalid channel settings: {exc.constraint_name}") from None
        await conn.execute(
            "INSERT INTO channel_tokens (channel, token_hash) VALUES ($1, $2)",
            name,
            token_hash(token),
        )
        if health is not None:
            await _set_health(conn, name, health)
        for secret in secrets_ or []:
            await conn.execute(
                "INSERT INTO channel_secrets (channel, secret) VALUES ($1, $2)", name, secret
            )
    return token


#: ``update`` argument meaning "set this to nothing" (no allow-list, no Basic user)
CLEAR = ""


async def update(
    conn: asyncpg.Connection,
    name: str,
    *,
    basic_user: str | None = None,
    allow_cidrs: list[str] | None = None,
    sent_deadline_s: float | None = None,
    delivered_deadline_s: float | None = None,
    health: HealthSettings | None = None,
) -> None:
    """Change a channel's settings in place; its tokens and secrets stay as they are.

    ``None`` keeps a setting; ``basic_user=CLEAR`` drops the Basic user, ``allow_cidrs=[]``
    the allow-list. New deadlines apply to acks awaited from the next event on.
    """
    if all(
        v is None for v in (basic_user, allow_cidrs, sent_deadline_s, delivered_deadline_s)
    ) and (health is None or health.empty):
        raise ChannelError(
            "nothing to update: give --sent-deadline, --delivered-deadline, --allow,"
            " --allow-any, --basic-user, --no-basic-user, --flap-changes, --flap-window,"
            " --silent-acks or --silent-traffic"
        )
    try:
        status = await conn.execute(
            "UPDATE channels SET"
            " basic_user = CASE WHEN $2::text IS NULL THEN basic_user ELSE nullif($2, '') END,"
            " allow_cidrs = coalesce($3::cidr[], allow_cidrs),"
            " sent_deadline_s = coalesce($4::float8, sent_deadline_s),"
            " delivered_deadline_s = coalesce($5::float8, delivered_deadline_s)"
            " WHERE name = $1",
            name,
            basic_user,
            allow_cidrs,
            sent_deadline_s,
            delivered_deadline_s,
        )
    except asyncpg.CheckViolationError as exc:
        raise ChannelError(f"invalid channel settings: {exc.constraint_name}") from None
    if status != "UPDATE 1":
        raise ChannelError(f"no channel {name!r}")
    if health is not None:
        await _set_health(conn, name, health)


class HealthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Instance-health thresholds to set (None keeps the current value or the default)."""

    flap_changes: int | None = None
    flap_window_s: float | None = None
    silent_acks_s: float | None = None
    silent_traffic_s: float | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__struct_fields__)


async def _set_health(conn: asyncpg.Connection, name: str, h: HealthSettings) -> None:
    try:
        await conn.execute(
            "UPDATE channels SET"
            " flap_changes = coalesce($2::integer, flap_changes),"
            " flap_window_s = coalesce($3::float8, flap_window_s),"
            " silent_acks_s = coalesce($4::float8, silent_acks_s),"
            " silent_traffic_s = coalesce($5::float8, silent_traffic_s)"
            " WHERE name = $1",
            name,
            h.flap_changes,
            h.flap_window_s,
            h.silent_acks_s,
            h.silent_traffic_s,
        )
    except asyncpg.CheckViolationError as exc:
        raise ChannelError(f"invalid channel settings: {exc.constraint_name}") from None


async def remove(conn: asyncpg.Connection, name: str) -> None:
    """Remove a channel and its credentials; its events stay in the log."""
    status = await conn.execute("DELETE FROM channels WHERE name = $1", name)
    if status != "DELETE 1":
        raise ChannelError(f"no channel {name!r}")


async def _require(conn: asyncpg.Connection, name: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM channels WHERE name = $1", name):
        raise ChannelError(f"no channel {name!r}")


async def add_token(conn: asyncpg.Connection, name: str, token: str | None = None) -> str:
    """Rotation, step 1: a new token, active alongside the old ones."""
    return (await issue_token(conn, name, token))[1]


async def issue_token(
    conn: asyncpg.Connection, name: str, token: str | None = None
) -> tuple[int, str]:
    """A new token and its id (what ``revoke_token`` takes)."""
    await _require(conn, name)
    token = token or new_token()
    token_id: int = await conn.fetchval(
        "INSERT INTO channel_tokens (channel, token_hash) VALUES ($1, $2) RETURNING id",
        name,
        token_hash(token),
    )
    return token_id, token


async def revoke_token(conn: asyncpg.Connection, name: str, token_id: int) -> None:
    """Rotation, step 2: revoke an old token by its id (see ``channels list``)."""
    status = await conn.execute(
        "UPDATE channel_tokens SET revoked_at = now()"
        " WHERE channel = $1 AND id = $2 AND revoked_at IS NULL",
        name,
        token_id,
    )
    if status != "UPDATE 1":
        raise ChannelError(f"channel {name!r} has no active token {token_id}")


async def add_secret(conn: asyncpg.Connection, name: str, secret: str) -> int:
    await _require(conn, name)
    value: int = await conn.fetchval(
        "INSERT INTO channel_secrets (channel, secret) VALUES ($1, $2) RETURNING id", name, secret
    )
    return value


async def revoke_secret(conn: asyncpg.Connection, name: str, secret_id: int) -> None:
    status = await conn.execute(
        "UPDATE channel_secrets SET revoked_at = now()"
        " WHERE channel = $1 AND id = $2 AND revoked_at IS NULL",
        name,
        secret_id,
    )
    if status != "UPDATE 1":
        raise ChannelError(f"channel {name!r} has no active secret {secret_id}")


_SELECT = """
SELECT c.name, c.provider, c.basic_user, c.allow_cidrs::text[] AS allow_cidrs,
       c.sent_deadline_s, c.delivered_deadline_s,
       coalesce((SELECT array_agg(t.token_hash ORDER BY t.id) FROM channel_tokens t
                  WHERE t.channel = c.name AND t.revoked_at IS NULL), '{}') AS token_hashes,
       coalesce((SELECT array_agg(s.secret ORDER BY s.id) FROM channel_secrets s
                  WHERE s.channel = c.name AND s.revoked_at IS NULL), '{}') AS secrets
FROM channels c
"""


def _channel(row: asyncpg.Record) -> Channel:
    return Channel(
        name=row["name"],
        provider=row["provider"],
        basic_user=row["basic_user"],
        allow_cidrs=tuple(row["allow_cidrs"]),
        sent_deadline_s=row["sent_deadline_s"],
        delivered_deadline_s=row["delivered_deadline_s"],
        token_hashes=tuple(row["token_hashes"]),
        secrets=tuple(row["secrets"]),
    )


async def get(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> Channel | None:
    row = await conn.fetchrow(_SELECT + " WHERE c.name = $1", name)
    return _channel(row) if row else None


#: the provider of one registered channel
PROVIDER_SQL = "SELECT provider FROM channels WHERE name = $1"


async def providers(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, str]:
    """Every registered channel → its provider, by name."""
    rows = await conn.fetch("SELECT name, provider FROM channels ORDER BY name")
    return {r["name"]: r["provider"] for r in rows}


async def provider(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> str | None:
    """The provider of a registered channel (None: not registered)."""
    value = await conn.fetchval(PROVIDER_SQL, name)
    return str(value) if value is not None else None


async def describe(conn: asyncpg.Connection) -> list[dict[str, object]]:
    """Channels with token and secret ids (never values) for ``channels list``, and when each
    was created (``token_created_at``, ``secret_created_at``: in the same order), so the old
    token of a rotation can be told from the new one."""
    rows = await conn.fetch(
        """SELECT c.name, c.provider, c.basic_user, c.allow_cidrs::text[] AS allow_cidrs,
                  c.sent_deadline_s, c.delivered_deadline_s, c.flap_changes, c.flap_window_s,
                  c.silent_acks_s, c.silent_traffic_s,
                  t.tokens, t.token_created_at, s.secrets, s.secret_created_at
           FROM channels c
           CROSS JOIN LATERAL (
               SELECT coalesce(array_agg(id ORDER BY id), '{}') AS tokens,
                      coalesce(array_agg(created_at ORDER BY id), '{}') AS token_created_at
               FROM channel_tokens WHERE channel = c.name AND revoked_at IS NULL) t
           CROSS JOIN LATERAL (
               SELECT coalesce(array_agg(id ORDER BY id), '{}') AS secrets,
                      coalesce(array_agg(created_at ORDER BY id), '{}') AS secret_created_at
               FROM channel_secrets WHERE channel = c.name AND revoked_at IS NULL) s
           ORDER BY c.name"""
    )
    return [dict(r) for r in rows]


async def deadlines(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, tuple[float, float]]:
    """Each channel's ack deadlines in seconds: (to ``sent``, to ``delivered``)."""
    rows = await conn.fetch("SELECT name, sent_deadline_s, delivered_deadline_s FROM channels")
    return {r["name"]: (r["sent_deadline_s"], r["delivered_deadline_s"]) for r in rows}


class Thresholds(msgspec.Struct, frozen=True, kw_only=True):
    """A channel's instance-health thresholds as stored (every column has a default)."""

    flap_changes: int
    flap_window_s: float
    silent_acks_s: float
    silent_traffic_s: float


async def thresholds(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Thresholds]:
    """Each channel's instance-health thresholds."""
    rows = await conn.fetch(
        "SELECT name, flap_changes, flap_window_s, silent_acks_s, silent_traffic_s FROM channels"
    )
    return {
        r["name"]: Thresholds(
            flap_changes=r["flap_changes"],
            flap_window_s=r["flap_window_s"],
            silent_acks_s=r["silent_acks_s"],
            silent_traffic_s=r["silent_traffic_s"],
        )
        for r in rows
    }
