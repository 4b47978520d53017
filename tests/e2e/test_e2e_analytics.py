"""With the real Rasa: what each learner message was understood as reaches the gateway without an
extra call to Rasa — from the NLG call for a response, from the tracker store for a turn that a
custom action answered with its own text (Rasa calls no NLG then)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from bot.analytics.understanding import SWEEP_SETTLE_S, sweep_tracker_store
from bot.storage.models import Contact, InboundMessage
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e


async def understood(e2e: E2E, key: str) -> list[tuple[str | None, float | None, bool | None]]:
    async with e2e.services.db.session() as session:
        contact = (await session.execute(select(Contact).where(Contact.key == key))).scalar_one()
        rows = (await session.execute(
            select(InboundMessage.intent, InboundMessage.intent_confidence, InboundMessage.fallback)
            .where(InboundMessage.contact_id == contact.id).order_by(InboundMessage.id))).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_intents_come_from_the_nlg_call_and_from_the_tracker_store(e2e: E2E) -> None:
    chat = e2e.new_chat()
    started = time.monotonic()
    await e2e.telegram(chat, "hello")
    await e2e.telegram_replies(chat, 1)  # utter_greet: rendered by the gateway's NLG endpoint
    await e2e.telegram(chat, "when is my next deadline")
    await e2e.telegram_replies(chat, 2)  # action_deadlines: the action's own text, no NLG call
    key = f"telegram:{chat}"
    greet, deadline = await understood(e2e, key)
    assert time.monotonic() - started < SWEEP_SETTLE_S  # so only the NLG can have written so far
    assert greet[0] == "greet" and greet[1] is not None and greet[1] > 0.5 and greet[2] is False
    assert deadline == (None, None, None)
    await sweep_tracker_store(e2e.services, now_ts=time.time() + 2 * SWEEP_SETTLE_S)
    greet_after, deadline = await understood(e2e, key)
    assert greet_after == greet  # the first record stays
    assert deadline[0] == "ask_deadline" and deadline[2] is False
