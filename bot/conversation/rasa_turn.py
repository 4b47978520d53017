"""Step 4 of a message's path: ask Rasa, and turn its answer into replies and gateway commands.

Never twice: a message is marked (`taken_at`) when it is first taken, before it goes to Rasa,
and a message taken before (a timeout, a process that died, Rasa down or refusing it) is first
looked up in Rasa's tracker, whose answer is used if Rasa already had it.

Failures (integrations/rasa.py):
- Rasa down (refused, timed out, 5xx): the learner is told once, the message waits and does
  not lose an attempt; redelivery asks again when Rasa is back.
- Rasa refusing the message (4xx, an answer that is not the API's): that counts as an attempt
  and it is asked again at once; after the last attempt the learner gets the honest
  "trouble" reply with a mentor offered, and the conversation moves on.
See docs/architecture.md ("When Rasa fails").
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import Table, update

from bot.conversation.commands import CommandResult, handler_for
from bot.conversation.finish import finish, insert_outbox, queue_more, send_claimed
from bot.i18n.catalogue import Button, Rendered
from bot.privacy.logs import contact_ref
from bot.runtime import metrics
from bot.storage.db import utcnow
from bot.storage.models import Contact, InboundMessage
from integrations.rasa import RasaRefused, RasaUnavailable

if TYPE_CHECKING:
    from bot.conversation.turn import Turn
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

CONTACTS = cast(Table, Contact.__table__)
MESSAGES = cast(Table, InboundMessage.__table__)
# the button of the "trouble" reply that asks for a mentor; the gateway answers it itself, so it
# works while Rasa refuses messages
MENTOR_OFFER_PAYLOAD = "sanad:mentor"

# done: answered; again: still waiting, take it again now; rasa_down: stop until redelivery
Outcome = Literal["done", "again", "rasa_down"]


def rasa_metadata(services: Services, contact: Contact, message: InboundMessage) -> dict[str, Any]:
    """What custom actions know about the learner (see flows/context.py)."""
    from bot.privacy.pin import pin_required

    return {
        "channel": contact.channel,
        "language": contact.language or "en",
        "learner_id": contact.learner_id,
        "timezone": contact.timezone,
        "country": contact.country,
        "first_name": contact.display_name,
        "pin_required": pin_required(contact, utcnow(), services.settings),
        "message_kind": message.kind,
        "inbound_id": message.id,
    }


async def ask_rasa(services: Services, turn: Turn, text: str) -> Outcome:
    """One message through Rasa, never twice; the replies are queued by `finish`."""
    if services.rasa is None:
        raise RuntimeError("no Rasa client configured")
    contact, message = turn.contact, turn.message
    try:
        started = time.perf_counter()
        items = None
        if turn.taken_before:
            # an earlier try may have reached Rasa: never run the message twice
            items = await replies_already_given(services, contact.key, message.id)
        if items is None:
            items = await services.rasa.send_message(contact.key, text, rasa_metadata(services, contact, message))
        metrics.RASA_LATENCY.observe(time.perf_counter() - started)
    except RasaUnavailable as exc:
        metrics.RASA_ERRORS.inc()
        log.warning("rasa unavailable contact=%s reason=%s", contact_ref(contact.key), exc)
        await _rasa_down(services, turn)
        return "rasa_down"
    except RasaRefused as exc:
        metrics.RASA_ERRORS.inc()
        log.warning("rasa refused a message contact=%s attempt=%d reason=%s", contact_ref(contact.key),
                    message.attempts, exc)
        return await _rasa_refused(services, turn)
    await apply_rasa_replies(services, turn, items)
    return "done"


async def _rasa_down(services: Services, turn: Turn) -> None:
    """Tell the learner once that the answer will come later; the message stays queued."""
    contact, message = turn.contact, turn.message
    ids: list[int] = []
    replies: list[Rendered] = []
    async with services.db.transaction() as conn:
        changes = dict(turn.contact_changes)
        if contact.rasa_trouble_notified_at is None:
            changes["rasa_trouble_notified_at"] = utcnow()
            replies = [services.catalogue.render("gateway_rasa_trouble", contact.language or "en")]
        if changes:  # the contact's row first, as everywhere (bot/conversation/finish.py)
            await conn.execute(update(CONTACTS).where(CONTACTS.c.id == contact.id).values(**changes))
        # Rasa being down is not the message's fault: the attempt does not count
        await conn.execute(update(MESSAGES).where(MESSAGES.c.id == message.id).values(attempts=message.attempts - 1))
        ids = await insert_outbox(services, conn, contact, message.id, replies, origin="system")
    await send_claimed(services, contact, ids, replies, origin="system")


async def _rasa_refused(services: Services, turn: Turn) -> Outcome:
    """The attempt counts; after the last one the learner is told and offered a mentor."""
    from bot.conversation.turn import MAX_PROCESS_ATTEMPTS

    if turn.message.attempts < MAX_PROCESS_ATTEMPTS:
        if turn.contact_changes:
            async with services.db.autocommit() as conn:
                await conn.execute(
                    update(CONTACTS).where(CONTACTS.c.id == turn.contact.id).values(**turn.contact_changes)
                )
        return "again"
    turn.replies = [services.catalogue.render("gateway_rasa_failed", turn.contact.language or "en")]
    turn.routed_to = "gateway"
    await finish(services, turn, status="failed")
    return "done"


async def offer_accepted(services: Services, turn: Turn) -> None:
    """The learner took the mentor offered with a "trouble" reply: open the hand-off here."""
    result = await run_command(services, turn.contact, {"command": "handoff", "reason": "request_human"})
    turn.replies = list(result.replies) if result is not None else []
    turn.routed_to = "gateway"
    await finish(services, turn, reload_contact=True)


async def replies_already_given(services: Services, sender_id: str, inbound_id: int) -> list[dict[str, Any]] | None:
    """Rasa's answers to this message if its tracker already holds it, as REST-channel items; else None."""
    if services.rasa is None:
        return None
    tracker = await services.rasa.get_tracker(sender_id)
    events = tracker.get("events") or []
    replies: list[dict[str, Any]] | None = None
    for event in events:
        if not isinstance(event, dict):
            continue
        if event.get("event") == "user":
            if replies is not None:
                break  # the next learner message: Rasa's answer to ours is complete
            if (event.get("metadata") or {}).get("inbound_id") == inbound_id:
                replies = []
        elif event.get("event") == "bot" and replies is not None:
            data = event.get("data") or {}
            item: dict[str, Any] = {"text": event.get("text")}
            for name in ("buttons", "image", "custom"):
                if data.get(name):
                    item[name] = data[name]
            replies.append(item)
    return replies


