"""The read model has one owner: its columns, its overdue rule and its SQL live in one package."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import asyncpg
import hypothesis
import msgspec
import pytest
from hypothesis import strategies as st

from eventstore.events import StoredEvent
from eventstore.pool import connect
from projections import fold, providers
from projections.facts import (
    DECODE_KINDS,
    Fact,
    Ignored,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    StatusReported,
)
from projections.readmodel import LIVE, columns, query, write
from projections.rules import rows
from projections.rules.deadlines import WAITS, overdue_for, overdue_sql, stage_overdue_sql
from tests.support import REPO

ROOT = REPO
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def test_columns_match_the_migrated_schema(dsn: str) -> None:
    """columns.py and sql/003_read_models.sql describe the same tables, column for column."""
    conn = await connect(dsn)
    try:
        assert await columns.drift(conn, LIVE) == []
        # and a drift is reported, not missed
        await conn.execute("ALTER TABLE rm.messages ADD COLUMN surprise text")
        await conn.execute("CREATE TABLE rm.stray (x int)")
        problems = await columns.drift(conn, LIVE)
        assert any("rm.messages" in p for p in problems)
        assert any("rm.stray: not in columns.py" in p for p in problems)
    finally:
        await conn.close()


def test_row_structs_follow_the_column_order() -> None:
    """COPY writes ``astuple`` of these Structs: their fields must be the columns, in order."""
    assert rows.TimelineRow.__struct_fields__ == columns.TIMELINE.names
    assert rows.QuarantineRow.__struct_fields__ == columns.QUARANTINE.names
    n = len(columns.INSTANCE_HISTORY.names)
    assert rows.InstanceRow.__struct_fields__[:n] == columns.INSTANCE_HISTORY.names
    assert set(columns.INSTANCE_STATUS.names) <= set(rows.InstanceRow.__struct_fields__)


_STATES = ["sending", "sent", "not_sent", "delivered", "read", "played", "deleted", "received"]
_due = st.one_of(
    st.none(), st.integers(min_value=-5, max_value=5).map(lambda s: T0 + dt.timedelta(seconds=s))
)
_row = st.tuples(st.sampled_from(_STATES), _due, _due)


def test_overdue_python_and_sql_agree(dsn: str) -> None:
    """The one overdue rule in its two forms gives the same answer on any row and clock."""

    async def open_conn() -> asyncpg.Connection:
        return await connect(dsn)

    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(open_conn())
    stage_cases = ", ".join(
        f"coalesce({stage_overdue_sql(stage, '$4')}, false) AS {stage}" for stage in WAITS
    )
    sql = (
        f"SELECT coalesce({overdue_sql('$4')}, false) AS any, {stage_cases}"
        " FROM (VALUES ($1::text, $2::timestamptz, $3::timestamptz))"
        " AS m(state, sent_due_at, delivered_due_at)"
    )

    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(row=_row, now=_due.filter(lambda d: d is not None))
    def agree(row: tuple[str, dt.datetime | None, dt.datetime | None], now: dt.datetime) -> None:
        state, sent_due_at, delivered_due_at = row
        got = loop.run_until_complete(conn.fetchrow(sql, state, sent_due_at, delivered_due_at, now))
        assert got is not None
        stage = overdue_for(state, sent_due_at, delivered_due_at, now)
        assert got["any"] == (stage is not None), (row, now)
        for s in WAITS:
            assert got[s] == (stage == s), (row, now, s)

    try:
        agree()
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


# SQL naming a read-model table: rm.messages, rm_build_x.timeline, {LIVE}.quarantine, {s}.…
# (a name in ``double backquotes`` is prose in a docstring, not SQL)
_TABLE_NAMES = "|".join(t.name for t in columns.TABLES)
_RM_SQL = re.compile(
    rf"(?<!``)(\brm(_[a-z0-9_]+)?|\{{(LIVE|s|schema|store\.LIVE)\}})\.({_TABLE_NAMES})\b"
)


def test_no_sql_on_the_read_model_outside_its_package() -> None:
    offenders = []
    for folder in ("service", "projections", "eventstore"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if (ROOT / "projections" / "readmodel") in path.parents:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _RM_SQL.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_the_grep_would_catch_a_stray_statement() -> None:
    assert _RM_SQL.search('"SELECT count(*) FROM rm.messages"')
    assert _RM_SQL.search('f"UPDATE {s}.messages SET x = 1"')
    assert _RM_SQL.search('"DELETE FROM rm_build_1.missed_counts"')
    assert not _RM_SQL.search("the message in ``rm.messages``")
    assert not _RM_SQL.search("readmodel.state_counts(conn)")


def test_missed_acks_is_one_type() -> None:
    from projections.rules import deadlines
    from service.reads import models as api_models

    assert fold.MissedAcks is deadlines.MissedAcks
    assert not hasattr(api_models, "MissedAcks")
    assert set(msgspec.structs.fields(deadlines.MissedAcks)[i].name for i in range(6)) <= set(
        api_models.MissedAcksOut.__struct_fields__
    )


def _event(provider: str, body: bytes, content_type: str = "application/json") -> StoredEvent:
    return StoredEvent(
        position=1,
        received_at=T0,
        channel="c",
        provider=provider,
        content_type=content_type,
        headers={},
        body=body,
        dedup_key=None,
        duplicate_of=None,
    )


def test_decode_failures_are_typed_and_the_metric_label_is_their_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The quarantine label is ``DecodeError.kind`` as raised; no sentence is parsed."""
    cases = {
        "invalid_json": _event("waha", b"not json"),
        "too_deep": _event("meta", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        "invalid_form": _event("twilio", b"\xff\xfe", "application/x-www-form-urlencoded"),
        "invalid_payload": _event("meta", b"{}"),
        "unknown_provider": _event("no-such-provider", b"{}"),
    }
    for kind, event in cases.items():
        (d,) = fold.decode([event])
        assert d.error_kind == kind, (kind, d.error)
        assert d.error  # the stored sentence
        batch = fold.fold([d], {}, {}, {}, {})
        assert batch.outcomes == [(event.provider, kind)]
        assert [q.reason for q in batch.quarantine] == [d.error]
    assert set(cases) | {"decoder_bug"} == set(DECODE_KINDS)

    def broken(body: bytes, content_type: str | None, headers: object) -> list[Fact]:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(providers, "decoder", lambda provider: broken)
    (d,) = fold.decode([_event("meta", b"{}")])
    assert d.error_kind == "decoder_bug" and d.error == "decoder error: ZeroDivisionError: oops"


def test_every_fact_kind_is_folded() -> None:
    """Each member of the Fact union reaches its own function (none falls into another's)."""
    facts: list[Fact] = [
        MessageObserved(key="m1", direction="outgoing"),
        StatusReported(key="m1", status="delivered", raw="DELIVERED"),
        MessageDeleted(key="m2", raw="revoked"),
        InstanceStatusReported(status="connected", raw="CONNECTED"),
        Ignored(reason="presence"),
    ]
    assert {type(f) for f in facts} == set(get_args(Fact))
    batch = fold.fold([fold.Decoded(_event("meta", b"{}"), facts)], {}, {}, {}, {})
    assert [t.fact for t in batch.timeline] == ["message", "status", "deleted"]
    assert batch.messages[("c", "m1")].state == "delivered"
    assert batch.messages[("c", "m2")].state == "deleted"
    assert [i.status for i in batch.instances] == ["connected"]


async def test_the_sweep_and_the_overdue_gauge_read_the_waiting_indexes(dsn: str) -> None:
    """Both scan only the messages still waiting (the partial indexes on the due columns)."""
    conn = await connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO rm.messages SELECT 'c', i::text, 'meta', 'outgoing',"
            " (ARRAY['sending','sent','delivered','read'])[1 + i % 4], 0, now(), '{}', '[]',"
            " false, true, null, null, null, null, null, null, false, i, i, now(), now(),"
            " now() + interval '1 hour', null, false, now() + interval '1 hour', null, false"
            " FROM generate_series(1, 20000) i"
        )
        await conn.execute("ANALYZE rm.messages")
        for sql in (write._sweep_sql(LIVE), query.OVERDUE_COUNTS_SQL):
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, T0))
            assert "Seq Scan" not in plan, plan
            for wait in WAITS.values():
                assert f"messages_{wait.due}_idx" in plan, plan
    finally:
        await conn.close()


def test_strict_mypy_rejects_a_fact_nobody_folds(tmp_path: Path) -> None:
    """Add a sixth fact to the union and leave it unhandled: ``mypy --strict`` must fail."""
    shutil.copytree(ROOT / "projections", tmp_path / "projections")
    shutil.copytree(ROOT / "eventstore", tmp_path / "eventstore")
    facts = tmp_path / "projections" / "facts.py"
    text = facts.read_text()
    text = text.replace(
        "\nFact = MessageObserved",
        '\nclass Reacted(msgspec.Struct, frozen=True, kw_only=True, tag="reacted"):\n'
        "    key: str\n\n\nFact = Reacted | MessageObserved",
    )
    facts.write_text(text)
    (tmp_path / "mypy.ini").write_text(
        "[mypy]\nstrict = True\n\n[mypy-asyncpg.*]\nignore_missing_imports = True\n"
    )
    argv = [sys.executable, "-m", "mypy", "--no-incremental", "projections/fold.py"]
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert 'Argument 1 to "assert_never" has incompatible type "Reacted"' in run.stdout, run.stdout
    # and the unmodified tree passes, so it is the new fact that fails
    facts.write_text((ROOT / "projections" / "facts.py").read_text())
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
