"""A TCP proxy in front of PostgreSQL that can stop forwarding: a database that *hangs*.

Stopping the server makes connections fail fast (connection refused, reset); a hung server
(a stalled network, a full disk, a lock nobody releases) leaves every socket open and every
query unanswered, so only the timeouts stand between a webhook and a hung request. asyncpg's
own suite tests this with ``ProxiedClusterTestCase``; this is the same idea, in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator


class HangingProxy:
    """Forwards 127.0.0.1:<port> to the PostgreSQL of ``dsn`` until ``hang()``; ``resume()``
    delivers what was held back and forwards again. Bytes are held, never dropped."""

    def __init__(self, dsn: str) -> None:
        parts = urllib.parse.urlsplit(dsn)
        query = urllib.parse.parse_qs(parts.query)
        self._socket_dir = query.get("host", [None])[0] if not parts.hostname else None
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432
        self._dsn = parts
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        """The same database, reached through this proxy over TCP."""
        user = self._dsn.username or "postgres"
        password = f":{self._dsn.password}" if self._dsn.password else ""
        return f"postgresql://{user}{password}@127.0.0.1:{self.port}{self._dsn.path}"

    def hang(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._socket_dir:
            return await asyncio.open_unix_connection(f"{self._socket_dir}/.s.PGSQL.{self._port}")
        return await asyncio.open_connection(self._host, self._port)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                await self._flowing.wait()  # hung: hold the bytes, answer nothing
                dst.write(data)
                await dst.drain()
        dst.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._upstream()
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def hanging_proxy(dsn: str) -> AsyncIterator[HangingProxy]:
    proxy = HangingProxy(dsn)
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.resume()
        await proxy.close()
