"""Where archives are kept: a directory (``file:///path``) or an S3-compatible object store
(``s3://bucket/prefix``), behind one small interface (put, get, list, delete).

Both go through obstore (the Python binding of Rust's ``object_store``, the crate behind
DataFusion, Polars and delta-rs): async, one dependency for every kind of store, and a write
is atomic on both (a directory: a staging file renamed into place; S3: a single PUT, or a
multipart upload that is invisible until completed). S3 credentials, region and endpoint come
from the usual ``AWS_*`` variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_ENDPOINT_URL`` for MinIO, Ceph, R2 or another S3-speaking server).

Every failure of the store comes out as ``ArchiveStoreError`` with one line: the store's
address and what went wrong, never the client's multi-line report.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import LocalStore, ObjectStore, S3Store

#: a store that does not answer is given up on after this long (obstore retries meanwhile)
CONNECT_TIMEOUT = dt.timedelta(seconds=5)
RETRY_TIMEOUT = dt.timedelta(seconds=15)
MAX_RETRIES = 2


class ArchiveStoreError(Exception):
    """The store refused, failed or could not be reached (one line)."""


class ArchiveNotFound(ArchiveStoreError):
    """No object under that key."""


def _one_line(exc: BaseException) -> str:
    """The useful part of an obstore error (they run to a dozen lines of debug context)."""
    text = " ".join(str(exc).split())
    text = re.split(r" Debug source:", text, maxsplit=1)[0]
    text = re.sub(r"\?[^ ]*", "", text)  # a request's query string says nothing more
    for noise in ("Generic S3 error: ", "Generic LocalFileSystem error: "):
        text = text.replace(noise, "")
    if "error sending request" in text or "error trying to connect" in text:
        text += " (is the store reachable? check the URL and AWS_ENDPOINT_URL)"
    return text[:400] + ("…" if len(text) > 400 else "")


class ArchiveStore:
    """Objects under one prefix of one store; keys are ``/``-separated relative paths."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store = _open(url)

    def __repr__(self) -> str:
        return f"ArchiveStore({self.url!r})"

    def _error(self, what: str, key: str, exc: BaseException) -> ArchiveStoreError:
        kind = ArchiveNotFound if isinstance(exc, NotFoundError | FileNotFoundError) else None
        if kind is not None:
            return kind(f"{self.url}: no {key}")
        return ArchiveStoreError(f"archive store {self.url}: {what} {key} failed: {_one_line(exc)}")

    async def put(self, key: str, data: bytes | Path) -> None:
        """Write ``data`` (bytes, or a file's content, streamed) to ``key``, atomically."""
        try:
            await obstore.put_async(self._store, key, data)
        except (BaseError, OSError) as exc:
            raise self._error("writing", key, exc) from exc

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except (BaseError, OSError) as exc:
            raise self._error("reading", key, exc) from exc

    async def get_file(self, key: str, target: Path) -> int:
        """Stream ``key`` into the file ``target``; the bytes written."""
        written = 0
        try:
            result = await obstore.get_async(self._store, key)
            with target.open("wb") as out:
                async for chunk in result.stream(min_chunk_size=4 * 1024 * 1024):
                    out.write(memoryview(chunk))
                    written += len(chunk)
        except (BaseError, OSError) as exc:
            raise self._error("reading", key, exc) from exc
        return written

    async def list(self, prefix: str = "") -> list[tuple[str, int]]:
        """(key, size) of every object under ``prefix``, sorted by key."""
        found: list[tuple[str, int]] = []
        try:
            stream: AsyncIterator[Any] = obstore.list(self._store, prefix or None).__aiter__()
            async for metas in stream:
                found += [(m["path"], int(m["size"])) for m in metas]
        except (BaseError, OSError) as exc:
            raise self._error("listing", prefix or "/", exc) from exc
        return sorted(found)

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, key)
        except (BaseError, OSError) as exc:
            raise self._error("deleting", key, exc) from exc


def check_url(url: str) -> str:
    """``url`` when it names a store acklog can write to, else ``ValueError`` saying why."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("must be file:///absolute/path (three slashes)")
        return url
    if parts.scheme in ("s3", "s3a"):
        if not parts.netloc:
            raise ValueError("must be s3://bucket or s3://bucket/prefix")
        return url
    raise ValueError("must be file:///absolute/path or s3://bucket/prefix")


def _open(url: str) -> ObjectStore:
    try:
        check_url(url)
    except ValueError as exc:
        raise ArchiveStoreError(f"archive store {url!r}: {exc}") from None
    parts = urllib.parse.urlsplit(url)
    try:
        if parts.scheme == "file":
            root = Path(urllib.parse.unquote(parts.path))
            return LocalStore(root, mkdir=True)
        return S3Store.from_url(
            url,
            client_options={
                "connect_timeout": CONNECT_TIMEOUT,
                "timeout": dt.timedelta(minutes=5),
                # the endpoint is the operator's (AWS_ENDPOINT_URL): a plain-http one on a
                # private network (MinIO in a rack) is theirs to choose
                "allow_http": True,
            },
            retry_config={"max_retries": MAX_RETRIES, "retry_timeout": RETRY_TIMEOUT},
        )
    except (BaseError, OSError, ValueError) as exc:
        raise ArchiveStoreError(f"archive store {url}: {_one_line(exc)}") from exc
