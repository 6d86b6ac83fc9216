"""Checks for grafana/: dashboard JSON, Prometheus alert rules and their promtool unit tests.

No database needed. promtool comes from the Debian package ``prometheus``; without it these
tests skip locally and fail under CI (``CI`` set), so CI never passes without running them.

``metric_names_used()`` is public: a live test compares it with a real ``/metrics`` page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO

REPO = REPO
GRAFANA = REPO / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "acklog.json"
ALERTS = GRAFANA / "alerts.yml"
ALERTS_TEST = GRAFANA / "alerts_test.yml"
PROMETHEUS_CONFIG = GRAFANA / "prometheus.yml"
DATASOURCE_PROVISIONING = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVISIONING = GRAFANA / "provisioning" / "dashboards" / "acklog.yml"

DATASOURCE_REF = "${datasource}"

#: Every acklog series name the service exposes on /metrics (exposition names, as scraped).
EXPOSED_METRICS = frozenset(
    {
        "acklog_webhooks_received_total",
        "acklog_ingest_latency_seconds_bucket",
        "acklog_ingest_latency_seconds_sum",
        "acklog_ingest_latency_seconds_count",
        "acklog_append_batch_size_bucket",
        "acklog_append_batch_size_sum",
        "acklog_append_batch_size_count",
        "acklog_log_head_position",
        "acklog_projection_position",
        "acklog_projection_lag_events",
        "acklog_projection_lag_seconds",
        "acklog_api_replica_lag_seconds",
        "acklog_events_projected_total",
        "acklog_quarantined_events_total",
        "acklog_message_transitions_total",
        "acklog_ack_latency_seconds_bucket",
        "acklog_ack_latency_seconds_sum",
        "acklog_ack_latency_seconds_count",
        "acklog_overdue_messages",
        "acklog_missed_acks_total",
        "acklog_message_failures_total",
        "acklog_message_anomalies",
        "acklog_incoming_messages_total",
        "acklog_instance_connected",
        "acklog_instance_status",
        "acklog_database_up",
        "acklog_connections_closed_total",
        # the canonical feed (service/feed/delivery.py, service/feed/role.py)
        "acklog_feed_events_total",
        "acklog_feed_deliveries_total",
        "acklog_feed_delivery_seconds_bucket",
        "acklog_feed_delivery_seconds_sum",
        "acklog_feed_delivery_seconds_count",
        "acklog_feed_backlog_events",
        "acklog_feed_oldest_pending_seconds",
        "acklog_feed_subscription_paused",
        "acklog_log_oldest_position",
        "acklog_log_partition_rows",
        "acklog_log_partition_bytes",
        "acklog_retention_last_run_timestamp_seconds",
        "acklog_retention_last_run_failed",
        "acklog_retention_last_run_freed",
        "acklog_retention_archive_unreachable",
        "acklog_retention_failures_total",
        "acklog_instance_health",
        "acklog_instance_status_changes",
    }
)

#: Values substituted for Grafana's variables before promtool parses a dashboard query.
GRAFANA_VARIABLES = {
    "datasource": "acklog-prometheus",
    "channel": "shop|support",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "6h",
    "__interval_ms": "60000",
    "__range_s": "21600",
    "__range_ms": "21600000",
}

_METRIC_NAME = re.compile(r"(?<![\w:])acklog_\w+")
# $name, ${name} and ${name:format}; longest names first so $__range_s is not read as $__range.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w-]+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)


# --- helpers ---------------------------------------------------------------------------------


def prometheus_binary(name: str = "promtool") -> str:
    """Path of promtool or prometheus; fails the test under CI when it is missing, skips it
    elsewhere. Both come from the Debian package ``prometheus``."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(
            f"{name} not found on PATH: install Debian package prometheus "
            f"(apt-get install -y prometheus), which ships /usr/bin/{name}"
        )
    pytest.skip(f"{name} not installed (apt-get install -y prometheus)")


def _promtool() -> str:
    return prometheus_binary("promtool")


