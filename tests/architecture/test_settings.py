"""One place for configuration: every ``ACKLOG_*`` variable is parsed by ``service.core.config``
(nowhere else), validated with one clear line, and documented in ``docs/operations.md``."""

from __future__ import annotations

import re

import pytest

from service.core.config import VARIABLES, Settings, SettingsError, default, from_env
from tests.support import REPO

#: the supervisor's own protocol with its children, not settings a person sets
INTERNAL = {"ACKLOG_READY_FD", "ACKLOG_SUPERVISOR_PID"}


def _table() -> list[tuple[list[str], str]]:
    """(variables, default cell) of each row of the configuration table."""
    page = (REPO / "docs" / "operations.md").read_text()
    section = page.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((re.findall(r"`([A-Z_]+)`", cells[0]), cells[1]))
    return rows


def test_the_documented_table_is_the_settings_table() -> None:
    documented = [name for names, _ in _table() for name in names]
    assert len(documented) == len(set(documented)), "a variable documented twice"
    assert set(documented) == {v.env for v in VARIABLES}


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_the_documented_defaults_are_the_defaults() -> None:
    variables = {v.env: v for v in VARIABLES}
    checked = 0
    for names, cell in _table():
        literals = re.findall(r"`([^`]*)`", cell)
        if len(literals) != len(names) or not cell.startswith("`"):
            continue  # prose ("half of …", "(generated)"): nothing literal to compare
        for name, literal in zip(names, literals, strict=True):
            value = default(variables[name].path)
            # as shown, or as the variable reads it (a duration: `30d` for 2592000 s)
            assert literal == _shown(value) or variables[name].parse(literal) == value, name
            checked += 1
    assert checked >= 30


def test_the_grep_would_catch_a_stray_read() -> None:
    line = 'raw = os.environ.get("ACKLOG_FEED_POLL", "")'
    assert re.findall(r"(?:\.get|getenv)\(\s*[\"'](ACKLOG_[A-Z_]+)", line) == ["ACKLOG_FEED_POLL"]


def test_no_module_reads_a_setting_from_the_environment_itself() -> None:
    offenders = []
    for folder in ("service", "projections", "eventstore"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "service" / "core" / "config.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                # a read: .get("ACKLOG_…") or getenv("ACKLOG_…"); the supervisor *writes* its
                # children's environment (env["ACKLOG_API_SOCKET"] = …), which is no parsing
                for name in re.findall(r"(?:\.get|getenv)\(\s*[\"'](ACKLOG_[A-Z_]+)", line):
                    if name not in INTERNAL:
                        offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ACKLOG_PORT", "eighty", "ACKLOG_PORT must be a whole number, got 'eighty'"),
        ("ACKLOG_FEED_ATTEMPTS", "0", "ACKLOG_FEED_ATTEMPTS must be at least 1, got '0'"),
        ("ACKLOG_STREAM_POLL", "soon", "ACKLOG_STREAM_POLL must be a number, got 'soon'"),
        ("ACKLOG_READ_TIMEOUT", "nan", "ACKLOG_READ_TIMEOUT must be a number of at least 0.1"),
        ("ACKLOG_ACCESS_LOG", "maybe", "ACKLOG_ACCESS_LOG must be 1/true/yes/on or 0/false/no/off"),
        ("ACKLOG_LOOP", "trio", "ACKLOG_LOOP must be one of auto, uvloop, asyncio, got 'trio'"),
        ("ACKLOG_FEED_NICE", "low", "ACKLOG_FEED_NICE must be 'idle' or a number, got 'low'"),
        ("ACKLOG_FEED_ALLOW_CIDRS", "10.0.0.0/33", "ACKLOG_FEED_ALLOW_CIDRS"),
        ("ACKLOG_APPEND_WRITERS", "9", "ACKLOG_APPEND_WRITERS must be between 1 and 4, got '9'"),
    ],
)
def test_a_bad_value_stops_with_one_line_naming_it(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        from_env({name: value})
    message = str(caught.value)
    assert says in message and "\n" not in message


def test_every_variable_sets_its_setting() -> None:
    env = {
        "ACKLOG_PORT": "9001",
        "ACKLOG_FEED_ATTEMPTS": "3",
        "ACKLOG_FEED_DENY_PRIVATE": "no",
        "ACKLOG_STREAM_HEARTBEAT": "2.5",
        "ACKLOG_LOOP": "asyncio",
        "ACKLOG_BULK_CATCHUP": "0",
        "ACKLOG_ALLOWED_HOSTS": "Acklog.Example, other.example",
    }
    got = from_env(env)
    assert got.port == 9001 and got.feed.attempts == 3 and got.feed.deny_private is False
    assert got.stream.heartbeat == 2.5 and got.loop == "asyncio" and got.bulk_catchup == 0
    assert got.allowed_hosts == ("acklog.example", "other.example")
    assert from_env({}) == Settings()
    assert from_env({"ACKLOG_PORT": "9001"}, port=7000).port == 7000, "a CLI flag wins"
