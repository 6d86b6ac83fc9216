"""The query API's key: ``ACKLOG_API_KEY``, else one generated once and kept in the data dir.

A generated key lives in ``<data_dir>/api_key`` (mode 0600) so it survives restarts and
``acklog serve`` can print it. It is created atomically (written aside, then hard-linked into
place), so two processes starting together agree on one key.

A key given as a file (``ACKLOG_API_KEY_FILE``, or systemd's ``LoadCredential=api_key:…``)
is read by ``service.core.config`` and counts as given.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from aiohttp import web

from service.core import logs
from service.core.config import Settings

log = logging.getLogger(__name__)

FILENAME = "api_key"
PREFIX = "acklog_"


class ApiKeyError(RuntimeError):
    """The key file exists but holds no usable key."""


def key_path(data_dir: Path) -> Path:
    return data_dir / FILENAME


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


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


class ApiKey:
    """Checks ``Authorization: Bearer <key>`` in constant time.

    A key not given in the settings is loaded (or generated) on first use, so an app that
    never serves the query API, as in the ingest tests, writes nothing to the data dir.
    """

    def __init__(self, settings: Settings) -> None:
        self._data_dir = settings.data_dir
        self._key: bytes | None = None
        if settings.api_key:
            logs.add_secret(settings.api_key)
            self._key = settings.api_key.encode()

    def value(self) -> bytes:
        if self._key is None:
            key = load_or_create(self._data_dir)[0]
            logs.add_secret(key)
            self._key = key.encode()
        return self._key

    def check(self, authorization: str | None) -> bool:
        expected = self.value()  # first use creates the key, even for a refused request
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            given = token.strip().encode()
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(given, expected)


API_KEY = web.AppKey("api_key", ApiKey)
