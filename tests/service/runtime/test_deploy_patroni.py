"""The Patroni example (deploy/patroni/) is what docs/operations.md says, and Patroni takes it.

``patroni --validate-config`` checks each node's file as Patroni itself reads it. It also
checks the machine: listen ports must be free and Raft partners reachable. So the check runs
on a copy whose ``10.0.0.N:PORT`` addresses become ``127.0.0.N:<free port>`` (listened on,
for the partners) and whose ``0.0.0.0`` listen ports become free ones; nothing else changes.
The YAML is read by Patroni's own interpreter (its package brings PyYAML).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import ROOT, free_port

DEPLOY = Path(ROOT) / "deploy" / "patroni"
NODES = ("pg1", "pg2")
PATRONI = shutil.which("patroni")

pytestmark = pytest.mark.skipif(
    PATRONI is None and not os.environ.get("CI"),
    reason="patroni is not installed (Debian: apt-get install patroni python3-pysyncobj)",
)

ADDRESS = re.compile(r"\b(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):(\d+)\b")


def load(name: str) -> Any:
    """A YAML file of the example, parsed by the Python that runs Patroni."""
    assert PATRONI is not None, "patroni is not installed: .ci/run installs it"
    python = Path(PATRONI).read_text().splitlines()[0].removeprefix("#!").strip().split()
    out = subprocess.run(
        [*python, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
        input=(DEPLOY / name).read_text(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def raft_members(config: Any) -> set[str]:
    return {config["raft"]["self_addr"], *config["raft"]["partner_addrs"]}


def database_url() -> urllib.parse.SplitResult:
    env = (DEPLOY / "acklog.env").read_text()
    found = re.search(r"^DATABASE_URL=(\S+)$", env, re.MULTILINE)
    assert found, env
    return urllib.parse.urlsplit(found.group(1))


def test_two_synchronous_nodes_a_raft_majority_and_acklog_on_both() -> None:
    pg1, pg2, witness = load("pg1.yml"), load("pg2.yml"), load("witness.yml")
    for node in (pg1, pg2):
        dcs = node["bootstrap"]["dcs"]
        assert dcs["synchronous_mode"] is True, "a failover must never lose an acknowledged commit"
        assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
        assert dcs["postgresql"]["use_pg_rewind"] is True, "the old primary must rejoin"
    # pg2 is pg1 but for its name and addresses
    swapped = json.dumps(pg1).replace("10.0.0.11:", "@").replace("10.0.0.12:", "10.0.0.11:")
    assert json.loads(swapped.replace("@", "10.0.0.12:").replace('"pg1"', '"pg2"')) == pg2
    # three Raft members that all know each other: either database node may fail
    assert raft_members(pg1) == raft_members(pg2) == raft_members(witness)
    assert len(raft_members(witness)) == 3

    url = database_url()
    hosts = url.netloc.rpartition("@")[2].split(",")
    assert set(hosts) == {
        pg1["postgresql"]["connect_address"],
        pg2["postgresql"]["connect_address"],
    }
    assert urllib.parse.parse_qs(url.query) == {"target_session_attrs": ["read-write"]}
    assert url.path == "/acklog"


@pytest.fixture
def localized(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Each node's file with its addresses moved to this machine's loopback, and listening
    sockets for every ``10.0.0.N:PORT`` the files name (the Raft partners must answer)."""
    texts = {node: (DEPLOY / f"{node}.yml").read_text() for node in NODES}
    mapped: dict[str, str] = {}
    for text in texts.values():
        for host, port in ADDRESS.findall(text):
            key = f"{host}:{port}"
            if key not in mapped:
                local = "0.0.0.0" if host == "0.0.0.0" else "127.0.0." + host.rsplit(".", 1)[1]
                mapped[key] = f"{local}:{free_port()}"
    listeners = []
    for key, local in mapped.items():
        if not key.startswith("0.0.0.0"):
            host, port = local.split(":")
            s = socket.socket()
            s.bind((host, int(port)))
            s.listen()
            listeners.append(s)
    files = {}
    for node, text in texts.items():
        text = ADDRESS.sub(lambda m: mapped[m.group(0)], text)
        text = text.replace("/var/lib/postgresql/15/acklog", str(tmp_path / node / "data"))
        files[node] = tmp_path / f"{node}.yml"
        files[node].write_text(text)
    try:
        yield files
    finally:
        for s in listeners:
            s.close()


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    assert PATRONI is not None, "patroni is not installed: .ci/run installs it"
    return subprocess.run(
        [PATRONI, "--validate-config", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("node", NODES)
def test_patroni_validates_the_node(localized: dict[str, Path], node: str) -> None:
    result = validate(localized[node])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_refuses_a_broken_copy(localized: dict[str, Path]) -> None:
    """The check above has teeth: without the replication credentials Patroni refuses."""
    path = localized["pg1"]
    text = path.read_text()
    broken = re.sub(r"\n    replication:\n      username: \S+\n      password: \S+", "", text)
    assert broken != text
    path.write_text(broken)
    result = validate(path)
    assert result.returncode != 0
    assert "postgresql.authentication.replication" in result.stdout + result.stderr
