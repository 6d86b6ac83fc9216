"""The console's pages. Each reads through the query API's functions (``service.api_queries``,
``eventstore.read``) or the read-model package, bounded: every list is one page of at most
``PAGE`` rows walked along an index, newest first, with a link to the next page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
import msgspec
from aiohttp import web

from eventstore import checkpoint, locks
from eventstore import read as reader
from eventstore.events import StoredEvent
from projections import rebuild
from projections.facts import describe_fact
from projections.feed import store as feed_store
from projections.feed import subscriptions as feed_subs
from projections.providers import PROVIDERS
from projections.readmodel import console as rmc
from projections.readmodel import query as rmq
from projections.runner import LIVE_CHECKPOINT
from service.console import picture, session
from service.core.apikey import API_KEY, ApiKey
from service.core.config import CLOCK, SETTINGS
from service.core.database import API_POOL
from service.http.clientaddr import client_address
from service.http.errors import UNAVAILABLE, BadParameter, NotFound
from service.http.limiter import KEY_FAILURES
from service.http.responses import within
from service.reads import params as api_params
from service.reads import queries as q
from service.reads.models import ChannelSummary, EventOut

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGE = 50
PROVIDER_NAMES: tuple[str, ...] = tuple(sorted(PROVIDERS))

#: no inline script or style, nothing from another origin, no framing, forms post to us only
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers post forms with "Origin: null"
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: reachable without a session
PUBLIC = ("/ui/login", "/ui/static/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- formatting ----------------------------------------------------------------------------


def fmt_time(value: dt.datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def fmt_provider_time(value: float | None) -> str:
    if value is None:
        return "—"
    try:
        when = dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return repr(value)
    return when.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return ""
    sign = "-" if value < 0 else "+"
    v = abs(value)
    if v < 1:
        text = f"{v * 1000:.0f} ms"
    elif v < 120:
        text = f"{v:.1f} s"
    elif v < 7200:
        text = f"{v / 60:.1f} min"
    else:
        text = f"{v / 3600:.1f} h"
    return sign + text


def fmt_ago(value: dt.datetime | None, now: dt.datetime) -> str:
    if value is None:
        return ""
    return fmt_seconds((now - value).total_seconds()).lstrip("+") + " ago"


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def message_url(channel: str, key: str) -> str:
    return f"/ui/channels/{quote(channel)}/messages/{quote(key)}"


def query_url(path: str, params: Mapping[str, object]) -> str:
    kept = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return path + ("?" + urllib.parse.urlencode(kept) if kept else "")


FILTERS: dict[str, Callable[..., Any]] = {
    "ts": fmt_time,
    "ptime": fmt_provider_time,
    "secs": fmt_seconds,
    "q": quote,
}


# -- plumbing ------------------------------------------------------------------------------


def _key(request: web.Request) -> bytes:
    return request.app[API_KEY].value()


def _now(request: web.Request) -> dt.datetime:
    return request.config_dict[CLOCK]()


def _pool(request: web.Request) -> Any:
    return request.config_dict[API_POOL]


#: the guard's finding, kept on the request for the pages it renders
SIGNED_IN = web.RequestKey("signed_in", bool)


def render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    cookie = request.cookies.get(session.COOKIE)
    signed_in = request.get(SIGNED_IN, False)
    base = {
        "signed_in": signed_in,
        "csrf": session.csrf_token(_key(request), cookie or "") if signed_in else "",
        "path": request.path,
        "now": _now(request),
    }
    response = aiohttp_jinja2.render_template(template, request, base | context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(location: str) -> web.Response:
    """303 See Other, as a plain answer so the guard's headers go on it too."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    return render(request, "error.html", {"title": title, "detail": detail}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on everything; a session for every page but the login; errors as
    pages (client mistakes 400/404, database trouble 503, never a stack trace)."""
    response = await _guarded(request, handler)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def host_allowed(request: web.Request) -> bool:
    """The ``Host`` a browser sent names us: an IP literal, ``localhost``, the public URL's
    host or one of ``ACKLOG_ALLOWED_HOSTS``. Any other name may be an attacker's domain
    rebound to our address (DNS rebinding), so the console does not answer it."""
    settings = request.config_dict[SETTINGS]
    if "*" in settings.allowed_hosts:
        return True
    try:
        name = (urllib.parse.urlsplit("//" + request.host).hostname or "").rstrip(".")
    except ValueError:
        return False
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    public = urllib.parse.urlsplit(settings.public_url or "").hostname
    return (
        name == "localhost"
        or name.endswith(".localhost")
        or name == public
        or name in settings.allowed_hosts
    )


def _signed_in_first(handler: Handler) -> Handler:
    """``handler`` behind the session check: every page but the public ones needs one."""

    async def checked(request: web.Request) -> web.StreamResponse:
        if request.path.startswith(PUBLIC):  # the sign-in page and static files: no database
            request[SIGNED_IN] = False
            return await handler(request)
        request[SIGNED_IN] = await session.valid(
            _pool(request), _key(request), request.cookies.get(session.COOKIE)
        )
        if not request[SIGNED_IN]:
            if request.method != "GET" or request.path == "/ui/events/rows":
                return _error_page(request, 401, "Signed out", "Sign in again to go on.")
            target = request.path_qs if request.path not in ("/ui", "/ui/") else None
            return redirect(query_url("/ui/login", {"next": target}))
        return await handler(request)

    return checked


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not host_allowed(request):
        return _error_page(
            request,
            400,
            "Unknown host",
            "This address is not one the console answers; set ACKLOG_PUBLIC_URL or"
            " ACKLOG_ALLOWED_HOSTS to the name you use.",
        )
    try:
        return await within(
            request.config_dict[SETTINGS].api_query_timeout, _signed_in_first(handler), request
        )
    except BadParameter as exc:
        return _error_page(request, 400, "Bad request", exc.detail)
    except NotFound as exc:
        return _error_page(request, 404, "Not found", exc.detail)
    except web.HTTPNotFound:
        return _error_page(request, 404, "Not found", f"no page at {request.path[:200]}")
    except web.HTTPMethodNotAllowed:
        return _error_page(request, 405, "Method not allowed", "this page is read-only")
    except UNAVAILABLE as exc:
        log.warning("console: database unavailable: %s", exc)
        response = _error_page(
            request, 503, "Database unavailable", "The database did not answer; retry shortly."
        )
        response.headers["Retry-After"] = "5"
        return response
    except TimeoutError:
        response = _error_page(
            request, 503, "Too slow", "The database took too long; narrow the query or retry."
        )
        response.headers["Retry-After"] = "5"
        return response


# -- login ---------------------------------------------------------------------------------


def _next(raw: str | None) -> str:
    """Only our own console pages: never an open redirect, never a header split (a control
    character, a space or anything not ASCII sends the browser to ``/ui/`` instead)."""
    if (
        raw
        and raw.startswith("/ui/")
        and "\\" not in raw
        and raw.isascii()
        and all(0x20 < ord(c) < 0x7F for c in raw)
    ):
        return raw
    return "/ui/"


async def login_form(request: web.Request) -> web.Response:
    token = session.new_login_token()
    response = render(
        request,
        "login.html",
        {"login_csrf": token, "next": _next(request.query.get("next")), "failed": None},
    )
    session.set_cookie(response, request, session.LOGIN_CSRF_COOKIE, token, 600, path="/ui/login")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    expected = request.cookies.get(session.LOGIN_CSRF_COOKIE, "")
    given = str(form.get("csrf", ""))
    if not session.same_origin(request) or not expected or given != expected:
        return _error_page(
            request, 403, "Refused", "This form is stale or came from another site; reload it."
        )
    limiter = request.config_dict[KEY_FAILURES]
    client = client_address(request)
    if limiter.blocked_for(client):
        return _error_page(request, 429, "Too many attempts", "Wait a minute, then try again.")
    key = str(form.get("key", "")).strip()
    api_key: ApiKey = request.app[API_KEY]
    if not key or not api_key.check(f"Bearer {key}"):
        limiter.failed(client)
        token = session.new_login_token()
        response = render(
            request,
            "login.html",
            {
                "login_csrf": token,
                "next": _next(str(form.get("next", ""))),
                "failed": "That is not the API key.",
            },
            status=401,
        )
        session.set_cookie(
            response, request, session.LOGIN_CSRF_COOKIE, token, 600, path="/ui/login"
        )
        return response
    response = redirect(_next(str(form.get("next", ""))))
    cookie = await session.issue(_pool(request), _key(request))
    session.set_cookie(response, request, session.COOKIE, cookie, session.LIFETIME)
    session.clear_cookie(response, session.LOGIN_CSRF_COOKIE, path="/ui/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    cookie = request.cookies.get(session.COOKIE, "")
    if not session.same_origin(request) or not session.check_csrf(
        _key(request), cookie, str(form.get("csrf", ""))
    ):
        return _error_page(request, 403, "Refused", "This form is stale; reload the page.")
    await session.end(_pool(request), _key(request), cookie)
    response = redirect("/ui/login")
    session.clear_cookie(response, session.COOKIE)
    return response


# -- channels ------------------------------------------------------------------------------


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    """The channels page's figures, taken together."""

    taken_at: dt.datetime
    channels: list[ChannelSummary]
    health: dict[str, rmc.Health]
    last: dict[str, tuple[int, dt.datetime]]
    since: dict[str, dt.datetime | None]


