"""Everything that enumerates the instance states knows every one of them.

The vocabulary is ``projections.facts.InstanceStatus``; the metric exports it as is, and the
Grafana panels, the console's colours and the mapping table of docs/providers.md must each name
every state (a new state that one of them misses would show as a blank or a wrong colour).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from projections.facts import INSTANCE_STATUSES, InstanceStatusReported
from service.metrics import snapshot
from tests.support import REPO

ROOT = REPO


def _panels(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for child in node.values():
            found.extend(_panels(child))
    elif isinstance(node, list):
        for child in node:
            found.extend(_panels(child))
    return found


def _mapped_texts(mappings: list[dict[str, Any]]) -> list[str]:
    return [entry["text"] for m in mappings for entry in m["options"].values()]


def test_the_vocabulary_is_bounded_and_has_no_repeats() -> None:
    assert len(INSTANCE_STATUSES) == len(set(INSTANCE_STATUSES)) <= 12
    assert {"suspended", "failed", "logged_out", "banned"} <= set(INSTANCE_STATUSES)


def test_the_facts_accept_every_state() -> None:
    for status in INSTANCE_STATUSES:
        assert InstanceStatusReported(status=status, raw=status).status == status


def test_the_metric_exports_every_state() -> None:
    snap = snapshot.Snapshot(instances=[("shop", "waha", "failed")])
    snapshot.COLLECTOR.current = snap
    try:
        families = {m.name: m for m in snapshot.COLLECTOR.collect()}
    finally:
        snapshot.COLLECTOR.current = snapshot.Snapshot()
    samples = families["acklog_instance_status"].samples
    assert [s.labels["status"] for s in samples] == list(INSTANCE_STATUSES)
    assert [s.labels["status"] for s in samples if s.value == 1] == ["failed"]


def test_grafana_panels_map_every_state() -> None:
    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "acklog.json").read_text())
    panels = _panels(dashboard)
    table = [
        p["value"]
        for p in panels
        if p.get("id") == "mappings"
        and isinstance(p.get("value"), list)
        and any("connected" in m.get("options", {}) for m in p["value"])
    ]
    assert len(table) == 1
    assert sorted(_mapped_texts(table[0])) == sorted(INSTANCE_STATUSES)
    timeline = [p for p in panels if p.get("title") == "Instance status over time"]
    assert len(timeline) == 1
    expr = timeline[0]["targets"][0]["expr"]
    ranked = re.findall(r'status="([a-z_]+)"\} == 1\) \* 0 \+ (\d+)', expr)
    assert sorted(s for s, _ in ranked) == sorted(INSTANCE_STATUSES)
    by_rank = {rank: status for status, rank in ranked}
    mapped = timeline[0]["fieldConfig"]["defaults"]["mappings"]
    assert {
        value: entry["text"] for m in mapped for value, entry in m["options"].items()
    } == by_rank


@pytest.mark.parametrize("status", [s for s in INSTANCE_STATUSES if s != "unknown"])
def test_the_console_colours_every_state(status: str) -> None:
    css = (ROOT / "service" / "console" / "static" / "console.css").read_text()
    assert re.search(rf"\.s-{status}\b", css), status


@pytest.mark.parametrize("status", INSTANCE_STATUSES)
def test_the_docs_define_every_state(status: str) -> None:
    page = (ROOT / "docs" / "providers.md").read_text()
    section = page.split("\n## Instance states\n", 1)[1].split("\n## ", 1)[0]
    assert f"| `{status}` |" in section, status


def test_the_openapi_document_enumerates_every_state() -> None:
    from service.api import openapi

    schemas = openapi.document()["components"]["schemas"]
    for name in ("InstanceState", "HistoryEntry"):
        assert sorted(schemas[name]["properties"]["status"]["enum"]) == sorted(INSTANCE_STATUSES)
