"""Which share of the fold is whose: the log's facts split by message key (issue 25).

A message's state, timeline, receipts and deadlines depend only on that message's facts, and
an instance's status only on its channel's instance facts. So the fold divides into ``n``
shards: a message fact goes to the shard of its ``(channel, key)``; everything else about an
event (instance facts, ignored facts, the decode outcome, quarantine) to the shard of its
channel. Each shard folds exactly its facts, in log order; what two shards both write is
additive (counters) or a maximum (channel activity), so the shards' writes commute.

The hash is CRC-32 (stable across processes and Python runs, unlike ``hash``), taken modulo
``n``. Changing ``n`` moves keys between shards: it is an explicit step (a rebuild), never a
silent one.
"""

from __future__ import annotations

import zlib

import msgspec

from projections.facts import MessageDeleted, MessageObserved, StatusReported
from projections.fold import Decoded


def of_message(channel: str, key: str, shards: int) -> int:
    """The shard of message ``key`` of ``channel`` among ``shards``."""
    if shards == 1:
        return 0
    return zlib.crc32(f"{channel}\x00{key}".encode()) % shards


def of_channel(channel: str, shards: int) -> int:
    """The shard of a channel's own facts (instance status, decode outcomes, quarantine)."""
    if shards == 1:
        return 0
    return zlib.crc32(channel.encode()) % shards


def _where(d: Decoded, shards: int) -> tuple[int, list[int]]:
    """The shard of the event's channel, and of each of its facts: a message fact's by its
    key, any other fact's the channel's."""
    channel = d.event.channel
    own = of_channel(channel, shards)
    return own, [
        of_message(channel, f.key, shards)
        if isinstance(f, MessageObserved | StatusReported | MessageDeleted)
        else own
        for f in d.facts
    ]


def _part(d: Decoded, shard: int, own: int, where: list[int]) -> Decoded | None:
    """What shard ``shard`` folds of ``d`` (None: nothing): its facts there (``seqs``),
    counted only in the channel's shard ``own``."""
    seqs = tuple(i for i, w in enumerate(where) if w == shard)
    if shard == own:
        return d if len(seqs) == len(d.facts) else msgspec.structs.replace(d, seqs=seqs)
    return msgspec.structs.replace(d, seqs=seqs, counted=False) if seqs else None


def select(decoded: list[Decoded], shard: int, shards: int) -> list[Decoded]:
    """The part of ``decoded`` that shard ``shard`` of ``shards`` folds, in the same order:
    each event with only its facts for this shard (``seqs``), and counted (its outcome, its quarantine
    row) only in its channel's shard. Events with nothing for this shard are left out."""
    if shards == 1:
        return decoded
    parts = (_part(d, shard, *_where(d, shards)) for d in decoded)
    return [p for p in parts if p is not None]


def divide(decoded: list[Decoded], shards: int) -> list[list[Decoded]]:
    """Every shard's part of ``decoded`` at once: ``divide(d, n)[s] == select(d, s, n)``, with
    each fact's shard computed once (a reader feeding all the shards of a rebuild uses it)."""
    if shards == 1:
        return [decoded]
    parts: list[list[Decoded]] = [[] for _ in range(shards)]
    for d in decoded:
        own, where = _where(d, shards)
        for s, out in enumerate(parts):
            if (p := _part(d, s, own, where)) is not None:
                out.append(p)
    return parts
