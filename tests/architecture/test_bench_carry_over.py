"""``python -m bench --only X``: the phases not run are carried over from the previous results,
whole, each labelled with the run it came from; the phases run are never overwritten."""

from __future__ import annotations

from typing import Any

from bench.__main__ import PHASES, carry_over
from bench.report import _carried, _with_label


def _previous() -> dict[str, Any]:
    return {
        "started_at": "2026-12-02T00:06:12+00:00",
        "machine": {"commit": "c3812fe9d84c"},
        "phases": list(PHASES[:-1]),
        "ingest": {"figure": 1},
        "decode": {"figure": 2},
        "hotpath": {"figure": 3},
        "lifecycle": {"figure": "old"},
        "errors": {"e2e": "trace"},
    }


def test_phases_not_run_are_carried_with_their_run() -> None:
    now: dict[str, Any] = {"started_at": "2026-12-07T05:00:00+00:00", "phases": ["lifecycle"]}
    now["lifecycle"] = {"figure": "new"}
    carry_over(now, _previous())
    assert now["lifecycle"] == {"figure": "new"}
    assert now["ingest"] == {"figure": 1}
    assert (now["decode"], now["hotpath"]) == ({"figure": 2}, {"figure": 3})
    assert now["errors"] == {"e2e": "trace"}
    assert set(now["carried"]) == {"ingest", "decode", "e2e"}
    assert now["carried"]["ingest"] == {
        "started_at": "2026-12-02T00:06:12+00:00",
        "commit": "c3812fe9d84c",
    }


def test_a_carried_phase_keeps_the_run_it_first_came_from() -> None:
    middle: dict[str, Any] = {"started_at": "2026-12-05", "phases": ["feed"], "feed": {}}
    carry_over(middle, _previous())
    last: dict[str, Any] = {"started_at": "2026-12-07", "phases": ["lifecycle"], "lifecycle": {}}
    carry_over(last, {**middle, "machine": {"commit": "later"}})
    assert last["carried"]["ingest"]["started_at"] == "2026-12-02T00:06:12+00:00"
    assert last["carried"]["feed"] == {"started_at": "2026-12-05", "commit": "later"}


def test_the_label_sits_under_the_heading() -> None:
    r: dict[str, Any] = {"phases": ["lifecycle"], "carried": {"feed": {"started_at": "D"}}}
    section = ["## Feed", "", "body"]
    labelled = _with_label(r, "feed", section)
    assert labelled[:2] == ["## Feed", ""]
    assert labelled[2].startswith("> Carried over from the run of D")
    assert _carried(r, "lifecycle") == []
    assert _with_label(r, "lifecycle", section) == section
