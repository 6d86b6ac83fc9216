"""The one-channel rebuild's layouts, as ``make bench ARGS="--rebuild-shards …"`` names them."""

from __future__ import annotations

import pytest

from bench import projection, report


@pytest.mark.parametrize(
    ("layout", "parsed", "name"),
    [
        ("1", (1, False), "1 shard(s)"),
        ("4", (4, False), "4 shard(s)"),
        ("r1", (1, True), "a reader + 1 shard(s)"),
        ("r2", (2, True), "a reader + 2 shard(s)"),
    ],
)
def test_a_layout_is_n_shards_or_n_shards_fed_by_a_reader(
    layout: str, parsed: tuple[int, bool], name: str
) -> None:
    assert projection.parse_layout(layout) == parsed
    assert projection.layout_name(layout) == name
    assert report._layout_name(layout) == name  # the report names what the run measured


@pytest.mark.parametrize("layout", ["", "r", "0", "r0", "rr1", "1r", "x2", "r-1", "-1", " 1"])
def test_anything_else_is_refused_before_the_log_is_filled(layout: str) -> None:
    with pytest.raises(ValueError):
        projection.parse_layout(layout)
