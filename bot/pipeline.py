"""From a verified webhook to replies: persist, route, ask Rasa, queue the answers.

Order and safety:
- `accept` persists every inbound message (unique on its provider id) before the
  webhook answers, so a redelivery is answered 200 and never handled twice.
- `process_contact` runs under the contact's lock (Redis across gateways) and takes
  the contact's received messages oldest first, so one conversation is handled in order.
- When Rasa is down the message stays `received`; the learner is told once, and
  `redeliver_pending` picks it up again when Rasa is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import metrics
from bot.catalogue import Rendered
from bot.channels.base import InboundEvent
from bot.commands import CommandResult, handler_for
from bot.coordination import LockTimeout
from bot.db import utcnow
from bot.interceptors import interceptors
from bot.models import Contact, InboundMessage
from bot.outbox import enqueue
from bot.services import Services
from bot.text import clean_text
from integrations.rasa import RasaUnavailable

log = logging.getLogger(__name__)

MAX_PROCESS_ATTEMPTS = 3
NON_TEXT_KINDS = {"voice", "audio", "photo", "video", "document", "sticker", "location", "contact", "other"}
_background: set[asyncio.Task[Any]] = set()


def contact_ref(key: str) -> str:
    """A contact key as it may appear in logs (hashed)."""
    from bot.log_privacy import contact_ref as ref

    return ref(key)


# --- accepting ----------------------------------------------------------------

async def _get_or_create_contact(session: AsyncSession, event: InboundEvent) -> Contact:
    key = event.contact_key
    contact = (await session.execute(select(Contact).where(Contact.key == key))).scalar_one_or_none()
    if contact is not None:
        if event.display_name and not contact.display_name:
            contact.display_name = event.display_name
        return contact
    contact = Contact(
        key=key,
        channel=event.channel,
        address=event.address,
        display_name=event.display_name,
        mode="bot",
        reminders_opt_out=False,
        stopped=False,
        pin_failures=0,
    )
    try:
        async with session.begin_nested():
            session.add(contact)
            await session.flush()
    except IntegrityError:
        # another gateway created it between our select and insert
        contact = (await session.execute(select(Contact).where(Contact.key == key))).scalar_one()
    return contact


async def accept(services: Services, events: list[InboundEvent]) -> list[str]:
    """Persist inbound events; returns the contact keys that have new messages to process."""
    keys: list[str] = []
    now = utcnow()
    async with services.db.session() as session:
        for event in events:
            contact = await _get_or_create_contact(session, event)
            if event.kind in ("blocked", "unblocked"):
                contact.stopped = event.kind == "blocked"
                continue
            text, truncated = clean_text(event.text)
            payload = dict(event.payload or {})
            if truncated:
                payload["truncated"] = True
            if event.language_hint:
                payload["language_hint"] = event.language_hint[:16]
            if event.ack:
                payload["ack"] = event.ack
            values = {
                "contact_id": contact.id,
                "channel": event.channel,
                "dedup_key": event.dedup_key[:128],
                "provider_id": event.provider_id[:128],
                "kind": event.kind,
                "text": text or None,
                "payload": payload or None,
                "media_ref": event.media_ref,
                "media_type": (event.media_type or None) and str(event.media_type)[:64],
                "status": "received",
                "attempts": 0,
                "created_at": now,
            }
            dialect_insert = sqlite_insert if services.db.is_sqlite else pg_insert
            stmt = dialect_insert(InboundMessage).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
            result = await session.execute(stmt.returning(InboundMessage.id))
            if result.scalar_one_or_none() is None:
                metrics.INBOUND.labels(event.channel, "duplicate").inc()
                continue
            metrics.INBOUND.labels(event.channel, "accepted").inc()
            contact.last_inbound_at = now
            if contact.key not in keys:
                keys.append(contact.key)
    return keys


def schedule(services: Services, keys: list[str]) -> None:
    """Process these contacts in the background (the webhook has already answered)."""
    for key in keys:
        task = asyncio.create_task(process_contact(services, key))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def drain() -> None:
    """Wait for scheduled processing (tests, shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


# --- processing ---------------------------------------------------------------

async def process_contact(services: Services, key: str) -> None:
    """Handle every received message of one contact, in order."""
    try:
        async with services.coord.lock(f"contact:{key}", ttl_s=120.0, wait_s=60.0):
            while await _process_next(services, key):
                pass
    except LockTimeout:
        log.info("contact busy, left for redelivery contact=%s", contact_ref(key))
    except Exception:
        # never let a background task die silently; the message stays received and is retried
        log.exception("processing failed contact=%s", contact_ref(key))


async def _process_next(services: Services, key: str) -> bool:
    """Handle the oldest received message; False when there is none (or Rasa is down)."""
    started = time.perf_counter()
    async with services.db.session() as session:
        contact = (await session.execute(select(Contact).where(Contact.key == key))).scalar_one_or_none()
        if contact is None:
            return False
        message = (
            await session.execute(
                select(InboundMessage)
                .where(InboundMessage.contact_id == contact.id, InboundMessage.status == "received")
                .order_by(InboundMessage.id)
                .limit(1)
            )
        ).scalar_one_or_none()
        if message is None:
            return False
        if message.attempts >= MAX_PROCESS_ATTEMPTS:
            # a message that keeps failing must not block the conversation forever
            message.status = "failed"
            await enqueue(session, contact, services.catalogue.render("gateway_error", contact.language or "en"),
                          origin="system", in_reply_to=message.id)
            return True
        message.attempts += 1
        if contact.mode != "bot":
            from bot.mentoring.routing import route_to_mentor

            replies = await route_to_mentor(services, session, contact, message)
            message.status, message.routed_to, message.processed_at = "done", "mentor", utcnow()
            outbox_ids = [
                (await enqueue(session, contact, r, origin="system", in_reply_to=message.id)).id for r in replies
            ]
            done = True
        else:
            done = False
    if done:
        await _acknowledge_and_send(services, contact, message, outbox_ids)
        metrics.PROCESSED.labels(contact.channel, "mentor").observe(time.perf_counter() - started)
        return True
    await _acknowledge(services, contact, message)
    handled = await _handle_with_bot(services, contact, message)
    metrics.PROCESSED.labels(contact.channel, "bot").observe(time.perf_counter() - started)
    return handled


async def _acknowledge(services: Services, contact: Contact, message: InboundMessage) -> None:
    ack = (message.payload or {}).get("ack")
    channel = services.channels.get(contact.channel)
    if ack and channel is not None and message.attempts <= 1:
        event = InboundEvent(channel=contact.channel, address=contact.address, dedup_key="", provider_id="", ack=ack)
        await channel.acknowledge(event)


async def _acknowledge_and_send(
    services: Services, contact: Contact, message: InboundMessage, outbox_ids: list[int]
) -> None:
    await _acknowledge(services, contact, message)
    await send_now(services, outbox_ids)


async def send_now(services: Services, outbox_ids: list[int]) -> None:
    """Deliver freshly queued rows right away (the worker picks up whatever this misses)."""
    sender = services.extras.get("sender")
    if sender is not None and outbox_ids:
        await sender.send_ids(outbox_ids)


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
    }