async def _overview(pool: Any, now: dt.datetime) -> Overview:
    summaries = await q.channels(pool, now)
    since: dict[str, dt.datetime | None] = {
        c.name: c.health.status_since for c in summaries if c.connection is not None
    }
    return Overview(
        taken_at=now,
        channels=summaries,
        health=await rmc.health(pool, now),
        last=await reader.latest_by_channel(pool, [c.name for c in summaries]),
        since=since,
    )


class OverviewCache:
    """The counts behind the channels page pass over every message (like
    ``GET /v1/channels``): they are taken at most once per ``max_age`` seconds per process,
    by one request at a time, however many people look."""

    def __init__(self, max_age: float = 10.0) -> None:
        self.max_age = max_age
        self._value: tuple[float, Overview] | None = None
        self._lock = asyncio.Lock()

    async def get(self, pool: Any, now: dt.datetime) -> Overview:
        async with self._lock:
            if self._value is None or time.monotonic() - self._value[0] > self.max_age:
                self._value = (time.monotonic(), await _overview(pool, now))
            return self._value[1]


OVERVIEW = web.AppKey("console_overview", OverviewCache)


async def channels_page(request: web.Request) -> web.Response:
    now = _now(request)
    overview = await request.app[OVERVIEW].get(_pool(request), now)
    return render(
        request,
        "channels.html",
        {
            "channels": overview.channels,
            "health": overview.health,
            "blank": rmc.Health(),
            "last": overview.last,
            "since": overview.since,
            "taken_at": overview.taken_at,
            "max_age": request.app[OVERVIEW].max_age,
            "ago": lambda t: fmt_ago(t, now),
        },
    )


