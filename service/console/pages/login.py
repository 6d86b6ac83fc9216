"""Signing in and out: an API key, typed into a form, opens a server-side session."""

from __future__ import annotations

from aiohttp import web

from service.console import session
from service.console.pages.common import (
    error_page,
    primary_pool,
    redirect,
    render,
    request_key,
)
from service.core.apikey import API_KEY, ApiKey
from service.http.clientaddr import client_address
from service.http.limiter import KEY_FAILURES


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
        return error_page(
            request, 403, "Refused", "This form is stale or came from another site; reload it."
        )
    limiter = request.config_dict[KEY_FAILURES]
    client = client_address(request)
    if limiter.blocked_for(client):
        return error_page(request, 429, "Too many attempts", "Wait a minute, then try again.")
    key = str(form.get("key", "")).strip()
    api_key: ApiKey = request.app[API_KEY]
    pool = primary_pool(request)  # keys are read on the primary (a standby may lag)
    key_name = await api_key.check(f"Bearer {key}", pool) if key else None
    if key_name is None:
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
    cookie = await session.issue(primary_pool(request), request_key(request), key_name)
    session.set_cookie(response, request, session.COOKIE, cookie, session.LIFETIME)
    session.clear_cookie(response, session.LOGIN_CSRF_COOKIE, path="/ui/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    cookie = request.cookies.get(session.COOKIE, "")
    if not session.same_origin(request) or not session.check_csrf(
        request_key(request), cookie, str(form.get("csrf", ""))
    ):
        return error_page(request, 403, "Refused", "This form is stale; reload the page.")
    await session.end(primary_pool(request), request_key(request), cookie)
    response = redirect("/ui/login")
    session.clear_cookie(response, session.COOKIE)
    return response
