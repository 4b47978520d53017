"""End to end with the real Rasa model: webhook → gateway → Rasa (NLG at the gateway, actions at the
action server, demo platform over HTTP) → reply at the Bot API / Twilio double.

One stack for the session (see conftest.py); only the outage test restarts Rasa.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date
from sqlalchemy import select

from bot.learners import linking
from bot.storage.models import Contact, Handoff, InboundMessage, Outbox
from tests.e2e.conftest import E2E
from tests.e2e.stack import TWILIO_FROM

pytestmark = pytest.mark.e2e


async def contact_state(e2e: E2E, key: str) -> tuple[Contact, list[InboundMessage], list[Outbox]]:
    async with e2e.services.db.session() as session:
        contact = (await session.execute(select(Contact).where(Contact.key == key))).scalar_one()
        messages = list((await session.execute(
            select(InboundMessage).where(InboundMessage.contact_id == contact.id).order_by(InboundMessage.id)
        )).scalars())
        outbox = list((await session.execute(
            select(Outbox).where(Outbox.contact_id == contact.id).order_by(Outbox.id)
        )).scalars())
    return contact, messages, outbox


async def rasa_user_texts(e2e: E2E, key: str) -> list[str]:
    """What Rasa's tracker holds as the learner's messages."""
    tracker: dict[str, Any] = await e2e.services.rasa.get_tracker(key)  # type: ignore[union-attr]
    return [str(ev.get("text")) for ev in tracker.get("events", []) if ev.get("event") == "user"]


async def test_telegram_hello_from_an_arabic_speaker_gets_the_arabic_greeting(e2e: E2E) -> None:
    chat = e2e.new_chat()
    response = await e2e.telegram(chat, "hello", language_code="ar")
    assert response.status_code == 200

    sent = await e2e.telegram_replies(chat, 1)
    greeting = e2e.services.catalogue.render("utter_greet", "ar")
    assert [m["text"] for m in sent] == [greeting.text]
    keyboard = sent[0]["reply_markup"]["inline_keyboard"]
    assert [row[0]["text"] for row in keyboard] == [b.title for b in greeting.buttons]

    contact, messages, outbox = await contact_state(e2e, f"telegram:{chat}")
    assert contact.language == "ar"
    assert [(m.status, m.routed_to) for m in messages] == [("done", "bot")]
    assert [(o.status, o.provider_id) for o in outbox] == [("sent", str(sent[0]["message_id"]))]
    assert await rasa_user_texts(e2e, contact.key) == ["hello"]


async def test_whatsapp_signed_message_is_answered_through_twilio(e2e: E2E) -> None:
    phone = "+4915100000001"
    sid = "SM" + "e2e".ljust(32, "0")
    form = {
        "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": e2e.stack.env["TWILIO_ACCOUNT_SID"],
        "From": f"whatsapp:{phone}", "To": TWILIO_FROM, "Body": "hello", "NumMedia": "0", "ProfileName": "Amal",
        "WaId": phone.lstrip("+"), "SmsStatus": "received", "NumSegments": "1", "ApiVersion": "2010-04-01",
    }
    response = await e2e.whatsapp(form)
    assert response.status_code == 200

    sent = await e2e.whatsapp_replies(f"whatsapp:{phone}", 1)
    assert len(sent) == 1
    greeting = e2e.services.catalogue.render("utter_greet", "en")
    assert sent[0]["From"] == TWILIO_FROM
    assert sent[0]["Body"].startswith(greeting.text)
    for button in greeting.buttons:  # WhatsApp gets numbered options
        assert button.title in sent[0]["Body"]

    _contact, messages, outbox = await contact_state(e2e, f"whatsapp:{phone}")
    assert [(m.status, m.provider_id) for m in messages] == [("done", sid)]
    assert [(o.status, o.provider_id) for o in outbox] == [("sent", sent[0]["sid"])]


async def test_linked_learner_asks_for_the_next_deadline(e2e: E2E) -> None:
    chat = e2e.new_chat()
    issued = await linking.issue_link_token(e2e.services, "L1003")
    assert (await e2e.telegram(chat, f"/start {issued['token']}")).status_code == 200
    sent = await e2e.telegram_replies(chat, 1)
    assert len(sent) == 1 and "Grace" in sent[0]["text"]
    contact, _, _ = await contact_state(e2e, f"telegram:{chat}")
    assert (contact.learner_id, contact.timezone) == ("L1003", "Africa/Nairobi")

    assert (await e2e.telegram(chat, "when is my next deadline?")).status_code == 200
    sent = await e2e.telegram_replies(chat, 2)
    assert len(sent) == 2
    reply = sent[1]["text"]
    # from the demo platform, reached by the action server over HTTP
    assert "Module 2 peer review" in reply and "Introduction to Data Science" in reply
    assert "Module 1 quiz" not in reply  # already submitted
    assert "Orientation survey" not in reply  # already past
    in_a_week = datetime.now(UTC).astimezone(ZoneInfo("Africa/Nairobi")).date() + timedelta(days=7)
    assert "tomorrow" in reply
    assert format_date(in_a_week, format="long", locale="en") in reply
    assert await rasa_user_texts(e2e, contact.key) == ["when is my next deadline?"]


async def wait_processed(e2e: E2E, key: str, count: int) -> list[InboundMessage]:
    """The contact's messages once `count` of them left `received` (handled after the webhook's 200)."""
    for _ in range(300):
        _, messages, _ = await contact_state(e2e, key)
        if sum(1 for m in messages if m.status != "received") >= count:
            break
        await asyncio.sleep(0.05)
    return messages


async def test_asking_for_a_human_hands_off_and_keeps_the_next_message_from_rasa(e2e: E2E) -> None:
    chat = e2e.new_chat()
    key = f"telegram:{chat}"
    assert (await e2e.telegram(chat, "I want to talk to a human")).status_code == 200
    sent = await e2e.telegram_replies(chat, 1)
    assert len(sent) == 1

    contact, messages, _ = await contact_state(e2e, key)
    assert contact.mode == "waiting"
    async with e2e.services.db.session() as session:
        handoffs = list((await session.execute(select(Handoff).where(Handoff.contact_id == contact.id))).scalars())
    assert [(h.state, h.reason, h.urgent) for h in handoffs] == [("waiting", "request_human", False)]
    assert messages[0].routed_to == "bot"

    assert (await e2e.telegram(chat, "are you there? my exam is tomorrow")).status_code == 200
    messages = await wait_processed(e2e, key, 2)
    assert [(m.status, m.routed_to) for m in messages] == [("done", "bot"), ("done", "mentor")]
    assert await rasa_user_texts(e2e, key) == ["I want to talk to a human"]

    # the learner goes back to the bot: the gateway appends events to Rasa's real tracker, and the
    # next message is Rasa's again
    assert (await e2e.telegram(chat, "bot")).status_code == 200
    sent = await e2e.telegram_replies(chat, 2)
    assert sent[-1]["text"] == e2e.services.catalogue.render("handoff_back_to_bot", "en").text
    contact, _, _ = await contact_state(e2e, key)
    assert contact.mode == "bot"
    tracker: dict[str, Any] = await e2e.services.rasa.get_tracker(key)  # type: ignore[union-attr]
    assert tracker["events"][-1]["event"] == "action" and tracker["events"][-1]["name"] == "action_listen"
    assert tracker.get("active_loop") in ({}, None) or not tracker["active_loop"].get("name")

    assert (await e2e.telegram(chat, "hello")).status_code == 200
    sent = await e2e.telegram_replies(chat, 3)
    assert sent[-1]["text"] == e2e.services.catalogue.render("utter_greet", "en").text
    assert await rasa_user_texts(e2e, key) == ["I want to talk to a human", "hello"]


async def test_rasa_down_the_learner_is_told_once_and_nothing_is_lost(e2e: E2E) -> None:
    chat = e2e.new_chat()
    key = f"telegram:{chat}"
    e2e.stack.stop_rasa()
    try:
        errors_before = await e2e.rasa_errors()
        assert (await e2e.telegram(chat, "hello")).status_code == 200
        sent = await e2e.telegram_replies(chat, 1)
        trouble = e2e.services.catalogue.render("gateway_rasa_trouble", "en").text
        assert [m["text"] for m in sent] == [trouble]

        assert (await e2e.telegram(chat, "what can you help me with?")).status_code == 200
        for _ in range(200):  # until the gateway has tried Rasa for the second message too
            if await e2e.rasa_errors() >= errors_before + 2:
                break
            await asyncio.sleep(0.05)
        assert await e2e.rasa_errors() >= errors_before + 2
        contact, messages, _ = await contact_state(e2e, key)
        assert [m.status for m in messages] == ["received", "received"]
        assert contact.rasa_trouble_notified_at is not None
        assert len(await e2e.telegram_replies(chat, 2, timeout_s=0.5)) == 1  # told once, not per message
    finally:
        e2e.stack.start_rasa()

    assert await e2e.services.conversations.redeliver(older_than_s=0) >= 1
    sent = await e2e.telegram_replies(chat, 3)
    greeting = e2e.services.catalogue.render("utter_greet", "en")
    assert sent[1]["text"] == greeting.text  # answers in the order the learner wrote
    assert len(sent) == 3
    contact, messages, outbox = await contact_state(e2e, key)
    assert [m.status for m in messages] == ["done", "done"]
    assert contact.rasa_trouble_notified_at is None
    assert all(o.status == "sent" for o in outbox) and len(outbox) == 3
    assert await rasa_user_texts(e2e, key) == ["hello", "what can you help me with?"]
