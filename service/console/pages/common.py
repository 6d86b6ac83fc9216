"""What every console page shares: formatting, rendering, form fields, and the guard.

Pages read through the query API's functions (``service.reads.queries``, ``eventstore.read``)
or the read-model package, bounded: every list is one page of at most ``PAGE`` rows walked
along an index, newest first, with a link to the next page.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from eventstore.errors import StoreUnavailable
from projections.providers import PROVIDERS
from service.console import session
from service.core.apikey import API_KEY
from service.core.config import CLOCK, SETTINGS
from service.core.database import API_POOL, API_PRIMARY
from service.http.errors import BadParameter, NotFound, at_store_boundary
from service.http.responses import within
from service.reads import params as api_params

log = logging.getLogger(__name__)

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


def request_key(request: web.Request) -> bytes:
    return request.app[API_KEY].value()


def request_now(request: web.Request) -> dt.datetime:
    return request.config_dict[CLOCK]()


def request_pool(request: web.Request) -> Any:
    return request.config_dict[API_POOL]


def primary_pool(request: web.Request) -> Any:
    """The primary (``request_pool`` may be a standby): sessions are written and read there,
    so one just opened is seen at once, and advisory locks live only there."""
    return request.config_dict[API_PRIMARY]


#: the guard's finding, kept on the request for the pages it renders
SIGNED_IN = web.RequestKey("signed_in", bool)


def render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    cookie = request.cookies.get(session.COOKIE)
    signed_in = request.get(SIGNED_IN, False)
    base = {
        "signed_in": signed_in,
        "csrf": session.csrf_token(request_key(request), cookie or "") if signed_in else "",
        "path": request.path,
        "now": request_now(request),
    }
    response = aiohttp_jinja2.render_template(template, request, base | context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(location: str) -> web.Response:
    """303 See Other, as a plain answer so the guard's headers go on it too."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    return render(request, "error.html", {"title": title, "detail": detail}, status=status)


# -- forms ---------------------------------------------------------------------------------


def form_value(query: Mapping[str, str], name: str) -> str | None:
    """A form field: empty means not given (forms send every field)."""
    value = query.get(name, "").strip()
    return value or None


def form_time(query: Mapping[str, str], name: str) -> dt.datetime | None:
    value = form_value(query, name)
    return api_params.timestamp({name: value}, name) if value else None


def form_bool(query: Mapping[str, str], name: str) -> bool | None:
    value = form_value(query, name)
    return api_params.boolean({name: value}, name) if value else None


# -- the guard -----------------------------------------------------------------------------


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
        # sessions and keys are read on the primary: a standby may not have replayed them yet
        pool = primary_pool(request)
        opened = await session.opened(
            pool, request_key(request), request.cookies.get(session.COOKIE)
        )
        # a session dies with the key it was signed in with (within the checker's refresh)
        request[SIGNED_IN] = opened is not None and await request.app[API_KEY].active(
            opened.key_name, pool
        )
        if not request[SIGNED_IN]:
            if request.method != "GET" or request.path == "/ui/events/rows":
                return error_page(request, 401, "Signed out", "Sign in again to go on.")
            target = request.path_qs if request.path not in ("/ui", "/ui/") else None
            return redirect(query_url("/ui/login", {"next": target}))
        return await handler(request)

    return checked


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not host_allowed(request):
        return error_page(
            request,
            400,
            "Unknown host",
            "This address is not one the console answers; set ACKLOG_PUBLIC_URL or"
            " ACKLOG_ALLOWED_HOSTS to the name you use.",
        )
    try:
        return await within(
            request.config_dict[SETTINGS].api_query_timeout,
            at_store_boundary(_signed_in_first(handler)),
            request,
        )
    except BadParameter as exc:
        return error_page(request, 400, "Bad request", exc.detail)
    except NotFound as exc:
        return error_page(request, 404, "Not found", exc.detail)
    except web.HTTPNotFound:
        return error_page(request, 404, "Not found", f"no page at {request.path[:200]}")
    except web.HTTPMethodNotAllowed:
        return error_page(request, 405, "Method not allowed", "this page is read-only")
    except StoreUnavailable as exc:
        log.warning("console: database unavailable: %s", exc)
        response = error_page(
            request, 503, "Database unavailable", "The database did not answer; retry shortly."
        )
        response.headers["Retry-After"] = "5"
        return response
    except TimeoutError:
        response = error_page(
            request, 503, "Too slow", "The database took too long; narrow the query or retry."
        )
        response.headers["Retry-After"] = "5"
        return response
