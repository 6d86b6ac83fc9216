"""The machine a run was made on: CPU, cores, memory, kernel, Python, tools, commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import wrkrun

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout or done.stderr).strip()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def describe() -> dict[str, Any]:
    wrk = wrkrun.wrk_path()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in ("aiohttp", "asyncpg", "msgspec", "py-spy")},
        "wrk": (_run([wrk, "--version"]).splitlines() or ["?"])[0].split(" [")[0] if wrk else None,
        # read-only git queries: which code was measured, and whether it had local edits
        **code_state(),
    }


#: what a bench run writes into the tree itself: never a reason to call the tree dirty
OUTPUTS = ("docs/benchmarks.md", "docs/benchmarks.json", "bench/results/")


def code_state() -> dict[str, Any]:
    """The commit measured and every local change to it (the bench's own files included:
    a figure made by an uncommitted bench is not a figure of the commit)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "-z"],
            capture_output=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": "?", "dirty": True, "changed_files": ["(git status failed)"]}
    # entries are "XY path" separated by NUL; a rename adds the old path as its own entry
    entries = [e for e in done.stdout.decode(errors="replace").split("\0") if e]
    changed = [e[3:] for e in entries if len(e) > 3 and e[2] == " "]
    changed = [path for path in changed if not path.startswith(OUTPUTS)]
    return {
        "commit": _run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"]) or "?",
        "dirty": bool(changed),
        "changed_files": changed[:50],
    }
