"""Event records as written to and read from the log."""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook about to be appended. ``body`` is kept exactly as received."""

    channel: str
    provider: str
    body: bytes
    received_at: dt.datetime
    content_type: str | None = None
    headers: dict[str, str] = {}
    dedup_key: str = ""

    def with_dedup_key(self, event_id: str | None) -> NewEvent:
        """Use the provider's event id when it has one, else the body's SHA-256."""
        key = f"id:{event_id}" if event_id else body_key(self.body)
        return msgspec.structs.replace(self, dedup_key=key)


class Appended(msgspec.Struct, frozen=True):
    position: int
    duplicate_of: int | None


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    received_at: dt.datetime
    channel: str
    provider: str
    content_type: str | None
    headers: dict[str, str]
    body: bytes
    dedup_key: str
    duplicate_of: int | None


def body_key(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()
