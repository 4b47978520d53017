"""A mentor's reply that WhatsApp's 24-hour window keeps out: send the template, hold the text.

WhatsApp takes free text only within 24 hours of the learner's last message; after that only
an approved template ("a mentor has replied, answer to read it"). The mentor's text is kept as
an outbox row with status `held` (the sender never claims those) and the contact carries
`held_since`. The next message from the learner — to the mentor or, if the hand-off ended
meanwhile, to the assistant (after the PIN, on a shared phone that needs one) — releases the
held rows to the queue, in the order they were written, before anything else answers that message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.interceptors import Intercepted, interceptor
from bot.i18n.catalogue import Rendered
from bot.outbox.queue import enqueue
from bot.storage.db import utcnow
from bot.storage.models import Contact, Mentor, Outbox

if TYPE_CHECKING:
    from bot.runtime.services import Services
    from bot.storage.models import InboundMessage


async def hold_reply(session: AsyncSession, contact: Contact, mentor: Mentor, text: str, *, template: Rendered,
                     template_payload: dict[str, Any]) -> tuple[Outbox, Outbox]:
    """Queue the template and hold the text (in the caller's transaction); returns (template row, held row)."""
    queued = await enqueue(session, contact, template, origin="mentor", author_mentor_id=mentor.id,
                           extra_payload=template_payload)
    held = await enqueue(session, contact, Rendered(text), origin="mentor", author_mentor_id=mentor.id)
    held.status = "held"
    if contact.held_since is None:
        contact.held_since = utcnow()
    await session.flush()
    return queued, held


async def release_held(session: AsyncSession, contact: Contact) -> list[int]:
    """Put the contact's held texts back in the queue (in the caller's transaction); their ids, in order."""
    ids = list((await session.execute(
        select(Outbox.id).where(Outbox.contact_id == contact.id, Outbox.status == "held").order_by(Outbox.id)
    )).scalars().all())
    if ids:
        await session.execute(
            update(Outbox).where(Outbox.id.in_(ids), Outbox.status == "held")
            .values(status="queued", next_attempt_at=utcnow()).execution_options(synchronize_session=False))
    await session.execute(update(Contact).where(Contact.id == contact.id).values(held_since=None)
                          .execution_options(synchronize_session=False))
    contact.held_since = None
    return ids


@interceptor("held_mentor_replies", order=1)
async def release_on_answer(services: Services, contact: Contact, message: InboundMessage) -> Intercepted | None:
    """The learner wrote while in bot mode with texts held: deliver them first, then carry on."""
    if contact.held_since is None:
        return None
    from bot.mentoring.routing import deliver
    from bot.privacy.pin import pin_required

    if pin_required(contact, utcnow(), services.settings):
        return None  # a shared phone: the held words wait until the PIN is given (a later message)

    async with services.db.session() as session:
        attached = await session.get(Contact, contact.id)
        ids = await release_held(session, attached) if attached is not None else []
    contact.held_since = None
    await deliver(services, ids)
    return None  # the message itself still goes to the assistant
