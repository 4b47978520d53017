"""Issue 11, item 8: guessing LINK codes from many fresh web-chat ids is slowed per source address and
over everyone, shared through Redis, and the mentors' leads are alerted; the per-chat lock stays."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from bot.learners import linking
from bot.mentoring.events import CONSOLE_CHANNEL
from bot.runtime.services import Services
from bot.runtime.settings import LANGUAGES
from bot.security.throttle import Throttle
from bot.storage.models import AuditEntry, Contact
from integrations.platform import DEMO_PLATFORM_TOKEN, PlatformClient
from tests.conftest import Gateway, release
from tests.test_console_web import login, mentor
from tests.test_linking import demo_url  # noqa: F401  (fixture)

HEADERS = {"x-requested-with": "sanad-webchat"}
ATTEMPTS = 300


def classifier(gw: Gateway) -> dict[str, re.Pattern[str]]:
    """Each linking answer (in any language, any number of minutes) as a pattern."""
    patterns: dict[str, re.Pattern[str]] = {}
    for key in ("link_invalid_code", "link_rate_limited", "link_paused", "link_success", "link_success_noname"):
        templates = [re.escape(gw.services.catalogue.entry(key, lang)) for lang in LANGUAGES]
        patterns[key] = re.compile("|".join(t.replace(r"\{minutes\}", r"\d+").replace(r"\{first_name\}", ".+")
                                            for t in templates))
    return patterns


def client_id(n: int) -> str:
    return f"fresh-browser-{n:06d}"


def prepare(gateway: Gateway, platform_url: str) -> Gateway:
    gateway.services.extras["platform"] = PlatformClient(platform_url, DEMO_PLATFORM_TOKEN, gateway.services.coord)
    # the message limits of the web chat are item 9: here they must not hide the link limits
    gateway.services.settings = gateway.services.settings.replace(
        webchat_limit_per_address="100000/minute", forwarded_allow_ips=("127.0.0.1",))
    return gateway


@pytest.fixture
async def web(any_gateway: Gateway, demo_url: str) -> AsyncIterator[Gateway]:  # noqa: F811
    """On PostgreSQL + Redis, then on the embedded default (SQLite, counters in the process)."""
    yield prepare(any_gateway, demo_url)


@pytest.fixture
async def web_on_redis(gateway: Gateway, demo_url: str) -> AsyncIterator[Gateway]:  # noqa: F811
    yield prepare(gateway, demo_url)


_message_ids = iter(range(1, 1_000_000))


async def post(gw: Gateway, n: int, text: str, address: str = "203.0.113.50") -> int:
    body = {"client_id": client_id(n), "message_id": f"m{next(_message_ids)}", "text": text, "language": "en"}
    response = await gw.client.post("/chat/api/messages", json=body, headers={**HEADERS, "X-Forwarded-For": address})
    return response.status_code


async def answers(gw: Gateway, numbers: range | list[int]) -> Counter[str]:
    patterns = classifier(gw)
    found: Counter[str] = Counter()
    for n in numbers:
        messages = (await gw.client.get(f"/chat/api/messages?client_id={client_id(n)}&after=0")).json()["messages"]
        for message in messages:
            found[next((key for key, p in patterns.items() if p.fullmatch(message["text"])), "other")] += 1
    return found


async def linked(gw: Gateway, n: int) -> str | None:
    async with gw.services.db.session() as s:
        contact = (await s.execute(select(Contact).where(Contact.key == f"web:{client_id(n)}"))).scalar_one()
    return contact.learner_id


async def guesses(gw: Gateway, numbers: range, address: str | None = None) -> None:
    for n in numbers:
        code = linking.make_code()
        assert await post(gw, n, f"LINK {code}", address or f"198.18.{n // 250}.{n % 250 + 1}") == 200
    await gw.settle()


async def test_wrong_codes_from_many_fresh_ids_at_one_address_are_slowed(web: Gateway) -> None:
    issued = await linking.issue_link_token(web.services, "L1001")
    await guesses(web, range(ATTEMPTS), address="203.0.113.50")
    # ten wrong codes are checked (LINK_FAILURES_PER_ADDRESS = 10/15 minutes), then this address waits
    assert await answers(web, range(ATTEMPTS)) == Counter({"link_invalid_code": 10, "link_rate_limited": 290})
    # the right code from yet another fresh id at that address is not even looked at
    assert await post(web, 1000, issued["whatsapp_text"], "203.0.113.50") == 200
    await web.settle()
    assert await answers(web, [1000]) == Counter({"link_rate_limited": 1}) and await linked(web, 1000) is None
    # a learner at another address links with it
    assert await post(web, 1001, issued["whatsapp_text"], "192.0.2.77") == 200
    await web.settle()
    assert await answers(web, [1001]) == Counter({"link_success": 1}) and await linked(web, 1001) == "L1001"


async def test_wrong_codes_from_everywhere_pause_code_linking_and_alert_the_leads(
    web: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await mentor(web, "lead@example.org", "en", role="lead")
    await mentor(web, "amal@example.org", "en")
    issued = await linking.issue_link_token(web.services, "L1001")
    events: list[dict[str, object]] = []

    async def listen() -> None:
        async with web.services.coord.subscribe(CONSOLE_CHANNEL) as queue:
            while True:
                events.append(await queue.get())

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.05)  # (the subscription is open before the attack)
    try:
        await guesses(web, range(ATTEMPTS))  # every guess from an address of its own
        for _ in range(100):
            if any(e.get("type") == "security_alert" for e in events):
                break
            await asyncio.sleep(0.02)
    finally:
        listener.cancel()
    # LINK_FAILURES_GLOBAL = 100/10 minutes: then codes are not checked for a while
    assert await answers(web, range(ATTEMPTS)) == Counter({"link_invalid_code": 100, "link_paused": 200})
    assert await post(web, 1000, issued["whatsapp_text"], "192.0.2.200") == 200
    await web.settle()
    assert await answers(web, [1000]) == Counter({"link_paused": 1}) and await linked(web, 1000) is None

    # the leads hear of it once: a warning in the log, an audit entry, a live event, a notice in the console
    warnings = [r for r in caplog.records if "security alert link_guessing" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    async with web.services.db.session() as s:
        alerts = (await s.execute(select(AuditEntry).where(AuditEntry.action == "security.link_guessing"))).all()
    assert len(alerts) == 1
    assert [e for e in events if e.get("type") == "security_alert"] == [
        {"type": "security_alert", "kind": "link_guessing", "leads_only": True}]
    notice = web.services.catalogue.text("console_alert_link_guessing", "en", ago="").split("(")[0]
    transport = httpx.ASGITransport(app=web.app)
    for email, sees in (("lead@example.org", True), ("amal@example.org", False)):
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as browser:
            await browser.get("/console/lang/en")
            await login(browser, email)
            assert (notice in (await browser.get("/console")).text) is sees, email


async def test_the_global_failure_count_is_shared_by_every_gateway(web_on_redis: Gateway) -> None:
    web = web_on_redis
    await guesses(web, range(100))
    other = Services.build(web.services.settings)  # a second gateway on the same Redis
    try:
        spec = web.services.settings.link_failures_global
        assert not await Throttle.of("link-fail-global", spec).allowed(other.rate_limits, linking.GLOBAL_ID)
        assert await Throttle.of("link-fail-global", spec).allowed(web.services.rate_limits, "another-id")
    finally:
        await release(other, None)


async def test_the_per_chat_lock_stays(web: Gateway) -> None:
    issued = await linking.issue_link_token(web.services, "L1001")
    for _ in range(5):
        assert await post(web, 7, f"LINK {linking.make_code()}", "192.0.2.1") == 200
        await web.settle()
    assert await post(web, 7, issued["whatsapp_text"], "192.0.2.1") == 200
    await web.settle()
    assert await answers(web, [7]) == Counter({"link_invalid_code": 5, "link_rate_limited": 1})
    assert await linked(web, 7) is None
