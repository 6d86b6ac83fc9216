"""JSON answers, including every error: a status code and a body that says what is wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(data), status=status, content_type="application/json", headers=headers
    )


def error(status: int, code: str, detail: str, **extra: Any) -> web.Response:
    headers = {k: v for k, v in extra.pop("headers", {}).items()}
    return json_response({"error": code, "detail": detail, **extra}, status, headers)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own 404/405/413… become JSON; a bug becomes a JSON 500, never a crash."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        code = exc.reason.lower().replace(" ", "_")
        return error(exc.status, code, exc.text or exc.reason, headers=headers)
    except Exception:
        request.app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal_error", "unexpected error; nothing was acknowledged")


async def within(
    timeout: float | None, handler: Handler, request: web.Request
) -> web.StreamResponse:
    """``handler(request)``, or TimeoutError once ``timeout`` seconds have passed.

    Unlike ``asyncio.timeout``, the answer does not wait for the handler to unwind: a query
    on a *hung* database (sockets open, nothing answered) is cancelled, but giving its
    connection back to the pool waits on that same silent socket. The handler's task is
    cancelled and left to finish on its own; its connection returns when the database
    answers again, and the client has its 503 now (issue 26)."""
    if timeout is None:
        return await handler(request)
    task = asyncio.ensure_future(handler(request))
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:  # the client went away: so does its handler
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    task.add_done_callback(_forget)
    raise TimeoutError(f"no answer within {timeout:g} s")


def _forget(task: asyncio.Future[web.StreamResponse]) -> None:
    """Collect the abandoned handler's outcome so nothing is logged as never retrieved."""
    if not task.cancelled():
        task.exception()