async def _channel(request: web.Request) -> tuple[str, str]:
    name = request.match_info["channel"]
    found = await q.channel(_pool(request), name) if api_params.channel_name(name) else None
    if found is None:
        raise NotFound(f"no channel named {name[:64]!r}")
    return name, found[0]


def _form(query: Mapping[str, str], name: str) -> str | None:
    """A form field: empty means not given (forms send every field)."""
    value = query.get(name, "").strip()
    return value or None


def _form_time(query: Mapping[str, str], name: str) -> dt.datetime | None:
    value = _form(query, name)
    return api_params.timestamp({name: value}, name) if value else None


def _form_bool(query: Mapping[str, str], name: str) -> bool | None:
    value = _form(query, name)
    return api_params.boolean({name: value}, name) if value else None


async def messages_page(request: web.Request) -> web.Response:
    name, provider = await _channel(request)
    query = request.query
    pool = _pool(request)
    search = _form(query, "q")
    if search is not None and not api_params.storable(search):
        raise BadParameter("q", "the search text holds characters no message can have")
    after = api_params.decode_cursor({"cursor": c} if (c := _form(query, "cursor")) else {})
    f = q.MessageFilter(
        channel=name,
        now=_now(request),
        state=api_params.choice(
            {"state": s} if (s := _form(query, "state")) else {}, "state", api_params.STATES
        ),
        direction=api_params.choice(
            {"direction": d} if (d := _form(query, "direction")) else {},
            "direction",
            api_params.DIRECTIONS,
        ),
        overdue=_form_bool(query, "overdue"),
        failed=_form_bool(query, "failed"),
        since=_form_time(query, "since"),
        until=_form_time(query, "until"),
        search=search,
        after=after,
        limit=PAGE,
    )
    if f.since is not None and f.until is not None and f.until < f.since:
        raise BadParameter("until", "until must not be before since")
    exact = None
    if rmq.windowed(f):
        if f.after is None:
            f = msgspec.structs.replace(f, after=(await reader.head(pool) + 1, ""))
        if search is not None and after is None:
            async with pool.acquire() as conn:
                exact = await q.message(conn, name, search, f.now)
    items, more = await q.messages(pool, f)
    cursor = None
    scanned_to = None
    if more:
        cursor = api_params.encode_cursor(items[-1].first_position, items[-1].message_id)
    elif rmq.windowed(f):
        floor = rmq.window_floor(f)
        if floor > 1:
            cursor = api_params.encode_cursor(floor - 1, "")
            scanned_to = floor
    params = {k: v for k, v in query.items() if k != "cursor"}
    return render(
        request,
        "messages.html",
        {
            "channel": name,
            "provider": provider,
            "items": items,
            "exact": exact,
            "form": params,
            "states": api_params.STATES,
            "next_url": query_url(request.path, params | {"cursor": cursor}) if cursor else None,
            "first_url": query_url(request.path, params) if after is not None else None,
            "scanned_to": scanned_to,
            "message_url": message_url,
        },
    )


