"""Load from ``wrk`` (Debian package ``wrk``) when it is installed, else from bench.loadgen.

Both answer with the same summary: requests, 200s, errors, rates and latency percentiles in
milliseconds. wrk runs the Lua scripts in ``bench/wrk/``; the webhook mix reaches it as a Lua
data file written from ``bench.mix``, so both clients send the same bytes.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from bench import procs
from bench.db import channel_name, token
from bench.mix import Mix

WRK_DIR = Path(__file__).resolve().parent / "wrk"


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_string(data: bytes) -> str:
    out = []
    for b in data:
        c = chr(b)
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


def mix_lua(mix: Mix, prefix: str) -> str:
    """The mix as a Lua chunk returning {templates=…, deck=…, prefix=…} (1-based indices)."""
    lines = ["return {", f"  prefix = {_lua_string(prefix.encode())},", "  templates = {"]
    for t in mix.templates:
        path = f"/hooks/{channel_name(t.provider)}?token={urllib.parse.quote(token(t.provider))}"
        parts = ", ".join(_lua_string(p) for p in t.parts)
        headers = (
            f'{{["Content-Type"] = {_lua_string(t.content_type.encode())},'
            f' ["User-Agent"] = "{t.provider}-webhooks/1.0"}}'
        )
        lines.append(f"    {{path = {_lua_string(path.encode())}, headers = {headers},")
        lines.append(f"     parts = {{{parts}}}}},")
    lines.append("  },")
    lines.append("  deck = {")
    for s in mix.deck:
        lines.append(f"    {{{s.template + 1}, {s.offset}, {s.rounds_per_pass}}},")
    lines.append("  },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _parse(out: str, connections: int) -> dict[str, Any]:
    v: dict[str, list[int]] = {}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            _, key, *nums = line.split()
            v[key] = [int(n) for n in nums]
    duration = v["duration_us"][0] / 1e6
    requests, ok = v["requests"][0], v["ok"][0]
    connect, read, write, _status, timeout = v["errors"]
    return {
        "requests": requests,
        "ok": ok,
        "errors": requests - ok + connect + read + write + timeout,
        "socket_errors": {"connect": connect, "read": read, "write": write, "timeout": timeout},
        "duration": duration,
        "rps": requests / duration,
        "ok_rps": ok / duration,
        "latency_ms": {
            "p50": v["p50_us"][0] / 1000,
            "p90": v["p90_us"][0] / 1000,
            "p99": v["p99_us"][0] / 1000,
            "max": v["max_us"][0] / 1000,
        },
        "mode": "closed",
        "connections": connections,
        "client": "wrk",
    }


def _wrk(
    url: str, script: str, connections: int, duration: float, env: dict[str, str]
) -> dict[str, Any]:
    exe = wrk_path()
    assert exe is not None
    threads = 2 if connections >= 64 else 1
    argv = [
        exe,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(round(duration), 1)}s",
        "--timeout",
        "15s",
        "-s",
        str(WRK_DIR / script),
        url,
    ]
    before = _children_cpu()
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=procs.env(BENCH_WRK_DIR=str(WRK_DIR), **env),
        timeout=duration + 60,
    )
    if proc.returncode != 0 or "BENCH requests" not in proc.stdout:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = _parse(proc.stdout, connections)
    result["client_cpu_s"] = _children_cpu() - before
    return result


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children: the load client's, one run at a
    time (the servers are children too, but are only waited for when they stop)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _loadgen(argv: list[str], timeout: float) -> dict[str, Any]:
    before = _children_cpu()
    proc = subprocess.run(
        [procs.PYTHON, "-m", "bench.loadgen", *argv],
        capture_output=True,
        text=True,
        env=procs.env(),
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.loadgen failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["client"] = "bench.loadgen"
    result["client_cpu_s"] = _children_cpu() - before
    return result


def post_mix(
    url: str, connections: int, duration: float, prefix: str, *, use_wrk: bool = True
) -> dict[str, Any]:
    """Closed-loop POSTs of the webhook mix; ``prefix`` (digits) keeps this run's ids unique."""
    if use_wrk and wrk_path():
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(mix_lua(Mix(), prefix))
        try:
            return _wrk(url, "ingest.lua", connections, duration, {"BENCH_WRK_DATA": f.name})
        finally:
            Path(f.name).unlink(missing_ok=True)
    argv = ["--url", url, "--mix", "--prefix", prefix + "0"]
    argv += ["--connections", str(connections), "--duration", str(duration)]
    return _loadgen(argv, duration + 120)


def paced_mix(
    url: str, rate: float, duration: float, prefix: str, connections: int = 256
) -> dict[str, Any]:
    """Open-loop POSTs at ``rate``/s from bench.loadgen (wrk has no pacing)."""
    argv = ["--url", url, "--mix", "--prefix", prefix + "0", "--mode", "paced"]
    argv += ["--rate", str(rate), "--duration", str(duration), "--connections", str(connections)]
    return _loadgen(argv, duration + 120)


def get_paths(
    url: str,
    paths_file: Path,
    authorization: str,
    connections: int,
    duration: float,
    *,
    use_wrk: bool = True,
) -> dict[str, Any]:
    if use_wrk and wrk_path():
        env = {"BENCH_WRK_PATHS": str(paths_file), "BENCH_WRK_AUTH": authorization}
        return _wrk(url, "get.lua", connections, duration, env)
    argv = ["--url", url, "--paths", str(paths_file), "--authorization", authorization]
    argv += ["--connections", str(connections), "--duration", str(duration)]
    return _loadgen(argv, duration + 120)
