"""The console in a real browser: Debian's Chromium driven by Playwright, against a real
``acklog serve`` process fed by a real ``acklog simulate`` process.

Playwright's own browser download is never used: ``executable_path`` points at the system
Chromium (``.ci/run`` installs the ``chromium`` package). Screenshots of the main pages go
to ``.artifacts/console/`` (ignored by git). Without Chromium the test is skipped, except
under CI, where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.apps import add_channel
from tests.support.console_helpers import HOSTILE, HOSTILE_ID, UNREADABLE, hostile_wamm
from tests.support.procs import ROOT, Process, free_port, serve

CHROMIUM = os.environ.get("ACKLOG_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(ROOT) / ".artifacts" / "console"
KEY = "acklog_browser-test-key-9876543210"

if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    if os.environ.get("CI"):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: .ci/run installs it")
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )

playwright_api = pytest.importorskip("playwright.async_api")


async def _until(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Await ``check()`` until it returns something truthy, within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.1)
    raise AssertionError(what)  # pragma: no cover (the timeout raises first)


@pytest.fixture
async def live(dsn: str) -> AsyncIterator[dict[str, Any]]:
    """``acklog serve`` with its projector, a WAHA channel fed by ``acklog simulate``, a
    hostile WAMM message and a quarantined event, all folded."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = await serve(dsn, port, ACKLOG_API_KEY=KEY).start()
    try:
        await add_channel(dsn, "wa", "waha")
        sim = Process(["simulate", "wa", "--url", base, "--seed", "11"], dsn)
        await sim.start()
        assert sim.proc is not None
        async with asyncio.timeout(60):
            assert await sim.proc.wait() == 0, "\n".join(sim.lines)
        await sim.stop()
        outgoing = next(
            line.split()[1] for line in sim.lines if line.strip().startswith("outgoing ")
        )
        wamm = await add_channel(dsn, "shop", "wamm")
        async with aiohttp.ClientSession() as s:
            for body in (hostile_wamm(), UNREADABLE):
                url = f"{base}/hooks/shop?token={wamm}"
                async with s.post(url, data=body, headers={"Content-Type": "application/json"}):
                    pass

            async def folded() -> bool:
                headers = {"Authorization": f"Bearer {KEY}"}
                async with s.get(f"{base}/v1/quarantine", headers=headers) as r:
                    quarantined = (await r.json())["items"]
                async with s.get(f"{base}/v1/channels/shop/messages", headers=headers) as r:
                    return bool(quarantined) and bool((await r.json())["items"])

            await _until(folded, "the projector folded the events")
        yield {"base": base, "outgoing": outgoing, "wamm": wamm}
    finally:
        await server.stop()


async def test_a_person_finds_a_simulated_message_and_why_it_is_in_its_state(
    live: dict[str, Any],
) -> None:
    base, key = live["base"], live["outgoing"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: dialogs.append(d.message))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # sign in with the keyboard only: the key goes in a form, never in a URL
            await page.goto(base + "/")
            assert page.url == base + "/ui/login"
            await page.get_by_label("API key").fill("wrong key")
            await page.keyboard.press("Enter")
            await page.get_by_role("alert").wait_for()
            assert "not the API key" in await page.get_by_role("alert").inner_text()
            await page.get_by_label("API key").fill(KEY)
            await page.keyboard.press("Enter")
            await page.get_by_role("heading", name="Channels").wait_for()
            assert page.url == base + "/ui/"
            await page.screenshot(path=str(SHOTS / "channels.png"), full_page=True)
            cookies = {c["name"]: c for c in await page.context.cookies()}
            assert cookies["acklog_console"]["httpOnly"]
            assert cookies["acklog_console"]["sameSite"] == "Strict"
            assert KEY not in cookies["acklog_console"]["value"]

            # the skip link is the first stop of the keyboard, and leads to the content
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.textContent") == ("Skip to content")

            # open the channel, find the message simulate sent
            await page.get_by_role("link", name="wa", exact=True).click()
            await page.get_by_role("heading", name=re.compile("Messages of wa")).wait_for()
            await page.get_by_label("Message id, chat or phone").fill(key)
            await page.get_by_label("Message id, chat or phone").press("Enter")
            await page.wait_for_url(re.compile(r"\?q="))
            await page.screenshot(path=str(SHOTS / "messages.png"), full_page=True)
            await page.locator("table.messages tbody a").first.click()
            await page.get_by_role("heading", name="Steps").wait_for()
            assert urllib.parse.unquote(page.url).endswith(key)

            # its steps, in order, each with our time; the picture and the reasons
            steps = page.locator("ol.steps > li")
            names = await steps.locator(".name").all_inner_texts()
            assert names == ["sending", "sent", "delivered", "read", "played"]
            times = await steps.locator("[data-role=our-time]").all_inner_texts()
            assert len(times) == 4
            assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", t) for t in times)
            why = await page.locator(".why").inner_text()
            assert "It is read because event #" in why and "out of order" in why
            assert await page.locator("tr.ooo").count() >= 1
            assert await page.locator("tr.dup").count() == 1
            await page.screenshot(path=str(SHOTS / "message.png"), full_page=True)

            # each step links to its raw event: headers, pretty body, raw body, facts
            await steps.nth(3).get_by_role("link").click()
            await page.get_by_role("heading", name="Headers as stored").wait_for()
            pretty = await page.locator("[data-role=pretty-body]").inner_text()
            raw = await page.locator("[data-role=raw-body]").inner_text()
            assert key in pretty and key in raw and pretty != raw
            facts = await page.locator("ol.facts").inner_text()
            assert "→ read" in facts
            await page.screenshot(path=str(SHOTS / "event.png"), full_page=True)

            # the quarantine lists the unreadable event with its reason
            await page.get_by_role("link", name="Quarantine").click()
            await page.get_by_role("heading", name=re.compile("Quarantine")).wait_for()
            reasons = await page.locator("table.quarantine td.fail").all_inner_texts()
            assert len(reasons) == 1 and "JSON" in reasons[0]
            await page.screenshot(path=str(SHOTS / "quarantine.png"), full_page=True)

            # a hostile message text is shown as text, and nothing in it runs
            await page.goto(f"{base}/ui/channels/shop/messages/{HOSTILE_ID}")
            shown = await page.locator("[data-role=message-text]").inner_text()
            assert shown == HOSTILE
            assert await page.evaluate("typeof window.__pwned") == "undefined"
            assert await page.locator("img[src=x]").count() == 0

            # the live view follows new events
            await page.goto(f"{base}/ui/events/live")
            rows = page.locator("#events-body > tr")
            before = await rows.count()
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    f"{base}/hooks/shop?token={live['wamm']}",
                    data=hostile_wamm(),
                    headers={"Content-Type": "application/json"},
                ):
                    pass
            # (no wait_for_function: the policy forbids eval, also to Playwright)
            await rows.nth(before).wait_for(timeout=15_000)
            assert "dup of" in await rows.first.inner_text()
            await page.screenshot(path=str(SHOTS / "live.png"), full_page=True)

            await page.get_by_role("link", name="Projector").click()
            await page.get_by_text("Folded up to").wait_for()
            assert "acklog-projector" in await page.locator("dl.kv").inner_text()
            await page.screenshot(path=str(SHOTS / "projector.png"), full_page=True)

            # signing out: the pages are closed again
            await page.get_by_role("button", name="Sign out").click()
            await page.wait_for_url(base + "/ui/login")
            await page.goto(base + "/ui/events")
            assert page.url.startswith(base + "/ui/login")
            assert dialogs == [] and errors == []
        finally:
            await browser.close()
