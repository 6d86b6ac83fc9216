"""SIGTERM stops ``acklog serve`` within seconds whatever SSE streams are open.

A ``/v1/stream`` is endless: the API process would wait for it in its drain, and the ingest
worker relaying it would wait for the API. A real ``serve``, a client on the stream through
the public port (relayed), SIGTERM: exit 0 within a few seconds, the streams ended, a webhook
in flight answered 200 and stored, and no traceback in the output.
"""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import asyncpg
import pytest

from eventstore.read import read
from tests.service.runtime.test_roles import role_pids
from tests.support.apps import add_channel
from tests.support.payloads import waha_outgoing
from tests.support.procs import Process, free_port

KEY = "stream-shutdown-key"


async def test_sigterm_ends_open_streams_at_once(dsn: str) -> None:
    port = free_port()
    proc = Process(
        ["serve", "--port", str(port)], dsn, marker="acklog listening", ACKLOG_API_KEY=KEY
    )
    await proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        token = await add_channel(dsn, "s", "waha")
        async with aiohttp.ClientSession() as session:
            streams = []
            for _ in range(3):
                resp = await session.get(
                    f"{base}/v1/stream", headers={"Authorization": f"Bearer {KEY}"}
                )
                assert resp.status == 200, await resp.text()
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                streams.append(resp)
            async with session.post(
                f"{base}/hooks/s?token={token}", data=waha_outgoing("S1")
            ) as hook:
                assert hook.status == 200
            # a webhook in flight: its head accepted before SIGTERM, its body sent after
            late = waha_outgoing("S2")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /hooks/s?token={token} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(late)}\r\n"
                "Connection: close\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            async with asyncio.timeout(10):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            assert proc.proc is not None
            loop = asyncio.get_running_loop()
            began = loop.time()
            proc.proc.send_signal(signal.SIGTERM)
            writer.write(late)
            async with asyncio.timeout(10):
                answer = await reader.read()
            writer.close()
            async with asyncio.timeout(15):
                code = await proc.proc.wait()
            took = loop.time() - began
            for resp in streams:  # each stream ended (not cut off mid-event)
                async with asyncio.timeout(5):
                    await resp.read()
                resp.release()
    finally:
        await proc.stop()
    print(f"SIGTERM with {len(streams)} open streams: exit {code} in {took:.2f} s")
    output = "\n".join(proc.lines)
    assert code == 0, output
    assert took < 5, output
    assert "Traceback" not in output, output
    assert "ERROR" not in output, output
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    conn = await asyncpg.connect(dsn)
    try:
        assert [e.body for e in await read(conn)] == [waha_outgoing("S1"), late]
    finally:
        await conn.close()


async def test_a_relayed_stream_cut_by_a_dead_api_process_logs_no_traceback(dsn: str) -> None:
    """The API process dies (SIGKILL) under a relayed stream: the worker cuts the client's
    answer short (a warning), without aiohttp's ERROR traceback, and the stream works again
    once the supervisor restarted the API."""
    port = free_port()
    proc = Process(
        ["serve", "--port", str(port), "--no-feed"],
        dsn,
        marker="acklog listening",
        ACKLOG_API_KEY=KEY,
    )
    await proc.start()
    url = f"http://127.0.0.1:{port}/v1/stream"
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(url, headers=auth)
            assert resp.status == 200
            (api,) = role_pids(proc.pid, "api")
            os.kill(api, signal.SIGKILL)
            with pytest.raises(aiohttp.ClientPayloadError):
                async with asyncio.timeout(10):
                    await resp.read()
            resp.release()
            await proc.wait_lines(lambda lines: any("broke off" in x for x in lines), 10)
            async with asyncio.timeout(30):
                while True:  # the restarted API process serves streams again
                    async with session.get(url, headers=auth) as again:
                        if again.status == 200:
                            break
                        assert again.status == 503
                    await asyncio.sleep(0.2)
    finally:
        await proc.stop()
    output = "\n".join(proc.lines)
    assert "Traceback" not in output, output
    assert "ERROR" not in output, output
