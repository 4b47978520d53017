"""Deadline extensions a mentor grants: recorded in the console, used by the assistant and the reminders.

A mentor who has the conversation (or a lead) records a new date for one of the learner's
deadlines, with the reason (console: "record an extension"; audited without the reason's
text). From then on the platform's date of that deadline is replaced by the mentor's:
- the assistant's deadline answers (`flows/learner.py` applies `apply_extensions`) list the
  new date and say it was set by a mentor;
- the reminder planner (`bot/reminders/planner.py`) plans for the new date, and the reminders
  say the same (`bot/reminders/dispatch.py`).
A second extension of the same deadline replaces the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mentoring.events import publish_after_commit
from bot.mentoring.handoff import HandoffError, console_event, mentor_name
from bot.privacy.audit import audit, mentor_actor
from bot.storage.db import Database, as_utc, utcnow
from bot.storage.models import Contact, DeadlineExtension, Handoff, Mentor

if TYPE_CHECKING:
    from bot.runtime.services import Services
    from bot.runtime.settings import Settings
    from integrations.platform.models import Deadline

# how far back and ahead the console looks for the deadline being extended
LOOK_BACK = timedelta(days=60)
LOOK_AHEAD = timedelta(days=365)
MAX_REASON = 2000


class DeadlineReader(Protocol):
    """What applying extensions needs from the platform client."""

    async def deadlines(self, learner_id: str, from_: datetime | None = None,
                        to: datetime | None = None) -> list[Deadline]: ...


async def record_extension(
    services: Services, session: AsyncSession, handoff: Handoff, mentor: Mentor, deadline_id: str,
    new_due_at: datetime, reason: str,
) -> DeadlineExtension:
    """Record (or replace) an extension for one deadline of the hand-off's learner."""
    if mentor.role != "lead" and (handoff.state != "with_mentor" or handoff.mentor_id != mentor.id):
        raise HandoffError("claim the conversation first", "claim_before_reply")
    contact = await session.get(Contact, handoff.contact_id)
    if contact is None or not contact.learner_id:
        raise HandoffError("this chat is not linked to a learner", "not_linked")
    reason = " ".join((reason or "").split())[:MAX_REASON]
    if not reason:
        raise HandoffError("give the reason", "extension_reason")
    new_due_at = as_utc(new_due_at)
    if new_due_at <= utcnow():
        raise HandoffError("the new date must be in the future", "extension_past")
    now = utcnow()
    try:
        items = await services.platform.deadlines(contact.learner_id, now - LOOK_BACK, now + LOOK_AHEAD)
    except Exception as exc:  # (any platform failure: nothing is recorded, the mentor is told)
        raise HandoffError("the learning platform is not reachable", "platform_down") from exc
    deadline = next((d for d in items if d.id == deadline_id), None)
    if deadline is None:
        raise HandoffError("unknown deadline", "unknown_deadline")
    row = (await session.execute(select(DeadlineExtension).where(
        DeadlineExtension.learner_id == contact.learner_id, DeadlineExtension.deadline_id == deadline_id)
    )).scalars().first()
    if row is None:
        row = DeadlineExtension(learner_id=contact.learner_id, deadline_id=deadline_id,
                                original_due_at=deadline.due_at)
        session.add(row)
    row.course_id, row.course_title, row.title, row.kind = (deadline.course_id, deadline.course_title,
                                                             deadline.title, deadline.kind)
    row.new_due_at, row.reason, row.mentor_id, row.handoff_id, row.created_at = (new_due_at, reason, mentor.id,
                                                                                  handoff.id, now)
    await session.flush()
    audit(session, services.settings, actor=mentor_actor(mentor.id), action="deadline.extension",
          contact_key=contact.key, detail={"handoff_id": handoff.id, "extension_id": row.id,
                                           "deadline_id": deadline_id, "new_due_at": new_due_at.isoformat()})
    publish_after_commit(services, session, console_event("extension", handoff))
    from bot.mentoring.group.posts import notice

    await notice(services, session, handoff, "group_extension", mentor=mentor_name(mentor),
                 title=deadline.title, when=new_due_at.strftime("%Y-%m-%d %H:%M UTC"))
    return row


