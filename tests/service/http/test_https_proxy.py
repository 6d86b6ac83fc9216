"""HTTPS in front (issue 24): the shipped Caddy and nginx configurations, run for real.

For each proxy: a self-signed certificate for ``localhost`` (openssl), the file under
``deploy/`` rendered as docs/operations.md says (Caddy reads its ``{$ACKLOG_...}`` from the
environment; the nginx template goes through ``envsubst``), the real proxy process, and a real
``acklog serve`` behind it with ``ACKLOG_TRUSTED_PROXIES=127.0.0.1`` and
``ACKLOG_PUBLIC_URL=https://localhost:<tls port>``. The client speaks HTTPS to the proxy, from
127.0.0.2, so the client's address (127.0.0.2) and the proxy's (127.0.0.1) differ and a
channel's allow-list shows which one acklog took.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import ssl
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from twilio.request_validator import RequestValidator

from eventstore import read as reader
from tests.support import REPO
from tests.support.apps import add_channel
from tests.support.console_helpers import sign_in
from tests.support.payloads import meta_status
from tests.support.procs import Process, free_port
from tests.support.samples import sample
from tests.support.system_tools import system_binary

CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "acklog.conf"
#: the names envsubst replaces in the nginx template (docs/operations.md gives this list)
NGINX_NAMES = (
    "ACKLOG_SERVER_NAME",
    "ACKLOG_HTTP_PORT",
    "ACKLOG_HTTPS_PORT",
    "ACKLOG_UPSTREAM",
    "ACKLOG_TLS_CERT",
    "ACKLOG_TLS_KEY",
)
KEY = "acklog_https_proxy_test_key_0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
APP_SECRET = "meta-app-secret-of-the-test"
TWILIO_TOKEN = "twilio-auth-token-of-the-test"
#: where the test's client connects from: not the proxy's address
CLIENT_IP = "127.0.0.2"
#: what a client claims in headers the proxy must overwrite
FORGED = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "http"}


class Loopback(AbstractResolver):
    """``localhost`` is 127.0.0.1 (never ::1, whatever /etc/hosts says): the client's
    address is then 127.0.0.2, as the test says."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        assert host == "localhost", host
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key): a self-signed certificate for localhost and 127.0.0.1."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            system_binary("openssl", "openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Daemon:
    """A proxy process in the foreground; ``start`` returns once ``marker`` is logged (its
    listening sockets are open by then)."""

    def __init__(self, argv: Sequence[str], marker: str, env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.marker = marker
        self.env = dict(env)
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._rest: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            async for raw in self.proc.stdout:
                self.lines.append(raw.decode(errors="replace").rstrip())
                if self.marker in self.lines[-1]:
                    break
            else:
                raise AssertionError(f"{self.argv[0]} exited:\n" + "\n".join(self.lines))
        self._rest = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._rest is not None:
            await self._rest


def caddy(directory: Path, tls_port: int, upstream: int, cert: Path, key: Path) -> Daemon:
    """Caddy on the shipped Caddyfile, as is: the test's values come from the environment."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # Caddy keeps its state under $HOME / $XDG_*: the test's directory
        "HOME": str(directory),
        "XDG_DATA_HOME": str(directory / "data"),
        "XDG_CONFIG_HOME": str(directory / "config"),
        "ACKLOG_SITE": f"https://localhost:{tls_port}",
        "ACKLOG_TLS": "files",
        "ACKLOG_TLS_CERT": str(cert),
        "ACKLOG_TLS_KEY": str(key),
        "ACKLOG_UPSTREAM": f"127.0.0.1:{upstream}",
        "ACKLOG_CADDY_HTTP_PORT": str(free_port()),
        "ACKLOG_CADDY_ADMIN": f"localhost:{free_port()}",
    }
    argv = [
        system_binary("caddy", "caddy"),
        "run",
        "--config",
        str(CADDYFILE),
        "--adapter",
        "caddyfile",
    ]
    return Daemon(argv, "serving initial configuration", env)


def nginx(directory: Path, tls_port: int, upstream: int, cert: Path, key: Path) -> Daemon:
    """nginx with the shipped template rendered by envsubst, inside an ``http {}`` of the
    test's own (temporary pid, log and buffer paths; Debian's nginx.conf is not read)."""
    values = {
        "ACKLOG_SERVER_NAME": "localhost",
        "ACKLOG_HTTP_PORT": str(free_port()),
        "ACKLOG_HTTPS_PORT": str(tls_port),
        "ACKLOG_UPSTREAM": f"127.0.0.1:{upstream}",
        "ACKLOG_TLS_CERT": str(cert),
        "ACKLOG_TLS_KEY": str(key),
    }
    assert set(values) == set(NGINX_NAMES)
    rendered = subprocess.run(
        [system_binary("envsubst", "gettext-base"), " ".join(f"${n}" for n in NGINX_NAMES)],
        input=NGINX_TEMPLATE.read_text(encoding="utf-8"),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **values},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    directives = [line for line in rendered.splitlines() if not line.lstrip().startswith("#")]
    left = [line for line in directives if "$ACKLOG_" in line or "${ACKLOG_" in line]
    assert not left, f"the template uses variables the docs do not list: {left}"
    site = directory / "acklog.conf"
    site.write_text(rendered, encoding="utf-8")
    temp_paths = "".join(
        f"    {kind}_temp_path {directory / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # as root, workers would run as nobody, who cannot write request bodies under tmp_path
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = directory / "nginx.conf"
    main.write_text(
        f"pid {directory / 'nginx.pid'};\n{user}error_log stderr notice;\n"
        "worker_processes 1;\nevents { worker_connections 256; }\n"
        f"http {{\n    access_log off;\n{temp_paths}    include {site};\n}}\n",
        encoding="utf-8",
    )
    argv = [
        system_binary("nginx", "nginx"),
        "-p",
        str(directory),
        "-e",
        "stderr",
        "-c",
        str(main),
        "-g",
        "daemon off;",
    ]
    return Daemon(argv, "start worker process", {"PATH": os.environ.get("PATH", "")})


@dataclass
class Stack:
    base: str  # https://localhost:<tls port>, through the proxy
    tls_port: int
    acklog: Process
    proxy: Daemon
    ssl: ssl.SSLContext

    def client(self, **kw: object) -> aiohttp.ClientSession:
        """A client of the proxy, from 127.0.0.2, trusting the test's certificate; it keeps
        cookies as a browser does."""
        connector = aiohttp.TCPConnector(
            ssl=self.ssl, resolver=Loopback(), local_addr=(CLIENT_IP, 0)
        )
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True), **kw
        )


@pytest.fixture(params=["caddy", "nginx"])
async def stack(request: pytest.FixtureRequest, dsn: str, tmp_path: Path) -> AsyncIterator[Stack]:
    cert, key = self_signed(tmp_path)
    tls_port, acklog_port = free_port(), free_port()
    base = f"https://localhost:{tls_port}"
    acklog = Process(
        ["serve", "--port", str(acklog_port)],
        dsn,
        marker="acklog listening",
        ACKLOG_API_KEY=KEY,
        ACKLOG_TRUSTED_PROXIES="127.0.0.1",
        ACKLOG_PUBLIC_URL=base,
        ACKLOG_STREAM_POLL="0.5",
        # a /v1/stream client that left is noticed at the next heartbeat: within a second,
        # so stopping acklog does not wait out its grace (docs/operations.md, "Stopping")
        ACKLOG_STREAM_HEARTBEAT="1",
    )
    make = caddy if request.param == "caddy" else nginx
    proxy = make(tmp_path, tls_port, acklog_port, cert, key)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        await acklog.start()
        await proxy.start()
        yield Stack(base, tls_port, acklog, proxy, context)
    finally:
        await proxy.stop()
        await acklog.stop()
        print(f"--- {request.param} ---", *proxy.lines, sep="\n")  # shown when a test fails


def meta_signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_webhooks_through_the_proxy_keep_the_client_and_the_signature(
    stack: Stack, dsn: str, pool: asyncpg.Pool
) -> None:
    # the client (127.0.0.2) may post to "near"; "proxy" allows only the proxy's own address,
    # "far" only the address the client forges
    near = await add_channel(
        dsn, "near", "meta", secrets_=[APP_SECRET], allow_cidrs=["127.0.0.2/32"]
    )
    peer = await add_channel(
        dsn, "proxy", "meta", secrets_=[APP_SECRET], allow_cidrs=["127.0.0.1/32"]
    )
    far = await add_channel(dsn, "far", "meta", secrets_=[APP_SECRET], allow_cidrs=["10.0.0.0/8"])
    body = meta_status("wamid.https.1", "delivered")
    signed = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": meta_signature(body),
        **FORGED,
    }
    async with stack.client() as http:
        url = f"{stack.base}/hooks/near?token={near}"
        async with http.post(url, data=body, headers=signed) as answer:
            assert answer.status == 200, await answer.text()
        wrong = {**signed, "X-Hub-Signature-256": meta_signature(body, "not-the-secret")}
        async with http.post(url, data=body, headers=wrong) as answer:
            assert answer.status == 401, "the signature is checked on the body the proxy passed"
        # acklog's client is the forwarded one, not the proxy, nor what the client claimed
        async with http.post(
            f"{stack.base}/hooks/proxy?token={peer}", data=body, headers=signed
        ) as answer:
            assert answer.status == 403, await answer.text()
            assert (await answer.json())["error"] == "forbidden"
        async with http.post(
            f"{stack.base}/hooks/far?token={far}", data=body, headers=signed
        ) as answer:
            assert answer.status == 403, "a forged X-Forwarded-For is never believed"

        # Twilio signs the URL it called: acklog checks it against ACKLOG_PUBLIC_URL
        await add_channel(dsn, "twilio", "twilio", secrets_=[TWILIO_TOKEN])
        form, ctype = sample("twilio", "status_delivered_whatsapp.json")
        params = dict(urllib.parse.parse_qsl(form.decode(), keep_blank_values=True))
        path = "/hooks/twilio"
        for signed_url, status in ((stack.base + path, 200), (f"http://127.0.0.1{path}", 401)):
            signature = RequestValidator(TWILIO_TOKEN).compute_signature(signed_url, params)
            headers = {"Content-Type": ctype, "X-Twilio-Signature": signature}
            async with http.post(stack.base + path, data=form, headers=headers) as answer:
                assert answer.status == status, (signed_url, await answer.text())

        # the proxy lets through anything acklog would take: a body past ACKLOG_MAX_BODY
        # gets acklog's own JSON refusal, not the proxy's page
        big = b"x" * (1024 * 1024 + 1)
        async with http.post(url, data=big, headers={"Content-Type": "application/json"}) as answer:
            assert answer.status == 413
            assert (await answer.json())["error"] == "too_large"

    stored = await reader.read(pool)
    assert [(e.channel, e.provider) for e in stored] == [("near", "meta"), ("twilio", "twilio")]
    # what the proxy told acklog, stored with the event: the client's own headers overwritten
    assert stored[0].body == body
    assert stored[0].headers["x-forwarded-for"] == CLIENT_IP
    assert stored[0].headers["x-forwarded-proto"] == "https"


async def test_console_cookies_are_secure_and_urls_are_public(stack: Stack, dsn: str) -> None:
    # the client's own X-Forwarded-Proto: http changes nothing
    async with stack.client(headers=FORGED) as browser:
        signed_in = await sign_in(browser, stack.base, KEY)
        assert signed_in.status == 303, await signed_in.text()
        set_cookies = [c.split(";") for c in signed_in.headers.getall("Set-Cookie")]
        # the cookies set (not the login form's, cleared with Max-Age=0)
        kept = [[a.strip().lower() for a in c] for c in set_cookies if " Max-Age=0" not in c]
        assert kept, f"signing in sets the session cookie: {set_cookies}"
        for attributes in kept:
            assert "secure" in attributes, attributes
            assert "httponly" in attributes, attributes
        async with browser.get(f"{stack.base}/ui/", allow_redirects=False) as page:
            assert page.status == 200, "the Secure cookie comes back over HTTPS"
        async with browser.get(f"{stack.base}/v1/channels", headers=AUTH) as answer:
            assert answer.status == 200, "the query API answers through the proxy"

    # every URL acklog prints is the public one
    banner = "\n".join(stack.acklog.lines)
    assert f"acklog listening on {stack.base} " in banner
    assert f"webhook URL:    {stack.base}/hooks/<channel>?token=<token>" in banner
    added = Process(
        ["channels", "add", "printed", "--provider", "meta"],
        dsn,
        ACKLOG_PUBLIC_URL=stack.base,
    )
    await added.start()
    assert added.proc is not None
    async with asyncio.timeout(60):
        assert await added.proc.wait() == 0, added.lines
    await added.wait_lines(lambda lines: any("webhook URL" in line for line in lines))
    printed = next(line for line in added.lines if line.startswith("webhook URL: "))
    webhook = printed.removeprefix("webhook URL: ")
    assert webhook.startswith(f"{stack.base}/hooks/printed?token="), webhook
    # and it works as printed
    async with stack.client() as http:
        body = meta_status("wamid.https.printed", "sent")
        async with http.post(webhook, data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200, await r.text()


async def test_the_stream_is_not_buffered(stack: Stack, dsn: str) -> None:
    """A /v1/stream client gets its response head at once and each event as it happens,
    through the proxy, while the stream stays open: nothing waits for a buffer to fill. (A
    proxy that buffers, e.g. nginx with ``proxy_buffering on`` told to ignore acklog's
    ``X-Accel-Buffering: no``, fails this: the head and the event never come.)"""
    token = await add_channel(dsn, "live", "meta")
    body = meta_status("wamid.https.stream", "sent")
    async with stack.client(headers=AUTH) as http, asyncio.timeout(15):
        async with http.get(f"{stack.base}/v1/stream?after=0") as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            async with http.post(
                f"{stack.base}/hooks/live?token={token}",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as answer:
                assert answer.status == 200
            async for raw in stream.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:") and "wamid.https.stream" in line:
                    break
            else:
                raise AssertionError("the stream ended before the event")
            # gone, as a client that drops (a graceful TLS close would wait on the proxy)
            assert stream.connection is not None and stream.connection.transport is not None
            stream.connection.transport.abort()
