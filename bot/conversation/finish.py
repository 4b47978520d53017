"""Step 5 of a message's path: finish the turn and send its replies.

`finish` is one transaction: the message is done, its replies are queued in the outbox, the
contact's changes (language, buttons offered) are saved. With an outbox sender in this
process the reply rows are written already claimed by it and sent right after the commit;
otherwise the worker sends them. See docs/architecture.md ("A message's path").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.conversation.lease import RELEASE
from bot.i18n.catalogue import Rendered
from bot.outbox.queue import rendered_payload
from bot.storage.db import utcnow
from bot.storage.models import Contact, InboundMessage, Outbox

if TYPE_CHECKING:
    from bot.conversation.turn import Turn
    from bot.runtime.services import Services

CONTACTS = cast(Table, Contact.__table__)
MESSAGES = cast(Table, InboundMessage.__table__)
OUTBOX = cast(Table, Outbox.__table__)
FINISH_MESSAGE = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("message_id"))
    .values(status=bindparam("new_status"), routed_to=bindparam("new_routed_to"), processed_at=bindparam("now"),
            language=bindparam("new_language"))
)
INSERT_OUTBOX = insert(OUTBOX).returning(OUTBOX.c.id, sort_by_parameter_order=True)


async def finish(services: Services, turn: Turn, status: str = "done", reload_contact: bool = False) -> None:
    """One transaction: the message is done, its replies are queued, the contact's changes are saved."""
    contact, message = turn.contact, turn.message
    replies = list(turn.replies)
    if (message.payload or {}).get("truncated"):
        replies.insert(0, services.catalogue.render("gateway_truncated", contact.language or "en"))
    async with services.db.transaction() as conn:
        if reload_contact:
            # an interceptor or a command may have changed the contact (linked it, erased it)
            crow = (await conn.execute(select(CONTACTS).where(CONTACTS.c.id == contact.id))).mappings().first()
            if crow is None:
                return
            contact = Contact(**crow)
        # the contact's row before the message's, as accepting a message does: two transactions that
        # lock both always lock them in the same order (no deadlock on PostgreSQL)
        changes = {k: v for k, v in turn.contact_changes.items() if not reload_contact or k != "language"}
        buttons = _buttons_of(replies)
        if buttons is not None:
            changes["pending_buttons"] = buttons
        if changes:
            contact_update = update(CONTACTS).where(CONTACTS.c.id == contact.id)
            if turn.release_lease:  # in the same statement
                contact_update = contact_update.where(CONTACTS.c.lease_token == services.instance_token)
                changes.update(lease_token=None, lease_until=None)
                turn.lease_released = True
            await conn.execute(contact_update.values(**changes))
        elif turn.release_lease:
            await conn.execute(RELEASE, {"b_key": contact.key, "token": services.instance_token})
            turn.lease_released = True
        await conn.execute(FINISH_MESSAGE, {"message_id": message.id, "new_status": status,
                                            "new_routed_to": turn.routed_to, "now": utcnow(),
                                            "new_language": message.language})
        ids = await insert_outbox(services, conn, contact, message.id, replies)
    await send_claimed(services, contact, ids, replies)


async def queue_more(services: Services, contact: Contact, message_id: int, replies: list[Rendered]) -> None:
    """Replies that follow a gateway command (the contact may have been erased by it)."""
    if not replies:
        return
    async with services.db.transaction() as conn:
        exists = (await conn.execute(select(CONTACTS.c.id).where(CONTACTS.c.id == contact.id))).first()
        if exists is None:
            return
        buttons = _buttons_of(replies)
        if buttons is not None:
            await conn.execute(update(CONTACTS).where(CONTACTS.c.id == contact.id).values(pending_buttons=buttons))
        ids = await insert_outbox(services, conn, contact, message_id, replies)
    await send_claimed(services, contact, ids, replies)


async def insert_outbox(
    services: Services, conn: AsyncConnection, contact: Contact, message_id: int, replies: list[Rendered],
    origin: str = "reply",
) -> list[int]:
    """Queue the replies in the caller's transaction; ids in reply order."""
    if not replies:
        return []
    now = utcnow()
    # with a sender in this process the rows are written already claimed and sent right after commit
    claimed_by = services.instance_token if services.sender is not None else None
    rows = [
        {"contact_id": contact.id, "channel": contact.channel, "origin": origin, "text": reply.text,
         "payload": rendered_payload(reply), "in_reply_to": message_id, "next_attempt_at": now, "created_at": now,
         "status": "sending" if claimed_by else "queued", "claimed_at": now if claimed_by else None,
         "claimed_by": claimed_by, "attempts": 0}
        for reply in replies
    ]
    result = await conn.execute(INSERT_OUTBOX, rows)
    return [int(row_id) for row_id in result.scalars()]


async def send_claimed(
    services: Services, contact: Contact, ids: list[int], replies: list[Rendered], origin: str = "reply"
) -> None:
    """Deliver rows that `insert_outbox` wrote as claimed by this process."""
    if services.sender is None or not ids:
        return
    from bot.outbox.sender import Claimed

    rows = [
        Claimed(
            id=row_id, contact_id=contact.id, contact_key=contact.key, channel=contact.channel, origin=origin,
            text=reply.text, payload=rendered_payload(reply) or {}, attempts=0, address=contact.address,
            language=contact.language or "en", stopped=bool(contact.stopped),
            opted_out=bool(contact.reminders_opt_out), last_inbound_at=contact.last_inbound_at,
        )
        for row_id, reply in zip(ids, replies, strict=True)
    ]
    await services.sender.send_claimed(rows)


async def send_now(services: Services, outbox_ids: list[int]) -> None:
    """Deliver freshly queued rows right away (the worker picks up whatever this misses)."""
    if services.sender is not None and outbox_ids:
        await services.sender.send_ids(outbox_ids)


def _buttons_of(replies: list[Rendered]) -> list[dict[str, Any]] | None:
    offered = [r for r in replies if r.buttons]
    if not offered:
        return None
    return [{"title": b.title, "payload": b.payload} for b in offered[-1].buttons]
