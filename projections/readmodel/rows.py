"""Row shapes the fold produces and the read-model writer stores, field for column.

``array_like`` Structs: ``msgspec.structs.astuple`` gives the COPY record directly; the
field order is the column order of the table in :mod:`.columns` (a test checks it).
"""

from __future__ import annotations

import datetime as dt

import msgspec


class TimelineRow(msgspec.Struct, frozen=True, array_like=True):
    channel: str
    key: str
    position: int
    seq: int
    received_at: dt.datetime
    provider_time: float | None
    fact: str
    status: str
    raw: str
    participant: str | None
    error_code: str | None
    error_text: str | None
    advanced: bool
    duplicate_of: int | None


class InstanceRow(msgspec.Struct, frozen=True, array_like=True):
    """A row of ``instance_history`` (the first nine fields), then what ``instance_status``
    adds: the provider and the current status run (see ``.health``)."""

    channel: str
    position: int
    seq: int
    status: str
    raw: str
    reason: str | None
    received_at: dt.datetime
    provider_time: float | None
    #: the status differs from the channel's previous report (log order)
    changed: bool
    provider: str
    changed_at: dt.datetime
    stable_status: str | None


class ActivityRow(msgspec.Struct, frozen=True, array_like=True):
    """A row of ``channel_activity``."""

    channel: str
    last_out_at: dt.datetime | None
    last_ack_at: dt.datetime | None


class QuarantineRow(msgspec.Struct, frozen=True, array_like=True):
    position: int
    channel: str
    provider: str
    reason: str
    received_at: dt.datetime
