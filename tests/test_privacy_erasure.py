"""Erasure: after it, no table, no Redis key and no Rasa tracker row identifies the learner."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import JSON, String, Text, select

from bot.channels.base import OutboundMessage, SendResult
from bot.conversation.commands import handler_for
from bot.i18n.catalogue import Rendered
from bot.outbox.queue import enqueue
from bot.privacy import erasure as _erasure  # noqa: F401  (registers the erase command)
from bot.privacy import tracker_store
from bot.privacy.audit import record_audit
from bot.privacy.erasure import erase_contact
from bot.runtime.services import Services
from bot.storage.db import Base, utcnow
from bot.storage.models import (
    AuditEntry,
    Contact,
    ErasureStat,
    Handoff,
    InboundMessage,
    LinkToken,
    Mentor,
    MentorNote,
    Outbox,
    Reminder,
    ReminderAssignment,
    ReviewItem,
)

RASA_PYTHON = Path(__file__).resolve().parents[1] / ".venv-rasa" / "bin" / "python"

KEY = "whatsapp:+4915112345678"
ADDRESS = "+4915112345678"
KEY2 = "telegram:55500123"
LEARNER = "L-20431"
NAME = "Lina Haddad"
SECRETS = [
    "I feel hopeless about my exam and my visa",
    "Hi Lina, a mentor is here for you",
    "Lina worries about her residence permit",
]
BYSTANDER = "telegram:99911122"

# Rasa 3.6's own SQLTrackerStore writes and reads the tracker (its venv, Python 3.10).
RASA_SCRIPT = """
import asyncio, json, sys
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered
path, mode, senders = sys.argv[1], sys.argv[2], sys.argv[3:]
store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=path)
async def main():
    out = {}
    for sender in senders:
        if mode == "write":
            tracker = DialogueStateTracker(sender, [])
            for event in [ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
                          UserUttered("my number is +4915112345678, I am Lina Haddad",
                                      {"name": "greet", "confidence": 1.0}, metadata={"first_name": "Lina Haddad"}),
                          BotUttered("Hello Lina")]:
                tracker.update(event)
            await store.save(tracker)
        elif mode == "replace_with_nothing":
            # what PUT /conversations/{id}/tracker/events does (rasa/server.py replace_events)
            await store.save(DialogueStateTracker.from_dict(sender, [], []))
        tracker = await store.retrieve_full_tracker(sender)
        out[sender] = None if tracker is None else len(tracker.events)
    print(json.dumps(out))