def _update_language(contact: Contact, message: InboundMessage, text: str) -> None:
    from bot.language import choose_language, detect_language

    hint = (message.payload or {}).get("language_hint")
    if message.kind in ("text",) and text and not text.startswith("/"):
        detected, confidence = detect_language(text, hint)
    else:
        detected, confidence = None, 0.0
    language, source = choose_language(contact.language, contact.language_source, detected, confidence, hint)
    contact.language, contact.language_source = language, source
    message.language = detected


async def _handle_with_bot(services: Services, contact: Contact, message: InboundMessage) -> bool:
    """Interceptors, then Rasa; returns False when Rasa is unavailable (stop for now)."""
    channel = services.channels.get(contact.channel)
    numbered = bool(channel is not None and channel.numbered_buttons)
    text = message.text or ""
    button_payload = resolve_button(contact, numbered, message)
    if button_payload is not None:
        text = button_payload
    elif message.kind == "button":
        text = str((message.payload or {}).get("payload") or text)

    async with services.db.session() as session:
        contact, message = await _reload(session, contact.id, message.id)
        _update_language(contact, message, text)
        lang = contact.language or "en"
        if message.kind in NON_TEXT_KINDS and not message.text:
            reply = services.catalogue.render(f"gateway_media_{message.kind}", lang)
            return await _finish(services, session, contact, message, [reply], routed_to="gateway")

    for intercept in interceptors():
        result = await intercept(services, contact, message)
        if result is not None:
            async with services.db.session() as session:
                contact, message = await _reload(session, contact.id, message.id)
                return await _finish(services, session, contact, message, result.replies, routed_to="gateway")

    async with services.db.session() as session:
        contact = (await session.execute(select(Contact).where(Contact.id == contact.id))).scalar_one()
        metadata = rasa_metadata(services, contact, message)
    if services.rasa is None:
        raise RuntimeError("no Rasa client configured")
    try:
        rasa_started = time.perf_counter()
        items = await services.rasa.send_message(contact.key, text or "/greet", metadata)
        metrics.RASA_LATENCY.observe(time.perf_counter() - rasa_started)
    except RasaUnavailable as exc:
        metrics.RASA_ERRORS.inc()
        log.warning("rasa unavailable contact=%s reason=%s", contact_ref(contact.key), exc)
        await _rasa_trouble(services, contact, message)
        return False
    return await _apply_rasa_replies(services, contact, message, items)


