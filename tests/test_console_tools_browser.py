"""In headless Chromium: browser notifications and the sound for an urgent learner (after the mentor allowed
them), and inserting a saved reply with "/" in the reply box."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select

from bot.mentoring.accounts import add_mentor
from bot.storage.models import Handoff, SavedReply
from tests.conftest import Gateway
from tests.test_console_live import served  # noqa: F401  (a fixture)
from tests.test_console_web import PASSWORD, tg_update

# records what the page asks of the browser: notifications shown, tones played; the tab counts as hidden
RECORDER = """
window.__notes = []; window.__tones = [];
class FakeNotification {
  constructor(title, options) { window.__notes.push({title: title, tag: options && options.tag}); }
  close() {}
}
FakeNotification.permission = "default";
FakeNotification.requestPermission = function () {
  FakeNotification.permission = "granted"; return Promise.resolve("granted");
};
window.Notification = FakeNotification;
class FakeAudio {
  constructor() { this.state = "suspended"; this.currentTime = 0; this.destination = {}; }
  resume() { this.state = "running"; return Promise.resolve(); }
  createOscillator() {
    return {frequency: {value: 0}, connect() {}, start() { window.__tones.push(this.frequency.value); }, stop() {}};
  }
  createGain() { return {gain: {setValueAtTime() {}, exponentialRampToValueAtTime() {}}, connect() {}}; }
}
window.AudioContext = FakeAudio;
Object.defineProperty(document, "visibilityState", {get: function () { return "hidden"; }});
"""


async def until(page: Any, expression: str, timeout_s: float = 10.0) -> None:
    """Wait until `expression` holds in the page. Playwright's wait_for_function evaluates its predicate
    with eval in the page, which the console's Content-Security-Policy (no unsafe-eval) forbids."""
    deadline = time.monotonic() + timeout_s
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"never true: {expression}")
        await asyncio.sleep(0.05)


def distress(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "go on" in str(body.get("message")):
        return [{"recipient_id": body["sender"], "text": "You are not alone."},
                {"recipient_id": body["sender"],
                 "custom": {"sanad": {"command": "handoff", "reason": "distress", "urgent": True}}}]
    return [{"recipient_id": body["sender"],
             "custom": {"sanad": {"command": "handoff", "reason": "request_human", "urgent": False}}}]


@pytest.mark.browser
async def test_urgent_notification_sound_and_saved_reply_picker(gateway: Gateway, served: str) -> None:  # noqa: F811
    from playwright.async_api import async_playwright

    gateway.rasa.responder = distress
    async with gateway.services.db.session() as s:
        await add_mentor(s, "amal@example.org", PASSWORD, "en", display_name="Amal")
        s.add(SavedReply(language="en", name="docs", text="Hi {first_name}, please send the documents."))
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page()
            await page.add_init_script(RECORDER)
            await page.goto(served + "/console")
            await page.fill("input[name=email]", "amal@example.org")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await until(page, "document.body.getAttribute('data-live') === '1'")
            button = page.locator("#notify-on")
            assert await button.is_visible()
            await button.click()
            await until(page, "Notification.permission === 'granted'")
            await page.wait_for_selector("#notify-on", state="hidden")  # allowed: the offer goes away

            await gateway.telegram(tg_update(1, "I can't go on anymore", chat_id=6161))
            await until(page, "window.__notes.length > 0")
            notes = await page.evaluate("window.__notes")
            tones = await page.evaluate("window.__tones")
            assert notes[0]["title"] == "Urgent: a learner needs a mentor"
            assert len(tones) == 3 and set(tones) == {880}  # the urgent sound: three high tones

            await gateway.settle()
            async with gateway.services.db.session() as s:
                h = (await s.execute(select(Handoff))).scalar_one()
            await page.click(f"li[data-handoff='{h.id}'] button.claim")
            await page.wait_for_selector("form.reply textarea")
            await page.type("form.reply textarea", "/do")
            await page.wait_for_selector("#saved-suggest button.first")
            await page.keyboard.press("Tab")
            assert await page.input_value("form.reply textarea") == "Hi Lina, please send the documents."
        finally:
            await browser.close()
