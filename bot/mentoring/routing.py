"""Messages while a mentor has the conversation: learner -> console, mentor -> learner.

`route_to_mentor` is called by the pipeline, holding the contact's lease, in its open
transaction, for every inbound message of a contact not in bot mode. The message
itself stays in `inbound_messages` (the transcript reads it from there), so a state
change never loses or repeats it.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation import lease as contact_lease
from bot.i18n.catalogue import Rendered, normalise_language
from bot.mentoring.events import publish_after_commit
from bot.mentoring.group import posts as group_posts
from bot.mentoring.handoff import (
    HandoffError,
    close,
    console_event,
    deliver_after_commit,
    lock_contact,
    open_handoff,
    tell_rasa_resumed,
)
from bot.mentoring.held import hold_reply, release_held
from bot.outbox.queue import enqueue
from bot.privacy.audit import audit, mentor_actor
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, Handoff, InboundMessage, Mentor

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

BACK_TO_BOT_PAYLOAD = "/back_to_bot"
# "bot" in the five languages, and the longer phrases learners type
BACK_TO_BOT_WORDS: frozenset[str] = frozenset({
    "bot", "/bot", "back to bot", "back to the bot", "assistant", "back_to_bot",
    "بوت", "البوت", "روبوت", "الروبوت", "العودة إلى البوت", "العودة للبوت", "رجوع للبوت",
    "ربات", "بات", "بازگشت به ربات", "برگشت به ربات", "بازگشت به دستیار",
    "retour au bot", "retour bot", "robot", "retour à l'assistant", "retour a l'assistant",
    "zurück zum bot", "zuruck zum bot", "zurück zum assistenten", "zurueck zum bot",
})
WHATSAPP_WINDOW = timedelta(hours=24)
_PUNCTUATION = re.compile(r"[\s.!?،؟!«»\"'„“”]+")


def is_back_to_bot(message: InboundMessage) -> bool:
    """The learner asked to leave the mentor (a button payload or the word in any of the five languages)."""
    payload = message.payload or {}
    if isinstance(payload, dict) and str(payload.get("payload") or payload.get("data") or "") == BACK_TO_BOT_PAYLOAD:
        return True
    text = unicodedata.normalize("NFC", (message.text or "")).strip().lower()
    if not text or len(text) > 40:
        return False
    cleaned = _PUNCTUATION.sub(" ", text).strip()
    return text == BACK_TO_BOT_PAYLOAD or cleaned in BACK_TO_BOT_WORDS


async def route_to_mentor(
    services: Services, session: AsyncSession, contact: Contact, message: InboundMessage
) -> list[Rendered]:
    """Record a learner message in the open hand-off and tell the consoles; replies for the learner, if any."""
    handoff = await open_handoff(session, contact.id)
    if handoff is None:
        # The mode says "mentor" but nothing is open (an interrupted transition): keep the
        # message in front of a person rather than dropping it.
        from bot.mentoring.handoff import request_handoff

        log.warning("contact %s in mode %s without an open hand-off: reopening", contact.id, contact.mode)
        return await request_handoff(services, session, contact, "request_human", False)
    if contact.held_since is not None:
        # the learner answered: the mentor's texts held back by WhatsApp's window go out now
        released = await release_held(session, contact)
        if released:
            deliver_after_commit(services, session, released)
    if is_back_to_bot(message):
        closed = await close(services, session, handoff, "learner", actor="learner", notify=False)
        await tell_rasa_resumed(services, contact.key)
        return closed.replies
    handoff.last_activity_at = utcnow()
    publish_after_commit(services, session, console_event("message", handoff, message_id=message.id))
    await group_posts.post(services, session, handoff, "learner", inbound_id=message.id)
    return []


# --- mentor replies ------------------------------------------------------------

@dataclass
class ReplyOutcome:
    """What happened to a mentor's reply: sent as typed (`outbox_id`), or the approved template went out
    (`outbox_id`) and the text waits for the learner's answer (`held_id`)."""

    outbox_id: int
    used_template: bool
    held_id: int | None = None


def outside_whatsapp_window(contact: Contact) -> bool:
    """WhatsApp only accepts free text within 24 hours of the learner's last message."""
    if contact.channel != "whatsapp":
        return False
    if contact.last_inbound_at is None:
        return True
    return utcnow() - as_utc(contact.last_inbound_at) > WHATSAPP_WINDOW


def mentor_reply_template_sid(services: Services, language: str) -> str | None:
    templates = services.settings.whatsapp_templates
    raw = templates.get(f"MENTOR_REPLY_{language.upper()}") or templates.get("MENTOR_REPLY")
    return raw.partition("|")[0].strip() or None if raw else None


