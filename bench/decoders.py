"""Pure decoder throughput: decoded events per second per provider, on the sample mix.

Each provider's bodies are its samples with varied ids (bench.mix), decoded in turn with
``projections.providers.decode`` for a fixed time, several runs, median reported.
"""

from __future__ import annotations

import time
from typing import Any

from bench.mix import Mix
from bench.progress import log
from bench.stats import median
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
        for _ in range(runs):
            done = 0
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                for body, content_type in items:
                    try:
                        providers.decode(provider, body, content_type, {})
                    except DecodeError:
                        pass
                done += len(items)
            rates.append(done / (time.perf_counter() - started))
        avg = sum(len(b) for b, _ in items) / len(items)
        out[provider] = {
            "events_per_s": median(rates),
            "runs": rates,
            "mean_body_bytes": avg,
            "samples": len({t.name for t in mix.templates if t.provider == provider}),
        }
        log(f"  decode {provider:10}: {median(rates):9,.0f} events/s (mean body {avg:.0f} B)")
    return out
