"""Step 1 of a message's path: persist it before the webhook answers.

`accept` stores every inbound event (unique on its provider's delivery id, `dedup_key`), so a
provider's redelivery is answered 200 and never handled twice; it returns the contact keys
that got a new message, which the webhook hands to the conversation scheduler
(bot/conversation/scheduler.py). See docs/architecture.md ("A message's path").
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, case, false, func, update

from bot.channels.base import InboundEvent, ParseError
from bot.conversation.text import clean_text, storable, storable_tree
from bot.runtime import metrics
from bot.storage.db import utcnow
from bot.storage.models import Contact, InboundMessage

if TYPE_CHECKING:
    from bot.runtime.services import Services

CONTACTS = cast(Table, Contact.__table__)
MESSAGES = cast(Table, InboundMessage.__table__)
MAX_ADDRESS_CHARS = 64  # contacts.address


async def accept(services: Services, events: list[InboundEvent]) -> list[str]:
    """Persist inbound events in one transaction; returns the contact key of each new message
    (duplicates left out)."""
    keys: list[str] = []
    now = utcnow()
    messages = [_storable_event(e) for e in events if e.kind not in ("blocked", "unblocked")]
    async with services.db.transaction() as conn:
        for event in events:
            if event.kind in ("blocked", "unblocked"):
                # the learner blocked (or unblocked) the bot: nothing is sent to a stopped contact
                await conn.execute(
                    update(CONTACTS).where(CONTACTS.c.key == event.contact_key).values(stopped=event.kind == "blocked")
                )
        for event in messages:
            upsert = services.db.insert(CONTACTS).values(
                key=event.contact_key, channel=event.channel, address=event.address,
                display_name=event.display_name, mode="bot", reminders_opt_out=False, stopped=False,
                pin_failures=0, created_at=now, last_inbound_at=now,
            )
            upsert = upsert.on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "last_inbound_at": upsert.excluded.last_inbound_at,
                    # keep a name the learner already has; fill it when we had none
                    "display_name": func.coalesce(CONTACTS.c.display_name, upsert.excluded.display_name),
                    # a Telegram learner who writes has unblocked the bot (WhatsApp needs START: optout.py)
                    "stopped": case((CONTACTS.c.channel == "telegram", false()), else_=CONTACTS.c.stopped),
                },
            ).returning(CONTACTS.c.id)
            contact_id = (await conn.execute(upsert)).scalar_one()
            text, payload = _message_body(event)
            inserted = (await conn.execute(
                services.db.insert(MESSAGES).values(
                    contact_id=contact_id, channel=event.channel, dedup_key=event.dedup_key,
                    provider_id=event.provider_id, kind=event.kind, text=text or None, payload=payload or None,
                    media_ref=event.media_ref, media_type=event.media_type, created_at=now, status="received",
                    attempts=0,
                ).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(MESSAGES.c.id)
            )).scalar_one_or_none()
            if inserted is None:
                metrics.INBOUND.labels(event.channel, "duplicate").inc()
            else:
                metrics.INBOUND.labels(event.channel, "accepted").inc()
                keys.append(event.contact_key)
    return keys


def _storable_event(event: InboundEvent) -> InboundEvent:
    """The event with every string the database could refuse made storable: a payload that can
    never be stored must get a 400, not a 5xx the provider retries forever."""
    if len(event.address) > MAX_ADDRESS_CHARS or storable(event.address) != event.address:
        raise ParseError("not a valid chat address")
    return replace(
        event,
        dedup_key=storable(event.dedup_key)[:128],
        provider_id=storable(event.provider_id)[:128],
        display_name=storable(event.display_name)[:128] if event.display_name else None,
        media_ref=storable(event.media_ref) if event.media_ref else None,
        media_type=storable(str(event.media_type))[:64] if event.media_type else None,
        language_hint=storable(event.language_hint)[:16] if event.language_hint else None,
        payload=storable_tree(event.payload) if event.payload else None,
        ack=storable_tree(event.ack) if event.ack else None,
    )


def _message_body(event: InboundEvent) -> tuple[str, dict[str, Any]]:
    text, truncated = clean_text(event.text)
    payload = dict(event.payload or {})
    if truncated:
        payload["truncated"] = True
    if event.language_hint:
        payload["language_hint"] = event.language_hint
    if event.ack:
        payload["ack"] = event.ack
    return text, payload
