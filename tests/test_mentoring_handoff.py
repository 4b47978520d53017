"""Hand-off state machine, routing and SLA timers against PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.conversation.commands import handler_for
from bot.mentoring import sla
from bot.mentoring.accounts import add_mentor
from bot.mentoring.events import drain
from bot.mentoring.handoff import HandoffError, claim, request_handoff, transfer
from bot.mentoring.routing import end_handoff, route_to_mentor, send_mentor_reply
from bot.runtime.services import Services
from bot.storage.db import utcnow
from bot.storage.models import AuditEntry, Contact, Handoff, InboundMessage, Mentor, Outbox
from integrations.rasa import RasaClient
from tests.doubles import RasaDouble


@pytest.fixture
def services(any_services: Services) -> Services:
    """Every test of this module runs on PostgreSQL + Redis and on SQLite without Redis."""
    return any_services


async def make_contact(services: Services, key: str = "telegram:1001", language: str = "en", **fields: Any) -> int:
    channel, address = key.split(":", 1)
    async with services.db.session() as s:
        contact = Contact(key=key, channel=channel, address=address, language=language,
                          last_inbound_at=fields.pop("last_inbound_at", utcnow()), **fields)
        s.add(contact)
        await s.flush()
        return contact.id


async def make_mentor(services: Services, email: str, languages: str = "en", role: str = "mentor") -> Mentor:
    async with services.db.session() as s:
        return await add_mentor(s, email, "correct horse battery", languages, role)


async def escalate(
    services: Services, contact_id: int, reason: str = "request_human", urgent: bool = False
) -> list[Any]:
    async with services.db.session() as s:
        contact = await s.get(Contact, contact_id)
        assert contact is not None
        return await request_handoff(services, s, contact, reason, urgent)


async def handoffs(services: Services) -> list[Handoff]:
    async with services.db.session() as s:
        return list((await s.execute(select(Handoff).order_by(Handoff.id))).scalars())


async def contact_mode(services: Services, contact_id: int) -> str:
    async with services.db.session() as s:
        contact = await s.get(Contact, contact_id)
        assert contact is not None
        return contact.mode


async def inbound(services: Services, contact_id: int, text: str, payload: dict[str, Any] | None = None) -> str:
    """Persist a learner message and route it like the pipeline does (mode != bot)."""
    async with services.db.session() as s:
        contact = await s.get(Contact, contact_id)
        assert contact is not None
        msg = InboundMessage(contact_id=contact_id, channel=contact.channel,
                             dedup_key=f"t:{utcnow().timestamp()}:{text}", provider_id="p",
                             kind="button" if payload else "text", text=text, payload=payload)
        s.add(msg)
        await s.flush()
        replies = await route_to_mentor(services, s, contact, msg)
        msg.status, msg.routed_to = "done", "mentor"
    return " ".join(r.text for r in replies)


async def test_request_opens_one_waiting_handoff_and_tells_learner_when(services: Services) -> None:
    await make_mentor(services, "camille@example.org", "fr")  # on duty: the learner gets a time
    cid = await make_contact(services, language="fr")
    replies = await escalate(services, cid)
    assert len(replies) == 1
    assert "minutes" in replies[0].text and "bot" in replies[0].text  # French ETA and how to go back
    assert replies[0].buttons[0].payload == "/back_to_bot"
    again = await escalate(services, cid)
    assert "file d'attente" in again[0].text
    rows = await handoffs(services)
    assert [(h.state, h.language, h.urgent) for h in rows] == [("waiting", "fr", False)]
    assert await contact_mode(services, cid) == "waiting"


async def test_urgent_request_upgrades_the_open_handoff(services: Services) -> None:
    cid = await make_contact(services, language="ar")
    await escalate(services, cid, "request_human")
    replies = await escalate(services, cid, "distress", urgent=True)
    rows = await handoffs(services)
    assert len(rows) == 1 and rows[0].urgent and rows[0].reason == "distress"
    assert "المرشدين" in replies[0].text


async def test_unknown_reason_is_refused(services: Services) -> None:
    cid = await make_contact(services)
    with pytest.raises(ValueError):
        await escalate(services, cid, "because")
    assert await handoffs(services) == []


async def test_eta_grows_with_queue_position(services: Services) -> None:
    await make_mentor(services, "jonas@example.org", "de,en")
    first = await make_contact(services, "telegram:1", "de")
    second = await make_contact(services, "telegram:2", "de")
    other_language = await make_contact(services, "telegram:3", "en")
    await escalate(services, first)
    await escalate(services, other_language)
    replies = await escalate(services, second)
    # minutes per position defaults to 5: the second German learner waits about 10 minutes
    assert "etwa 10 Minuten" in replies[0].text


async def test_gateway_command_handler_is_registered(services: Services) -> None:
    handler = handler_for("handoff")
    assert handler is not None
    await make_mentor(services, "dari@example.org", "fa")
    cid = await make_contact(services, language="fa")
    async with services.db.session() as s:
        contact = await s.get(Contact, cid)
    assert contact is not None
    result = await handler(services, contact, {"reason": "extension", "urgent": False})
    assert result is not None and "دقیقه" in result.replies[0].text
    rows = await handoffs(services)
    assert [(h.reason, h.state) for h in rows] == [("extension", "waiting")]


async def test_two_mentors_claim_at_once_exactly_one_wins(services: Services) -> None:
    cid = await make_contact(services, language="ar")
    await escalate(services, cid)
    (h,) = await handoffs(services)
    mentors = [await make_mentor(services, f"m{i}@example.org", "ar,en") for i in range(4)]

    async def try_claim(mentor: Mentor) -> int | None:
        async with services.db.session() as s:
            won = await claim(services, s, h.id, mentor)
            return mentor.id if won else None

    results = await asyncio.gather(*(try_claim(m) for m in mentors))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    (after,) = await handoffs(services)
    assert after.state == "with_mentor" and after.mentor_id == winners[0]
    assert await contact_mode(services, cid) == "with_mentor"
    async with services.db.session() as s:
        joined = (await s.execute(select(func.count()).select_from(Outbox).where(Outbox.origin == "system"))).scalar()
        claims = (await s.execute(select(func.count()).select_from(AuditEntry)
                                  .where(AuditEntry.action == "handoff.claim"))).scalar()
    assert joined == 1 and claims == 1  # the learner is told once that a mentor joined


async def test_claim_refused_outside_mentor_languages(services: Services) -> None:
    cid = await make_contact(services, language="fa")
    await escalate(services, cid)
    (h,) = await handoffs(services)
    mentor = await make_mentor(services, "en@example.org", "en")
    async with services.db.session() as s:
        with pytest.raises(HandoffError):
            await claim(services, s, h.id, mentor)
    assert (await handoffs(services))[0].state == "waiting"


async def test_learner_messages_reach_the_mentor_and_back_to_bot_word_returns(services: Services) -> None:
    async with RasaDouble() as rasa:
        await services.rasa.close() if services.rasa else None
        services.rasa = RasaClient(rasa.url)
        cid = await make_contact(services, "telegram:77", language="ar")
        await escalate(services, cid)
        await drain()  # the hand-off's own event is out before we listen
        async with services.coord.subscribe("console") as queue:
            assert await inbound(services, cid, "مرحبا، أحتاج مساعدة") == ""
            await drain()
            event = await asyncio.wait_for(queue.get(), 5)
        assert event["type"] == "message" and "text" not in event
        reply = await inbound(services, cid, "بوت")
        assert "المساعد الآلي" in reply
        assert await contact_mode(services, cid) == "bot"
        (h,) = await handoffs(services)
        assert h.state == "resolved" and h.outcome == "learner"
        assert rasa.events["telegram:77"][-1] == {"event": "action", "name": "action_listen"}


async def test_back_to_bot_button_payload(services: Services) -> None:
    cid = await make_contact(services, language="de")
    await escalate(services, cid)
    reply = await inbound(services, cid, "Zurück zum Assistenten", payload={"payload": "/back_to_bot"})
    assert "automatischen Assistenten" in reply
    assert await contact_mode(services, cid) == "bot"


async def test_resolve_returns_to_bot_even_when_rasa_is_down(services: Services) -> None:
    # services.rasa points at 127.0.0.1:9 (nothing listens): resolving must still work
    cid = await make_contact(services, language="en")
    await escalate(services, cid)
    (h,) = await handoffs(services)
    mentor = await make_mentor(services, "lead@example.org", "en", "lead")
    async with services.db.session() as s:
        assert await claim(services, s, h.id, mentor) is not None
    assert await end_handoff(services, h.id, "resolved", actor=f"mentor:{mentor.id}")
    assert await contact_mode(services, cid) == "bot"
    async with services.db.session() as s:
        texts = [r.text for r in (await s.execute(select(Outbox).order_by(Outbox.id))).scalars()]
    assert "closed this conversation" in texts[-2] and "How helpful" in texts[-1]  # then the rating question
    with pytest.raises(HandoffError):
        await end_handoff(services, h.id, "resolved", actor=f"mentor:{mentor.id}")


async def test_whatsapp_outside_24h_window_sends_the_template(services: Services, tmp_path: Any) -> None:

    services.settings = services.settings.replace(
        whatsapp_templates={"MENTOR_REPLY_AR": "HXar", "MENTOR_REPLY": "HXany"})
    cid = await make_contact(services, "whatsapp:+4915100000001", language="ar",
                             last_inbound_at=utcnow() - timedelta(hours=30))
    await escalate(services, cid)
    (h,) = await handoffs(services)
    mentor = await make_mentor(services, "ar@example.org", "ar")
    async with services.db.session() as s:
        await claim(services, s, h.id, mentor)
    async with services.db.session() as s:
        handoff = await s.get(Handoff, h.id)
        assert handoff is not None
        outcome = await send_mentor_reply(services, s, handoff, mentor, "Hello, I can help with the extension")
    assert outcome.used_template and outcome.held_id is not None
    async with services.db.session() as s:
        row = await s.get(Outbox, outcome.outbox_id)
        held = await s.get(Outbox, outcome.held_id)
        contact = await s.get(Contact, cid)
    assert row is not None and row.payload is not None
    assert row.payload["template"]["sid"] == "HXar" and row.origin == "mentor" and row.author_mentor_id == mentor.id
    assert "Hello" not in (row.text or "") and row.status == "queued"
    # the text itself is kept, not sent, until the learner answers
    assert held is not None and held.status == "held" and held.text == "Hello, I can help with the extension"
    assert contact is not None and contact.held_since is not None

    services.settings = services.settings.replace(whatsapp_templates={})
    async with services.db.session() as s:
        handoff = await s.get(Handoff, h.id)
        assert handoff is not None
        with pytest.raises(HandoffError):
            await send_mentor_reply(services, s, handoff, mentor, "again")


async def test_free_reply_inside_window_and_audit_has_no_text(services: Services) -> None:
    cid = await make_contact(services, "whatsapp:+4915100000002", language="en")
    await escalate(services, cid)
    (h,) = await handoffs(services)
    mentor = await make_mentor(services, "en@example.org", "en")
    async with services.db.session() as s:
        await claim(services, s, h.id, mentor)
    async with services.db.session() as s:
        handoff = await s.get(Handoff, h.id)
        assert handoff is not None
        outcome = await send_mentor_reply(services, s, handoff, mentor, "secret words")
    assert not outcome.used_template
    async with services.db.session() as s:
        entries = list((await s.execute(select(AuditEntry))).scalars())
    assert any(e.action == "mentor.reply" and e.actor == f"mentor:{mentor.id}" for e in entries)
    assert all("secret" not in repr(e.detail) and e.subject_ref != "whatsapp:+4915100000002" for e in entries)


async def test_transfer_checks_languages(services: Services) -> None:
    cid = await make_contact(services, language="fr")
    await escalate(services, cid)
    (h,) = await handoffs(services)
    a = await make_mentor(services, "a@example.org", "fr")
    b = await make_mentor(services, "b@example.org", "fr,en")
    c = await make_mentor(services, "c@example.org", "de")
    async with services.db.session() as s:
        await claim(services, s, h.id, a)
    async with services.db.session() as s:
        handoff = await s.get(Handoff, h.id)
        assert handoff is not None
        with pytest.raises(HandoffError):
            await transfer(services, s, handoff, a, c.id)
    async with services.db.session() as s:
        handoff = await s.get(Handoff, h.id)
        assert handoff is not None
        await transfer(services, s, handoff, a, b.id)
    assert (await handoffs(services))[0].mentor_id == b.id


async def test_sla_realerts_unclaimed_and_urgent_goes_to_everyone(services: Services) -> None:
    from bot.mentoring.urgent import realert_urgent

    services.settings = services.settings.replace(handoff_claim_timeout_s=60.0, handoff_offer_timeout_s=60.0)
    calm = await make_contact(services, "telegram:11", "en")
    urgent = await make_contact(services, "telegram:12", "fa")
    await escalate(services, calm)
    await escalate(services, urgent, "distress", urgent=True)
    await drain()
    async with services.db.session() as s:
        for h in (await s.execute(select(Handoff))).scalars():
            h.created_at = utcnow() - timedelta(minutes=5)
    async with services.coord.subscribe("console") as queue:
        assert await sla.realert_unclaimed(services) == 1
        assert await realert_urgent(services) == 1
        await drain()
        events = []
        while not queue.empty() or len(events) < 3:
            events.append(await asyncio.wait_for(queue.get(), 5))
    kinds = {(e["type"], e["language"], bool(e.get("everyone"))) for e in events}
    assert ("alert", "en", False) in kinds and ("alert", "fa", True) in kinds
    # the first re-alert of an urgent hand-off also escalates it to the leads
    assert any(e["type"] == "lead_alert" and e.get("why") == "urgent_unclaimed" for e in events)
    # alerted just now: the next pass stays quiet until the timeout passes again
    assert await sla.realert_unclaimed(services) == 0 and await realert_urgent(services) == 0
    rows = await handoffs(services)
    assert [h.alert_count for h in rows] == [1, 1]
    assert rows[0].escalated_at is None and rows[1].escalated_at is not None


async def test_sla_closes_idle_conversations(services: Services) -> None:

    services.settings = services.settings.replace(handoff_idle_timeout_s=600.0)
    cid = await make_contact(services, "telegram:21", "de")
    fresh = await make_contact(services, "telegram:22", "de")
    await escalate(services, cid)
    await escalate(services, fresh)
    async with services.db.session() as s:
        h = (await s.execute(select(Handoff).where(Handoff.contact_id == cid))).scalar_one()
        h.last_activity_at = utcnow() - timedelta(hours=1)
    await sla.job(services)
    assert await contact_mode(services, cid) == "bot"
    assert await contact_mode(services, fresh) == "waiting"
    async with services.db.session() as s:
        texts = [r.text or "" for r in (await s.execute(select(Outbox).where(Outbox.contact_id == cid))).scalars()]
    assert any("eine Weile still" in t for t in texts)


async def test_an_idle_close_spares_a_conversation_the_learner_just_wrote_to(services: Services) -> None:
    """The learner writes while the timer is about to close: under the lease the close sees it."""

    from bot.storage.models import InboundMessage

    services.settings = services.settings.replace(handoff_idle_timeout_s=600.0)
    cid = await make_contact(services, "telegram:23", "en")
    await escalate(services, cid)
    async with services.db.session() as s:
        h = (await s.execute(select(Handoff).where(Handoff.contact_id == cid))).scalar_one()
        h.last_activity_at = utcnow() - timedelta(hours=1)
        # accepted by the webhook a moment ago, not yet routed to the mentor
        s.add(InboundMessage(contact_id=cid, channel="telegram", dedup_key="telegram:idle-race", kind="text",
                             text="are you still there?", status="received"))
    await sla.job(services)
    assert await contact_mode(services, cid) == "waiting"  # still with the mentors


async def test_sqlite_embedded_default_works_too(sqlite_services: Services) -> None:
    cid = await make_contact(sqlite_services, language="en")
    await escalate(sqlite_services, cid)
    await escalate(sqlite_services, cid)
    rows = await handoffs(sqlite_services)
    assert len(rows) == 1
    mentor = await make_mentor(sqlite_services, "x@example.org", "en")
    async with sqlite_services.db.session() as s:
        assert await claim(sqlite_services, s, rows[0].id, mentor) is not None
    assert await end_handoff(sqlite_services, rows[0].id, "handed_back", actor="mentor:1")
    assert await contact_mode(sqlite_services, cid) == "bot"
