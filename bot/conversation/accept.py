"""Step 1 of a message's path: persist it before the webhook answers.

`accept` stores every inbound event (unique on its provider's delivery id, `dedup_key`), so a
provider's redelivery is answered 200 and never handled twice; it returns the contact keys
that got a new message, which the webhook hands to the conversation scheduler
(bot/conversation/scheduler.py). See docs/architecture.md ("A message's path").
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Insert, Table, bindparam, case, false, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

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


def _statements(dialect_insert: Any) -> tuple[Insert, Insert]:
    """The upsert of the contact and the insert of the message, in a dialect's INSERT (both PostgreSQL
    and SQLite have ON CONFLICT); built once per dialect with bound parameters."""
    contact = dialect_insert(CONTACTS).values(
        key=bindparam("c_key"), channel=bindparam("c_channel"), address=bindparam("c_address"),
        display_name=bindparam("c_name"), mode="bot", reminders_opt_out=False, stopped=False, pin_failures=0,
        created_at=bindparam("now"), last_inbound_at=bindparam("now"),
    )
    upsert = contact.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "last_inbound_at": contact.excluded.last_inbound_at,
            # keep a name the learner already has; fill it when we had none
            "display_name": func.coalesce(CONTACTS.c.display_name, contact.excluded.display_name),
            # a Telegram learner who writes has unblocked the bot (WhatsApp needs START: optout.py)
            "stopped": case((CONTACTS.c.channel == "telegram", false()), else_=CONTACTS.c.stopped),
        },
    ).returning(CONTACTS.c.id)
    message = dialect_insert(MESSAGES).values(
        {**{name: bindparam(f"m_{name}") for name in (
            "contact_id", "channel", "dedup_key", "provider_id", "kind", "text", "payload", "media_ref",
            "media_type")}, "created_at": bindparam("now"), "status": "received", "attempts": 0},
    ).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(MESSAGES.c.id)
    return upsert, message


STATEMENTS = {"postgresql": _statements(pg_insert), "sqlite": _statements(sqlite_insert)}


async def accept(services: Services, events: list[InboundEvent]) -> list[str]:
    """Persist inbound events; returns the contact key of each new message (duplicates left out).

    Each statement commits on its own: the contact's upsert is idempotent, and the message is stored
    (or found a duplicate) by one INSERT, so no transaction around them is needed (and none costs
    its two round trips)."""
    keys: list[str] = []
    now = utcnow()
    messages = [_storable_event(e) for e in events if e.kind not in ("blocked", "unblocked")]
    async with services.db.autocommit() as conn:
        for event in events:
            if event.kind in ("blocked", "unblocked"):
                # the learner blocked (or unblocked) the bot: nothing is sent to a stopped contact
                await conn.execute(
                    update(CONTACTS).where(CONTACTS.c.key == event.contact_key).values(stopped=event.kind == "blocked")
                )
        upsert, insert_message = STATEMENTS[conn.dialect.name]
        for event in messages:
            contact_id = (await conn.execute(upsert, {
                "c_key": event.contact_key, "c_channel": event.channel, "c_address": event.address,
                "c_name": event.display_name, "now": now,
            })).scalar_one()
            text, payload = _message_body(event)
            inserted = (await conn.execute(insert_message, {
                "m_contact_id": contact_id, "m_channel": event.channel, "m_dedup_key": event.dedup_key,
                "m_provider_id": event.provider_id, "m_kind": event.kind, "m_text": text or None,
                "m_payload": payload or None, "m_media_ref": event.media_ref, "m_media_type": event.media_type,
                "now": now,
            })).scalar_one_or_none()
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