async def message_page(request: web.Request) -> web.Response:
    name, _ = await _channel(request)
    key = request.match_info["message_id"]
    detail = None
    if api_params.storable(key):
        async with _pool(request).acquire() as conn:
            detail = await q.message(conn, name, key, _now(request))
    if detail is None:
        raise NotFound(f"channel {name!r} has no message {key[:200]!r}")
    return render(
        request,
        "message.html",
        {"m": detail, "pic": picture.picture(detail), "channel": name},
    )


# -- events --------------------------------------------------------------------------------


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """An event in a list: what it is and what its decoder reads in it."""

    event: StoredEvent
    size: int
    #: the body was too big to read in a list: not decoded here
    cut: bool
    summary: list[str]
    quarantine: str | None
    keys: list[str]


def _row(listed: reader.Listed) -> Row:
    event = listed.event
    if listed.cut:  # a big body is decoded on its own page only
        return Row(
            event=event,
            size=listed.size,
            cut=True,
            summary=[f"{listed.size:,} bytes: open the event to decode it"],
            quarantine=None,
            keys=[],
        )
    decoded = q.decoding(event)
    keys = sorted({k for f in decoded.facts if (k := getattr(f, "key", None))})
    return Row(
        event=event,
        size=listed.size,
        cut=False,
        summary=[describe_fact(f) for f in decoded.facts] or ["no facts"],
        quarantine=decoded.error,
        keys=keys,
    )


async def _rows(events: list[reader.Listed]) -> list[Row]:
    if sum(len(e.event.body) for e in events) <= 256 * 1024:
        return [_row(e) for e in events]
    return await asyncio.to_thread(lambda: [_row(e) for e in events])


def _event_filters(request: web.Request) -> dict[str, Any]:
    query = request.query
    channel = _form(query, "channel")
    if channel is not None and not api_params.channel_name(channel):
        raise BadParameter("channel", "channel must be a channel name")
    provider = _form(query, "provider")
    if provider is not None and provider not in PROVIDER_NAMES:
        raise BadParameter("provider", f"provider must be one of {', '.join(PROVIDER_NAMES)}")
    return {
        "channel": channel,
        "provider": provider,
        "duplicate": _form_bool(query, "duplicate"),
        "quarantine": _form_bool(query, "quarantine"),
    }