def _run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [_promtool(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def load_dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard.get("panels", []))


def _variable_query(variable: dict[str, Any]) -> str | None:
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    return query if isinstance(query, str) else None


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every Prometheus query variable.

    ``label_values(<selector>, label)`` variable queries are reduced to their selector.
    """
    dashboard = dashboard if dashboard is not None else load_dashboard()
    queries: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                queries.append((f"panel {panel.get('id')} {panel.get('title')!r}", expr))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = _variable_query(variable)
        if not query:
            continue
        match = _LABEL_VALUES.match(query)
        if match:
            query = match.group(1)
        queries.append((f"variable {variable.get('name')!r}", query))
    return queries


def substitute_grafana_variables(expr: str, values: dict[str, str] | None = None) -> str:
    variables = {**GRAFANA_VARIABLES, **(values or {})}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(replace, expr)


def _rules_text() -> str:
    """alerts.yml without its comment lines (expressions, labels and annotations remain)."""
    lines = ALERTS.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def metric_names_used() -> set[str]:
    """Every acklog_* series name the dashboard and the alert rules reference, as written.

    Histogram and counter suffixes (_bucket, _sum, _count, _total) are kept, so each name can
    be compared with the exposition names on a live /metrics page.
    """
    names: set[str] = set()
    for _, expr in dashboard_queries():
        names.update(_METRIC_NAME.findall(expr))
    names.update(_METRIC_NAME.findall(_rules_text()))
    return names


def alert_names() -> list[str]:
    return re.findall(r"^\s*-\s*alert:\s*(\w+)\s*$", ALERTS.read_text(encoding="utf-8"), re.M)


# --- promtool --------------------------------------------------------------------------------


def test_alert_rules_check() -> None:
    result = _run_promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in result.stdout


def test_alert_rules_unit_tests() -> None:
    result = _run_promtool("test", "rules", str(ALERTS_TEST))
    assert "SUCCESS" in result.stdout


def test_prometheus_config_check() -> None:
    """The scrape config is valid and loads alerts.yml through rule_files."""
    result = _run_promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert "1 rule files found" in result.stdout, result.stdout


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL once Grafana's variables are filled in."""
    queries = dashboard_queries()
    assert len(queries) >= 15
    rules = [
        {
            "record": f"acklog_dashboard:query:{index}",
            "expr": substitute_grafana_variables(expr),
            "labels": {"where": where},
        }
        for index, (where, expr) in enumerate(queries)
    ]
    rules_file = tmp_path / "dashboard_rules.yml"
    # JSON is YAML: promtool reads it without a YAML writer on our side.
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run_promtool("check", "rules", str(rules_file))
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def test_substitution_rejects_unknown_variables() -> None:
    assert substitute_grafana_variables('x{c=~"${channel:regex}"}[$__rate_interval]') == (
        'x{c=~"shop|support"}[5m]'
    )
    assert substitute_grafana_variables("[$__range_s]") == "[21600]"
    with pytest.raises(AssertionError, match="unknown Grafana variable"):
        substitute_grafana_variables("rate(x[$window])")


def test_every_alert_has_firing_and_healthy_cases() -> None:
    """alerts_test.yml proves each alert fires when it should and stays quiet otherwise."""
    firing: set[str] = set()
    healthy: set[str] = set()
    current: str | None = None
    for line in ALERTS_TEST.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("alertname:"):
            current = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("exp_alerts:") and current is not None:
            (healthy if stripped.split(":", 1)[1].strip() == "[]" else firing).add(current)
            current = None
    names = alert_names()
    assert names, "no alerts found in alerts.yml"
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    assert set(names) - firing == set(), "alerts never shown to fire"
    assert set(names) - healthy == set(), "alerts never shown to stay quiet"
    assert (firing | healthy) - set(names) == set(), "tests for alerts that do not exist"


def test_required_alerts_exist() -> None:
    required = {
        "MissedAcksRising",
        "ProjectionLagging",
        "IngestErrors",
        "IngestUnauthorizedSpike",
        "InstanceDisconnected",
        "QuarantineGrowing",
        "DatabaseDown",
    }
    assert required <= set(alert_names())
    text = ALERTS.read_text(encoding="utf-8")
    assert re.search(r"^\s*-\s*name:\s*acklog\s*$", text, re.M), "rule group must be 'acklog'"
    assert text.count("severity:") == len(alert_names()), "every alert needs a severity label"
    assert text.count("summary:") == text.count("description:") == len(alert_names())


# --- metric names ----------------------------------------------------------------------------


def test_metric_names_used_are_exposed() -> None:
    used = metric_names_used()
    assert "acklog_missed_acks_total" in used
    assert "acklog_ack_latency_seconds_bucket" in used
    assert used - EXPOSED_METRICS == set(), "dashboard/alerts use series acklog never exposes"


def _service_exposition_names() -> set[str]:
    import service.metrics.snapshot  # noqa: F401  # registers the snapshot's collector
    from service.metrics.registry import REGISTRY

    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def test_exposed_metrics_match_service_registry() -> None:
    """The list above is what service/metrics/registry.py actually registers."""
    registered = {name for name in _service_exposition_names() if name.startswith("acklog_")}
    assert EXPOSED_METRICS - registered == set(), (
        "listed here but not in service/metrics/registry.py"
    )
    assert registered - EXPOSED_METRICS == set(), (
        "new metric in service/metrics/registry.py: list it"
    )


# --- dashboard -------------------------------------------------------------------------------


def test_dashboard_basics() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "acklog"
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["title"]


def test_dashboard_panel_ids_unique() -> None:
    ids = [panel.get("id") for panel in iter_panels(load_dashboard())]
    assert all(isinstance(panel_id, int) for panel_id in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"


def test_dashboard_panels_use_datasource_variable() -> None:
    dashboard = load_dashboard()
    for panel in iter_panels(dashboard):
        if panel.get("type") == "row":
            assert not panel.get("targets"), f"row {panel.get('title')!r} has queries"
            continue
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_REF, where
        assert panel.get("targets"), f"{where} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid") == DATASOURCE_REF, where


def test_dashboard_template_variables() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"

    channel = variables["channel"]
    assert channel["type"] == "query"
    assert channel["multi"] is True
    assert channel["includeAll"] is True
    assert channel["datasource"]["uid"] == DATASOURCE_REF
    assert _variable_query(channel) == "label_values(acklog_webhooks_received_total, channel)"

    # Multi-value variables expand to a regex: they must be matched with =~, never =.
    for where, expr in dashboard_queries(dashboard):
        assert not re.search(r'[^=!]=\s*"\$\{?channel', expr), f"{where}: use =~ for $channel"


def test_dashboard_default_datasource_is_provisioned() -> None:
    """The dashboard's default datasource uid is the one provisioning creates."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    default_uid = variables["datasource"]["current"]["value"]
    provisioning = DATASOURCE_PROVISIONING.read_text(encoding="utf-8")
    assert re.search(rf"^\s*uid:\s*{re.escape(default_uid)}\s*$", provisioning, re.M)
    assert re.search(r"^\s*type:\s*prometheus\s*$", provisioning, re.M)
    assert "url: http://localhost:9090" in provisioning
    dashboards = DASHBOARD_PROVISIONING.read_text(encoding="utf-8")
    assert re.search(r"^\s*type:\s*file\s*$", dashboards, re.M)
    assert re.search(r"^\s*path:\s*\S+", dashboards, re.M)


def test_dashboard_covers_required_panels() -> None:
    dashboard = load_dashboard()
    exprs = [expr for _, expr in dashboard_queries(dashboard)]
    joined = "\n".join(exprs)
    for needle in (
        "acklog_webhooks_received_total",
        "histogram_quantile(0.5, sum by (provider, le) (rate(acklog_ingest_latency_seconds",
        "histogram_quantile(0.99, sum by (provider, le) (rate(acklog_ingest_latency_seconds",
        "acklog_append_batch_size",
        "acklog_log_head_position",
        "acklog_projection_position",
        "acklog_projection_lag_events",
        "acklog_projection_lag_seconds",
        "acklog_overdue_messages",
        "acklog_missed_acks_total{",
        "acklog_instance_status",
        "acklog_quarantined_events_total",
        "acklog_database_up",
    ):
        assert needle in joined, f"no dashboard query uses {needle}"

    heatmaps = [p for p in iter_panels(dashboard) if p.get("type") == "heatmap"]
    stages = set()
    for panel in heatmaps:
        for target in panel["targets"]:
            assert target.get("format") == "heatmap", panel["title"]
            assert "acklog_ack_latency_seconds_bucket" in target["expr"]
            stages.update(re.findall(r'stage="(\w+)"', target["expr"]))
    assert stages == {"sent", "delivered", "read"}


def test_dashboard_windows_follow_the_scrape_interval() -> None:
    """Every range window is $__rate_interval: never a $__interval that can shrink below two
    scrapes (empty panels at short ranges), never a fixed window that ignores the range."""
    for where, expr in dashboard_queries():
        windows = re.findall(r"\[([^\]]*)\]", expr)
        assert all(w == "$__rate_interval" for w in windows), f"{where}: {windows}"


def test_counts_users_read_are_exact() -> None:
    """Missed acks are counted by difference (the counter never resets): increase() would
    show 3.9989 for 2 misses, in the dashboard and in the alert's description."""
    for where, expr in dashboard_queries():
        assert "increase(acklog_missed_acks_total" not in expr, where
    assert "increase(acklog_missed_acks_total" not in _rules_text()


def test_provisioning_files_are_valid_grafana_provisioning() -> None:
    """Grafana is not installable here: its provisioning files are checked against the
    schema Grafana reads (apiVersion 1, one Prometheus datasource with the dashboard's uid,
    one file provider whose folder name matches the mount in docs/observability.md)."""
    yaml = pytest.importorskip("yaml")  # PyYAML (installed with the test extra)
    datasources = yaml.safe_load(DATASOURCE_PROVISIONING.read_text(encoding="utf-8"))
    assert datasources["apiVersion"] == 1
    [source] = datasources["datasources"]
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert source["uid"] == variables["datasource"]["current"]["value"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"].startswith("http://")
    assert set(source["jsonData"]) <= {"httpMethod", "timeInterval"}
    dashboards = yaml.safe_load(DASHBOARD_PROVISIONING.read_text(encoding="utf-8"))
    assert dashboards["apiVersion"] == 1
    [provider] = dashboards["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()
    assert {"name", "orgId", "folder", "options"} <= set(provider)
