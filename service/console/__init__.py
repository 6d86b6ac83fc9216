"""The web console under ``/ui/``: channels, messages, timelines, raw events, quarantine.

Read-only and rendered on the server (aiohttp-jinja2, autoescaping on): no build step, no
CDN, one small stylesheet and one small script of our own. It is a sub-application beside
the ``/v1`` query API and reads through the same query functions (``service.reads``), so it
runs wherever the API runs. The pages are ``service.console.pages`` (one module per
resource); ``service.console.session`` is the login's session.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from service.console.pages import admin, channels, events, login, messages
from service.console.pages.common import FILTERS, guard
from service.core.apikey import API_KEY, ApiKey
from service.core.config import SETTINGS

HERE = Path(__file__).parent


def make_console(app: web.Application) -> web.Application:
    """The ``/ui`` sub-application; the parent app holds the pool, clock and settings."""
    console = web.Application(middlewares=[guard])
    console[API_KEY] = ApiKey(app[SETTINGS])
    console[SETTINGS] = app[SETTINGS]  # client_address reads request.app
    console[channels.OVERVIEW] = channels.OverviewCache()
    aiohttp_jinja2.setup(
        console,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters=FILTERS,
        default_helpers=False,
    )
    r = console.router
    r.add_get("/", channels.channels_page, allow_head=False)
    r.add_get("/login", login.login_form, allow_head=False)
    r.add_post("/login", login.login)
    r.add_post("/logout", login.logout)
    r.add_get("/channels/{channel}", messages.messages_page, allow_head=False)
    r.add_get(
        "/channels/{channel}/messages/{message_id:.+}", messages.message_page, allow_head=False
    )
    r.add_get("/events", events.events_page, allow_head=False)
    r.add_get("/events/live", events.live_page, allow_head=False)
    r.add_get("/events/rows", events.event_rows, allow_head=False)
    r.add_get("/events/{position}", events.event_page, allow_head=False)
    r.add_get("/quarantine", admin.quarantine_page, allow_head=False)
    r.add_get("/projector", admin.projector_page, allow_head=False)
    r.add_get("/feed", admin.feed_page, allow_head=False)
    r.add_static("/static/", HERE / "static")
    return console


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


def install(app: web.Application) -> None:
    """Mount the console at ``/ui`` and send ``/`` there."""
    app.router.add_get("/", _to_console, allow_head=False)
    app.router.add_get("/ui", _to_console, allow_head=False)
    app.add_subapp("/ui", make_console(app))


__all__ = ["install", "make_console"]
