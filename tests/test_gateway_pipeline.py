"""The pipeline: Rasa outages lose nothing, one conversation stays in order, NLG, health, web chat."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import select

from bot.conversation import pipeline
from bot.storage.models import Contact, InboundMessage, Outbox
from tests.conftest import Gateway
from tests.test_gateway_telegram import private_message


async def statuses(gw: Gateway) -> list[str]:
    async with gw.services.db.session() as s:
        return list((await s.execute(select(InboundMessage.status).order_by(InboundMessage.id))).scalars().all())


async def test_rasa_down_keeps_messages_tells_once_and_answers_after_recovery(gateway: Gateway) -> None:
    gateway.rasa.up = False
    for i in range(3):
        assert (await gateway.telegram(private_message(200 + i, text=f"question {i}"))).status_code == 200
        await gateway.settle()
    assert await statuses(gateway) == ["received"] * 3
    sent = await gateway.bot_api.wait_for(1)
    trouble = gateway.services.catalogue.text("gateway_rasa_trouble", "en")
    assert [m["text"] for m in sent] == [trouble]  # once, not per message

    gateway.rasa.up = True
    await pipeline.redeliver_pending(gateway.services, older_than_s=0)
    assert await statuses(gateway) == ["done"] * 3
    texts = [m["text"] for m in gateway.bot_api.sent]
    assert texts == [trouble, "echo: question 0", "echo: question 1", "echo: question 2"]
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
    assert contact.rasa_trouble_notified_at is None  # a later outage is announced again


async def test_a_slow_rasa_times_out_and_the_message_waits(gateway: Gateway) -> None:
    from integrations.rasa import RasaClient

    gateway.services.rasa = RasaClient("http://127.0.0.1:9", timeout_s=0.5)  # nothing listens there
    await gateway.telegram(private_message(300, text="anyone?"))
    await gateway.settle()
    assert await statuses(gateway) == ["received"]
    await gateway.services.rasa.close()


async def test_one_conversation_is_handled_in_order(gateway: Gateway) -> None:
    seen: list[str] = []

    def slow_first(body: dict[str, Any]) -> list[dict[str, Any]]:
        seen.append(body["message"])
        return [{"text": f"re: {body['message']}"}]

    gateway.rasa.responder = slow_first
    # the webhook answers before processing, so messages pile up while the first is with Rasa
    results = [await gateway.telegram(private_message(400 + i, text=f"m{i}")) for i in range(8)]
    assert all(r.status_code == 200 for r in results)
    await gateway.settle()
    assert seen == [f"m{i}" for i in range(8)]
    assert [m["text"] for m in gateway.bot_api.sent] == [f"re: m{i}" for i in range(8)]


async def test_commands_from_actions_run_in_the_gateway(gateway: Gateway) -> None:
    gateway.rasa.responder = lambda body: [
        {"custom": {"sanad": {"command": "set_language", "language": "fr"}}},
        {"text": "D'accord, je parle français."},
    ]
    await gateway.telegram(private_message(500, text="parle français"))
    await gateway.settle()
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
    assert (contact.language, contact.language_source) == ("fr", "explicit")
    assert [m["text"] for m in gateway.bot_api.sent] == ["D'accord, je parle français."]


async def test_unknown_command_is_ignored_not_fatal(gateway: Gateway) -> None:
    gateway.rasa.responder = lambda body: [{"custom": {"sanad": {"command": "no_such"}}}, {"text": "still here"}]
    await gateway.telegram(private_message(510, text="x"))
    await gateway.settle()
    assert [m["text"] for m in gateway.bot_api.sent] == ["still here"]


async def test_nlg_renders_in_the_learners_language(gateway: Gateway) -> None:
    body = {
        "response": "gateway_rasa_trouble",
        "arguments": {},
        "tracker": {"sender_id": "telegram:1", "slots": {"language": None},
                    "latest_message": {"text": "hi", "metadata": {"language": "de"}}},
        "channel": {"name": "rest"},
    }
    response = await gateway.client.post("/nlg", json=body)
    assert response.status_code == 200
    assert response.json()["text"] == gateway.services.catalogue.text("gateway_rasa_trouble", "de")
    body["tracker"]["slots"]["language"] = "fa"  # an explicit switch wins over the metadata
    assert (await gateway.client.post("/nlg", json=body)).json()["text"] == gateway.services.catalogue.text(
        "gateway_rasa_trouble", "fa")
    assert (await gateway.client.post("/nlg", content=b"nope")).status_code == 400


async def test_health_and_metrics(gateway: Gateway) -> None:
    health = await gateway.client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "db": "ok", "redis": "ok", "rasa": "ok"}
    gateway.rasa.up = False
    assert (await gateway.client.get("/healthz")).json()["status"] == "degraded"
    await gateway.telegram(private_message(600, text="hello"))
    gateway.services.settings = gateway.services.settings.replace(metrics_token="scrape-token")
    metrics = (await gateway.client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})).text
    assert 'sanad_inbound_messages_total{channel="telegram",outcome="accepted"}' in metrics
    assert "sanad_webhook_seconds_bucket" in metrics
    assert "hello" not in metrics


async def test_web_chat_round_trip_on_the_embedded_default(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    page = await gw.client.get("/chat?lang=ar")
    assert page.status_code == 200 and 'dir="rtl"' in page.text and 'lang="ar"' in page.text
    client_id = "c" * 24
    post = {"client_id": client_id, "message_id": "m1", "text": "hello from the web"}
    headers = {"x-requested-with": "sanad-webchat"}
    assert (await gw.client.post("/chat/api/messages", json=post)).status_code == 403  # no header
    for _ in range(2):  # a resend after a dropped connection is not processed twice
        assert (await gw.client.post("/chat/api/messages", json=post, headers=headers)).status_code == 200
    await gw.settle()
    replies = (await gw.client.get(f"/chat/api/messages?client_id={client_id}&after=0")).json()["messages"]
    assert [m["text"] for m in replies] == ["echo: hello from the web"]
    assert (await gw.client.get("/chat/api/messages?client_id=bad&after=0")).status_code == 400
    bad = await gw.client.post("/chat/api/messages", content=b"{", headers=headers)
    assert bad.status_code == 400


async def test_embedded_default_keeps_messages_when_rasa_is_down(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    gw.rasa.up = False
    await gw.telegram(private_message(700, text="are you there?"))
    await gw.settle()
    async with gw.services.db.session() as s:
        row = (await s.execute(select(InboundMessage))).scalar_one()
    assert row.status == "received"
    gw.rasa.up = True
    await pipeline.redeliver_pending(gw.services, older_than_s=0)
    async with gw.services.db.session() as s:
        out = [o.text for o in (await s.execute(select(Outbox).order_by(Outbox.id))).scalars()]
    assert out[-1] == "echo: are you there?"
    assert json.loads(json.dumps(out))  # plain strings, stored


async def test_a_message_rasa_got_before_a_timeout_is_not_run_twice(gateway: Gateway) -> None:
    from integrations.rasa import RasaClient

    gateway.services.rasa = RasaClient(gateway.rasa.url, timeout_s=0.3)
    gateway.rasa.delay_s = 1.0  # Rasa handles the message, but answers after our timeout
    gateway.rasa.responder = lambda body: [
        {"text": "Your next deadline is tomorrow.", "buttons": [{"title": "More", "payload": "/ask_deadline"}]}
    ]
    await gateway.telegram(private_message(800, text="when is my deadline"))
    await gateway.settle()
    assert await statuses(gateway) == ["received"]
    trouble = gateway.services.catalogue.text("gateway_rasa_trouble", "en")
    assert [m["text"] for m in gateway.bot_api.sent] == [trouble]

    gateway.rasa.delay_s = 0.0
    await pipeline.redeliver_pending(gateway.services, older_than_s=0)
    assert len(gateway.rasa.messages) == 1  # not sent to Rasa a second time
    assert await statuses(gateway) == ["done"]
    assert [m["text"] for m in gateway.bot_api.sent] == [trouble, "Your next deadline is tomorrow."]
    await gateway.services.rasa.close()


async def test_turns_finishing_together_keep_their_replies_and_contact_changes_apart(gateway: Gateway) -> None:
    """PostgreSQL: several turns finish in one statement; each gets its own replies, in order."""
    chats = [558000 + i for i in range(12)]

    def responder(body: dict[str, object]) -> list[dict[str, object]]:
        text = str(body["message"])
        replies: list[dict[str, object]] = [{"text": f"{text} / 1"}, {"text": f"{text} / 2"}]
        if text.endswith("0"):  # every other chat is offered buttons: another shape of contact change
            replies.append({"text": "choose", "buttons": [{"title": "A", "payload": "/a"}]})
        return replies

    gateway.rasa.responder = responder
    await asyncio.gather(*(gateway.telegram(private_message(2000 + i, chat_id=chat, text=f"hello {i % 2}"))
                           for i, chat in enumerate(chats)))
    await gateway.settle()
    for i, chat in enumerate(chats):
        texts = [m["text"] for m in gateway.bot_api.sent if m["chat_id"] == str(chat)]
        expected = [f"hello {i % 2} / 1", f"hello {i % 2} / 2"] + (["choose"] if i % 2 == 0 else [])
        assert texts == expected
    async with gateway.services.db.session() as s:
        offered = dict((await s.execute(select(Contact.key, Contact.pending_buttons))).all())
    assert offered[f"telegram:{chats[0]}"] == [{"title": "A", "payload": "/a"}]
    assert offered[f"telegram:{chats[1]}"] is None
    finishers = gateway.services.extras["pipeline_finishers"]
    assert sum(f.calls for f in finishers.values()) == 12
    assert sum(f.batches for f in finishers.values()) < 12