async def events_page(request: web.Request) -> web.Response:
    filters = _event_filters(request)
    pool = _pool(request)
    before_raw = _form(request.query, "before")
    before = (
        api_params.parse_int(before_raw, "before", minimum=1)
        if before_raw
        else await reader.head(pool) + 1
    )
    next_before: int | None
    if filters["quarantine"]:
        entries, next_before = await rmc.quarantine_newest(pool, before, PAGE, filters["channel"])
        events = await reader.get_many(pool, [e.position for e in entries])
    else:
        events, next_before = await reader.newest(
            pool,
            before=before,
            limit=PAGE,
            channel=filters["channel"],
            provider=filters["provider"],
            duplicate=filters["duplicate"],
        )
    rows = await _rows(events)
    if filters["quarantine"] is False:
        rows = [r for r in rows if r.quarantine is None]
    params = {k: v for k, v in request.query.items() if k != "before"}
    return render(
        request,
        "events.html",
        {
            "rows": rows,
            "form": params,
            "providers": PROVIDER_NAMES,
            "next_url": query_url("/ui/events", params | {"before": next_before})
            if next_before
            else None,
            "first_url": query_url("/ui/events", params) if before_raw else None,
            "short_page": len(events) < PAGE and next_before is not None,
            "message_url": message_url,
            "live": False,
            "head": before - 1,
        },
    )


async def live_page(request: web.Request) -> web.Response:
    filters = _event_filters(request)
    pool = _pool(request)
    head = await reader.head(pool)
    events = await reader.newer(
        pool, after=max(head - PAGE, 0), limit=PAGE, channel=filters["channel"]
    )
    rows = [r for r in await _rows(events) if _matches(r, filters)]
    rows.reverse()
    return render(
        request,
        "events.html",
        {
            "rows": rows,
            "form": dict(request.query),
            "providers": PROVIDER_NAMES,
            "next_url": None,
            "first_url": None,
            "short_page": False,
            "message_url": message_url,
            "live": True,
            "head": head,
            "rows_url": query_url("/ui/events/rows", {**request.query}),
        },
    )


def _matches(row: Row, filters: Mapping[str, Any]) -> bool:
    e = row.event
    if filters["provider"] is not None and e.provider != filters["provider"]:
        return False
    if filters["duplicate"] is not None and (e.duplicate_of is not None) != filters["duplicate"]:
        return False
    quarantined = row.quarantine is not None
    if filters["quarantine"] is not None and not row.cut and quarantined != filters["quarantine"]:
        return False
    return True


