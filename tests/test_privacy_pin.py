"""Shared-phone PIN: when it is required, the /pin flows, the rate limit and a mentor's reset."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.conversation.interceptors import interceptors
from bot.privacy.pin import (
    LOCK_S,
    MAX_FAILURES,
    parse_pin,
    pin_interceptor,
    pin_required,
    reset_pin,
)
from bot.runtime.services import Services
from bot.storage.db import utcnow
from bot.storage.models import AuditEntry, Contact, InboundMessage, Outbox
from tests.conftest import make_settings


def test_pin_required_is_defined_by_the_last_verified_activity(tmp_path) -> None:
    settings = make_settings(tmp_path)
    now = utcnow()
    idle = settings.pin_idle_s
    contact = Contact(key="telegram:1", channel="telegram", address="1")
    assert pin_required(contact, now, settings) is False  # no PIN
    contact.pin_hash = "x"
    assert pin_required(contact, now, settings) is True  # never verified
    contact.pin_verified_at = now - timedelta(seconds=idle - 1)
    contact.last_inbound_at = now  # the message being processed: says nothing about the silence
    assert pin_required(contact, now, settings) is False
    contact.pin_verified_at = now - timedelta(seconds=idle + 1)
    assert pin_required(contact, now, settings) is True
    contact.pin_verified_at = now + timedelta(hours=1)  # stamped in the future: not trusted
    assert pin_required(contact, now, settings) is True
    contact.pin_verified_at = (now - timedelta(seconds=60)).replace(tzinfo=None)  # SQLite hands back naive UTC
    assert pin_required(contact, now, settings) is False
    short = settings.replace(pin_idle_s=30.0)
    assert pin_required(contact, now, short) is True


@pytest.mark.parametrize(
    ("text", "pin"),
    [("4821", "4821"), (" 4 8 2 1 ", "4821"), ("٤٨٢١", "4821"), ("۴۸۲۱", "4821"), ("482", None),
     ("48211", None), ("pin", None), ("", None), ("12a4", None)],
)
def test_parse_pin_accepts_every_digit_script(text: str, pin: str | None) -> None:
    assert parse_pin(text) == pin


def test_interceptor_is_registered_early() -> None:
    assert pin_interceptor in interceptors()


async def _contact(services: Services, key: str = "telegram:777001", language: str = "en") -> Contact:
    async with services.db.session() as s:
        c = Contact(key=key, channel="telegram", address=key.split(":", 1)[1], language=language, pin_failures=0)
        s.add(c)
        await s.flush()
        return c


async def say(services: Services, contact_id: int, text: str) -> str | None:
    """One learner message through the interceptor, as the pipeline hands it over (detached)."""
    async with services.db.session() as s:
        contact = await s.get(Contact, contact_id)
        assert contact is not None
        msg = InboundMessage(contact_id=contact_id, channel="telegram", dedup_key=f"t:{utcnow().timestamp()}:{text}",
                             kind="text", text=text)
        s.add(msg)
        await s.flush()
    result = await pin_interceptor(services, contact, msg)
    if result is None:
        return None
    return "\n".join(r.text for r in result.replies)


async def fresh(services: Services, contact_id: int) -> Contact:
    async with services.db.session() as s:
        c = await s.get(Contact, contact_id)
        assert c is not None
        return c


async def test_set_verify_and_remove_a_pin(services: Services) -> None:
    c = await _contact(services)
    cat = services.catalogue
    assert await say(services, c.id, "hello") is None  # no PIN: everything passes
    assert await say(services, c.id, "/pin") == cat.text("pin_enter_new", "en", minutes=30)
    assert await say(services, c.id, "12") == cat.text("pin_format", "en")
    assert await say(services, c.id, "4821") == cat.text("pin_confirm", "en")
    assert await say(services, c.id, "4822") == cat.text("pin_mismatch", "en")
    assert await say(services, c.id, "٤٨٢١") == cat.text("pin_confirm", "en")
    assert await say(services, c.id, "4821") == cat.text("pin_set_done", "en")
    stored = await fresh(services, c.id)
    assert stored.pin_hash and "4821" not in stored.pin_hash and stored.pin_hash.startswith("$argon2")
    assert pin_required(stored, utcnow(), services.settings) is False

    # 31 minutes of silence: the next question goes to Rasa with pin_required, the PIN unlocks
    async with services.db.session() as s:
        row = await s.get(Contact, c.id)
        assert row is not None
        row.pin_verified_at = utcnow() - timedelta(minutes=31)
    assert await say(services, c.id, "when is my deadline?") is None
    assert pin_required(await fresh(services, c.id), utcnow(), services.settings) is True
    assert await say(services, c.id, "4821") == cat.text("pin_ok", "en")
    assert pin_required(await fresh(services, c.id), utcnow(), services.settings) is False

    # an active learner slides the session forward
    async with services.db.session() as s:
        row = await s.get(Contact, c.id)
        assert row is not None
        row.pin_verified_at = utcnow() - timedelta(minutes=29)
    assert await say(services, c.id, "and my credits?") is None
    after = await fresh(services, c.id)
    assert after.pin_verified_at is not None and utcnow() - after.pin_verified_at < timedelta(minutes=1)

    assert await say(services, c.id, "/pin off") == cat.text("pin_enter_current", "en")
    assert await say(services, c.id, "4821") == cat.text("pin_removed", "en")
    assert (await fresh(services, c.id)).pin_hash is None
    assert await say(services, c.id, "/pin off") == cat.text("pin_not_set", "en")


async def test_wrong_pins_lock_then_mentor_resets(services: Services) -> None:
    c = await _contact(services, language="ar")
    cat = services.catalogue
    await say(services, c.id, "/pin 1357")
    assert await say(services, c.id, "1357") == cat.text("pin_set_done", "ar")
    async with services.db.session() as s:
        row = await s.get(Contact, c.id)
        assert row is not None
        row.pin_verified_at = None  # e.g. the phone changed hands long ago
    for attempt in range(1, MAX_FAILURES):
        assert await say(services, c.id, "0000") == cat.text("pin_wrong", "ar", attempts=MAX_FAILURES - attempt)
    locked_reply = await say(services, c.id, "0000")
    assert locked_reply == cat.text("pin_locked", "ar", minutes=int(LOCK_S / 60))
    # even the right PIN is refused while locked
    assert await say(services, c.id, "1357") == locked_reply
    row = await fresh(services, c.id)
    assert row.pin_locked_until is not None and row.pin_verified_at is None

    await reset_pin(services, c.id, actor="mentor:3")
    row = await fresh(services, c.id)
    assert (row.pin_hash, row.pin_locked_until, row.pin_failures) == (None, None, 0)
    async with services.db.session() as s:
        audit = (await s.execute(select(AuditEntry))).scalars().all()
        outbox = (await s.execute(select(Outbox))).scalars().all()
    assert [(a.actor, a.action) for a in audit] == [("mentor:3", "pin_reset")]
    assert audit[0].subject_ref and "777001" not in audit[0].subject_ref
    assert [o.text for o in outbox] == [cat.text("pin_reset_by_mentor", "ar")]
    assert await say(services, c.id, "what are my credits?") is None


async def test_leaving_the_flow_lets_the_message_through(sqlite_services: Services) -> None:
    c = await _contact(sqlite_services)
    await say(sqlite_services, c.id, "/pin")
    assert await say(sqlite_services, c.id, "what is the programme?") is None
    assert await say(sqlite_services, c.id, "4821") is None  # the flow was dropped: not a PIN any more
    assert (await fresh(sqlite_services, c.id)).pin_hash is None
    await say(sqlite_services, c.id, "/pin")
    assert await say(sqlite_services, c.id, "cancel") == sqlite_services.catalogue.text("pin_cancelled", "en")


async def test_an_unfinished_pin_conversation_expires(services: Services) -> None:
    c = await _contact(services)
    cat = services.catalogue
    assert await say(services, c.id, "/pin") == cat.text("pin_enter_new", "en", minutes=30)
    flow = (await fresh(services, c.id)).pin_flow
    assert flow is not None and flow["step"] == "new"
    # the learner walks away; long after, four digits are just a message again
    stale = dict(flow, until=(utcnow() - timedelta(seconds=1)).isoformat())
    async with services.db.session() as s:
        row = await s.get(Contact, c.id)
        assert row is not None
        row.pin_flow = stale
    assert await say(services, c.id, "4821") is None
    assert (await fresh(services, c.id)).pin_hash is None