asyncio.run(main())
"""


def rasa_store(tmp_path: Path, db: Path, mode: str, *senders: str) -> dict[str, int | None]:
    if not RASA_PYTHON.is_file():
        pytest.skip("the Rasa virtual environment is not installed")
    script = tmp_path / "rasa_store.py"
    script.write_text(RASA_SCRIPT)
    done = subprocess.run([str(RASA_PYTHON), str(script), str(db), mode, *senders], capture_output=True, text=True,
                          check=True, timeout=120)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def populate(services: Services) -> dict[str, Any]:
    """A learner with two chats, a hand-off with notes, reminders, link tokens, audit entries, Redis keys."""
    now = utcnow()
    async with services.db.session() as s:
        mentor = Mentor(email="mentor@example.org", display_name="Sam", password_hash="x")
        a = Contact(key=KEY, channel="whatsapp", address=ADDRESS, display_name=NAME, language="ar",
                    learner_id=LEARNER, linked_at=now, timezone="Europe/Berlin", country="SY", pin_failures=0,
                    pending_buttons=[{"title": "Lina's courses", "payload": "/ask_enrolment_status"}])
        b = Contact(key=KEY2, channel="telegram", address="55500123", display_name="Lina", language="ar",
                    learner_id=LEARNER, pin_failures=0)
        other = Contact(key=BYSTANDER, channel="telegram", address="99911122", display_name="Omar", pin_failures=0)
        s.add_all([mentor, a, b, other])
        await s.flush()
        msg = InboundMessage(contact_id=a.id, channel="whatsapp", dedup_key="whatsapp:SM1", provider_id="SM1",
                             text=SECRETS[0], payload={"from": KEY}, status="done")
        s.add_all([msg, InboundMessage(contact_id=b.id, channel="telegram", dedup_key="telegram:77", text="hello",
                                       status="done"),
                   InboundMessage(contact_id=other.id, channel="telegram", dedup_key="telegram:78",
                                  text="bystander text", status="done")])
        await s.flush()
        out = await enqueue(s, a, Rendered(SECRETS[1]), origin="mentor", author_mentor_id=mentor.id,
                            in_reply_to=msg.id)
        await enqueue(s, other, Rendered("hello Omar"))
        handoff = Handoff(contact_id=a.id, reason="distress", urgent=True, language="ar", mentor_id=mentor.id,
                          state="resolved", resolved_at=now)
        s.add(handoff)
        await s.flush()
        s.add(MentorNote(contact_id=a.id, handoff_id=handoff.id, mentor_id=mentor.id, text=SECRETS[2]))
        s.add(Reminder(idempotency_key=f"reminder:{LEARNER}:d1:24", learner_id=LEARNER, contact_id=b.id,
                       deadline_id="d1", offset_h=24, due_at=now + timedelta(days=2), send_at=now + timedelta(days=1),
                       data={"course_title": "Statistics", "learner": LEARNER}, outbox_id=out.id))
        # the review inbox holds one of her messages; the reminder experiment one of her deadlines
        s.add(ReviewItem(inbound_id=msg.id, contact_id=a.id, language="ar", predicted_intent="express_distress",
                         confidence=0.4, fallback=True, label="express_distress"))
        s.add(ReminderAssignment(learner_id=LEARNER, deadline_id=f"{LEARNER}-essay", arm="held_out", language="ar",
                                 due_at=now - timedelta(days=1), on_time=True, checked_at=now))
        s.add(LinkToken(token_hash="h1", short_code="ABC123", learner_id=LEARNER, expires_at=now, used_at=now,
                        used_by_contact_id=a.id))
        s.add(LinkToken(token_hash="h2", short_code="ABC124", learner_id=LEARNER, expires_at=now))
        s.add(LinkToken(token_hash="h3", short_code="ZZZ999", learner_id="L-other", expires_at=now))
        await record_audit(s, services.settings, actor="mentor:1", action="handoff_claimed", contact_key=KEY,
                           detail={"handoff_id": handoff.id})
        # a careless entry that names the learner in its detail and has no subject_ref
        s.add(AuditEntry(actor="admin", action="link_token_created", detail={"learner_id": LEARNER, "for": KEY}))
        s.add(AuditEntry(actor="admin", action="link_token_created", detail={"learner_id": "L-other"}))
        ids = {"a": a.id, "b": b.id, "other": other.id}
    coord = services.coord
    await coord.cache_set(f"platform:{LEARNER}:enrolments", json.dumps({"items": [{"course_title": "Stats"}]}), 60)
    await coord.cache_set(f"pin:{KEY}", "{}", 60)
    await coord.hit(f"inbound:{KEY2}", 60)
    await coord.pause(f"chat:{KEY}", 30)
    await coord.cache_set("platform:L-other:enrolments", "{}", 60)
    await coord.hit(f"inbound:{BYSTANDER}", 60)
    return ids


def identifying(services: Services) -> list[str]:
    return [KEY, ADDRESS, "4915112345678", KEY2, "55500123", LEARNER, NAME, "Lina", *SECRETS]


async def find_anywhere(services: Services, needles: list[str]) -> list[str]:
    """Every text or JSON column of every table, searched for each needle (case-insensitive)."""
    found: list[str] = []
    async with services.db.session() as s:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text | JSON)]
            for row in (await s.execute(sa.select(*columns))).all() if columns else []:
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
                    found += [f"{table.name}.{column.name}: {n}" for n in needles if n.lower() in text.lower()]
    return found


async def redis_keys(services: Services) -> list[str]:
    redis = getattr(services.coord, "redis", None)
    if redis is None:
        coord: Any = services.coord
        return [*coord._cache, *coord._hits, *coord._pauses, *coord._buckets]
    return [k async for k in redis.scan_iter(match=services.coord.prefix + "*")]


async def test_erasing_a_learner_leaves_nothing_identifying(services: Services, tmp_path: Path) -> None:
    tracker_db = tmp_path / "rasa_tracker.db"  # where settings point the tracker store by default
    assert tracker_store.tracker_store_url(services.settings) == f"sqlite:///{tracker_db}"
    before = rasa_store(tmp_path, tracker_db, "write", KEY, KEY2, BYSTANDER)
    assert before == {KEY: 5, KEY2: 5, BYSTANDER: 5}
    ids = await populate(services)
    assert await find_anywhere(services, identifying(services))  # the search does find them before

    report = await erase_contact(services, LEARNER, actor="admin")

    assert report.found and report.contacts == 2 and report.mentor_notes == 1 and report.handoffs == 1
    assert report.inbound_messages == 2 and report.outbox == 1 and report.reminders == 1
    assert report.link_tokens == 2 and report.rasa_events == 10 and report.audit_entries_scrubbed == 2
    assert report.review_items == 1 and report.experiment_pairs == 1
    assert await find_anywhere(services, identifying(services)) == []
    keys = await redis_keys(services)
    assert not [k for k in keys if any(n in k for n in (KEY, KEY2, LEARNER, ADDRESS, "55500123"))], keys
    assert any(BYSTANDER in k for k in keys) and any("L-other" in k for k in keys)
    # Rasa itself no longer finds the conversations; the bystander's is intact
    assert rasa_store(tmp_path, tracker_db, "read", KEY, KEY2, BYSTANDER) == {KEY: None, KEY2: None, BYSTANDER: 5}

    async with services.db.session() as s:
        remaining = (await s.execute(select(Contact.id))).scalars().all()
        stats = (await s.execute(select(ErasureStat))).scalars().one()
        audit = (await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
        tokens = (await s.execute(select(LinkToken.short_code))).scalars().all()
        bystander_msgs = (await s.execute(select(InboundMessage.text))).scalars().all()
        experiment = (await s.execute(select(ReminderAssignment.arm, ReminderAssignment.on_time))).all()
    assert remaining == [ids["other"]] and tokens == ["ZZZ999"] and bystander_msgs == ["bystander text"]
    assert experiment == [("held_out", True)]  # the experiment keeps its count, without her ids
    assert (stats.contacts, stats.messages, stats.handoffs, stats.notes) == (2, 3, 1, 1)
    # who did what stays; the subject is a fresh reference that no longer links to the contact key
    assert [(a.actor, a.action) for a in audit] == [
        ("mentor:1", "handoff_claimed"), ("admin", "link_token_created"), ("admin", "link_token_created"),
        ("admin", "erase"),
    ]
    assert audit[0].subject_ref is not None and audit[0].subject_ref.startswith("erased_")
    assert audit[0].detail == {"handoff_id": audit[0].detail["handoff_id"]}
    assert audit[2].detail == {"learner_id": "L-other"}
    assert audit[3].detail is not None and audit[3].detail["contacts"] == 2

    again = await erase_contact(services, LEARNER)
    assert not again.found


async def test_replacing_events_through_rasa_does_not_delete_them(tmp_path: Path) -> None:
    """Why erasure deletes rows itself: Rasa's SQL store only appends on PUT .../tracker/events."""
    db = tmp_path / "rasa_tracker.db"
    rasa_store(tmp_path, db, "write", KEY)
    assert rasa_store(tmp_path, db, "replace_with_nothing", KEY) == {KEY: 5}


