"""Shared by the console's HTTP and browser tests: a hostile message, a quarantined event,
signing in with the form, and a deadline for waits."""

from __future__ import annotations

import json
import re

import aiohttp

#: provider-controlled text that would run if the console did not escape it
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">&amp;'
HOSTILE_ID = 99000111


def hostile_wamm() -> bytes:
    """An incoming WAMM message whose text and chat name are markup."""
    return json.dumps(
        {
            "tip": "msg",
            "msg_data": {
                "msg_id": HOSTILE_ID,
                "qoute_msg_id": None,
                "from_api": 0,
                "from_me": 0,
                "phone_acc": "79000000000",
                "phone": "79001234567",
                "chat_name": "<b>bold</b>",
                "tip_msg": "textMessage",
                "msg_text": HOSTILE,
                "msg_link": None,
                "date_ins": "2026-05-24 12:35:29",
                "state": "received",
                "senderId": None,
                "senderName": None,
            },
        }
    ).encode()


#: a body no decoder can read: quarantined with its reason
UNREADABLE = b'{"tip": "msg", "msg_data": '

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(session: aiohttp.ClientSession, base: str, key: str) -> aiohttp.ClientResponse:
    async with session.get(f"{base}/ui/login") as form:
        token = csrf_of(await form.text())
    answer = await session.post(
        f"{base}/ui/login",
        data={"csrf": token, "key": key, "next": "/ui/"},
        headers={"Origin": base},
        allow_redirects=False,
    )
    await answer.read()
    return answer
