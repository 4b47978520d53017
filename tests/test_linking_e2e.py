"""End to end: link over the Telegram webhook, ask for the next deadline, the Bot API double gets course and local date.

Rasa is a double whose responder plays the dialogue's part (ask_deadline -> action_deadlines) by running the real
action through rasa-sdk's executor, against the demo platform over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date
from rasa_sdk.executor import ActionExecutor
from sqlalchemy import select

import flows.learner as learner_flows
from bot.learners import linking
from bot.storage.models import Contact
from integrations.demo_platform import BackgroundServer, demo_app
from integrations.platform import DEMO_PLATFORM_TOKEN, PlatformClient
from tests.conftest import Gateway
from tests.test_flows_learner import action_call


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with BackgroundServer(demo_app()) as server:
        yield server.url


def update(update_id: int, text: str, chat_id: int = 4242) -> dict[str, Any]:
    entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else []
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": 1732790000, "text": text, "entities": entities,
        "chat": {"id": chat_id, "type": "private", "first_name": "Grace"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Grace", "language_code": "en"},
    }}


def deadline_responder(demo_url: str) -> Any:
    executor = ActionExecutor()
    executor.register_package("flows")

    async def run_action(body: dict[str, Any]) -> list[dict[str, Any]]:
        meta = body.get("metadata") or {}
        client = PlatformClient(demo_url, DEMO_PLATFORM_TOKEN)
        learner_flows.set_platform_client(client)
        try:
            call = action_call("action_deadlines", learner_id=meta.get("learner_id"), language=meta.get("language"),
                               timezone=meta.get("timezone"), pin_required=bool(meta.get("pin_required")),
                               text=body.get("message", ""))
            call["sender_id"] = call["tracker"]["sender_id"] = body["sender"]
            result = await executor.run(call)
        finally:
            learner_flows.set_platform_client(None)
            await client.aclose()
        assert result is not None
        return result.responses

    def responder(body: dict[str, Any]) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(1) as pool:  # the double's handler is synchronous
            responses = pool.submit(asyncio.run, run_action(body)).result()
        out = []
        for r in responses:
            item = {"recipient_id": body["sender"], **{k: r[k] for k in ("text", "buttons", "custom") if r.get(k)}}
            out.append(item)
        return out

    return responder


async def test_link_over_telegram_then_ask_for_the_next_deadline(gateway: Gateway, demo_url: str) -> None:
    gateway.services.platform_client = PlatformClient(demo_url, DEMO_PLATFORM_TOKEN, gateway.services.coord)
    gateway.rasa.responder = deadline_responder(demo_url)
    issued = await linking.issue_link_token(gateway.services, "L1003")

    assert (await gateway.telegram(update(1, f"/start {issued['token']}"))).status_code == 200
    await gateway.settle()
    sent = await gateway.bot_api.wait_for(1)
    assert "Grace" in sent[0]["text"]
    assert gateway.rasa.messages == []  # the gateway answered the link itself
    async with gateway.services.db.session() as session:
        contact = (await session.execute(select(Contact).where(Contact.key == "telegram:4242"))).scalar_one()
    assert (contact.learner_id, contact.timezone) == ("L1003", "Africa/Nairobi")

    assert (await gateway.telegram(update(2, "when is my next deadline?"))).status_code == 200
    await gateway.settle()
    sent = await gateway.bot_api.wait_for(2)
    reply = sent[1]["text"]
    assert gateway.rasa.messages[0]["metadata"]["learner_id"] == "L1003"
    assert "Module 2 peer review" in reply and "Introduction to Data Science" in reply
    lines = reply.splitlines()
    assert "tomorrow" in lines[1]
    in_a_week = datetime.now(UTC).astimezone(ZoneInfo("Africa/Nairobi")).date() + timedelta(days=7)
    assert format_date(in_a_week, format="long", locale="en") in lines[2]
    assert "Module 1 quiz" not in reply  # already submitted
