"""Prometheus metrics. Labels are bounded (invariant 11): never a message id or a phone number.

Counters and histograms that the hot path updates live here as module objects; gauges that
need a query are filled from a snapshot refreshed in the background (``service.metrics.snapshot``).
``metrics_view`` serves the exposition (on the API, or alone on ``ACKLOG_METRICS_PORT``).
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

from projections.facts import DECODE_KINDS as QUARANTINE_REASONS
from projections.facts import ORIGINS

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the exposition for no dashboard use

REGISTRY = CollectorRegistry(auto_describe=True)

#: set by ``acklog serve`` for its children: every process writes its samples there and the
#: API process sums them (prometheus_client's multiprocess mode), so one ``/metrics`` counts
#: every ingest worker and the projector. Gauges keep the most recent value any process set.
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

#: collectors that compute their samples at scrape time (the snapshot gauges); they run in the
#: scraped process in both modes
_LIVE_COLLECTORS: list[Collector] = []


def register_collector(collector: Collector) -> None:
    REGISTRY.register(collector)
    _LIVE_COLLECTORS.append(collector)


def exposition() -> bytes:
    """The text exposition of ``/metrics``: this process's registry, or, under ``acklog
    serve``, the sum over every process that wrote to the multiprocess directory."""
    if MULTIPROC_DIR is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)  # type: ignore[no-untyped-call]
    for collector in _LIVE_COLLECTORS:
        registry.register(collector)
    return generate_latest(registry)


async def metrics_view(request: web.Request) -> web.Response:
    # off the event loop: under ``acklog serve`` it reads one file per process
    body = await asyncio.to_thread(exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


ACK_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)

#: every outcome label of acklog_webhooks_received_total
OUTCOMES = (
    "stored",
    "duplicate",
    "unauthorized",
    "not_found",
    "too_large",
    "bad_request",
    "rate_limited",
    "unavailable",
    "rejected",
)

webhooks_received = Counter(
    "acklog_webhooks_received",
    "Webhook requests received, by outcome: " + ", ".join(OUTCOMES) + ".",
    ["provider", "channel", "outcome"],
    registry=REGISTRY,
)
ingest_latency = Histogram(
    "acklog_ingest_latency_seconds",
    "Time from request start to answer for webhooks, including the commit wait.",
    ["provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
append_batch_size = Histogram(
    "acklog_append_batch_size",
    "Events committed per group-commit transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
log_head = Gauge(
    "acklog_log_head_position",
    "Highest committed event position.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
projection_position = Gauge(
    "acklog_projection_position",
    "Last event position folded by the projection.",
    ["projection"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
projection_lag_events = Gauge(
    "acklog_projection_lag_events",
    "Events committed to the log but not yet folded.",
    ["projection"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
api_replica_lag_seconds = Gauge(
    "acklog_api_replica_lag_seconds",
    "How far the API's standby (ACKLOG_API_DATABASE_URL) is behind in replay (0 in step).",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
projection_lag_seconds = Gauge(
    "acklog_projection_lag_seconds",
    "Age of the oldest event not yet folded (0 when caught up).",
    ["projection"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
events_projected = Counter(
    "acklog_events_projected",
    "Events folded by the projector, by provider and result (ok, quarantined).",
    ["provider", "result"],
    registry=REGISTRY,
)
quarantined = Counter(
    "acklog_quarantined_events",
    "Events that could not be decoded, by provider and reason class.",
    ["provider", "reason"],
    registry=REGISTRY,
)
transitions = Counter(
    "acklog_message_transitions",
    "Message state changes applied by the projector, by the state reached.",
    ["provider", "channel", "state"],
    registry=REGISTRY,
)
incoming = Counter(
    "acklog_incoming_messages",
    "Incoming messages first seen by the projector, by origin: customer (a customer wrote"
    " it) or system (a notice no customer wrote: Meta request_welcome, changed number…).",
    ["provider", "channel", "origin"],
    registry=REGISTRY,
)
ack_latency = Histogram(
    "acklog_ack_latency_seconds",
    "Time from a message's first sighting to its first sent/delivered/read ack (our clock).",
    ["provider", "channel", "stage"],
    buckets=ACK_BUCKETS,
    registry=REGISTRY,
)
database_up = Gauge(
    "acklog_database_up",
    "1 when the last database round-trip succeeded.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)


def export_channel(provider: str, channel: str) -> None:
    """Export a known channel's counters at zero before their first event.

    ``increase()`` and ``rate()`` cannot see a series' first sample: a counter that appears
    only when first incremented hides that increment from every alert rule.
    """
    for outcome in OUTCOMES:
        webhooks_received.labels(provider, channel, outcome)
    for result in ("ok", "quarantined"):
        events_projected.labels(provider, result)
    for reason in QUARANTINE_REASONS:
        quarantined.labels(provider, reason)
    for origin in ORIGINS:
        incoming.labels(provider, channel, origin)


connections_closed = Counter(
    "acklog_connections_closed",
    "Connections the server closed on its own, by reason: max_connections, per_client,"
    " header_timeout.",
    ["reason"],
    registry=REGISTRY,
)

# --- the canonical feed (service.feed.delivery, projections.feed.outbox) ------------------
#: the ``subscription`` label is an operator-created subscription name (bounded by them)
FEED_OUTCOMES = ("delivered", "failed", "dead_letter", "refused")
feed_events = Counter(
    "acklog_feed_events_total",
    "Canonical events written to the feed, by type.",
    ["type"],
    registry=REGISTRY,
)
feed_deliveries = Counter(
    "acklog_feed_deliveries_total",
    "Delivery attempts by outcome: delivered (2xx), failed (retried), dead_letter (attempts"
    " exhausted), refused (address not allowed).",
    ["subscription", "outcome"],
    registry=REGISTRY,
)
feed_delivery_seconds = Histogram(
    "acklog_feed_delivery_seconds",
    "Seconds per delivery attempt, request to answer.",
    ["subscription"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
feed_backlog = Gauge(
    "acklog_feed_backlog_events",
    "Feed events a subscription still owes its endpoint (after its cursor, plus replays).",
    ["subscription"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
feed_oldest_pending = Gauge(
    "acklog_feed_oldest_pending_seconds",
    "Age of the oldest feed event a subscription still owes (0 when none).",
    ["subscription"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
feed_paused = Gauge(
    "acklog_feed_subscription_paused",
    "1 when a subscription is paused (by the operator or its circuit breaker).",
    ["subscription"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
