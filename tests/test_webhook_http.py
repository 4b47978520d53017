"""Webhooks at the HTTP level: bodies the database could never store, sizes, methods, content types."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from bot.storage.models import Contact, InboundMessage
from tests.conftest import Gateway
from tests.test_gateway_telegram import count, private_message
from tests.test_gateway_whatsapp import inbound


@pytest.fixture
def gateway(any_gateway: Gateway) -> Gateway:
    """Every test of this module runs on PostgreSQL + Redis and on SQLite without Redis."""
    return any_gateway


async def test_nul_characters_and_lone_surrogates_are_stored_cleaned_and_answered(any_gateway: Gateway) -> None:
    gw = any_gateway
    update = private_message(900, text="hi\u0000 there \ud800!")
    update["message"]["from"]["first_name"] = "Li\u0000na\udc00"
    update["message"]["from"]["language_code"] = "e\u0000n"
    response = await gw.telegram(json.dumps(update).encode())  # json.dumps escapes both: valid JSON
    assert response.status_code == 200 and response.json()["accepted"] is True
    await gw.settle()
    async with gw.services.db.session() as s:
        message = (await s.execute(select(InboundMessage))).scalar_one()
        contact = (await s.execute(select(Contact))).scalar_one()
    assert message.text == "hi there ?!"
    assert contact.display_name == "Lina?"
    assert [m["message"] for m in gw.rasa.messages] == ["hi there ?!"]
    assert len(gw.bot_api.sent) == 1


async def test_a_chat_id_no_address_can_hold_is_refused_not_retried(gateway: Gateway) -> None:
    update = private_message(901, chat_id=10**70, text="hello")
    response = await gateway.telegram(update)
    assert response.status_code == 400
    assert await count(gateway, InboundMessage) == 0


async def test_an_oversized_body_is_refused(gateway: Gateway) -> None:
    update = private_message(902, text="x" * 1_100_000)
    response = await gateway.telegram(update)
    assert response.status_code == 400 and "too large" in response.json()["detail"]
    assert await count(gateway, InboundMessage) == 0


async def test_webhooks_take_posts_only(gateway: Gateway) -> None:
    for path in ("/webhooks/telegram", "/webhooks/whatsapp", "/webhooks/whatsapp/status"):
        response = await gateway.client.get(path)
        assert response.status_code == 405, path
        assert response.headers["allow"] == "POST"


async def test_a_whatsapp_body_that_is_not_a_urlencoded_form_is_refused(gateway: Gateway) -> None:
    from twilio.request_validator import RequestValidator

    from tests.conftest import TWILIO_TOKEN

    form = inbound(sid="SM" + "7" * 32)
    url = gateway.services.settings.public_base_url + "/webhooks/whatsapp"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
    response = await gateway.client.post(
        "/webhooks/whatsapp", files={"Body": (None, "hello")}, data=form, headers={"x-twilio-signature": signature}
    )
    assert response.status_code == 400
    assert await count(gateway, InboundMessage) == 0


async def test_the_same_update_through_the_router_is_answered_the_same(gateway: Gateway) -> None:
    """The webhook routes are ordinary Starlette routes too; the gateway only skips the lookup."""
    from starlette.routing import Route

    route = next(r for r in gateway.app.routes if isinstance(r, Route) and r.path == "/webhooks/telegram")
    sent: list[dict[str, object]] = []
    body = json.dumps(private_message(903, text="via the router")).encode()
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, object]:
        return chunks.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    from tests.conftest import TELEGRAM_SECRET

    scope = {"type": "http", "method": "POST", "path": "/webhooks/telegram", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"),
                         (b"x-telegram-bot-api-secret-token", TELEGRAM_SECRET.encode())],
             "app": gateway.app, "scheme": "http", "server": ("testserver", 80)}
    await route.handle(scope, receive, send)
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"ok": True, "accepted": True}  # type: ignore[arg-type]
    await gateway.settle()
    assert [m["message"] for m in gateway.rasa.messages] == ["via the router"]


async def test_redeliveries_racing_their_original_are_stored_and_answered_once(any_gateway: Gateway) -> None:
    import asyncio

    gw = any_gateway
    first = private_message(910, chat_id=557001, text="first words")
    others = [private_message(911 + i, chat_id=557001, text=f"more {i}") for i in range(3)]
    bodies = [first, first, *others, first]
    results = await asyncio.gather(*(gw.telegram(b) for b in bodies))
    assert [r.status_code for r in results] == [200] * 6
    assert sum(r.json()["accepted"] for r in results) == 4
    await gw.settle()
    assert await count(gw, InboundMessage) == 4 and await count(gw, Contact) == 1
    assert sorted(m["message"] for m in gw.rasa.messages) == sorted(["first words", "more 0", "more 1", "more 2"])
