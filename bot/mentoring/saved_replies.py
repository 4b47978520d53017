"""Saved replies: texts mentors insert instead of typing them again, one set per language.

Leads create, edit and delete them (console `/console/saved`); mentors insert one with `/`
in the reply box or the picker beside it, and in the mentor group with `/saved NAME`. A text
may hold `{first_name}` and `{next_deadline}`: they are filled from the learner's record
(the platform, else the chat's name) when the reply is inserted, in the learner's language
and time zone. Any other `{…}` stays as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n.catalogue import day_phrase, local_time, normalise_language
from bot.mentoring.handoff import HandoffError
from bot.privacy.audit import audit, mentor_actor
from bot.runtime.settings import LANGUAGES
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, Mentor, SavedReply

if TYPE_CHECKING:
    from bot.mentoring.record import LearnerRecord
    from bot.runtime.services import Services

NAME = re.compile(r"^[\w-]{1,64}$")
VARIABLES = ("first_name", "next_deadline")
MAX_TEXT = 4000


@dataclass(frozen=True)
class Filled:
    """A saved reply ready to send."""

    id: int
    name: str
    text: str


def clean_name(raw: str) -> str:
    name = raw.strip().lstrip("/").lower()
    if not NAME.match(name):
        raise HandoffError("a name is one word: letters, digits, - or _", "saved_name")
    return name


async def save(services: Services, session: AsyncSession, lead: Mentor, language: str, name: str, text: str,
               reply_id: int | None = None) -> SavedReply:
    """Create (or, with `reply_id`, change) a saved reply; leads only."""
    if lead.role != "lead":
        raise HandoffError("only leads edit saved replies", "leads_edit_only")
    if language not in LANGUAGES:
        raise HandoffError("unknown language", "saved_language")
    name = clean_name(name)
    text = (text or "").strip()
    if not text or len(text) > MAX_TEXT:
        raise HandoffError("the text is empty or too long", "saved_text")
    clash = (await session.execute(select(SavedReply).where(
        SavedReply.language == language, func.lower(SavedReply.name) == name))).scalars().first()
    if clash is not None and clash.id != reply_id:
        raise HandoffError("that name is taken in this language", "saved_taken")
    row = await session.get(SavedReply, reply_id) if reply_id else None
    if reply_id and row is None:
        raise HandoffError("unknown saved reply", "saved_unknown")
    if row is None:
        row = SavedReply(language=language, name=name, text=text)
        session.add(row)
    row.language, row.name, row.text = language, name, text
    row.updated_by, row.updated_at = lead.id, utcnow()
    await session.flush()
    audit(session, services.settings, actor=mentor_actor(lead.id), action="saved_reply.save", contact_key=None,
          detail={"saved_reply_id": row.id})
    return row


async def remove(services: Services, session: AsyncSession, lead: Mentor, reply_id: int) -> None:
    if lead.role != "lead":
        raise HandoffError("only leads edit saved replies", "leads_edit_only")
    row = await session.get(SavedReply, reply_id)
    if row is not None:
        await session.delete(row)
        audit(session, services.settings, actor=mentor_actor(lead.id), action="saved_reply.delete",
              contact_key=None, detail={"saved_reply_id": reply_id})


async def for_language(session: AsyncSession, language: str) -> list[SavedReply]:
    return list((await session.execute(
        select(SavedReply).where(SavedReply.language == normalise_language(language)).order_by(SavedReply.name)
    )).scalars().all())


async def all_replies(session: AsyncSession) -> list[SavedReply]:
    return list((await session.execute(
        select(SavedReply).order_by(SavedReply.language, SavedReply.name))).scalars().all())


def fill(services: Services, text: str, contact: Contact, record: LearnerRecord | None) -> str:
    """`{first_name}` and `{next_deadline}` from the record (in the learner's language and zone)."""
    language = normalise_language(contact.language)
    learner = record.learner if record is not None and record.learner else {}
    first_name = str(learner.get("first_name") or contact.display_name or "")
    tz = str(learner.get("timezone") or contact.timezone or "") or None
    next_deadline = ""
    deadlines = record.deadlines if record is not None else []
    if deadlines:
        first = deadlines[0]
        due = first.get("due_at")
        if isinstance(due, datetime):
            when = f"{day_phrase(as_utc(due), utcnow(), tz, language)} {local_time(as_utc(due), tz, language)}"
            next_deadline = services.catalogue.text("saved_reply_deadline", language, title=str(first.get("title")),
                                                    course=str(first.get("course_title")), when=when)
    if not next_deadline:
        next_deadline = services.catalogue.text("saved_reply_no_deadline", language)
    values = {"first_name": first_name, "next_deadline": next_deadline}
    return re.sub(r"\{(first_name|next_deadline)\}", lambda m: values[m.group(1)], text)


async def filled_for(services: Services, session: AsyncSession, contact: Contact,
                     record: LearnerRecord | None = None) -> list[Filled]:
    """The saved replies of the learner's language, filled for this learner (from `record` when given)."""
    from bot.mentoring.record import load_record

    replies = await for_language(session, contact.language or "en")
    if not replies:
        return []
    if record is None and any("{" in r.text for r in replies):
        record = await load_record(services, contact.learner_id)
    return [Filled(r.id, r.name, fill(services, r.text, contact, record)) for r in replies]


async def find_filled(services: Services, session: AsyncSession, contact: Contact, name: str) -> Filled | None:
    """One saved reply of the learner's language by name, filled; None when there is none."""
    from bot.mentoring.record import load_record

    wanted = name.strip().lstrip("/").lower()
    for reply in await for_language(session, contact.language or "en"):
        if reply.name.lower() == wanted:
            record = await load_record(services, contact.learner_id) if "{" in reply.text else None
            return Filled(reply.id, reply.name, fill(services, reply.text, contact, record))
    return None
