"""The outbox: every outbound message is a row first, then sent.

`enqueue` is how anything (replies, mentor messages, reminders, broadcasts) sends a
message; the sender (`bot/outbox/sender.py`) claims queued rows and delivers them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n.catalogue import Rendered
from bot.storage.db import utcnow
from bot.storage.models import Contact, Outbox


def rendered_payload(rendered: Rendered, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
    payload: dict[str, Any] = dict(extra or {})
    if rendered.buttons:
        payload["buttons"] = [{"title": b.title, "payload": b.payload} for b in rendered.buttons]
    return payload or None


async def enqueue(
    session: AsyncSession,
    contact: Contact,
    rendered: Rendered,
    *,
    origin: str = "reply",
    idempotency_key: str | None = None,
    author_mentor_id: int | None = None,
    in_reply_to: int | None = None,
    broadcast_id: int | None = None,
    not_before: datetime | None = None,
    extra_payload: dict[str, Any] | None = None,
) -> Outbox:
    """Queue one message for `contact` in the caller's transaction (flushed, so it has an id)."""
    row = Outbox(
        contact_id=contact.id,
        channel=contact.channel,
        origin=origin,
        author_mentor_id=author_mentor_id,
        text=rendered.text,
        payload=rendered_payload(rendered, extra_payload),
        in_reply_to=in_reply_to,
        idempotency_key=idempotency_key,
        broadcast_id=broadcast_id,
        status="queued",
        next_attempt_at=not_before or utcnow(),
    )
    session.add(row)
    await session.flush()
    return row
