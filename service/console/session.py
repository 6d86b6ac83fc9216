"""The console's login: an API key, typed into a form, becomes an HttpOnly cookie.

The cookie never holds a key: it holds a random session token and an HMAC of it under the
server's secret (the configured API key). A session is honoured while (a) the HMAC matches,
so changing the configured key signs everybody out, (b) the hash of its token is in
``console_sessions`` and not past its ``LIFETIME``: this module is that table's one owner,
and *Sign out* deletes the row, so a copied cookie dies with the session (issue 26), and (c)
the key it was signed in with is not revoked: the row names it (``Opened.key_name``) and the
console asks the API key checker about it. The cookie is ``Secure`` whenever the
client came over HTTPS, directly or through a trusted TLS proxy. Forms carry a CSRF token
bound to the session (logout) or to a random cookie set with the form (login,
double-submit), and a POST from another origin is refused whatever it carries. The key
never appears in a URL: the login form posts it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse

import asyncpg
import msgspec
from aiohttp import web

from eventstore.errors import store_boundary
from service.http.clientaddr import client_scheme

COOKIE = "acklog_console"
LOGIN_CSRF_COOKIE = "acklog_console_login"
PATH = "/ui"
LIFETIME = 12 * 3600


def _mac(key: bytes, purpose: str, value: str) -> str:
    return hmac.new(key, f"acklog-console:{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def sign(key: bytes, token: str) -> str:
    """The cookie's value for session ``token``: the token and its HMAC under ``key``."""
    return f"{token}.{_mac(key, 'session', token)}"


def signed_token(key: bytes, value: str | None) -> str | None:
    """The session token of a cookie whose HMAC is right under ``key``, else None."""
    if not value or len(value) > 200:
        return None
    token, _, mac = value.partition(".")
    if not token or not hmac.compare_digest(mac.encode(), _mac(key, "session", token).encode()):
        return None
    return token


class Opened(msgspec.Struct, frozen=True):
    """An open session, and the name of the API key it was signed in with (``""``: the
    configured key)."""

    key_name: str


async def issue(pool: asyncpg.Pool, key: bytes, key_name: str = "") -> str:
    """A new session signed in with the key named ``key_name`` (``""``: the configured one):
    its row (expired ones swept on the way), and the cookie's value."""
    token = secrets.token_urlsafe(32)
    with store_boundary():
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM console_sessions WHERE expires_at < now()")
            await conn.execute(
                "INSERT INTO console_sessions (token_hash, expires_at, key_name)"
                " VALUES ($1, now() + make_interval(secs => $2), $3)",
                _token_hash(token),
                float(LIFETIME),
                key_name or None,
            )
    return sign(key, token)


async def opened(pool: asyncpg.Pool, key: bytes, value: str | None) -> Opened | None:
    """The cookie's session, when the cookie is signed under ``key`` and its session is open
    on the server (whether its API key is still valid is the caller's to ask)."""
    token = signed_token(key, value)
    if token is None:
        return None
    with store_boundary():
        row = await pool.fetchrow(
            "SELECT coalesce(key_name, '') AS key_name FROM console_sessions"
            " WHERE token_hash = $1 AND expires_at > now()",
            _token_hash(token),
        )
    return Opened(row["key_name"]) if row else None


async def end(pool: asyncpg.Pool, key: bytes, value: str | None) -> None:
    """Sign out: the session's row goes, so no copy of the cookie works any more."""
    token = signed_token(key, value)
    if token is not None:
        with store_boundary():
            await pool.execute(
                "DELETE FROM console_sessions WHERE token_hash = $1", _token_hash(token)
            )


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
        secure=client_scheme(request) == "https",
    )


def clear_cookie(response: web.StreamResponse, name: str, path: str = PATH) -> None:
    response.del_cookie(name, path=path)