async def extensions_of(session: AsyncSession, learner_ids: Sequence[str]) -> dict[tuple[str, str], DeadlineExtension]:
    """(learner id, deadline id) -> the extension, for these learners."""
    if not learner_ids:
        return {}
    rows = (await session.execute(
        select(DeadlineExtension).where(DeadlineExtension.learner_id.in_(list(learner_ids))))).scalars().all()
    return {(row.learner_id, row.deadline_id): row for row in rows}


async def all_extensions(session: AsyncSession, since: datetime) -> dict[tuple[str, str], DeadlineExtension]:
    """Every extension whose new date is after `since` (the reminder planner)."""
    rows = (await session.execute(
        select(DeadlineExtension).where(DeadlineExtension.new_due_at > since))).scalars().all()
    return {(row.learner_id, row.deadline_id): row for row in rows}


async def apply_extensions(
    extensions: dict[str, DeadlineExtension], items: list[Deadline], client: DeadlineReader, learner_id: str,
    start: datetime, end: datetime,
) -> tuple[list[Deadline], set[str]]:
    """The learner's deadlines in [start, end) with the mentors' dates in place of the platform's, sorted;
    and the ids of those a mentor moved. A deadline whose platform date lies before `start` but whose new
    date falls in the window is fetched from around its old date."""
    if not extensions:
        return items, set()
    by_id: dict[str, Deadline] = {d.id: d for d in items}
    missing = [e for e in extensions.values()
               if e.deadline_id not in by_id and start <= as_utc(e.new_due_at) < end and e.original_due_at]
    if missing:
        earliest = min(as_utc(e.original_due_at) for e in missing if e.original_due_at is not None)
        for item in await client.deadlines(learner_id, earliest - timedelta(hours=1), start):
            if item.id in extensions:
                by_id.setdefault(item.id, item)
    moved: set[str] = set()
    result: list[Deadline] = []
    for item in by_id.values():
        extension = extensions.get(item.id)
        if extension is not None:
            item = item.model_copy(update={"due_at": as_utc(extension.new_due_at)})
            moved.add(item.id)
        if start <= item.due_at < end:
            result.append(item)
    result.sort(key=lambda d: d.due_at)
    return result, moved


class ExtensionLookup:
    """The action server's way to the extensions (it has no `Services`): its own small engine, opened on
    first use. An embedded SQLite database that does not exist yet holds no extension (and is not created)."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db

    def _database(self) -> Database | None:
        if self.db is None:
            url = self.settings.database_url
            if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).is_file():
                return None
            self.db = Database(url)
        return self.db

    async def for_learner(self, learner_id: str) -> dict[str, DeadlineExtension]:
        db = self._database()
        if db is None:
            return {}
        async with db.session() as session:
            found = await extensions_of(session, [learner_id])
        return {deadline_id: row for (_, deadline_id), row in found.items()}

    async def apply(self, learner_id: str, items: list[Deadline], client: DeadlineReader, start: datetime,
                    end: datetime) -> tuple[list[Deadline], set[str]]:
        """`apply_extensions` for one learner; a database failure leaves the platform's dates."""
        try:
            extensions = await self.for_learner(learner_id)
        except Exception:  # noqa: BLE001  (the answer still comes, with the platform's dates)
            return items, set()
        return await apply_extensions(extensions, items, client, learner_id, start, end)


_lookup: ExtensionLookup | None = None


def extension_lookup() -> ExtensionLookup:
    """The process's lookup, built on first use from the environment (the action server)."""
    global _lookup
    if _lookup is None:
        from bot.runtime.settings import Settings

        _lookup = ExtensionLookup(Settings.from_env())
    return _lookup


def set_extension_lookup(lookup: ExtensionLookup | None) -> None:
    """Replace the lookup (tests; an action server with its own wiring)."""
    global _lookup
    _lookup = lookup