async def event_rows(request: web.Request) -> web.Response:
    """The live view's poll: events after ``after``, as table rows rendered like the page's."""
    filters = _event_filters(request)
    after = api_params.parse_int(request.query.get("after", "0"), "after")
    events = await reader.newer(_pool(request), after=after, limit=PAGE, channel=filters["channel"])
    rows = [r for r in await _rows(events) if _matches(r, filters)]
    rows.reverse()
    html = aiohttp_jinja2.render_string(
        "rows.html", request, {"rows": rows, "message_url": message_url}
    )
    body = json.dumps({"after": events[-1].event.position if events else after, "html": html})
    return web.Response(
        text=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _pretty(event: EventOut) -> tuple[str | None, list[tuple[str, str]] | None]:
    """The body made readable: indented JSON, or the fields of a form."""
    if event.encoding != "utf-8":
        return None, None
    ctype = (event.content_type or "").lower()
    if "x-www-form-urlencoded" in ctype:
        return None, urllib.parse.parse_qsl(event.body, keep_blank_values=True)
    try:
        parsed = json.loads(event.body)
    except ValueError:
        return None, None
    return json.dumps(parsed, indent=2, ensure_ascii=False), None


async def event_page(request: web.Request) -> web.Response:
    position = api_params.parse_int(request.match_info["position"], "position", minimum=1)
    event = await reader.get(_pool(request), position)
    if event is None:
        raise NotFound(f"no event at position {position}")
    out = (await q.events_out([event]))[0]
    pretty, form = _pretty(out)
    facts = [
        (describe_fact(f), json.dumps(msgspec.to_builtins(f), indent=2, ensure_ascii=False))
        for f in out.decoded.facts
    ]
    keys = sorted({k for f in out.decoded.facts if (k := getattr(f, "key", None))})
    return render(
        request,
        "event.html",
        {
            "e": out,
            "pretty": pretty,
            "form_fields": form,
            "facts": facts,
            "keys": keys,
            "message_url": message_url,
            "size": len(event.body),
        },
    )


# -- quarantine and projector --------------------------------------------------------------


async def quarantine_page(request: web.Request) -> web.Response:
    channel = _form(request.query, "channel")
    if channel is not None and not api_params.channel_name(channel):
        raise BadParameter("channel", "channel must be a channel name")
    before_raw = _form(request.query, "before")
    before = api_params.parse_int(before_raw, "before", minimum=1) if before_raw else 2**63 - 1
    items, next_before = await rmc.quarantine_newest(_pool(request), before, PAGE, channel)
    params = {k: v for k, v in request.query.items() if k != "before"}
    return render(
        request,
        "quarantine.html",
        {
            "items": items,
            "form": params,
            "next_url": query_url("/ui/quarantine", params | {"before": next_before})
            if next_before
            else None,
        },
    )


async def projector_page(request: web.Request) -> web.Response:
    pool = _pool(request)
    now = _now(request)
    head = await reader.head(pool)
    points = await checkpoint.all_checkpoints(pool)
    live = next((p for p in points if p[0] == LIVE_CHECKPOINT), None)
    position = live[1] if live else 0
    waiting_since = await reader.oldest_after(pool, position)
    leader = await locks.holder(pool, locks.PROJECTOR_LEADER)
    last = await rebuild.last_rebuild(pool)
    building = [p for p in points if p[0].startswith("rebuild:")]
    return render(
        request,
        "projector.html",
        {
            "head": head,
            "position": position,
            "updated_at": live[2] if live else None,
            "lag_events": max(head - position, 0),
            "lag_seconds": (now - waiting_since).total_seconds() if waiting_since else 0.0,
            "leader": leader,
            "last_rebuild": last,
            "building": building,
            "others": [p for p in points if p[0] != LIVE_CHECKPOINT and p not in building],
        },
    )


async def feed_page(request: web.Request) -> web.Response:
    """Each subscription: filters, status, backlog, dead letters, recent deliveries."""
    pool = _pool(request)
    items = []
    for sub in await feed_subs.list_all(pool):
        items.append(
            {
                "sub": sub,
                "backlog": await feed_subs.backlog(pool, sub),
                "dead": len(await feed_subs.dead_letters(pool, subscription=sub.name, limit=1000)),
                "recent": await feed_subs.recent_attempts(pool, sub.id, 20),
            }
        )
    return render(request, "feed.html", {"items": items, "head": await feed_store.last_seq(pool)})


# -- the app -------------------------------------------------------------------------------


def make_console(app: web.Application) -> web.Application:
    """The ``/ui`` sub-application; the parent app holds the pool, clock and settings."""
    console = web.Application(middlewares=[guard])
    console[API_KEY] = ApiKey(app[SETTINGS])
    console[SETTINGS] = app[SETTINGS]  # client_address reads request.app
    console[OVERVIEW] = OverviewCache()
    aiohttp_jinja2.setup(
        console,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters=FILTERS,
        default_helpers=False,
    )
    r = console.router
    r.add_get("/", channels_page, allow_head=False)
    r.add_get("/login", login_form, allow_head=False)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/channels/{channel}", messages_page, allow_head=False)
    r.add_get("/channels/{channel}/messages/{message_id:.+}", message_page, allow_head=False)
    r.add_get("/events", events_page, allow_head=False)
    r.add_get("/events/live", live_page, allow_head=False)
    r.add_get("/events/rows", event_rows, allow_head=False)
    r.add_get("/events/{position}", event_page, allow_head=False)
    r.add_get("/quarantine", quarantine_page, allow_head=False)
    r.add_get("/projector", projector_page, allow_head=False)
    r.add_get("/feed", feed_page, allow_head=False)
    r.add_static("/static/", HERE / "static")
    return console