def _rendered_from_rasa(item: dict[str, Any]) -> Rendered | None:
    text = item.get("text")
    image = item.get("image")
    if not text and image:
        text = str(image)
    if not text:
        return None
    buttons = tuple(
        Button(str(b.get("title", "")), str(b.get("payload", "")))
        for b in item.get("buttons") or []
        if isinstance(b, dict) and b.get("payload")
    )
    return Rendered(str(text), buttons)


async def apply_rasa_replies(services: Services, turn: Turn, items: list[dict[str, Any]]) -> None:
    """Queue Rasa's texts in order; gateway commands run where they appear, after what precedes them."""
    if turn.contact.rasa_trouble_notified_at is not None:
        turn.contact_changes["rasa_trouble_notified_at"] = None
    finished = False
    for item in items:
        custom = item.get("custom")
        command = custom.get("sanad") if isinstance(custom, dict) else None
        if isinstance(command, dict) and command.get("command"):
            if not finished:
                turn.release_lease = False  # the commands run under the lease too
                await finish(services, turn)
                finished = True
            else:
                await queue_more(services, turn.contact, turn.message.id, turn.replies)
            turn.replies = []
            result = await run_command(services, turn.contact, command)
            if result is not None:
                if result.suppress_bot_replies:
                    return
                turn.replies.extend(result.replies)
            continue
        rendered = _rendered_from_rasa(item)
        if rendered is not None:
            turn.replies.append(rendered)
    if not finished:
        await finish(services, turn)
    elif turn.replies:
        await queue_more(services, turn.contact, turn.message.id, turn.replies)


async def run_command(services: Services, contact: Contact, command: dict[str, Any]) -> CommandResult | None:
    """A gateway command (bot/conversation/commands.py) on a fresh copy of the contact."""
    name = str(command["command"])
    handler = handler_for(name)
    if handler is None:
        log.warning("unknown gateway command %s", name)
        return None
    args = {k: v for k, v in command.items() if k != "command"}
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
    if fresh is None:
        return None
    return await handler(services, fresh, args)
