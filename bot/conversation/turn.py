"""Step 3 of a message's path: one turn, a taken message and what answers it.

In order: a message that failed too often gets the error reply; a conversation with a mentor
goes to the mentor (bot/mentoring/routing.py); otherwise the gateway answers what it answers
itself (media it cannot read, interceptors such as linking or the PIN) and everything else
goes to Rasa (bot/conversation/rasa_turn.py). Every path ends in `finish`
(bot/conversation/finish.py). See docs/architecture.md ("A message's path").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.channels.base import InboundEvent
from bot.conversation.finish import finish, send_now
from bot.conversation.interceptors import interceptors
from bot.i18n.catalogue import Rendered
from bot.outbox.queue import enqueue
from bot.runtime import metrics
from bot.storage.db import utcnow
from bot.storage.models import Contact, InboundMessage

if TYPE_CHECKING:
    from bot.conversation.rasa_turn import Outcome
    from bot.runtime.services import Services

# takes of one message (a crash, Rasa refusing it) before the learner gets the error reply
MAX_PROCESS_ATTEMPTS = 3
NON_TEXT_KINDS = {"voice", "audio", "photo", "video", "document", "sticker", "location", "contact", "other"}


@dataclass
class Turn:
    """One message being handled, and what its handling will write when it finishes."""

    contact: Contact
    message: InboundMessage
    # taken before (a process died, Rasa was down or refused it): Rasa may already have it
    taken_before: bool = False
    started: float = field(default_factory=time.perf_counter)
    # no other message of the contact waits: `finish` gives the lease back in its own transaction
    release_lease: bool = False
    lease_released: bool = False
    replies: list[Rendered] = field(default_factory=list)
    routed_to: str = "bot"
    contact_changes: dict[str, Any] = field(default_factory=dict)


async def handle_turn(services: Services, turn: Turn) -> Outcome:
    """Handle a taken message: "done", "again" (take it again now) or "rasa_down" (stop for now)."""
    contact, message = turn.contact, turn.message
    if message.attempts > MAX_PROCESS_ATTEMPTS:
        # a message that keeps failing must not block the conversation forever
        turn.replies.append(services.catalogue.render("gateway_error", contact.language or "en"))
        await finish(services, turn, status="failed")
        return "done"
    if contact.mode != "bot":
        await _route_to_mentor(services, contact, message)
        metrics.PROCESSED.labels(contact.channel, "mentor").observe(time.perf_counter() - turn.started)
        return "done"
    await acknowledge(services, contact, message)
    outcome = await _handle_with_bot(services, turn)
    metrics.PROCESSED.labels(contact.channel, "bot").observe(time.perf_counter() - turn.started)
    return outcome


async def _route_to_mentor(services: Services, contact: Contact, message: InboundMessage) -> None:
    from bot.mentoring.routing import route_to_mentor

    async with services.db.session() as session:
        attached = await session.get(Contact, contact.id)
        row = await session.get(InboundMessage, message.id)
        if attached is None or row is None:
            return
        replies = await route_to_mentor(services, session, attached, row)
        row.status, row.routed_to, row.processed_at = "done", "mentor", utcnow()
        ids = [(await enqueue(session, attached, r, origin="system", in_reply_to=row.id)).id for r in replies]
    await acknowledge(services, contact, message)
    await send_now(services, ids)


async def acknowledge(services: Services, contact: Contact, message: InboundMessage) -> None:
    """Tell the provider the interaction was handled (a Telegram button press), once."""
    ack = (message.payload or {}).get("ack")
    channel = services.channels.get(contact.channel)
    if ack and channel is not None and message.attempts <= 1:
        event = InboundEvent(channel=contact.channel, address=contact.address, dedup_key="", provider_id="", ack=ack)
        await channel.acknowledge(event)


def resolve_button(contact: Contact, channel_numbered: bool, message: InboundMessage) -> str | None:
    """Map a WhatsApp reply "2" or a Telegram `btn:2` to the payload of the button last offered."""
    buttons = contact.pending_buttons or []
    text = (message.text or "").strip()
    index: int | None = None
    if message.kind == "button" and text.startswith("btn:") and text[4:].isdigit():
        index = int(text[4:])
    elif channel_numbered and message.kind == "text" and text.isdigit() and 1 <= int(text) <= len(buttons):
        index = int(text) - 1
    if index is not None and 0 <= index < len(buttons):
        return str(buttons[index]["payload"])
    return None


def _update_language(turn: Turn, text: str) -> None:
    from bot.conversation.language import choose_language, detect_language

    contact, message = turn.contact, turn.message
    hint = (message.payload or {}).get("language_hint")
    if message.kind == "text" and text and not text.startswith("/"):
        detected, confidence = detect_language(text, hint)
    else:
        detected, confidence = None, 0.0
    language, source = choose_language(contact.language, contact.language_source, detected, confidence, hint)
    message.language = detected
    if (language, source) != (contact.language, contact.language_source):
        contact.language, contact.language_source = language, source
        turn.contact_changes.update(language=language, language_source=source)


async def _handle_with_bot(services: Services, turn: Turn) -> Outcome:
    """Gateway answers, interceptors, then Rasa."""
    from bot.conversation.rasa_turn import MENTOR_OFFER_PAYLOAD, ask_rasa, offer_accepted

    contact, message = turn.contact, turn.message
    channel = services.channels.get(contact.channel)
    text = message.text or ""
    button_payload = resolve_button(contact, bool(channel is not None and channel.numbered_buttons), message)
    if button_payload is not None:
        text = button_payload
    elif message.kind == "button":
        text = str((message.payload or {}).get("payload") or text)
    _update_language(turn, text)
    lang = contact.language or "en"

    if message.kind in NON_TEXT_KINDS and not message.text:
        turn.replies.append(services.catalogue.render(f"gateway_media_{message.kind}", lang))
        turn.routed_to = "gateway"
        await finish(services, turn)
        return "done"
    if text == MENTOR_OFFER_PAYLOAD:
        await offer_accepted(services, turn)
        return "done"

    for intercept in interceptors():
        result = await intercept(services, contact, message)
        if result is not None:
            turn.replies.extend(result.replies)
            turn.routed_to = "gateway"
            await finish(services, turn, reload_contact=True)
            return "done"
    return await ask_rasa(services, turn, text or "/greet")
