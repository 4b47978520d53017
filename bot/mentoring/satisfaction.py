"""After a resolved hand-off: "how helpful was this?" 1-5 as buttons, and an optional comment.

The question goes out with the "conversation closed" message, in the learner's language
(`SATISFACTION_SURVEY`, on by default). The answer comes back as a button payload
(`/csat <hand-off> <score>`; on WhatsApp the digit of a numbered button) and is stored on the
hand-off (`satisfaction`, `satisfaction_at`), where the analytics read it. The
learner may then tap "add a comment": only then is their next text taken as the comment
(`satisfaction_comment`), so a question they write instead is never swallowed — any button or
command clears the waiting comment, and so does an hour of silence.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.interceptors import Intercepted, interceptor
from bot.i18n.catalogue import Rendered, normalise_language
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, Handoff

if TYPE_CHECKING:
    from bot.runtime.services import Services
    from bot.storage.models import InboundMessage

SCORE_PAYLOAD = re.compile(r"^/csat (\d+) ([1-5])$")
COMMENT_PAYLOAD = re.compile(r"^/csat_comment (\d+)$")
COMMENT_WINDOW = timedelta(hours=1)
MAX_COMMENT_CHARS = 2000


def _buttons(rendered: Rendered) -> list[dict[str, str]]:
    return [{"title": b.title, "payload": b.payload} for b in rendered.buttons]


async def survey(services: Services, session: AsyncSession, contact: Contact, handoff: Handoff) -> list[Rendered]:
    """The question for a hand-off just resolved (in the caller's transaction), or nothing when off."""
    if not services.settings.satisfaction_survey:
        return []
    question = services.catalogue.render("satisfaction_question", normalise_language(contact.language),
                                         handoff=str(handoff.id))
    handoff.satisfaction_asked_at = utcnow()
    contact.pending_buttons = _buttons(question)  # WhatsApp answers with the digit of a numbered button
    return [question]


def _payload(services: Services, contact: Contact, message: InboundMessage) -> str | None:
    from bot.conversation.turn import resolve_button

    channel = services.channels.get(contact.channel)
    resolved = resolve_button(contact, bool(channel is not None and channel.numbered_buttons), message)
    if resolved is not None:
        return resolved
    if message.kind == "button":
        payload = (message.payload or {}).get("payload")
        return str(payload) if payload else message.text
    text = (message.text or "").strip()
    return text if text.startswith("/csat") else None


@interceptor("satisfaction", order=2)
async def answer(services: Services, contact: Contact, message: InboundMessage) -> Intercepted | None:
    """Scores, the "add a comment" button and the comment itself; anything else passes on."""
    payload = _payload(services, contact, message)
    score = SCORE_PAYLOAD.match(payload or "")
    comment_asked = COMMENT_PAYLOAD.match(payload or "")
    if not score and not comment_asked and contact.feedback_handoff_id is None:
        return None  # not about the rating: no database work on the way to the assistant
    language = normalise_language(contact.language)
    cat = services.catalogue
    async with services.db.session() as session:
        attached = await session.get(Contact, contact.id)
        if attached is None:
            return None
        if score or comment_asked:
            handoff_id = int((score or comment_asked).group(1))  # type: ignore[union-attr]
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None or handoff.contact_id != contact.id or handoff.satisfaction_asked_at is None:
                return Intercepted([cat.render("satisfaction_expired", language)])
            if score:
                handoff.satisfaction = int(score.group(2))
                handoff.satisfaction_at = utcnow()
                attached.feedback_handoff_id = None
                return Intercepted([cat.render("satisfaction_thanks", language, handoff=str(handoff.id))])
            attached.feedback_handoff_id = handoff.id
            return Intercepted([cat.render("satisfaction_comment_prompt", language)])
        # a comment is awaited: only a plain text is one
        waiting = await session.get(Handoff, contact.feedback_handoff_id)
        attached.feedback_handoff_id = None
        fresh = waiting is not None and waiting.satisfaction_at is not None and \
            as_utc(waiting.satisfaction_at) > utcnow() - COMMENT_WINDOW
        if waiting is None or not fresh or message.kind != "text" or not (message.text or "").strip():
            return None
        waiting.satisfaction_comment = (message.text or "").strip()[:MAX_COMMENT_CHARS]
        return Intercepted([cat.render("satisfaction_comment_thanks", language)])
