"""Live updates: a learner's escalation and messages reach an open console's event stream,
and the browser flow (log in, claim, reply, resolve) in real headless Chromium."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from bot.mentoring.accounts import add_mentor
from bot.storage.models import Handoff
from tests.conftest import Gateway
from tests.doubles import free_port
from tests.test_console_web import PASSWORD, handoff_responder, tg_update

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
async def served(gateway: Gateway) -> AsyncIterator[str]:
    """The gateway app on a real socket (the app's lifespan is already running in the fixture)."""
    gateway.rasa.responder = handoff_responder
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(gateway.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def next_event(lines: AsyncIterator[str], wanted: str) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data:"):
            data = json.loads(line[5:])
            if data.get("type") == wanted:
                return dict(data)
    raise AssertionError("stream ended")


async def test_escalation_and_learner_messages_arrive_on_the_event_stream(gateway: Gateway, served: str) -> None:
    async with gateway.services.db.session() as s:
        await add_mentor(s, "amal@example.org", PASSWORD, "en")
        await add_mentor(s, "farid@example.org", PASSWORD, "fa")
    # http (not https) here, so the test client may send the Secure cookie back: build the session by hand
    from bot.web.console.auth import COOKIE_NAME, open_session, signed_cookie

    cookie = signed_cookie(gateway.services.settings, await open_session(gateway.services, 1))
    async with httpx.AsyncClient(base_url=served, cookies={COOKIE_NAME: cookie}, timeout=10) as client:
        async with client.stream("GET", "/console/events") as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            await gateway.telegram(tg_update(1, "Can I speak with a real person about my course"))
            event = await asyncio.wait_for(next_event(lines, "handoff_new"), 10)
            assert event["language"] == "en" and "text" not in event
            await gateway.settle()
            await gateway.telegram(tg_update(2, "My exam was yesterday and I was ill"))
            message = await asyncio.wait_for(next_event(lines, "message"), 10)
            assert message["handoff_id"] == event["handoff_id"]


@pytest.mark.browser
async def test_browser_login_claim_reply_resolve(gateway: Gateway, served: str) -> None:
    from playwright.async_api import async_playwright

    async with gateway.services.db.session() as s:
        await add_mentor(s, "amal@example.org", PASSWORD, "ar,en", display_name="Amal")
    # an Arabic learner asks for a person; her messages must show right to left
    arabic = tg_update(1, "أريد التحدث مع إنسان من فضلك", chat_id=5150, lang="ar")
    await gateway.telegram(arabic)
    await gateway.settle()
    async with gateway.services.db.session() as s:
        h = (await s.execute(select(Handoff))).scalar_one()
    assert h.language == "ar"

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            # the console runs under its Content-Security-Policy: Chromium reports every refusal here
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            first = await page.goto(served + "/console")
            assert first is not None and "script-src 'self'" in (await first.all_headers())["content-security-policy"]
            await page.fill("input[name=email]", "amal@example.org")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_selector(f"li[data-handoff='{h.id}']")
            await page.wait_for_function("document.body.getAttribute('data-live') === '1'")
            # a second learner arrives while the queue is open: it shows up without a reload
            await gateway.telegram(tg_update(2, "Can I speak with a real person about my course", chat_id=5151))
            await page.wait_for_selector("li[data-handoff]:nth-of-type(2)", timeout=10000)
            await page.click(f"li[data-handoff='{h.id}'] button.claim")
            await page.wait_for_selector("form.reply textarea")
            bubble = page.locator(".msg.learner .bubble").first
            assert await bubble.get_attribute("dir") == "rtl"
            await page.fill("form.reply textarea", "مرحبا، أنا أمل من فريق المرشدين. كيف أستطيع مساعدتك؟")
            await page.click("form.reply button.send")
            await page.wait_for_selector(".msg.mentor")
            # the learner answers; the transcript updates live
            await gateway.telegram(tg_update(3, "شكرا، عندي مشكلة في الامتحان", chat_id=5150, lang="ar"))
            await page.wait_for_selector("text=عندي مشكلة في الامتحان", timeout=10000)
            await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
            await page.set_viewport_size({"width": 1280, "height": 800})
            await page.screenshot(path=str(ARTIFACTS / "console-desktop.png"))
            await page.click("button.resolve")
            await page.wait_for_url(served + "/console?notice=resolved")
            assert violations == []
        finally:
            await browser.close()
    async with gateway.services.db.session() as s:
        state = (await s.execute(select(Handoff.state).where(Handoff.id == h.id))).scalar_one()
    assert state == "resolved"
    assert any("أمل" in m["text"] for m in gateway.bot_api.sent)


@pytest.mark.browser
async def test_browser_web_chat_works_under_its_content_security_policy(gateway: Gateway, served: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            first = await page.goto(served + "/chat?lang=en")
            assert first is not None and "content-security-policy" in await first.all_headers()
            await page.fill("#text", "hello from the browser")
            await page.press("#text", "Enter")
            await page.wait_for_selector("text=echo: hello from the browser", timeout=10000)
            assert violations == []
        finally:
            await browser.close()
