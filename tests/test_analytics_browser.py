"""The staff pages in headless Chromium under the console's Content-Security-Policy (bot/web/headers.py:
no inline script or style): the analytics page with its charts (screenshot in
tests/artifacts/analytics.png) and a broadcast's progress updating live through a static script."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.mentoring.accounts import add_mentor
from bot.reminders.broadcasts import create_broadcast, expand_due_broadcasts
from bot.runtime.services import Services
from bot.runtime.settings import LANGUAGES
from bot.storage.db import utcnow
from bot.storage.models import Contact, Handoff, InboundMessage, Outbox, Reminder, ReminderAssignment
from tests.conftest import Gateway
from tests.test_analytics_console import doubtful
from tests.test_console_live import served  # noqa: F401  (the gateway on a real socket)
from tests.test_console_web import PASSWORD

ARTIFACTS = Path(__file__).parent / "artifacts"
INTENTS = ("ask_deadline", "ask_enrolment_status", "greet", "ask_recognition", "report_technical_problem",
           "thank", "ask_certificate", "nlu_fallback", "out_of_scope", "request_human")


async def seed_month(services: Services) -> None:
    """Thirty days of activity in five languages, and an experiment with outcomes."""
    rng = random.Random(16)
    now = utcnow()
    async with services.db.session() as s:
        contacts = [Contact(key=f"telegram:{8000 + i}", channel="telegram", address=str(8000 + i),
                            language=LANGUAGES[i % 5], learner_id=f"L{8000 + i}") for i in range(60)]
        s.add_all(contacts)
        await s.flush()
        rows: list[Any] = []
        for day in range(30):
            base = now - timedelta(days=30 - day)
            for n in range(rng.randint(20, 45)):
                contact = rng.choice(contacts)
                intent = rng.choice(INTENTS)
                rows.append(InboundMessage(
                    contact_id=contact.id, channel="telegram", dedup_key=f"seed:{day}:{n}", text="…",
                    status="done", created_at=base + timedelta(minutes=rng.randint(0, 1400)), intent=intent,
                    intent_confidence=rng.uniform(0.3, 1.0), fallback=intent in ("nlu_fallback", "out_of_scope")))
            for _ in range(rng.randint(1, 4)):
                contact = rng.choice(contacts)
                created = base + timedelta(minutes=rng.randint(0, 1300))
                rows.append(Handoff(contact_id=contact.id, reason="request_human", language=contact.language or "en",
                                    state="resolved", urgent=rng.random() < 0.2, created_at=created,
                                    resolved_at=created + timedelta(minutes=rng.randint(20, 300)),
                                    satisfaction=rng.choice([None, 3, 4, 5, 5, 2])))
                rows.append(Outbox(contact_id=contact.id, channel="telegram", origin="mentor", text="…",
                                   status="sent", created_at=created + timedelta(minutes=rng.randint(2, 30))))
            for n in range(rng.randint(5, 15)):
                contact = rng.choice(contacts)
                out = Outbox(contact_id=contact.id, channel="telegram", origin="reminder", text="…",
                             status="sent" if rng.random() < 0.95 else "failed",
                             delivery_status=rng.choice(["delivered", "read", "read", None]), created_at=base)
                s.add(out)
                await s.flush()
                rows.append(Reminder(idempotency_key=f"reminder:seed:{day}:{n}", learner_id="L", contact_id=contact.id,
                                     deadline_id=f"{day}-{n}", offset_h=24, due_at=base + timedelta(days=1),
                                     send_at=base, status="sent", outbox_id=out.id))
        for i in range(900):
            held = rng.random() < 0.3
            rows.append(ReminderAssignment(
                learner_id=f"X{i}", deadline_id="d", arm="held_out" if held else "reminded",
                language=LANGUAGES[i % 5], due_at=now - timedelta(days=rng.randint(1, 29)),
                on_time=rng.random() < (0.48 if held else 0.63), checked_at=now))
        s.add_all(rows)


@pytest.mark.browser
async def test_analytics_page_and_live_broadcast_progress_in_chromium(gateway: Gateway, served: str) -> None:  # noqa: F811
    from playwright.async_api import async_playwright, expect

    async with gateway.services.db.session() as s:
        await add_mentor(s, "lead@example.org", PASSWORD, "en", "lead", display_name="Noor")
    await seed_month(gateway.services)
    await doubtful(gateway, 8501, "wen is the exam for stats 101??")
    await doubtful(gateway, 8502, "متى الامتحان؟", "ar")
    ARTIFACTS.mkdir(exist_ok=True)
    today = utcnow().date()
    violations: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            login = await page.goto(served + "/console/login")
            assert login is not None and "style-src 'self'" in (await login.all_headers())["content-security-policy"]
            await page.fill("input[name=email]", "lead@example.org")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(served + "/console")
            await page.click("nav.staff a[href='/console/analytics']")
            await page.fill("input[name=from]", (today - timedelta(days=29)).isoformat())
            await page.fill("input[name=to]", today.isoformat())
            await page.click("form.filters button[type=submit]")
            await page.wait_for_selector("section.charts img")
            # (page.evaluate runs in its own world; wait_for_function would need 'unsafe-eval' under the policy)
            for _ in range(100):
                if await page.evaluate(
                        "() => [...document.querySelectorAll('section.charts img')]"
                        ".every(i => i.complete && i.naturalWidth > 0)"):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the charts did not load")
            assert await page.locator("section.charts img").count() == 8
            assert "—" not in await page.locator(".figure.effect .big").inner_text()  # enough data for the effect
            await page.screenshot(path=str(ARTIFACTS / "analytics.png"), full_page=True)

            # the review inbox and the broadcast form (screenshots for a look; not committed)
            await page.goto(f"{served}/console/review")
            await page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)
            await page.goto(f"{served}/console/broadcasts")
            await page.fill("textarea[name=text_ar]", "تبدأ الامتحانات يوم الاثنين")
            await page.fill("textarea[name=text_en]", "Exams start Monday")
            await page.click("button.count-button")
            await expect(page.locator(".preview .recipients")).to_contain_text("24")
            await page.screenshot(path=str(ARTIFACTS / "broadcasts.png"), full_page=True)

            # a broadcast's page follows its progress without a reload
            broadcast = await create_broadcast(gateway.services, texts={"en": "Exams start Monday"},
                                               segment={"language": ["en"]}, created_by="mentor:1")
            await page.goto(f"{served}/console/broadcasts/{broadcast.id}")
            assert await page.locator("[data-field=status]").inner_text() == "scheduled"
            await expand_due_broadcasts(gateway.services)
            await expect(page.locator("[data-field=recipients]")).to_have_text("12", timeout=10000)
            await expect(page.locator("[data-field=status]")).to_have_text("sending")
        finally:
            await browser.close()
    assert violations == []
