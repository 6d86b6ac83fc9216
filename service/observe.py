"""Turn each committed projector batch into metric updates (projections know no metrics)."""

from __future__ import annotations

from projections.fold import Batch
from service import metrics


def observe_batch(batch: Batch) -> None:
    for provider, outcome in batch.outcomes:
        if outcome == "ok":
            metrics.events_projected.labels(provider, "ok").inc()
        else:
            metrics.events_projected.labels(provider, "quarantined").inc()
            metrics.quarantined.labels(provider, outcome).inc()
    for provider, channel, state in batch.transitions:
        metrics.transitions.labels(provider, channel, state).inc()
    for provider, channel, stage, seconds in batch.ack_latencies:
        metrics.ack_latency.labels(provider, channel, stage).observe(seconds)
