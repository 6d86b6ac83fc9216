"""Prometheus metrics: the registry, the snapshot of query-backed gauges, batch counts."""
