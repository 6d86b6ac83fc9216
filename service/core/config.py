"""Configuration from the environment (and CLI flags), in one frozen Struct."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import msgspec
from aiohttp import web

from projections.clock import Clock

N = TypeVar("N", int, float)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    data_dir: Path = Path(".acklog")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    max_body: int = 1024 * 1024
    api_key: str | None = None
    #: the file ``api_key`` was read from (ACKLOG_API_KEY_FILE, or systemd's credential)
    api_key_file: str | None = None
    metrics_port: int | None = None
    run_projector: bool = True
    #: failed authentications allowed per client address per minute before 429
    auth_failures_per_minute: int = 30
    #: seconds a webhook may wait for its batch to commit before it is answered 503
    commit_timeout: float = 10.0
    #: group-commit batches in flight; 2 lets the next batch form while one commits, but on a
    #: 2-core machine one in flight measured faster (bigger batches, less PostgreSQL per event)
    append_writers: int = 1
    #: seconds allowed to send the body once the head has arrived
    read_timeout: float = 30.0
    #: seconds a connection has to send each request head, from its first byte
    header_timeout: float = 10.0
    #: seconds an idle keep-alive connection stays open
    keepalive_timeout: float = 75.0
    max_connections: int = 1024
    #: open connections per client address (0: half of ``max_connections``)
    max_connections_per_client: int = 0
    #: CIDRs of the proxies whose ``X-Forwarded-For`` is believed (normalized)
    trusted_proxies: tuple[str, ...] = ()
    #: seconds between refreshes of the gauges that need a query
    snapshot_interval: float = 5.0
    log_format: str = "text"
    log_level: str = "INFO"
    #: one line per HTTP request (method, path without query, status, bytes, ms, client)
    access_log: bool = False
    #: seconds every command waits for the database at start-up before it gives up
    db_wait: float = 60.0
    #: seconds a query API request may spend on the database before it is answered 503
    api_query_timeout: float = 10.0
    #: ingest worker processes ``acklog serve`` runs on the public port (SO_REUSEPORT)
    workers: int = 1
    #: also serve the API process on this TCP port (beside the public port's forwarding)
    api_port: int | None = None
    #: where ingest workers forward non-webhook paths: ``unix:/path`` or ``http://host:port``
    api_upstream: str | None = None
    #: the unix socket the API process listens on (``acklog serve`` sets it for its children)
    api_socket: str | None = None
    #: requests one client address may have relayed to the API process at once (429 past it)
    relay_per_client: int = 8
    #: ``Host`` names the console answers besides IP literals, ``localhost`` and the public
    #: URL's host (``*``: any); a name not here cannot carry a DNS-rebinding attack
    allowed_hosts: tuple[str, ...] = ()

    @property
    def per_client_connections(self) -> int:
        return self.max_connections_per_client or max(1, self.max_connections // 2)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def _number(name: str, default: N, kind: Callable[[str], N]) -> N:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def _int(name: str, default: int) -> int:
    return _number(name, default, int)


def _float(name: str, default: float) -> float:
    return _number(name, default, float)


def parse_networks(text: str) -> tuple[str, ...]:
    """CIDRs or addresses separated by commas or spaces, normalized; ValueError when bad."""
    parts = text.replace(",", " ").split()
    return tuple(str(ipaddress.ip_network(part, strict=False)) for part in parts)


def _trusted_proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("ACKLOG_TRUSTED_PROXIES", "")
    try:
        proxies = parse_networks(raw)
    except ValueError as exc:
        raise SystemExit(f"ACKLOG_TRUSTED_PROXIES: {exc} (give CIDRs such as 10.0.0.0/8)") from None
    if env.get("ACKLOG_TRUST_FORWARDED_FOR", "") not in ("", "0") and not proxies:
        raise SystemExit(
            "ACKLOG_TRUST_FORWARDED_FOR is replaced by ACKLOG_TRUSTED_PROXIES: set it to the"
            " addresses or CIDRs of your proxies (e.g. ACKLOG_TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8)"
            " and unset ACKLOG_TRUST_FORWARDED_FOR; X-Forwarded-For is then read from the right,"
            " believed only from those proxies"
        )
    return proxies


def _api_key(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(key, file): ``ACKLOG_API_KEY``, else the file ``ACKLOG_API_KEY_FILE`` names, else
    systemd's credential ``api_key`` (``LoadCredential=``), else none (one is generated)."""
    if env.get("ACKLOG_API_KEY"):
        return env["ACKLOG_API_KEY"], None
    path, what = env.get("ACKLOG_API_KEY_FILE", ""), "ACKLOG_API_KEY_FILE"
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if not path and credentials and os.path.isfile(os.path.join(credentials, "api_key")):
        path, what = os.path.join(credentials, "api_key"), "the credential api_key"
    if not path:
        return None, None
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"{what}: cannot read {path}: {exc}") from None
    if not key or not key.isascii() or any(c.isspace() for c in key):
        raise SystemExit(f"{what}: {path} holds no usable API key (one line, no spaces)")
    return key, path


