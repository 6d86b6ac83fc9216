"""Connection pools with the codecs every acklog connection needs, and multi-host DSNs.

A ``DATABASE_URL`` may name several hosts (``postgresql://u@pg1:5432,pg2:5432/acklog
?target_session_attrs=read-write``): after a failover, connections go to whichever host is now
the primary. asyncpg tries such hosts in order within *one* connect timeout, so a host that
neither answers nor refuses (a machine that is gone, a partition) would use all of it and the
next host would never be tried. So each host is tried here on its own, for at most
``HOST_TIMEOUT`` seconds, the host that last took a connection first. A one-host DSN goes to
asyncpg as it is.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import asyncpg
import msgspec

_encode = msgspec.json.Encoder()

#: seconds to reach one host of a multi-host DSN
HOST_TIMEOUT = 5.0
#: DSN → index of its host that took the last connection (tried first next time)
_last_good: dict[str, int] = {}
#: failures that send a multi-host connect on to the next host (asyncpg's own rule, plus
#: the per-host timeout and a host that is not what ``target_session_attrs`` asks for)
_NEXT_HOST = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TargetServerAttributeNotMatched,
)


def encode_json(value: Any) -> str:
    return _encode.encode(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python values, via msgspec (faster than the json module)."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=encode_json, decoder=msgspec.json.decode, schema="pg_catalog"
        )


def split_hosts(dsn: str) -> list[str]:
    """One DSN per host of ``dsn``, in its order (``[dsn]`` when it names one host)."""
    parts = urllib.parse.urlsplit(dsn)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:
        return [dsn]
    return [
        urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}"))
        for host in hostlist.split(",")
    ]


async def open_connection(dsn: str, **kw: Any) -> asyncpg.Connection:
    """A plain asyncpg connection (no codecs), each host of a multi-host DSN tried on its own."""
    hosts = split_hosts(dsn)
    if len(hosts) == 1:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **kw)
        return conn
    kw["timeout"] = min(float(kw.get("timeout") or HOST_TIMEOUT), HOST_TIMEOUT)
    first = _last_good.get(dsn, 0) % len(hosts)
    errors: list[BaseException] = []
    for i in [*range(first, len(hosts)), *range(first)]:
        try:
            conn = await asyncpg.connect(hosts[i], **kw)
        except _NEXT_HOST as exc:
            errors.append(exc)
            continue
        _last_good[dsn] = i
        return conn
    # as asyncpg does: a host that could not be reached says more than one that refused us
    raise next((e for e in errors if isinstance(e, OSError | TimeoutError)), errors[-1])


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kw: Any
) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        connect=open_connection,
        **kw,
    )
    return pool


#: seconds a pool gets to close gracefully before its connections are cut
CLOSE_SECONDS = 5.0


async def close_pool(pool: asyncpg.Pool, timeout: float = CLOSE_SECONDS) -> None:
    """Close ``pool`` gracefully, or cut its connections after ``timeout`` seconds.

    ``Pool.close()`` waits, without a bound, for every connection to be given back and for
    the server to answer each Terminate: with the database hung it never returns, and the
    process that closes it on its way out never exits."""
    try:
        async with asyncio.timeout(timeout):
            await pool.close()
    except TimeoutError:
        pool.terminate()


async def connect(dsn: str, **kw: Any) -> asyncpg.Connection:
    conn = await open_connection(dsn, **kw)
    await init_connection(conn)
    return conn
