"""Running as a systemd service (issue 24): deploy/systemd/acklog.service is a unit systemd
accepts, ``acklog serve`` speaks the ``Type=notify`` protocol, and the API key comes from a
systemd credential or a file.

The notify tests listen where ``$NOTIFY_SOCKET`` points (a path, or Linux's abstract
namespace, as systemd gives either) and run a real ``acklog serve``: ``READY=1`` comes once
it serves and has printed its banner, ``STOPPING=1`` at SIGTERM, before it exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from service.core.config import from_env
from service.runtime import sdnotify
from tests.support import REPO
from tests.support.procs import Process, free_port
from tests.support.system_tools import system_binary

UNIT = REPO / "deploy" / "systemd" / "acklog.service"
SHIPPED_EXEC = "/opt/acklog/.venv/bin/acklog"
KEY = "acklog_systemd_credential_key_0123456789abcdef"


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every key known to this systemd, every value valid; ExecStart must exist, so the copy
    verified runs this checkout's acklog instead of /opt/acklog's."""
    analyze = system_binary("systemd-analyze", "systemd")
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={SHIPPED_EXEC} serve" in text
    acklog = Path(sys.executable).with_name("acklog")
    assert acklog.is_file(), "the project is installed in the venv (make .venv/.installed)"
    unit = tmp_path / "acklog.service"
    unit.write_text(text.replace(SHIPPED_EXEC, str(acklog)), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    # an unknown or misspelt key is only a warning (exit 0): no output at all is the bar
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_the_unit_says_what_the_guide_promises() -> None:
    """The settings issue 24 asks for, which verify cannot judge."""
    lines = {line.strip() for line in UNIT.read_text(encoding="utf-8").splitlines()}
    for setting in (
        "Type=notify",
        "User=acklog",
        "StateDirectory=acklog",
        "WorkingDirectory=/var/lib/acklog",
        "Environment=ACKLOG_DATA_DIR=/var/lib/acklog",
        "LoadCredential=api_key:/etc/acklog/api_key",
        "Restart=on-failure",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=40",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/acklog",
    ):
        assert setting in lines, setting


@contextlib.contextmanager
def notify_socket(address: str) -> Iterator[socket.socket]:
    """A unix datagram socket bound where systemd would listen; ``address`` as in
    ``$NOTIFY_SOCKET`` (``@name``: the abstract namespace)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:] if address.startswith("@") else address)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def receive(sock: socket.socket, timeout: float = 60) -> str:
    async with asyncio.timeout(timeout):
        data = await asyncio.get_running_loop().sock_recv(sock, 4096)
    return data.decode()


@pytest.mark.parametrize("kind", ["path", "abstract"])
async def test_serve_notifies_ready_and_stopping(dsn: str, tmp_path: Path, kind: str) -> None:
    address = str(tmp_path / "notify") if kind == "path" else f"@acklog-test-{os.getpid()}"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api_key").write_text(KEY + "\n", encoding="utf-8")
    port = free_port()
    with notify_socket(address) as sock:
        process = Process(
            ["serve", "--port", str(port), "--no-projector", "--no-feed"],
            dsn,
            NOTIFY_SOCKET=address,
            # the key as LoadCredential=api_key:… hands it over; none in the environment
            CREDENTIALS_DIRECTORY=str(credentials),
            ACKLOG_API_KEY="",
        )
        await process.start()
        try:
            assert await receive(sock) == "READY=1"
            # ready means serving: the banner is out and a request is answered
            await process.wait_lines(lambda lines: any("API key:" in x for x in lines))
            shown = next(x for x in process.lines if "API key:" in x)
            assert f"read from {credentials / 'api_key'}" in shown, shown
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/v1/channels"
                async with http.get(url, headers={"Authorization": f"Bearer {KEY}"}) as answer:
                    assert answer.status == 200, "the credential is the API key"
                async with http.get(url, headers={"Authorization": "Bearer other"}) as answer:
                    assert answer.status == 401
            assert process.proc is not None
            process.proc.terminate()
            assert await receive(sock) == "STOPPING=1"
            async with asyncio.timeout(40):
                assert await process.proc.wait() == 0
        finally:
            await process.stop()


def test_notify_without_a_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.notify("READY=1") is False


def test_notify_to_a_socket_nobody_listens_on_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.notify("READY=1") is False
    assert "cannot notify systemd" in caplog.text


# -- the API key from a file -------------------------------------------------------------


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ACKLOG_API_KEY", "ACKLOG_API_KEY_FILE", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_api_key_file(key_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(f"  {KEY}\n", encoding="utf-8")
    key_env.setenv("ACKLOG_API_KEY_FILE", str(path))
    settings = from_env()
    assert (settings.api_key, settings.api_key_file) == (KEY, str(path))


def test_api_key_credential_and_precedence(key_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_env.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert from_env().api_key is None, "a credentials directory without api_key: generated"
    (tmp_path / "api_key").write_text(KEY, encoding="utf-8")
    assert from_env().api_key == KEY
    other = tmp_path / "other"
    other.write_text("acklog_from_the_file", encoding="utf-8")
    key_env.setenv("ACKLOG_API_KEY_FILE", str(other))
    assert from_env().api_key == "acklog_from_the_file", "the file named wins"
    key_env.setenv("ACKLOG_API_KEY", "acklog_from_the_environment")
    settings = from_env()
    assert (settings.api_key, settings.api_key_file) == ("acklog_from_the_environment", None)


@pytest.mark.parametrize("content", [None, "", "\n", "two words"])
def test_an_unusable_key_file_stops_with_one_line(
    key_env: pytest.MonkeyPatch, tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    key_env.setenv("ACKLOG_API_KEY_FILE", str(path))
    with pytest.raises(SystemExit) as stopped:
        from_env()
    message = str(stopped.value)
    assert message.startswith("ACKLOG_API_KEY_FILE: ") and str(path) in message
    assert "\n" not in message
