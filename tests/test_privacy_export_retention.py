"""Export (everything held, Rasa events included) and retention (old data goes, audit stays)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import func, select

from bot.conversation.commands import handler_for
from bot.privacy import export as _export  # noqa: F401  (registers the export command)
from bot.privacy import tracker_store
from bot.privacy.export import build_export, export_json
from bot.privacy.retention import job, run_retention
from bot.runtime.services import Services
from bot.storage.db import utcnow
from bot.storage.models import AuditEntry, Contact, Handoff, InboundMessage, MentorNote, Outbox
from tests.test_privacy_erasure import KEY, KEY2, LEARNER, SECRETS, populate


async def make_tracker(services: Services, rows: list[tuple[str, str, float, dict[str, object]]]) -> None:
    """The `events` table as Rasa's SQLTrackerStore creates it, with some events."""
    from sqlalchemy.ext.asyncio import create_async_engine

    url = tracker_store.async_url(tracker_store.tracker_store_url(services.settings))
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(tracker_store.EVENTS.metadata.create_all)
        await conn.execute(sa.insert(tracker_store.EVENTS), [
            {"sender_id": s, "type_name": t, "timestamp": ts, "data": json.dumps({"event": t, **d})}
            for s, t, ts, d in rows
        ])
    await engine.dispose()


async def tracker_rows(services: Services) -> list[tuple[str, str]]:
    async with tracker_store.tracker_connection(services.settings) as conn:
        assert conn is not None
        rows = await conn.execute(sa.select(tracker_store.EVENTS.c.sender_id, tracker_store.EVENTS.c.type_name)
                                  .order_by(tracker_store.EVENTS.c.id))
        return [(r[0], r[1]) for r in rows]


async def test_export_holds_everything_about_the_learner(services: Services) -> None:
    now = utcnow().timestamp()
    await make_tracker(services, [(KEY, "user", now, {"text": "my visa"}), (KEY2, "bot", now, {"text": "hi"}),
                                  ("telegram:1", "user", now, {"text": "someone else"})])
    await populate(services)
    data = await build_export(services, LEARNER)
    text = export_json(data)
    assert data["learner_id"] == LEARNER
    by_key = {c["contact"]["key"]: c for c in data["contacts"]}
    assert set(by_key) == {KEY, KEY2}
    a = by_key[KEY]
    assert [m["text"] for m in a["messages_received"]] == [SECRETS[0]]
    assert [m["text"] for m in a["messages_sent"]] == [SECRETS[1]]
    assert [n["text"] for n in a["mentor_notes"]] == [SECRETS[2]]
    assert len(a["handoffs"]) == 1 and len(a["link_tokens_used"]) == 1
    assert a["rasa_events"] == [{"event": "user", "text": "my visa"}]
    assert len(by_key[KEY2]["reminders"]) == 1
    assert {t["short_code"] for t in data["link_tokens_issued"]} == {"ABC123", "ABC124"}
    assert [e["action"] for e in data["audit"]] == ["handoff_claimed"]
    assert "someone else" not in text and "pin_hash" not in text and "token_hash" not in text
    assert a["contact"]["pin_set"] is False


async def test_learner_asks_for_export_and_mentors_hear_of_it(services: Services) -> None:
    await populate(services)
    async with services.db.session() as s:
        contact = (await s.execute(select(Contact).where(Contact.key == KEY))).scalar_one()
    handler = handler_for("export")
    assert handler is not None
    async with services.coord.subscribe("console") as queue:
        result = await handler(services, contact, {})
        event = await queue.get()
    assert result is not None
    assert [r.text for r in result.replies] == [services.catalogue.text("export_requested", "ar")]
    assert event["type"] == "export_requested" and event["contact_id"] == contact.id
    assert KEY not in json.dumps(event) and "Lina" not in json.dumps(event)
    async with services.db.session() as s:
        actions = (await s.execute(select(AuditEntry.action))).scalars().all()
        handoffs = (await s.execute(select(func.count()).select_from(Handoff))).scalar_one()
    assert "export_requested" in actions and handoffs == 1  # no new hand-off


async def test_retention_deletes_old_messages_and_transcripts(services: Services) -> None:
    old = utcnow() - timedelta(days=400)
    await populate(services)
    async with services.db.session() as s:
        contact = (await s.execute(select(Contact).where(Contact.key == KEY))).scalar_one()
        s.add(InboundMessage(contact_id=contact.id, channel="whatsapp", dedup_key="whatsapp:old", text="old words",
                             status="done", created_at=old))
        s.add(Outbox(contact_id=contact.id, channel="whatsapp", text="old reply", status="sent", created_at=old))
        s.add(Outbox(contact_id=contact.id, channel="whatsapp", text="old but queued", status="queued",
                     created_at=old))
        h = Handoff(contact_id=contact.id, reason="fallback", state="resolved", created_at=old, resolved_at=old)
        s.add(h)
        await s.flush()
        s.add(MentorNote(contact_id=contact.id, handoff_id=h.id, text="old note", created_at=old))
        s.add(AuditEntry(actor="mentor:1", action="reply", at=old, detail={"handoff_id": h.id, "text": "old words"}))
    start = (old - timedelta(days=1)).timestamp()
    await make_tracker(services, [
        (KEY, "session_started", start, {}), (KEY, "user", start + 1, {"text": "old words"}),
        (KEY, "session_started", utcnow().timestamp() - 60, {}), (KEY, "user", utcnow().timestamp(), {"text": "new"}),
        # a conversation whose only session is old but still the latest: left alone (Rasa counts its events)
        (KEY2, "session_started", start, {}), (KEY2, "user", start + 1, {"text": "kept"}),
    ])

    report = await run_retention(services)

    assert report.deleted["inbound_messages"] == 1 and report.deleted["outbox"] == 1
    assert report.deleted["handoffs"] == 1 and report.deleted["mentor_notes"] == 1
    assert report.deleted["rasa_events"] == 2 and report.deleted["audit_details_stripped"] == 1
    async with services.db.session() as s:
        texts = set((await s.execute(select(InboundMessage.text))).scalars()) | set(
            (await s.execute(select(Outbox.text))).scalars())
        notes = (await s.execute(select(MentorNote.text))).scalars().all()
        audit = (await s.execute(select(AuditEntry).where(AuditEntry.action == "reply"))).scalar_one()
    assert "old words" not in texts and "old reply" not in texts and "old but queued" in texts
    assert SECRETS[0] in texts and notes == [SECRETS[2]]
    assert audit.actor == "mentor:1" and audit.detail == {"handoff_id": audit.detail["handoff_id"]}
    assert await tracker_rows(services) == [
        (KEY, "session_started"), (KEY, "user"), (KEY2, "session_started"), (KEY2, "user")
    ]
    await job(services)  # idempotent: a second run finds nothing more
    assert (await run_retention(services)).deleted["inbound_messages"] == 0


async def test_retention_without_a_tracker_store(sqlite_services: Services, tmp_path: Path) -> None:
    report = await run_retention(sqlite_services)
    assert report.deleted["rasa_events"] == 0 and report.errors == []
    assert not (tmp_path / "rasa_tracker.db").exists()  # never created behind Rasa's back
