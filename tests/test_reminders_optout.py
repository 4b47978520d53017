"""Opting out of reminders and broadcasts: the `reminders` command and the STOP / START keywords."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.conversation.commands import handler_for
from bot.conversation.interceptors import interceptors
from bot.reminders.optout import keyword_of, optout_keywords
from bot.runtime.services import Services
from bot.storage.db import utcnow
from bot.storage.models import Contact, InboundMessage, Outbox, Reminder


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", "stop"), ("stop", "stop"), (" Stop! ", "stop"), ("Stopp", "stop"), ("arrête", "stop"),
        ("توقف", "stop"), ("ايقاف", "stop"), ("START", "start"), ("start", "start"),
        ("stop sending me reminders", None), ("/start", None), ("/start abc123", None), ("", None),
        ("don't stop", None), ("startup", None),
    ],
)
def test_keywords(text: str, expected: str | None) -> None:
    assert keyword_of(text) == expected


async def _contact_with_plans(services: Services, language: str) -> Contact:
    async with services.db.session() as session:
        contact = Contact(key="telegram:99", channel="telegram", address="99", learner_id="L9", language=language)
        session.add(contact)
        await session.flush()
        session.add(Reminder(
            idempotency_key="reminder:L9:d1:24", learner_id="L9", contact_id=contact.id, deadline_id="d1",
            offset_h=24, due_at=utcnow() + timedelta(days=2), send_at=utcnow() + timedelta(days=1),
        ))
        session.add(Outbox(contact_id=contact.id, channel="telegram", origin="broadcast", text="news",
                           idempotency_key="broadcast:1:x", status="queued"))
        session.add(Outbox(contact_id=contact.id, channel="telegram", origin="reply", text="answer",
                           status="queued"))
        return contact


async def test_stop_keyword_opts_out_cancels_and_confirms_in_the_learners_language(services: Services) -> None:
    assert optout_keywords in interceptors()
    contact = await _contact_with_plans(services, "ar")
    async with services.db.session() as session:
        contact = await session.get(Contact, contact.id)  # type: ignore[assignment]
        message = InboundMessage(contact_id=contact.id, channel="telegram", dedup_key="telegram:1", text="STOP",
                                 kind="text")
        result = await optout_keywords(services, contact, message)
    assert result is not None and "START" in result.replies[0].text and "تذكيرات" in result.replies[0].text
    async with services.db.session() as session:
        stored = await session.get(Contact, contact.id)
        assert stored is not None and stored.reminders_opt_out is True
        assert (await session.execute(select(Reminder.status))).scalar_one() == "cancelled"
        statuses = dict((await session.execute(select(Outbox.origin, Outbox.status))).all())
    assert statuses == {"broadcast": "cancelled", "reply": "queued"}  # replies still go out

    async with services.db.session() as session:
        contact = await session.get(Contact, contact.id)  # type: ignore[assignment]
        message = InboundMessage(contact_id=contact.id, channel="telegram", dedup_key="telegram:2", text="start",
                                 kind="text")
        again = await optout_keywords(services, contact, message)
    assert again is not None and "STOP" in again.replies[0].text
    async with services.db.session() as session:
        assert (await session.get(Contact, contact.id)).reminders_opt_out is False  # type: ignore[union-attr]


async def test_other_text_is_not_intercepted(services: Services) -> None:
    contact = await _contact_with_plans(services, "en")
    message = InboundMessage(contact_id=contact.id, channel="telegram", dedup_key="telegram:3",
                             text="please stop the reminders", kind="text")
    assert await optout_keywords(services, contact, message) is None


async def test_reminders_command_without_a_session(services: Services) -> None:
    handler = handler_for("reminders")
    assert handler is not None
    contact = await _contact_with_plans(services, "fr")
    result = await handler(services, contact, {"enabled": False})
    assert result is not None and "START" in result.replies[0].text and "rappels" in result.replies[0].text
    async with services.db.session() as session:
        assert (await session.get(Contact, contact.id)).reminders_opt_out is True  # type: ignore[union-attr]
    bad = await handler(services, contact, {"enabled": "maybe"})
    assert bad is not None and bad.replies == []
    back = await handler(services, contact, {"enabled": "true"})
    assert back is not None and "rappels" in back.replies[0].text
    async with services.db.session() as session:
        assert (await session.get(Contact, contact.id)).reminders_opt_out is False  # type: ignore[union-attr]


async def test_start_resubscribes_a_contact_the_provider_had_stopped(services: Services) -> None:
    async with services.db.session() as session:
        contact = Contact(key="whatsapp:+96170000001", channel="whatsapp", address="+96170000001", language="fr",
                          stopped=True, reminders_opt_out=True)
        session.add(contact)
    detached = InboundMessage(contact_id=contact.id, channel="whatsapp", dedup_key="whatsapp:SMx", text="START",
                              kind="text")
    result = await optout_keywords(services, contact, detached)
    assert result is not None
    async with services.db.session() as session:
        stored = await session.get(Contact, contact.id)
    assert stored is not None and stored.stopped is False and stored.reminders_opt_out is False
