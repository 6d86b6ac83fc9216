"""The web console under ``/ui/``: channels, messages, timelines, raw events, quarantine.

Read-only and rendered on the server (aiohttp-jinja2, autoescaping on): no build step, no
CDN, one small stylesheet and one small script of our own. It is a sub-application beside
the ``/v1`` query API and reads through the same query functions, so it runs wherever the
API runs. See ``service.console.views`` for the pages and ``service.console.session`` for
the login.
"""

from __future__ import annotations

from aiohttp import web

from service.console.views import make_console


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


def install(app: web.Application) -> None:
    """Mount the console at ``/ui`` and send ``/`` there."""
    app.router.add_get("/", _to_console, allow_head=False)
    app.router.add_get("/ui", _to_console, allow_head=False)
    app.add_subapp("/ui", make_console(app))


__all__ = ["install"]