async def test_erasing_one_chat_keeps_the_learners_other_chat(sqlite_services: Services, tmp_path: Path) -> None:
    services = sqlite_services
    ids = await populate(services)
    report = await erase_contact(services, KEY, actor="admin")
    assert report.contacts == 1 and report.rasa_events == 0  # no tracker store yet: nothing to do
    async with services.db.session() as s:
        left = {c.key for c in (await s.execute(select(Contact))).scalars()}
        tokens = (await s.execute(select(LinkToken.short_code).order_by(LinkToken.short_code))).scalars().all()
        reminders = (await s.execute(select(Reminder.contact_id))).scalars().all()
    assert left == {KEY2, BYSTANDER}
    assert tokens == ["ABC124", "ZZZ999"]  # the used token went; the learner still has another chat
    assert reminders == [ids["b"]]
    found = await find_anywhere(services, [KEY, ADDRESS, NAME, SECRETS[0], SECRETS[1], SECRETS[2]])
    assert found == []
    assert not [k for k in await redis_keys(services) if KEY in k or f"platform:{LEARNER}:" in k]


class RecordingChannel:
    """A channel double: records what it is asked to send."""

    name = "whatsapp"
    max_text_len = 1600
    numbered_buttons = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, OutboundMessage]] = []

    async def send(self, address: str, message: OutboundMessage) -> SendResult:
        self.sent.append((address, message))
        return SendResult(("SM1",))

    async def close(self) -> None:
        return None


async def test_erase_command_says_goodbye_then_erases(services: Services) -> None:
    await populate(services)
    channel = RecordingChannel()
    services.channels["whatsapp"] = channel  # type: ignore[assignment]
    handler = handler_for("erase")
    assert handler is not None
    async with services.db.session() as s:
        contact = (await s.execute(select(Contact).where(Contact.key == KEY))).scalar_one()
    result = await handler(services, contact, {})
    assert result is not None and result.suppress_bot_replies
    assert channel.sent == [(ADDRESS, OutboundMessage(text=services.catalogue.text("erasure_done", "ar"),
                                                      language="ar"))]
    found = await find_anywhere(services, [KEY, ADDRESS, NAME, SECRETS[0], SECRETS[1], SECRETS[2]])
    assert found == []
    async with services.db.session() as s:
        assert (await s.execute(select(Outbox).where(Outbox.channel == "whatsapp"))).first() is None


