"""The servers under load, each a real subprocess on its own loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench import procs

API_KEY = "acklog_bench_api_key"


@contextlib.contextmanager
def acklog(
    dsn: str, workdir: Path, *, projector: bool, name: str = "acklog", feed: bool = False
) -> Iterator[procs.Server]:
    """``acklog serve --port P [--no-projector] [--no-feed]`` with ``DATABASE_URL`` set to the
    bench's. The feed is off unless asked for: the feed phase measures it on its own."""
    port = procs.free_port()
    argv = [procs.ACKLOG, "serve", "--port", str(port)]
    if not projector:
        argv.append("--no-projector")
    if not feed:
        argv.append("--no-feed")
    env = {
        "DATABASE_URL": dsn,
        "ACKLOG_DATA_DIR": str(workdir / name),
        "ACKLOG_API_KEY": API_KEY,
    }
    with procs.serve(name, argv, port, workdir, env) as server:
        yield server


@contextlib.contextmanager
def baseline(kind: str, dsn: str, workdir: Path) -> Iterator[procs.Server]:
    port = procs.free_port()
    argv = [procs.PYTHON, "-m", "bench.baselines", kind, "--port", str(port), "--dsn", dsn]
    with procs.serve(f"baseline-{kind}", argv, port, workdir, {}) as server:
        yield server
