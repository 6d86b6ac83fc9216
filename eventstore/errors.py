"""The store's own failure kinds: driver errors are translated here, once, at the boundary.

Nothing above the event store inspects an asyncpg exception or parses an error's sentence;
it catches one of these kinds (the habit of eventsourcing's recorders and Commanded's
EventStore adapters).

- ``StoreUnavailable``: the database did not take it and a retry may succeed (connection
  refused or lost, timed out, server shutting down, out of disk, a lock not granted in time).
  The HTTP answer is 503 with ``Retry-After``; projectors and pollers wait and reconnect.
- ``EventRejected``: the data of *this* write can never be stored as it is (invalid byte
  sequence, a value too large for an index, a check violated). Retrying the same bytes fails
  the same way, so a batch containing it is split and only the guilty event fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg


class StoreError(Exception):
    """Base of every failure the event store reports."""


class StoreUnavailable(StoreError):
    """The database did not take it; a retry later may succeed."""


class EventRejected(StoreError):
    """This write's data can never be stored as it is; retrying the same bytes fails again."""


#: Driver-level exceptions that mean "lost or unreachable"; use only where the driver is called.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# SQLSTATE classes whose failure is about the data written, not the server's health:
# 22 data exception (invalid text representation, string too long, NUL in text…),
# 23 integrity constraint violation, 54 program limit exceeded (index row too large).
_DATA_CLASSES = ("22", "23", "54")


def translate(exc: BaseException) -> StoreError:
    """The store's kind for a driver exception (``StoreError`` passes through unchanged)."""
    if isinstance(exc, StoreError):
        return exc
    # asyncpg reports a parameter it cannot encode (e.g. a lone surrogate) as DataError 22000
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.PostgresError) and isinstance(sqlstate, str):
        if sqlstate[:2] in _DATA_CLASSES:
            return EventRejected(f"{type(exc).__name__} [{sqlstate}]: {exc}")
    return StoreUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


@contextmanager
def store_boundary() -> Iterator[None]:
    """Translate driver errors raised inside the block into the store's own kinds."""
    try:
        yield
    except StoreError:
        raise
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
