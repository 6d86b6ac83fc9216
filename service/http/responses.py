"""JSON answers, including every error: a status code and a body that says what is wrong."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


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
