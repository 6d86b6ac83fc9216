"""Every setting of acklog, parsed once at start: one frozen ``Settings`` and the table of the
environment variables that set it (``VARIABLES``).

Each variable is read from the environment, converted and validated here and nowhere else;
a bad value stops the command with one line naming the variable, the value and what it must
be (``SettingsError``). Sections group a role's own settings (``feed``, ``stream``). The
configuration table of ``docs/operations.md`` is tested against ``VARIABLES``
(``tests/architecture/test_settings.py``), so the two cannot drift.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from aiohttp import web

from eventstore.archive_store import check_url
from projections.clock import Clock


class SettingsError(SystemExit):
    """A setting with a value acklog cannot use: the command stops with this one line."""


class FeedSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The canonical feed's delivery (``ACKLOG_FEED_*``)."""

    #: attempts per event before it is a dead letter
    attempts: int = 8
    #: backoff between attempts: initial seconds, doubling, capped, plus up to ``jitter``
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    jitter: float = 1.0
    #: dead letters in a row that pause a subscription (circuit breaker)
    breaker: int = 5
    connect_timeout: float = 5.0
    total_timeout: float = 15.0
    #: bytes of an endpoint's answer read (the rest is dropped)
    max_answer: int = 64 * 1024
    poll_interval: float = 1.0
    #: seconds between refreshes of the backlog gauges and of the subscription list
    refresh_interval: float = 5.0
    #: delivery attempts kept per subscription (older ones are pruned at each refresh)
    keep_attempts: int = 10_000
    #: ranges the feed may send to although the deny-list forbids them
    allow_cidrs: tuple[str, ...] = ()
    #: refuse private, loopback, link-local, shared, multicast and reserved addresses
    deny_private: bool = True
    #: the feed process's CPU priority: ``idle`` (SCHED_IDLE) or a nice value
    nice: str = "idle"


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``/v1/stream`` (``ACKLOG_STREAM_*``)."""

    #: seconds between the stream hub's polls (NOTIFY wakes it sooner)
    poll: float = 1.0
    #: seconds between heartbeat comments
    heartbeat: float = 15.0
    #: seconds a client has to take a write before it is dropped
    send_timeout: float = 10.0


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    #: a read-only standby the API process reads from (None: the main database)
    api_database_url: str | None = None
    data_dir: Path = Path(".acklog")
    #: where ``acklog archive`` keeps archives: ``file:///path`` or ``s3://bucket/prefix``
    archive_url: str | None = None
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
    #: positions per partition of the log (sql/084; new partitions are made ahead of need)
    partition_events: int = 1_000_000
    #: seconds: a webhook's first copy is looked for only in the partitions holding an event
    #: received this recently (sql/092; None: in every partition). 30 days: longer than any
    #: provider retries a webhook (Meta's, the longest documented, is days)
    dedup_window: float | None = 30 * 86400.0
    #: seconds: partitions whose newest event is older leave the log (None: no retention role)
    retention: float | None = None
    #: seconds between the retention role's runs
    retention_interval: float = 3600.0
    #: events per second a retention run reads from the log at most (0: unpaced); measured in
    #: docs/benchmarks.md: unpaced, a run took a third of ingest's rate on two cores
    retention_rate: int = 5_000
    #: seconds: messages last active longer ago leave the read model (None: kept)
    readmodel_retention: float | None = None
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
    #: the event loop: ``auto`` (uvloop when installed), ``uvloop`` or ``asyncio``
    loop: str = "auto"
    #: a cold live projector with at least this many events to fold loads them in bulk (0: never)
    bulk_catchup: int = 100_000
    #: processes a bulk load (rebuild, verify, cold start) folds with (0: the cores, at most 4)
    rebuild_workers: int = 0
    #: live projection shards (by message key), each a projector process of its own
    projector_shards: int = 1
    feed: FeedSettings = msgspec.field(default_factory=FeedSettings)
    stream: StreamSettings = msgspec.field(default_factory=StreamSettings)

    @property
    def per_client_connections(self) -> int:
        return self.max_connections_per_client or max(1, self.max_connections // 2)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


# --- the environment ----------------------------------------------------------------------

Parse = Callable[[str], Any]


class Var(NamedTuple):
    """One environment variable: the setting it sets (its path in ``Settings``, sections
    first: ``feed/attempts``), how
    its text becomes a value (a ``ValueError`` says what it must be), and what it does."""

    env: str
    path: str
    parse: Parse
    doc: str


def integer(low: int | None = None, high: int | None = None) -> Parse:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"must be {bounds}")
        return value

    return parse


def number(low: float = 0.0) -> Parse:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("must be a number") from None
        if not value >= low:  # also refuses nan
            raise ValueError(f"must be a number of at least {low:g}")
        return value

    return parse


def port_or_none(text: str) -> int | None:
    """A TCP port; 0 or empty: none."""
    value = integer(0, 65535)(text)
    return value or None


def flag(text: str) -> bool:
    value = text.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be 1/true/yes/on or 0/false/no/off")


def choice(*allowed: str, lower: bool = True) -> Parse:
    def parse(text: str) -> str:
        value = text.lower() if lower else text
        if value not in allowed and (not lower or value.upper() not in allowed):
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def text(value: str) -> str:
    return value


def parse_networks(text: str) -> tuple[str, ...]:
    """CIDRs or addresses separated by commas or spaces, normalized; ValueError when bad."""
    parts = text.replace(",", " ").split()
    try:
        return tuple(str(ipaddress.ip_network(part, strict=False)) for part in parts)
    except ValueError as exc:
        raise ValueError(f"{exc} (give addresses or CIDRs such as 10.0.0.0/8)") from None


def names(text: str) -> tuple[str, ...]:
    return tuple(n.lower() for n in text.replace(",", " ").split())


def nice(text: str) -> str:
    value = text.lower()
    if value != "idle":
        try:
            int(value)
        except ValueError:
            raise ValueError("must be 'idle' or a number") from None
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (or a number of seconds) as seconds."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    number_ = value[:-1] if unit else value
    try:
        amount = float(number_)
    except ValueError:
        raise ValueError("must be a duration such as 90d, 12h, 30m or 0s") from None
    if not amount >= 0 or amount == float("inf"):
        raise ValueError("must be a duration of 0s or more, such as 90d")
    return amount * (unit or 1)


def duration_or_off(text: str) -> float | None:
    """A :func:`duration`; empty, ``off`` or ``keep``: None."""
    if text.strip().lower() in ("", "off", "keep", "none"):
        return None
    return duration(text)


def archive_url(text: str) -> str:
    return check_url(text.strip())


VARIABLES: tuple[Var, ...] = (
    Var(
        "DATABASE_URL",
        "database_url",
        text,
        "PostgreSQL to use (else an embedded one in the data dir)",
    ),
    Var(
        "ACKLOG_API_DATABASE_URL",
        "api_database_url",
        text,
        "a read-only standby for the query API and console's reads (else DATABASE_URL)",
    ),
    Var(
        "ACKLOG_DATA_DIR",
        "data_dir",
        Path,
        "where the embedded PostgreSQL and the generated API key live",
    ),
    Var(
        "ACKLOG_ARCHIVE_URL",
        "archive_url",
        archive_url,
        "where acklog archive keeps archives: file:///path or s3://bucket/prefix",
    ),
    Var("ACKLOG_HOST", "host", text, "listen address"),
    Var("ACKLOG_PORT", "port", integer(0, 65535), "listen port (webhooks, query API, console)"),
    Var(
        "ACKLOG_PUBLIC_URL",
        "public_url",
        text,
        "the URL providers call, when acklog is behind a proxy",
    ),
    Var("ACKLOG_MAX_BODY", "max_body", integer(1), "largest request body in bytes"),
    Var(
        "ACKLOG_API_KEY", "api_key", text, "the query API's key (else generated into the data dir)"
    ),
    Var(
        "ACKLOG_API_KEY_FILE",
        "api_key_file",
        text,
        "a file holding the API key (else systemd's credential api_key, when there is one)",
    ),
    Var(
        "ACKLOG_METRICS_PORT",
        "metrics_port",
        port_or_none,
        "serve /metrics on this port instead of the public one",
    ),
    Var(
        "ACKLOG_AUTH_FAILURES_PER_MINUTE",
        "auth_failures_per_minute",
        integer(1),
        "failed authentications per client address per minute before 429",
    ),
    Var(
        "ACKLOG_COMMIT_TIMEOUT",
        "commit_timeout",
        number(0.1),
        "seconds a webhook waits for its batch to commit before 503",
    ),
    Var("ACKLOG_APPEND_WRITERS", "append_writers", integer(1, 4), "group-commit batches in flight"),
    Var(
        "ACKLOG_PARTITION_EVENTS",
        "partition_events",
        integer(1),
        "positions (events) per partition of the log; new partitions take it",
    ),
    Var(
        "ACKLOG_DEDUP_WINDOW",
        "dedup_window",
        duration_or_off,
        "a duplicate's first copy is looked for among events this recent (30d; off: all)",
    ),
    Var(
        "ACKLOG_RETENTION",
        "retention",
        duration_or_off,
        "archive and drop log partitions older than this (90d, 12h; off: none)",
    ),
    Var(
        "ACKLOG_RETENTION_INTERVAL",
        "retention_interval",
        duration,
        "seconds between the retention role's runs (1h, 10m)",
    ),
    Var(
        "ACKLOG_RETENTION_RATE",
        "retention_rate",
        integer(0),
        "events per second a retention run reads from the log at most (0: unpaced)",
    ),
    Var(
        "ACKLOG_READMODEL_RETENTION",
        "readmodel_retention",
        duration_or_off,
        "forget read-model messages last active longer ago (keep: all)",
    ),
    Var(
        "ACKLOG_READ_TIMEOUT",
        "read_timeout",
        number(0.1),
        "seconds to send a request body once its head has arrived",
    ),
    Var(
        "ACKLOG_HEADER_TIMEOUT",
        "header_timeout",
        number(0.1),
        "seconds to send each request head, from its first byte",
    ),
    Var(
        "ACKLOG_KEEPALIVE_TIMEOUT",
        "keepalive_timeout",
        number(0.1),
        "seconds an idle keep-alive connection stays open",
    ),
    Var(
        "ACKLOG_MAX_CONNECTIONS",
        "max_connections",
        integer(1),
        "open connections per ingest worker",
    ),
    Var(
        "ACKLOG_MAX_CONNECTIONS_PER_CLIENT",
        "max_connections_per_client",
        integer(0),
        "open connections per client address (0: half of the maximum)",
    ),
    Var(
        "ACKLOG_TRUSTED_PROXIES",
        "trusted_proxies",
        parse_networks,
        "addresses or CIDRs of the proxies whose X-Forwarded-For and X-Forwarded-Proto are believed",
    ),
    Var(
        "ACKLOG_SNAPSHOT_INTERVAL",
        "snapshot_interval",
        number(0.1),
        "seconds between refreshes of the gauges that need a query",
    ),
    Var("ACKLOG_LOG_FORMAT", "log_format", choice("text", "json"), "text or json log lines"),
    Var(
        "ACKLOG_LOG_LEVEL",
        "log_level",
        choice("DEBUG", "INFO", "WARNING", "ERROR", lower=False),
        "DEBUG, INFO, WARNING or ERROR",
    ),
    Var("ACKLOG_ACCESS_LOG", "access_log", flag, "one line per HTTP request"),
    Var(
        "ACKLOG_DB_WAIT",
        "db_wait",
        number(0.0),
        "seconds every command waits for the database at start-up",
    ),
    Var(
        "ACKLOG_API_QUERY_TIMEOUT",
        "api_query_timeout",
        number(0.1),
        "seconds a /v1 or console request may spend on the database before 503",
    ),
    Var("ACKLOG_WORKERS", "workers", integer(1), "ingest worker processes on the public port"),
    Var(
        "ACKLOG_API_PORT",
        "api_port",
        integer(0, 65535),
        "also serve the API process on this TCP port",
    ),
    Var(
        "ACKLOG_API_UPSTREAM",
        "api_upstream",
        text,
        "where an ingest worker relays non-webhook paths (unix:/path or http://host:port)",
    ),
    Var(
        "ACKLOG_API_SOCKET",
        "api_socket",
        text,
        "serve --role api alone: also listen on this unix socket",
    ),
    Var(
        "ACKLOG_RELAY_PER_CLIENT",
        "relay_per_client",
        integer(1),
        "requests one client address may have relayed to the API process at once",
    ),
    Var(
        "ACKLOG_ALLOWED_HOSTS",
        "allowed_hosts",
        names,
        "Host names the console answers besides IP literals, localhost and the public URL's host",
    ),
    Var("ACKLOG_LOOP", "loop", choice("auto", "uvloop", "asyncio"), "the event loop"),
    Var(
        "ACKLOG_BULK_CATCHUP",
        "bulk_catchup",
        integer(0),
        "events from which a cold live projector loads in bulk (0: never)",
    ),
    Var(
        "ACKLOG_PROJECTOR_SHARDS",
        "projector_shards",
        integer(1, 64),
        "live projection shards, one projector process each (changed by rebuild --shards N)",
    ),
    Var(
        "ACKLOG_REBUILD_WORKERS",
        "rebuild_workers",
        integer(0),
        "processes of a bulk load (0: the cores, at most 4)",
    ),
    Var(
        "ACKLOG_FEED_ATTEMPTS",
        "feed/attempts",
        integer(1),
        "delivery attempts per event before it is a dead letter",
    ),
    Var(
        "ACKLOG_FEED_BACKOFF",
        "feed/backoff_initial",
        number(0.0),
        "seconds before the first retry (then doubling)",
    ),
    Var(
        "ACKLOG_FEED_BACKOFF_MAX",
        "feed/backoff_max",
        number(0.0),
        "longest wait between retries, in seconds",
    ),
    Var(
        "ACKLOG_FEED_JITTER",
        "feed/jitter",
        number(0.0),
        "random seconds added to each retry's wait",
    ),
    Var(
        "ACKLOG_FEED_BREAKER",
        "feed/breaker",
        integer(1),
        "dead letters in a row that pause a subscription",
    ),
    Var(
        "ACKLOG_FEED_CONNECT_TIMEOUT",
        "feed/connect_timeout",
        number(0.1),
        "seconds to connect to an endpoint",
    ),
    Var(
        "ACKLOG_FEED_TIMEOUT",
        "feed/total_timeout",
        number(0.1),
        "seconds for a whole delivery attempt",
    ),
    Var(
        "ACKLOG_FEED_MAX_ANSWER",
        "feed/max_answer",
        integer(0),
        "bytes of an endpoint's answer kept",
    ),
    Var(
        "ACKLOG_FEED_POLL",
        "feed/poll_interval",
        number(0.01),
        "seconds between a sender's polls of its backlog",
    ),
    Var(
        "ACKLOG_FEED_REFRESH",
        "feed/refresh_interval",
        number(0.1),
        "seconds between refreshes of the subscription list and gauges",
    ),
    Var(
        "ACKLOG_FEED_KEEP_ATTEMPTS",
        "feed/keep_attempts",
        integer(1),
        "delivery attempts kept per subscription",
    ),
    Var(
        "ACKLOG_FEED_ALLOW_CIDRS",
        "feed/allow_cidrs",
        parse_networks,
        "ranges the feed may send to although the deny-list forbids them",
    ),
    Var(
        "ACKLOG_FEED_DENY_PRIVATE",
        "feed/deny_private",
        flag,
        "refuse private, loopback, link-local and reserved addresses",
    ),
    Var(
        "ACKLOG_FEED_NICE",
        "feed/nice",
        nice,
        "the feed process's CPU priority: idle or a nice value",
    ),
    Var(
        "ACKLOG_STREAM_POLL", "stream/poll", number(0.01), "seconds between the stream hub's polls"
    ),
    Var(
        "ACKLOG_STREAM_HEARTBEAT",
        "stream/heartbeat",
        number(0.1),
        "seconds between heartbeat comments on /v1/stream",
    ),
    Var(
        "ACKLOG_STREAM_SEND_TIMEOUT",
        "stream/send_timeout",
        number(0.1),
        "seconds a stream client has to take a write",
    ),
)


def default(path: str) -> Any:
    """The default value of the setting at ``path`` (``feed/attempts``)."""
    value: Any = Settings()
    for part in path.split("/"):
        value = getattr(value, part)
    return value


def _legacy(env: Mapping[str, str], proxies: object) -> None:
    if env.get("ACKLOG_TRUST_FORWARDED_FOR", "") not in ("", "0") and not proxies:
        raise SettingsError(
            "ACKLOG_TRUST_FORWARDED_FOR is replaced by ACKLOG_TRUSTED_PROXIES: set it to the"
            " addresses or CIDRs of your proxies (e.g. ACKLOG_TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8)"
            " and unset ACKLOG_TRUST_FORWARDED_FOR; X-Forwarded-For is then read from the right,"
            " believed only from those proxies"
        )


def _api_key(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(key, file): ``ACKLOG_API_KEY``, else the file ``ACKLOG_API_KEY_FILE`` names, else
    systemd's credential ``api_key`` (``LoadCredential=``), else none (one is generated)."""
    if env.get("ACKLOG_API_KEY", "").strip():
        return env["ACKLOG_API_KEY"].strip(), None
    path, what = env.get("ACKLOG_API_KEY_FILE", ""), "ACKLOG_API_KEY_FILE"
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if not path and credentials and os.path.isfile(os.path.join(credentials, "api_key")):
        path, what = os.path.join(credentials, "api_key"), "the credential api_key"
    if not path:
        return None, None
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{what}: cannot read {path}: {exc}") from None
    if not key or not key.isascii() or any(c.isspace() for c in key):
        raise SettingsError(f"{what}: {path} holds no usable API key (one line, no spaces)")
    return key, path


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """The settings the environment gives (``overrides``, from CLI flags, win where not None);
    ``SettingsError`` names the first variable whose value cannot be used."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for var in VARIABLES:
        raw = env.get(var.env, "").strip()
        if not raw:
            continue
        try:
            value = var.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{var.env} {exc}, got {raw!r}") from None
        *sections, name = var.path.split("/")
        target = values
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
    _legacy(env, values.get("trusted_proxies"))
    values["api_key"], values["api_key_file"] = _api_key(env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(values, Settings, strict=False)


#: the settings of an app (and of its sub-apps, through ``config_dict``)
SETTINGS = web.AppKey("settings", Settings)
#: the clock deadlines and health are evaluated on (tests inject one)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
