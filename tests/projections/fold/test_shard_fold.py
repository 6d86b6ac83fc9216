"""Folding the log in shards by message key and merging equals folding it whole (hypothesis).

Pure: no database. For any list of decoded events (Meta and WAHA webhooks over a few keys and
four channels, undecodable ones among them, connection reports, retried duplicates), cut
into any batches, and any number of shards ``n``: each shard folds
``projections.shards.select`` of every batch, carrying its own message, receipt and run
state from batch to batch as a projector does; merged, the shards give the whole fold's
message states, receipts and missed acks (each key in one shard), its timeline and instance
rows with their seqs, its quarantine and decode outcomes (each event counted once), and its
count deltas and channel activity (summed and maximised: ``rules.rows.Totals``).
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.events import StoredEvent
from projections import bulk, fold, providers, shards
from projections.rules.deadlines import Deadlines, MissedAcks
from projections.rules.health import Run
from projections.rules.message_state import MessageState
from projections.rules.rows import Batch, Key, ReceiptKey, Totals
from tests.projections.fold.test_bulk_fold import KINDS, T0, body, channel_of
from tests.support import samples

DEADLINES = {
    c: Deadlines(sent=dt.timedelta(seconds=5), delivered=dt.timedelta(seconds=10))
    for c in ("meta", "meta2", "waha", "waha2")
}

webhooks = st.tuples(
    st.sampled_from([*KINDS, "garbage"]),
    st.integers(0, 5),  # message key (0-2 and 3-5 in different channels)
    st.integers(0, 9),
    st.sampled_from([0, 1, 2, 3, 5, 8, 70]),
    st.booleans(),  # stored twice, the second a duplicate of the first
)


def _events(log: list[Any]) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    at = T0
    for kind, key, arg, gap, twice in log:
        at += dt.timedelta(seconds=gap)
        provider, raw = ("meta", b"{not json") if kind == "garbage" else body(kind, key, arg)
        for copy in range(2 if twice else 1):
            out.append(
                StoredEvent(
                    position=len(out) + 1,
                    received_at=at,
                    channel=channel_of(provider, key),
                    provider=provider,
                    content_type="application/json",
                    headers={},
                    body=raw,
                    dedup_key="",
                    duplicate_of=len(out) if copy else None,
                )
            )
    return out


class _Folder:
    """One fold (the whole log, or one shard) over batches, with a projector's state."""

    def __init__(self) -> None:
        self.messages: dict[Key, MessageState] = {}
        self.missed: dict[Key, MissedAcks] = {}
        self.receipts: dict[ReceiptKey, MessageState] = {}
        self.runs: dict[str, Run] = {}
        self.batches: list[Batch] = []
        self.totals = Totals()

    def batch(self, decoded: list[fold.Decoded]) -> None:
        keys, receipt_keys = fold.message_keys(decoded)
        b = fold.fold(
            decoded,
            {k: self.messages[k] for k in keys if k in self.messages},
            {k: self.missed[k] for k in keys if k in self.missed},
            {k: self.receipts[k] for k in receipt_keys if k in self.receipts},
            DEADLINES,
            {c: self.runs[c] for c in fold.instance_channels(decoded) if c in self.runs},
        )
        self.messages.update(b.messages)
        self.missed.update(b.missed)
        self.receipts.update(b.receipts)
        for row in b.instances:  # what instance_status keeps: the channel's last run
            self.runs[row.channel] = Run(row.status, row.changed_at, row.stable_status)
        self.batches.append(b)
        self.totals.add(b)

    def rows(self, name: str) -> list[Any]:
        return [r for b in self.batches for r in getattr(b, name)]


