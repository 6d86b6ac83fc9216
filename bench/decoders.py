"""Pure decoder throughput: decoded events per second per provider, on the sample mix.

Each provider's bodies are its samples with varied ids (bench.mix), decoded in turn with
``projections.providers.decode`` for a fixed time, several runs, median reported. Only bodies
that decode count: a ``DecodeError`` (a body the projector would quarantine) is counted apart
and reported, never as throughput.
"""

from __future__ import annotations

import time
from typing import Any

from bench.mix import Mix
from bench.progress import log
from bench.stats import median, spread
from projections import providers
from projections.facts import DecodeError


def run(runs: int, seconds: float) -> dict[str, Any]:
    mix = Mix()
    bodies: dict[str, list[tuple[bytes, str]]] = {}
    for n in range(len(mix.deck) * 20):
        t, body = mix.body(n, "5")
        bodies.setdefault(t.provider, []).append((body, t.content_type))
    out: dict[str, Any] = {}
    for provider, items in sorted(bodies.items()):
        rates = []
        failed = 0
        for _ in range(runs):
            decoded = 0
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                for body, content_type in items:
                    try:
                        providers.decode(provider, body, content_type, {})
                    except DecodeError:
                        failed += 1  # quarantined in real life: not a decoded event
                    else:
                        decoded += 1
            rates.append(decoded / (time.perf_counter() - started))
        avg = sum(len(b) for b, _ in items) / len(items)
        out[provider] = {
            "events_per_s": median(rates),
            "spread": spread(rates),
            "runs": rates,
            "decode_errors": failed,
            "mean_body_bytes": avg,
            "samples": len({t.name for t in mix.templates if t.provider == provider}),
        }
        log(
            f"  decode {provider:10}: {median(rates):9,.0f} events/s (mean body {avg:.0f} B,"
            f" {failed} decode errors not counted)"
        )
    return out
