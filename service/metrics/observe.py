"""Turn each committed projector batch into metric updates (projections know no metrics)."""

from __future__ import annotations

import collections

from projections.rules.rows import Batch
from service.metrics import registry as metrics


def observe_batch(batch: Batch) -> None:
    # one labels() lookup and one (multiprocess) counter write per label set and batch,
    # not per event
    for (provider, outcome), n in collections.Counter(batch.outcomes).items():
        if outcome == "ok":
            metrics.events_projected.labels(provider, "ok").inc(n)
        else:
            metrics.events_projected.labels(provider, "quarantined").inc(n)
            metrics.quarantined.labels(provider, outcome).inc(n)
    for (provider, channel, state), n in collections.Counter(batch.transitions).items():
        metrics.transitions.labels(provider, channel, state).inc(n)
    for (provider, channel, origin), n in collections.Counter(batch.incoming).items():
        metrics.incoming.labels(provider, channel, origin).inc(n)
    for provider, channel, stage, seconds in batch.ack_latencies:
        metrics.ack_latency.labels(provider, channel, stage).observe(seconds)
