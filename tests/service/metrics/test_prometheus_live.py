"""A real Prometheus (Debian's ``prometheus`` server) scraping a real ``acklog serve``.

The test starts both on free ports, Prometheus with a fresh TSDB (it has seconds of history,
as after a first start or a restart), 1 s scrape and evaluation intervals and
``grafana/alerts.yml`` as its rules. Webhooks through ``/hooks`` make two outgoing messages
miss their sent and delivered deadlines and an instance disconnect. Then, read through the
Prometheus HTTP API:

- ``MissedAcksRising`` fires for both stages with the exact count (1), within a few
  evaluations; ``AckOverdueNow`` and ``InstanceDisconnected`` go pending (their ``for`` is
  minutes long: pending proves the expression is true, promtool's unit tests cover ``for``);
- every dashboard expression, with Grafana's variables filled in, returns data.

Grafana itself is not installable here; ``tests/service/metrics/test_grafana.py`` keeps its provisioning
files and dashboard valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from projections.providers import get as provider
from projections.providers.simulation import Ids
from tests.service.metrics.test_grafana import (
    ALERTS,
    dashboard_queries,
    prometheus_binary,
    substitute_grafana_variables,
)
from tests.support.apps import add_channel
from tests.support.payloads import waha_ack, waha_outgoing
from tests.support.procs import Process, free_port, serve

#: Grafana's variables as Grafana fills them at a short time range with the datasource's
#: timeInterval equal to the 1 s scrape interval: $__interval is then one scrape (a window
#: with a single sample), $__rate_interval four
VARIABLES = {
    "channel": "shop",
    "__rate_interval": "4s",
    "__interval": "1s",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
    "__interval_ms": "1000",
}
DEADLINE_S = 90.0


def prometheus_config(acklog_port: int) -> str:
    return json.dumps(  # JSON is YAML
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "acklog",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [f"127.0.0.1:{acklog_port}"]}],
                }
            ],
        }
    )


class Prometheus:
    def __init__(self, tmp: Path, acklog_port: int) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(prometheus_config(acklog_port))
        self.log = (tmp / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                prometheus_binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[list[Prometheus]]:
    started: list[Prometheus] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
async def acklog(dsn: str) -> AsyncIterator[Process]:
    proc = serve(
        dsn,
        free_port(),
        ACKLOG_API_KEY="test-key",
        ACKLOG_SNAPSHOT_INTERVAL="0.5",
    )
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


async def until(what: str, check: Any, deadline: float = DEADLINE_S) -> Any:
    """Poll ``check()`` (async) until it returns something truthy; fail at the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last: Any = None
    while loop.time() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what}: not within {deadline:.0f}s (last: {last!r})")


async def test_alerts_fire_and_dashboard_has_data_on_a_real_prometheus(
    dsn: str, acklog: Process, prometheus_factory: list[Prometheus], tmp_path: Path
) -> None:
    port = int(acklog.args[acklog.args.index("--port") + 1])
    base = f"http://127.0.0.1:{port}"
    token = await add_channel(dsn, "shop", "waha", sent_deadline_s=1, delivered_deadline_s=2)
    prom = Prometheus(tmp_path, port)
    prometheus_factory.append(prom)

    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{prom.url}/-/ready") as resp:
                    return resp.status == 200
            return False

        await until("prometheus ready", ready)

        async def scraped_up() -> bool:
            result = await query(http, prom.url, 'up{job="acklog"} == 1')
            return bool(result)

        await until("acklog scraped", scraped_up)

        # the channel's series exist at 0 before anything happens (a young Prometheus with a
        # first sample for increase() and for the difference the missed-ack rule takes)
        async def zero_exported() -> Any:
            return await query(http, prom.url, 'acklog_missed_acks_total{channel="shop"} == 0')

        assert len(await until("missed acks exported at 0", zero_exported)) == 2

        hook = f"{base}/hooks/shop?token={token}"
        waha = provider("waha").simulator(Ids(7), base)
        bodies = [
            waha_outgoing("STUCK"),  # never acked: misses its sent deadline
            waha_outgoing("HALF"),
            waha_ack("HALF", 1),  # sent, never delivered: misses its delivered deadline
            waha_outgoing("FINE"),
            waha_ack("FINE", 1),
            waha_ack("FINE", 2),
            waha_ack("FINE", 3),
            waha.instance(False).body,  # the instance disconnects
            b"{not json",  # quarantined
        ]
        for body in bodies:
            async with http.post(hook, data=body) as resp:
                assert resp.status == 200, await resp.text()
        async with http.post(f"{base}/hooks/shop?token=wrong", data=b"{}") as resp:
            assert resp.status == 401

        async def alerts() -> dict[tuple[str, str], dict[str, Any]]:
            async with http.get(f"{prom.url}/api/v1/alerts") as resp:
                body = await resp.json()
            return {
                (a["labels"]["alertname"], a["labels"].get("stage", "")): a
                for a in body["data"]["alerts"]
            }

        wanted = {
            ("MissedAcksRising", "sent"): "firing",
            ("MissedAcksRising", "delivered"): "firing",
            ("AckOverdueNow", "sent"): "pending",
            ("InstanceDisconnected", ""): "pending",
        }

        async def all_wanted() -> dict[tuple[str, str], dict[str, Any]] | None:
            got = await alerts()
            states = {k: got[k]["state"] for k in wanted if k in got}
            return got if states == wanted else None

        got = await until(f"alerts {wanted}", all_wanted)
        for stage in ("sent", "delivered"):
            alert = got[("MissedAcksRising", stage)]
            assert alert["labels"]["channel"] == "shop"
            assert alert["value"] in ("1e+00", "1"), alert["value"]  # exact, not 1.0002
            assert alert["annotations"]["description"].startswith("1 outgoing message(s)")
        assert got[("InstanceDisconnected", "")]["labels"]["channel"] == "shop"

        # every dashboard query returns data once a few scrapes have happened
        queries = [
            (where, substitute_grafana_variables(expr, VARIABLES))
            for where, expr in dashboard_queries()
        ]

        async def no_empty_query() -> bool:
            empty = [where for where, q in queries if not await query(http, prom.url, q)]
            if empty:
                last_empty[:] = empty
            return not empty

        last_empty: list[str] = []
        try:
            await until("every dashboard query returns data", no_empty_query)
        except AssertionError:
            raise AssertionError(f"dashboard queries without data: {last_empty}") from None


async def query(http: aiohttp.ClientSession, url: str, promql: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
