"""Where the time goes: py-spy samples of a running process, folded into a short table.

py-spy is optional (``.venv/bin/pip install py-spy``); without it the bench skips profiles.
Samples are taken only while the process runs Python or C code, not while it waits, so the
share of samples answers "of the CPU this process burns, what burns it".
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import procs

#: frames summed under one label: the stages of ingest and of the projector
GROUPS: dict[str, tuple[str, ...]] = {
    "ingest: aiohttp HTTP parsing and dispatch": (
        "web_protocol.py",
        "http_parser.py",
        "web_request.py",
        "streams.py",
        "web_app.py",
        "web_urldispatcher.py",
    ),
    "ingest: response writing": ("web_response.py", "http_writer.py", "helpers.py"),
    "ingest: receive handler (auth, headers, event id)": (
        "service/ingest/hooks.py",
        "service/ingest/auth.py",
        "service/ingest/channels.py",
        "eventstore/channels.py",
    ),
    "ingest: metrics (prometheus_client)": ("prometheus_client",),
    "appender (group commit)": ("eventstore/append.py",),
    "asyncpg (protocol, encoding rows and arrays)": ("asyncpg",),
    "decoders (projections/providers)": ("projections/providers",),
    "projector: fold": ("projections/fold.py", "projections/rules/message_state.py"),
    "projector: read models I/O": ("projections/readmodel", "eventstore/read.py"),
    "event loop and sockets": ("asyncio", "selectors.py", "uvloop"),
}


def available() -> bool:
    return shutil.which("py-spy", path=str(procs.VENV_BIN)) is not None or bool(
        shutil.which("py-spy")
    )


def _exe() -> str:
    return shutil.which("py-spy", path=str(procs.VENV_BIN)) or shutil.which("py-spy") or "py-spy"


def record(pid: int, seconds: float, rate: int = 200) -> Path | None:
    """Sample ``pid`` for ``seconds``; the raw (collapsed stacks) file, or None."""
    out = Path(tempfile.mkstemp(prefix="bench-pyspy-", suffix=".txt")[1])
    argv = [_exe(), "record", "--pid", str(pid), "--duration", str(max(int(seconds), 1))]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"]
    try:
        subprocess.run(argv, capture_output=True, timeout=seconds + 60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out


def start(argv: list[str], out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Run a child under py-spy (for short-lived children such as a projector run)."""
    cmd = [_exe(), "record", "--rate", str(rate), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(
        [*cmd, "--", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=procs.env()
    )


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _parse(path: Path) -> tuple[int, list[tuple[list[str], int]]]:
    stacks: list[tuple[list[str], int]] = []
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        stacks.append((stack.split(";"), int(n)))
        total += int(n)
    return total, stacks


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    for anchor in ("site-packages/", "/work/main/", "python3.11/"):
        if anchor in file:
            file = file.split(anchor, 1)[1]
    return f"{m.group('fn')} ({file})"


def summarize(
    path: Path | None, top: int = 12, seconds: float | None = None, rate: int = 200
) -> dict[str, Any] | None:
    """Shares of samples: by stage (innermost known frame), and the hottest functions.

    With ``seconds``, also ``busy``: the share of wall time the process was seen running.
    """
    if path is None or not path.exists():
        return None
    total, stacks = _parse(path)
    if not total:
        return None
    groups: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        own[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            inclusive[f] += n
        label = "other"
        for frame in reversed(frames):
            label = next(
                (g for g, needles in GROUPS.items() if any(s in frame for s in needles)), ""
            )
            if label:
                break
        groups[label or "other"] += n
    project = [
        (f, n)
        for f, n in inclusive.most_common()
        if any(s in f for s in ("service/", "eventstore/", "projections/"))
    ]
    return {
        "samples": total,
        "busy": round(min(total / (seconds * rate), 1.0), 2) if seconds else None,
        "by_stage": {g: round(n / total, 3) for g, n in groups.most_common()},
        "self": [(f, round(n / total, 3)) for f, n in own.most_common(top)],
        "inclusive_project": [(f, round(n / total, 3)) for f, n in project[:top]],
    }
