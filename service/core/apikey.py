"""The API keys: the configured one (or one generated into the data dir), and named ones.

The configured key is ``ACKLOG_API_KEY`` (or a file, below), else one generated once and kept
in the data dir; it is also the server's secret, under which console sessions are signed, so
adding or revoking a named key signs nobody out. Named keys (``acklog keys``) live hashed in
``api_keys`` (``eventstore.apikeys``); a checker re-reads them at most every ``TTL`` seconds,
so a key added or revoked works, or stops working, in every process within seconds.

A generated key lives in ``<data_dir>/api_key`` (mode 0600) so it survives restarts and
``acklog serve`` can print it. It is created atomically (written aside, then hard-linked into
place), so two processes starting together agree on one key.

A key given as a file (``ACKLOG_API_KEY_FILE``, or systemd's ``LoadCredential=api_key:…``)
is read by ``service.core.config`` and counts as given.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import stat
import time
from pathlib import Path

import asyncpg
from aiohttp import web

from eventstore import apikeys
from eventstore.errors import StoreError
from service.core import logs
from service.core.config import Settings

log = logging.getLogger(__name__)

FILENAME = "api_key"
PREFIX = apikeys.PREFIX

#: what ``ApiKey.check`` answers for the configured (or generated) key: no named key has it
CONFIGURED = ""

#: named keys are re-read at most this often (seconds); a request waits at most
#: ``REFRESH_TIMEOUT`` for a read, and a read that takes ``READ_LIMIT`` is given up
TTL = 2.0
REFRESH_TIMEOUT = 2.0
READ_LIMIT = 30.0


class ApiKeyError(RuntimeError):
    """The key file exists but holds no usable key."""


def key_path(data_dir: Path) -> Path:
    return data_dir / FILENAME


def new_key() -> str:
    return apikeys.new_key()


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); set to 0600", path, mode)
        path.chmod(0o600)
    key = path.read_text(encoding="utf-8").strip()
    if not key or not key.isascii() or any(c.isspace() for c in key):
        raise ApiKeyError(f"{path} holds no usable API key; delete it to generate a new one")
    return key


def load_or_create(data_dir: Path) -> tuple[str, bool]:
    """(key, created): the stored key, or a new one stored with mode 0600."""
    path = key_path(data_dir)
    if path.exists():
        return _read(path), False
    data_dir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
        os.link(tmp, path)  # fails if another process won the race: use its key
    except FileExistsError:
        return _read(path), False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return key, True


def resolve(settings: Settings) -> tuple[str, str]:
    """(key, where it comes from) for the start-up banner."""
    if settings.api_key:
        logs.add_secret(settings.api_key)
        if settings.api_key_file:
            return settings.api_key, f"read from {settings.api_key_file}"
        return settings.api_key, "ACKLOG_API_KEY"
    key, created = load_or_create(settings.data_dir)
    logs.add_secret(key)
    where = key_path(settings.data_dir)
    return key, f"{'generated into' if created else 'stored in'} {where}"


def _bearer(authorization: str | None) -> bytes | None:
    """The key of ``Authorization: Bearer <key>``, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        return token.strip().encode()
    except UnicodeEncodeError:
        return None


class ApiKey:
    """Checks ``Authorization: Bearer <key>``: the configured key, or a named key not revoked.

    Keys are compared in constant time (named ones by their SHA-256, against every hash). A
    key not given in the settings is loaded (or generated) on first use, so an app that never
    serves the query API, as in the ingest tests, writes nothing to the data dir. Named keys
    are re-read at most every ``ttl`` seconds, one read at a time; when a read fails, or has
    not answered within ``REFRESH_TIMEOUT``, the last good view answers (a key it does not
    hold is refused) and the next read is tried ``ttl`` later.
    """

    def __init__(self, settings: Settings, ttl: float = TTL) -> None:
        self._data_dir = settings.data_dir
        self._key: bytes | None = None
        if settings.api_key:
            logs.add_secret(settings.api_key)
            self._key = settings.api_key.encode()
        self._ttl = ttl
        self._named: dict[bytes, str] = {}
        self._fresh_until = 0.0
        self._reading: asyncio.Future[None] | None = None
        self._failing = False

    def value(self) -> bytes:
        """The configured key: the server's secret (console sessions are signed under it)."""
        if self._key is None:
            key = load_or_create(self._data_dir)[0]
            logs.add_secret(key)
            self._key = key.encode()
        return self._key

    async def check(self, authorization: str | None, pool: asyncpg.Pool) -> str | None:
        """The name of the key ``authorization`` carries (``CONFIGURED`` for the configured
        one), or None: no key, or one that is wrong or revoked."""
        expected = self.value()  # first use creates the key, even for a refused request
        named = await self._view(pool)
        given = _bearer(authorization)
        if given is None:
            return None
        found: str | None = None
        digest = apikeys.key_hash(given)
        for stored, name in named.items():  # every hash, whichever matches
            if hmac.compare_digest(digest, stored):
                found = name
        if hmac.compare_digest(given, expected):
            found = CONFIGURED
        return found

    async def active(self, name: str, pool: asyncpg.Pool) -> bool:
        """The key named ``name`` (``CONFIGURED``: the configured one) is still valid."""
        return name == CONFIGURED or name in (await self._view(pool)).values()

    async def _view(self, pool: asyncpg.Pool) -> dict[bytes, str]:
        if time.monotonic() >= self._fresh_until:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(self._read(pool))
            try:
                # one read at a time, awaited a bounded time; a request gone away or out of
                # patience leaves it running, and the last good view answers meanwhile
                await asyncio.wait_for(asyncio.shield(self._reading), REFRESH_TIMEOUT)
            except TimeoutError:
                self._failed("no answer in time")
                self._fresh_until = time.monotonic() + self._ttl
        return self._named

    async def _read(self, pool: asyncpg.Pool) -> None:
        try:
            async with asyncio.timeout(READ_LIMIT):
                named = await apikeys.active(pool)
        except (StoreError, TimeoutError) as exc:
            self._failed(str(exc) or "timed out")
        else:
            self._named = named
            if self._failing:
                log.info("API keys re-read again")
            self._failing = False
        self._fresh_until = time.monotonic() + self._ttl

    def _failed(self, why: str) -> None:
        if not self._failing:
            log.warning("API keys not re-read (%s); the last ones read stay", why)
        self._failing = True


API_KEY = web.AppKey("api_key", ApiKey)
