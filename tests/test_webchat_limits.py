"""Issue 11, item 9: the anonymous web chat is rate limited per browser and per source address with a
translated "slow down" answer that loses nothing, open hand-offs from it are capped, and it can be
switched off (WEBCHAT_ENABLED)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import func, select

from bot.runtime.settings import LANGUAGES
from bot.storage.models import Handoff, InboundMessage
from bot.web.app import create_app
from tests.conftest import Gateway
from tests.test_console_web import handoff_responder, tg_update

HEADERS = {"x-requested-with": "sanad-webchat"}


async def post(gw: Gateway, client_id: str, message_id: str, text: str, language: str = "en",
               address: str = "203.0.113.9") -> httpx.Response:
    transport = httpx.ASGITransport(app=gw.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post("/chat/api/messages", headers=HEADERS, json={
            "client_id": client_id, "message_id": message_id, "text": text, "language": language})


async def stored(gw: Gateway) -> int:
    async with gw.services.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(InboundMessage))).scalar_one())


def slow_down_pattern(gw: Gateway, language: str) -> re.Pattern[str]:
    template = gw.services.catalogue.entry("webchat_slow_down", language)
    return re.compile(re.escape(template).replace(r"\{seconds\}", r"\d+"))


async def test_a_burst_from_one_browser_is_slowed_with_a_translated_answer(gateway: Gateway) -> None:
    statuses = [(await post(gateway, "burst-browser-0001", f"m{n}", f"message {n}")).status_code for n in range(300)]
    assert statuses[:12] == [200] * 12 and set(statuses[12:]) == {429}  # WEBCHAT_LIMIT_PER_CLIENT 12/minute
    await gateway.settle()
    assert await stored(gateway) == 12 and len(gateway.rasa.messages) == 12
    for index, language in enumerate(LANGUAGES):
        client_id = f"burst-browser-{index + 10:04d}"
        for n in range(12):
            assert (await post(gateway, client_id, f"m{n}", "hello", language, f"198.51.100.{index}")).status_code \
                == 200
        refused = await post(gateway, client_id, "m12", "hello", language, f"198.51.100.{index}")
        assert refused.status_code == 429
        body: dict[str, Any] = refused.json()
        assert body["error"] == "slow_down" and 1 <= body["retry_after_s"] <= 60
        assert refused.headers["retry-after"] == str(body["retry_after_s"])
        assert slow_down_pattern(gateway, language).fullmatch(body["message"]), (language, body["message"])


async def test_many_browsers_at_one_address_are_slowed_together(gateway: Gateway) -> None:
    statuses = [(await post(gateway, f"one-address-{n:06d}", "m1", "hi")).status_code for n in range(300)]
    assert statuses[:60] == [200] * 60 and set(statuses[60:]) == {429}  # WEBCHAT_LIMIT_PER_ADDRESS 60/minute
    # another address is not held up by this one
    assert (await post(gateway, "elsewhere-000001", "m1", "hi", address="192.0.2.44")).status_code == 200


async def test_a_refused_message_is_kept_and_sent_once_the_wait_is_over(gateway: Gateway) -> None:
    for n in range(12):
        await post(gateway, "patient-browser-01", f"m{n}", f"message {n}")
    assert (await post(gateway, "patient-browser-01", "m12", "the thirteenth")).status_code == 429
    # the page keeps it and sends it again after Retry-After; here the window is widened instead of waited out
    gateway.services.settings = gateway.services.settings.replace(webchat_limit_per_client="100/minute")
    for _ in range(2):
        assert (await post(gateway, "patient-browser-01", "m12", "the thirteenth")).status_code == 200
    await gateway.settle()
    assert [m["message"] for m in gateway.rasa.messages].count("the thirteenth") == 1


async def test_open_handoffs_from_the_web_chat_are_capped(gateway: Gateway) -> None:
    gateway.rasa.responder = handoff_responder
    gateway.services.settings = gateway.services.settings.replace(webchat_max_open_handoffs=2)
    for n in range(3):
        assert (await post(gateway, f"wants-a-human-{n:03d}", "m1", "I want a human", address=f"192.0.2.{n}")
                ).status_code == 200
        await gateway.settle()
    full = gateway.services.catalogue.text("handoff_webchat_full", "en")
    third = (await gateway.client.get("/chat/api/messages?client_id=wants-a-human-002&after=0")).json()["messages"]
    assert [m["text"] for m in third] == [full]
    async with gateway.services.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Handoff))).scalar_one() == 2
    # learners on Telegram are not held up by the web chat's cap
    await gateway.telegram(tg_update(1, "I want a human"))
    await gateway.settle()
    async with gateway.services.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Handoff))).scalar_one() == 3


async def test_the_web_chat_can_be_switched_off(gateway: Gateway) -> None:
    gateway.services.settings = gateway.services.settings.replace(webchat_enabled=False)
    app = create_app(gateway.services, run_worker=False, redelivery_interval_s=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        assert (await client.get("/chat")).status_code == 404
        assert (await client.get("/chat/static/webchat.js")).status_code == 404
        posted = await client.post("/chat/api/messages", headers=HEADERS,
                                   json={"client_id": "x" * 20, "message_id": "m1", "text": "hi"})
        assert posted.status_code == 404
        home = await client.get("/")
        assert home.status_code == 307 and home.headers["location"] == "/console"
    assert await stored(gateway) == 0