async def _reload(session: AsyncSession, contact_id: int, message_id: int) -> tuple[Contact, InboundMessage]:
    contact = (await session.execute(select(Contact).where(Contact.id == contact_id))).scalar_one()
    message = (await session.execute(select(InboundMessage).where(InboundMessage.id == message_id))).scalar_one()
    return contact, message


async def _rasa_trouble(services: Services, contact: Contact, message: InboundMessage) -> None:
    """Tell the learner once that the answer will come later; the message stays queued."""
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
        row = await session.get(InboundMessage, message.id)
        if row is not None:
            row.attempts = max(0, row.attempts - 1)  # Rasa being down is not the message's fault
        if fresh is None or fresh.rasa_trouble_notified_at is not None:
            return
        fresh.rasa_trouble_notified_at = utcnow()
        out = await enqueue(session, fresh, services.catalogue.render("gateway_rasa_trouble", fresh.language or "en"),
                            origin="system", in_reply_to=message.id)
        out_id = out.id
    await send_now(services, [out_id])


def _rendered_from_rasa(item: dict[str, Any]) -> Rendered | None:
    from bot.catalogue import Button

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


async def _apply_rasa_replies(
    services: Services, contact: Contact, message: InboundMessage, items: list[dict[str, Any]]
) -> bool:
    """Queue Rasa's texts in order; run gateway commands where they appear."""
    pending: list[Rendered] = []
    first = True
    for item in items:
        custom = item.get("custom")
        command = custom.get("sanad") if isinstance(custom, dict) else None
        if isinstance(command, dict) and command.get("command"):
            await _flush(services, contact, message, pending, mark_done=first)
            first, pending = False, []
            result = await _run_command(services, contact, command)
            if result is not None:
                if result.suppress_bot_replies:
                    return True
                pending.extend(result.replies)
            continue
        rendered = _rendered_from_rasa(item)
        if rendered is not None:
            pending.append(rendered)
    await _flush(services, contact, message, pending, mark_done=first)
    return True


async def _flush(
    services: Services, contact: Contact, message: InboundMessage, replies: list[Rendered], mark_done: bool
) -> None:
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
        if fresh is None:
            return  # erased meanwhile
        row = await session.get(InboundMessage, message.id) if mark_done else None
        ids = await _queue_replies(session, fresh, message.id, replies, row)
        if mark_done:
            fresh.rasa_trouble_notified_at = None
    await send_now(services, ids)


async def _queue_replies(
    session: AsyncSession,
    contact: Contact,
    message_id: int,
    replies: list[Rendered],
    row: InboundMessage | None,
    routed_to: str = "bot",
) -> list[int]:
    if row is not None:
        row.status, row.routed_to, row.processed_at = "done", routed_to, utcnow()
        if (row.payload or {}).get("truncated"):
            from bot.catalogue import get_catalogue

            replies = [get_catalogue().render("gateway_truncated", contact.language or "en"), *replies]
    ids: list[int] = []
    for reply in replies:
        if reply.buttons:
            contact.pending_buttons = [{"title": b.title, "payload": b.payload} for b in reply.buttons]
        out = await enqueue(session, contact, reply, origin="reply", in_reply_to=message_id)
        ids.append(out.id)
    return ids


async def _finish(
    services: Services,
    session: AsyncSession,
    contact: Contact,
    message: InboundMessage,
    replies: list[Rendered],
    routed_to: str,
) -> bool:
    ids = await _queue_replies(session, contact, message.id, replies, message, routed_to=routed_to)
    await session.commit()
    await send_now(services, ids)
    return True


async def _run_command(services: Services, contact: Contact, command: dict[str, Any]) -> CommandResult | None:
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


# --- redelivery ---------------------------------------------------------------

async def redeliver_pending(services: Services, older_than_s: float = 5.0, limit: int = 200) -> int:
    """Process contacts whose messages wait (Rasa was down, a gateway died mid-way)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    async with services.db.session() as session:
        keys = (
            await session.execute(
                select(Contact.key)
                .join(InboundMessage, InboundMessage.contact_id == Contact.id)
                .where(InboundMessage.status == "received", InboundMessage.created_at <= cutoff)
                .group_by(Contact.key)
                .limit(limit)
            )
        ).scalars().all()
    if keys and services.rasa is not None and not await services.rasa.ping():
        # only contacts in mentor mode can progress without Rasa
        async with services.db.session() as session:
            keys = (
                await session.execute(select(Contact.key).where(Contact.key.in_(keys), Contact.mode != "bot"))
            ).scalars().all()
    for key in keys:
        await process_contact(services, key)
    return len(keys)