async def test_unknown_subject_is_reported_not_raised(services: Services) -> None:
    report = await erase_contact(services, "telegram:404")
    assert report.found is False and report.contacts == 0
    with pytest.raises(ValueError):
        await erase_contact(services, "  ")


def test_cli_erase_and_export(tmp_path: Path) -> None:
    """`sanad learner export/erase` on the embedded default (SQLite, no Redis), in a fresh process."""
    import asyncio

    from bot.runtime.services import Services as Svc
    from tests.conftest import make_settings

    db = tmp_path / "cli.db"
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{db}", "REDIS_URL": None}
    settings = make_settings(tmp_path, **env)

    async def setup() -> None:
        svc = Svc.build(settings)
        await svc.db.create_all()
        await populate(svc)
        await svc.close()

    asyncio.run(setup())
    child_env = {"DATABASE_URL": f"sqlite+aiosqlite:///{db}", "SANAD_SECRET_KEY": settings.secret_key,
                 "SANAD_VAR_DIR": str(tmp_path), "RASA_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    out = tmp_path / "export.json"
    run = [sys.executable, "-m", "bot.privacy.cli", "learner"]
    cwd = str(Path(__file__).resolve().parents[1])
    exported = subprocess.run([*run, "export", LEARNER, "--out", str(out)], env=child_env, cwd=cwd,
                              capture_output=True, text=True, timeout=60)
    assert exported.returncode == 0, exported.stderr
    data = json.loads(out.read_text())
    assert {c["contact"]["key"] for c in data["contacts"]} == {KEY, KEY2}
    assert (out.stat().st_mode & 0o077) == 0
    erased = subprocess.run([*run, "erase", LEARNER], env=child_env, cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    assert erased.returncode == 0, erased.stderr
    assert json.loads(erased.stdout)["contacts"] == 2
    missing = subprocess.run([*run, "erase", LEARNER], env=child_env, cwd=cwd, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and "no contact or learner" in missing.stderr


async def test_learner_erases_through_the_gateway(gateway: Any) -> None:
    """Telegram webhook -> Rasa (double) confirms delete_my_data -> `erase` command -> nothing left."""
    chat = 731550077

    def responder(body: dict[str, Any]) -> list[dict[str, Any]]:
        if body["message"] == "yes, delete my data":
            return [{"recipient_id": body["sender"], "custom": {"sanad": {"command": "erase"}}},
                    {"recipient_id": body["sender"], "text": "this must not be sent"}]
        return [{"recipient_id": body["sender"], "text": f"echo: {body['message']}"}]

    gateway.rasa.responder = responder
    person = {"id": chat, "first_name": "Lina", "language_code": "fr"}
    for n, text in enumerate(["bonjour, je suis Lina Haddad", "yes, delete my data"], start=1):
        update = {"update_id": 8000 + n, "message": {"message_id": n, "date": 1732790000, "text": text,
                                                     "chat": {**person, "type": "private"},
                                                     "from": {**person, "is_bot": False}}}
        assert (await gateway.telegram(update)).status_code == 200
        await gateway.settle()
    sent = await gateway.bot_api.wait_for(2)
    assert sent[-1]["text"] == gateway.services.catalogue.text("erasure_done", "fr")
    assert "this must not be sent" not in [m["text"] for m in sent]
    found = await find_anywhere(gateway.services, [f"telegram:{chat}", str(chat), "Lina", "bonjour", "delete my"])
    assert found == []
    assert not [k for k in await redis_keys(gateway.services) if str(chat) in k]


async def test_mentors_audit_entries_are_unlinked_by_erasure(services: Services) -> None:
    from bot.mentoring.audit import audit, subject_ref

    async with services.db.session() as session:
        session.add(Contact(key="telegram:880011", channel="telegram", address="880011", mode="bot"))
        await session.flush()
        audit(session, services.settings, actor="mentor:1", action="conversation.read", contact_key="telegram:880011")
    ref = subject_ref(services.settings, "telegram:880011")
    await erase_contact(services, "telegram:880011")
    async with services.db.session() as session:
        entries = list((await session.execute(select(AuditEntry))).scalars())
    assert [e.action for e in entries if e.action == "conversation.read"] == ["conversation.read"]  # who did what stays
    assert all(e.subject_ref != ref for e in entries)  # but no longer points at the erased learner