def from_env(**overrides: object) -> Settings:
    env = os.environ
    api_key, api_key_file = _api_key(env)
    api_port = env.get("ACKLOG_API_PORT")
    values: dict[str, object] = {
        "database_url": env.get("DATABASE_URL") or None,
        "data_dir": Path(env.get("ACKLOG_DATA_DIR", ".acklog")),
        "host": env.get("ACKLOG_HOST", "127.0.0.1"),
        "port": _int("ACKLOG_PORT", 8080),
        "public_url": env.get("ACKLOG_PUBLIC_URL") or None,
        "max_body": _int("ACKLOG_MAX_BODY", 1024 * 1024),
        "api_key": api_key,
        "api_key_file": api_key_file,
        "metrics_port": _int("ACKLOG_METRICS_PORT", 0) or None,
        "auth_failures_per_minute": _int("ACKLOG_AUTH_FAILURES_PER_MINUTE", 30),
        "max_connections": _int("ACKLOG_MAX_CONNECTIONS", 1024),
        "read_timeout": _float("ACKLOG_READ_TIMEOUT", 30.0),
        "header_timeout": _float("ACKLOG_HEADER_TIMEOUT", 10.0),
        "log_format": env.get("ACKLOG_LOG_FORMAT", "text").lower(),
        "log_level": env.get("ACKLOG_LOG_LEVEL", "INFO"),
        "access_log": env.get("ACKLOG_ACCESS_LOG", "") in ("1", "true", "yes"),
        "db_wait": _float("ACKLOG_DB_WAIT", 60.0),
        "api_query_timeout": _float("ACKLOG_API_QUERY_TIMEOUT", 10.0),
        "snapshot_interval": _float("ACKLOG_SNAPSHOT_INTERVAL", 5.0),
        "append_writers": max(1, min(_int("ACKLOG_APPEND_WRITERS", 1), 4)),
        "workers": _int("ACKLOG_WORKERS", 1),
        "api_port": _int("ACKLOG_API_PORT", 0) if api_port else None,
        "api_upstream": env.get("ACKLOG_API_UPSTREAM") or None,
        "api_socket": env.get("ACKLOG_API_SOCKET") or None,
        "keepalive_timeout": _float("ACKLOG_KEEPALIVE_TIMEOUT", 75.0),
        "max_connections_per_client": _int("ACKLOG_MAX_CONNECTIONS_PER_CLIENT", 0),
        "trusted_proxies": _trusted_proxies(env),
        "relay_per_client": max(1, _int("ACKLOG_RELAY_PER_CLIENT", 8)),
        "allowed_hosts": tuple(
            h.lower() for h in env.get("ACKLOG_ALLOWED_HOSTS", "").replace(",", " ").split()
        ),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(values, Settings, strict=False)


#: the settings of an app (and of its sub-apps, through ``config_dict``)
SETTINGS = web.AppKey("settings", Settings)
#: the clock deadlines and health are evaluated on (tests inject one)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