def _disjoint_union(parts: list[dict[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for part in parts:
        assert not out.keys() & part.keys(), "a key folded by two shards"
        out.update(part)
    return out


def _bag(rows: list[Any]) -> collections.Counter[Any]:
    return collections.Counter(rows)


def _nonzero(counts: dict[Any, int]) -> dict[Any, int]:
    return {k: n for k, n in counts.items() if n}


@settings(max_examples=300, deadline=None)
@given(
    log=st.lists(webhooks, min_size=1, max_size=40),
    n=st.integers(1, 5),
    cuts=st.lists(st.integers(1, 80), max_size=4),
)
def test_shards_merged_equal_the_whole_fold(log: list[Any], n: int, cuts: list[int]) -> None:
    decoded = fold.decode(_events(log))
    bounds = sorted({0, len(decoded), *(c for c in cuts if c < len(decoded))})
    batches = [decoded[a:b] for a, b in itertools.pairwise(bounds)]
    whole = _Folder()
    parts = [_Folder() for _ in range(n)]
    for batch in batches:
        whole.batch(batch)
        for k, part in enumerate(parts):
            part.batch(shards.select(batch, k, n))

    # every event counted by exactly one shard: its channel's
    for batch in batches:
        counted = [sum(d.counted for d in shards.select(batch, k, n)) for k in range(n)]
        assert sum(counted) == len(batch)

    assert _disjoint_union([p.messages for p in parts]) == whole.messages
    assert _disjoint_union([p.missed for p in parts]) == whole.missed
    assert _disjoint_union([p.receipts for p in parts]) == whole.receipts

    def merged(name: str, key: Any) -> list[Any]:
        return sorted((r for p in parts for r in p.rows(name)), key=key)

    by_seq = lambda r: (r.position, r.seq)  # noqa: E731
    assert merged("timeline", by_seq) == whole.rows("timeline")
    assert merged("instances", by_seq) == whole.rows("instances")
    assert merged("quarantine", lambda r: r.position) == whole.rows("quarantine")
    for name in ("outcomes", "transitions", "ack_latencies", "incoming", "created"):
        assert _bag([r for p in parts for r in p.rows(name)]) == _bag(whole.rows(name)), name

    totals = Totals()
    for p in parts:
        totals.merge(p.totals)
    assert _nonzero(totals.missed) == _nonzero(whole.totals.missed)
    assert _nonzero(totals.anomalies) == _nonzero(whole.totals.anomalies)
    assert _nonzero(totals.failures) == _nonzero(whole.totals.failures)
    assert totals.activity == whole.totals.activity


def test_totals_add_counts_and_keep_the_latest_activity() -> None:
    a, b = Totals(), Totals()
    a.missed[("c", "sent")] = 2
    b.missed[("c", "sent")] = 3
    b.anomalies[("c", "gap")] = -1
    a.activity["c"] = [T0, None]
    b.activity["c"] = [T0 - dt.timedelta(seconds=1), T0]
    a.merge(b)
    assert a.missed == {("c", "sent"): 5}
    assert a.anomalies == {("c", "gap"): -1}
    assert a.activity == {"c": [T0, T0]}


@settings(max_examples=300, deadline=None)
@given(log=st.lists(webhooks, min_size=1, max_size=40), n=st.integers(1, 5))
def test_divide_gives_every_shard_what_select_gives_it(log: list[Any], n: int) -> None:
    """A rebuild's reader cuts each batch for all shards at once (``shards.divide``): each
    part is exactly what that shard would select for itself."""
    decoded = fold.decode(_events(log))
    assert shards.divide(decoded, n) == [shards.select(decoded, k, n) for k in range(n)]


@pytest.mark.parametrize("provider", providers.PROVIDERS)
def test_a_decoded_event_crosses_the_readers_pipe_unchanged(provider: str) -> None:
    """What a rebuild's reader sends a shard's folder (msgpack of the decoded batch, bodies
    left out: ``projections.bulk``) decodes to the same facts, errors and shard marks, for
    every shared sample and fixture of every provider, and for one it cannot decode."""
    events = [
        StoredEvent(
            position=i + 1,
            received_at=T0 + dt.timedelta(seconds=i),
            channel=f"ch{i % 3}",
            provider=provider,
            content_type=content_type,
            headers={},
            body=raw,
            dedup_key="",
            duplicate_of=i if i % 4 == 3 else None,
        )
        for i, (raw, content_type) in enumerate(
            [samples.sample(provider, name) for name in samples.all_names(provider)]
            + [(b"{not json", "application/json")]
        )
    ]
    decoded = fold.decode(events)
    assert any(d.facts for d in decoded) and any(d.error for d in decoded)
    for part in shards.divide(decoded, 2):
        sent = [bulk._slim(d) for d in part]
        position, received = bulk._PARTS.decode(bulk._ENCODE((events[-1].position, sent)))
        assert position == events[-1].position
        assert received == sent
        assert [(d.facts, d.error, d.error_kind, d.counted, d.seqs) for d in received] == [
            (d.facts, d.error, d.error_kind, d.counted, d.seqs) for d in part
        ]
