"""The console's login: the API key, typed into a form, becomes an HttpOnly cookie.

The cookie never holds the key itself: it holds when it was issued and an HMAC of that
under the key, so it is checked without any server-side state (any process serving the
console accepts it), it expires after ``LIFETIME``, and rotating the API key signs
everybody out. Forms carry a CSRF token bound to the session (logout) or to a random
cookie set with the form (login, double-submit), and a POST from another origin is refused
whatever it carries. The key never appears in a URL: the login form posts it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse

from aiohttp import web

COOKIE = "acklog_console"
LOGIN_CSRF_COOKIE = "acklog_console_login"
PATH = "/ui"
LIFETIME = 12 * 3600


def _mac(key: bytes, purpose: str, value: str) -> str:
    return hmac.new(key, f"acklog-console:{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def issue(key: bytes, now: float | None = None) -> str:
    issued = str(int(time.time() if now is None else now))
    return f"{issued}.{_mac(key, 'session', issued)}"


def valid(key: bytes, value: str | None, now: float | None = None) -> bool:
    if not value:
        return False
    issued, _, mac = value.partition(".")
    if not issued.isdigit() or len(issued) > 12:
        return False
    age = (time.time() if now is None else now) - int(issued)
    if not -60 <= age <= LIFETIME:
        return False
    return hmac.compare_digest(mac.encode(), _mac(key, "session", issued).encode())


def csrf_token(key: bytes, session: str) -> str:
    """The token forms of a signed-in page carry (bound to the session cookie)."""
    return _mac(key, "csrf", session)[:32]


def check_csrf(key: bytes, session: str, given: str) -> bool:
    return hmac.compare_digest(given.encode(), csrf_token(key, session).encode())


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def same_origin(request: web.Request) -> bool:
    """A POST must come from our own pages. Browsers say so in ``Sec-Fetch-Site`` (which no
    page can forge), else in ``Origin``; its host must be ours (the scheme is not compared:
    behind a TLS proxy we see plain HTTP)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return False  # neither header: not a browser form we served
    return urllib.parse.urlsplit(origin).netloc == request.host


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    max_age: int,
    path: str = PATH,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def clear_cookie(response: web.StreamResponse, name: str, path: str = PATH) -> None:
    response.del_cookie(name, path=path)