async def send_mentor_reply(
    services: Services, session: AsyncSession, handoff: Handoff, mentor: Mentor, text: str, *, mirror: bool = True
) -> ReplyOutcome:
    """Queue a mentor's reply in the caller's transaction; the caller sends it after commit with `deliver`.

    Outside WhatsApp's 24-hour window the approved template goes out and the text itself is held
    (outbox status `held`) until the learner answers (bot/mentoring/held.py). `mirror`: show the reply
    in the hand-off's mentor group topic (not when it was written there)."""
    text = (text or "").strip()
    if not text:
        raise HandoffError("empty reply", "empty_reply")
    if len(text) > 4000:
        raise HandoffError("reply too long (4000 characters at most)", "reply_too_long")
    if handoff.state != "with_mentor" or (handoff.mentor_id != mentor.id and mentor.role != "lead"):
        raise HandoffError("claim the conversation before replying", "claim_before_reply")
    contact = await lock_contact(session, handoff.contact_id)
    language = normalise_language(contact.language)
    now = utcnow()
    if outside_whatsapp_window(contact):
        sid = mentor_reply_template_sid(services, language)
        if not sid:
            raise HandoffError(
                "outside WhatsApp's 24-hour window and no mentor-reply template is configured", "no_template"
            )
        rendered = services.catalogue.render("handoff_mentor_reply_template", language)
        name = mentor.display_name or services.catalogue.text("handoff_mentor_default_name", language)
        extra = {"template": {"sid": sid, "variables": {"1": name}}}
        row, held = await hold_reply(session, contact, mentor, text, template=rendered, template_payload=extra)
    else:
        row = held = await enqueue(session, contact, Rendered(text), origin="mentor", author_mentor_id=mentor.id)
    used_template = row is not held
    handoff.last_activity_at = now
    if handoff.first_response_at is None:
        handoff.first_response_at = now
    audit(session, services.settings, actor=mentor_actor(mentor.id), action="mentor.reply", contact_key=contact.key,
          detail={"handoff_id": handoff.id, "outbox_id": row.id, "template": used_template})
    publish_after_commit(services, session, console_event("reply", handoff, outbox_id=row.id))
    if mirror or used_template:
        # a held reply shows in the topic too, marked as held, even when it was written there
        await group_posts.post(services, session, handoff, "reply", outbox_id=held.id)
    return ReplyOutcome(outbox_id=row.id, used_template=used_template, held_id=held.id if used_template else None)


async def deliver(services: Services, outbox_ids: list[int]) -> None:
    """Send committed outbox rows now if this process has a sender; otherwise the worker sends them."""
    if services.sender is None or not outbox_ids:
        return
    try:
        await services.sender.send_ids(outbox_ids)
    except Exception:  # (rows stay queued; the worker retries them)
        log.warning("immediate send failed; the worker will retry", exc_info=True)


async def end_handoff(
    services: Services, handoff_id: int, outcome: str, *, actor: str, expect_open: bool = True,
    idle_since: datetime | None = None, resolution: str | None = None,
) -> bool:
    """Resolve / hand back / time out a hand-off in its own transaction, holding the contact's lease
    (so no learner message is mid-way between mentor and bot), tell the learner and Rasa.
    Returns False when it was already closed (and `expect_open` is False).

    With `idle_since` (the idle timeout) it closes only if, under the lease, the conversation is
    still idle: no activity since then and no learner message waiting to reach the mentor."""
    async with services.db.session() as session:
        handoff = await session.get(Handoff, handoff_id)
        contact = await session.get(Contact, handoff.contact_id) if handoff is not None else None
        if handoff is None or contact is None:
            if expect_open:
                raise HandoffError("unknown conversation", "no_conversation")
            return False
        contact_key = contact.key
    async with contact_lease.hold(services, contact_key, ttl_s=30.0, wait_s=30.0):
        try:
            async with services.db.session() as session:
                handoff = await session.get(Handoff, handoff_id, populate_existing=True)
                if handoff is None:
                    raise HandoffError("unknown conversation", "no_conversation")
                if idle_since is not None and not await _still_idle(session, handoff, idle_since):
                    return False
                closed = await close(services, session, handoff, outcome, actor=actor, resolution=resolution)
        except HandoffError:
            if expect_open:
                raise
            return False
        await tell_rasa_resumed(services, contact_key)
    await deliver(services, closed.outbox_ids)
    return True


async def _still_idle(session: AsyncSession, handoff: Handoff, since: datetime) -> bool:
    if as_utc(handoff.last_activity_at) >= as_utc(since):
        return False
    waiting = (await session.execute(
        select(InboundMessage.id).where(InboundMessage.contact_id == handoff.contact_id,
                                        InboundMessage.status == "received").limit(1)
    )).first()
    return waiting is None


async def add_note(services: Services, session: AsyncSession, handoff: Handoff, mentor: Mentor, text: str, *,
                   mirror: bool = True) -> None:
    """An internal note on the conversation, never sent to the learner (`mirror`: also in the group topic)."""
    from bot.storage.models import MentorNote

    text = (text or "").strip()
    if not text:
        raise HandoffError("empty note", "empty_note")
    contact = await session.get(Contact, handoff.contact_id)
    note = MentorNote(contact_id=handoff.contact_id, handoff_id=handoff.id, mentor_id=mentor.id, text=text[:4000])
    session.add(note)
    await session.flush()
    audit(session, services.settings, actor=mentor_actor(mentor.id), action="mentor.note",
          contact_key=contact.key if contact else None, detail={"handoff_id": handoff.id})
    publish_after_commit(services, session, console_event("note", handoff))
    if mirror:
        await group_posts.post(services, session, handoff, "note", note_id=note.id)
