"""Erasure (GDPR Art. 17): everything Sanad holds on a contact or a learner, in one step.

Database rows (contact, messages both ways, hand-offs, mentor notes, reminders,
link tokens, deadline extensions, review-inbox items; the reminder experiment's pairs
lose the learner's ids), the hand-offs' topics in the Telegram mentor group, Redis keys
carrying the contact key or the learner id (cached platform data included) and the Rasa
conversation in its SQL tracker store.
What stays: an anonymous count per day (`erasure_stats`) and the audit entries
(who did what), re-keyed to a fresh reference and stripped of anything that
names the learner. Every step is idempotent: running it again finishes a
partial erasure.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.channels.base import OutboundMessage, SendError
from bot.conversation import lease as contact_lease
from bot.conversation.commands import CommandResult, command
from bot.privacy import tracker_store
from bot.privacy.audit import clean_detail, erased_ref, subject_ref
from bot.privacy.logs import contact_ref
from bot.runtime.coordination import LocalCoordinator
from bot.storage.db import utcnow
from bot.storage.models import (
    AuditEntry,
    Contact,
    DeadlineExtension,
    ErasureStat,
    Handoff,
    InboundMessage,
    LinkToken,
    MentorNote,
    Outbox,
    Reminder,
    ReminderAssignment,
    ReviewItem,
)
from integrations.platform.client import cache_prefix

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.runtime.coordination import Coordinator
    from bot.runtime.services import Services

log = logging.getLogger(__name__)


class ErasureIncomplete(Exception):
    """Some store could not be reached; the database part is done, run the erasure again."""

    def __init__(self, report: ErasureReport) -> None:
        super().__init__("; ".join(report.errors))
        self.report = report


@dataclass
class ErasureReport:
    """What an erasure removed (counts only: nothing identifying)."""

    found: bool = False
    contacts: int = 0
    inbound_messages: int = 0
    outbox: int = 0
    handoffs: int = 0
    mentor_notes: int = 0
    reminders: int = 0
    review_items: int = 0
    experiment_pairs: int = 0
    link_tokens: int = 0
    audit_entries_scrubbed: int = 0
    redis_keys: int = 0
    rasa_events: int = 0
    rasa_api_reset: bool = False
    mentor_group_topics: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {"errors": list(self.errors)}


@dataclass
class Subject:
    """The contacts (and learner) one erasure or export is about."""

    query: str
    contacts: list[Contact]
    learner_id: str | None
    by_learner: bool

    @property
    def found(self) -> bool:
        return bool(self.contacts) or self.learner_id is not None

    @property
    def contact_ids(self) -> list[int]:
        return [c.id for c in self.contacts]

    @property
    def contact_keys(self) -> list[str]:
        return [c.key for c in self.contacts]


async def resolve_subject(session: AsyncSession, ref: str | int) -> Subject:
    """A contact key, a contact id (`#12` or an int), a learner id or a bare address."""
    query = str(ref).strip()
    if not query:
        raise ValueError("give a contact key or a learner id")
    contact_id: int | None = None
    if isinstance(ref, int):
        contact_id = ref
    elif query.startswith("#") and query[1:].isdigit():
        contact_id = int(query[1:])
    if contact_id is not None:
        contact = await session.get(Contact, contact_id)
        return Subject(query, [contact] if contact else [], contact.learner_id if contact else None, False)
    by_key = (await session.execute(select(Contact).where(Contact.key == query))).scalars().first()
    if by_key is not None:
        return Subject(query, [by_key], by_key.learner_id, False)
    linked = list((await session.execute(select(Contact).where(Contact.learner_id == query))).scalars())
    if linked:
        return Subject(query, linked, query, True)
    tokens = await session.scalar(select(func.count()).select_from(LinkToken).where(LinkToken.learner_id == query))
    if tokens:
        return Subject(query, [], query, True)
    by_address = list((await session.execute(select(Contact).where(Contact.address == query))).scalars())
    if by_address:
        return Subject(query, by_address, by_address[0].learner_id, False)
    return Subject(query, [], None, False)


def identifying_needles(subject: Subject) -> set[str]:
    """Strings that identify the subject: keys, addresses, phone digits, learner id, names."""
    needles: set[str] = set()
    for contact in subject.contacts:
        needles.update({contact.key, contact.address})
        digits = "".join(ch for ch in contact.address if ch.isdigit())
        if len(digits) >= 6:
            needles.add(digits)
        if contact.display_name and len(contact.display_name) >= 3:
            needles.add(contact.display_name)
    if subject.learner_id and len(subject.learner_id) >= 3:
        needles.add(subject.learner_id)
    return {n for n in needles if n}


def subject_refs(services: Services, subject: Subject) -> set[str]:
    """Every reference under which audit entries (and logs) may name the subject."""
    refs: set[str] = set()
    secret = services.settings.secret_key
    for key in subject.contact_keys:
        refs.update({subject_ref(services.settings, key), contact_ref(key, secret)})
    if subject.learner_id:
        for form in (subject.learner_id, f"learner:{subject.learner_id}"):
            refs.update({subject_ref(services.settings, form), contact_ref(form, secret)})
    return refs


async def _count_delete(session: AsyncSession, model: Any, *where: Any) -> int:
    result = await session.execute(sa.delete(model).where(*where).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


async def _bump_stats(session: AsyncSession, report: ErasureReport) -> None:
    """Add this erasure to today's anonymous counts (an upsert, so concurrent erasures add up)."""
    values = {
        "day": utcnow().date().isoformat(),
        "contacts": report.contacts,
        "messages": report.inbound_messages + report.outbox,
        "handoffs": report.handoffs,
        "notes": report.mentor_notes,
    }
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = insert(ErasureStat).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ErasureStat.day],
        set_={
            "contacts": ErasureStat.contacts + stmt.excluded.contacts,
            "messages": ErasureStat.messages + stmt.excluded.messages,
            "handoffs": ErasureStat.handoffs + stmt.excluded.handoffs,
            "notes": ErasureStat.notes + stmt.excluded.notes,
        },
    )
    await session.execute(stmt)


async def _scrub_audit(session: AsyncSession, refs: set[str], needles: set[str]) -> int:
    """Re-key the subject's audit entries and strip identifying details; returns how many."""
    ascii_needles = [n for n in needles if n.isascii()]
    conditions: list[Any] = [AuditEntry.subject_ref.in_(refs)] if refs else []
    conditions += [cast(AuditEntry.detail, Text).contains(n, autoescape=True) for n in ascii_needles]
    conditions += [AuditEntry.actor.in_(list(needles))] if needles else []
    if not conditions:
        return 0
    entries = list((await session.execute(select(AuditEntry).where(or_(*conditions)))).scalars())
    new_ref = erased_ref()
    for entry in entries:
        if entry.subject_ref in refs:
            entry.subject_ref = new_ref
        entry.detail = clean_detail(entry.detail, needles)
        if entry.actor in needles:
            entry.actor = "learner"
    return len(entries)


async def erase_database(
    services: Services, session: AsyncSession, subject: Subject, actor: str, report: ErasureReport
) -> None:
    """Delete the subject's rows in the caller's transaction and leave an anonymous trace."""
    ids = subject.contact_ids
    lid = subject.learner_id
    needles = identifying_needles(subject)
    refs = subject_refs(services, subject)
    reminder_where: list[Any] = [Reminder.contact_id.in_(ids)]
    if subject.by_learner and lid:
        reminder_where.append(Reminder.learner_id == lid)
    report.reminders = await _count_delete(session, Reminder, or_(*reminder_where))
    report.review_items = await _count_delete(session, ReviewItem, ReviewItem.contact_id.in_(ids))
    report.mentor_notes = await _count_delete(session, MentorNote, MentorNote.contact_id.in_(ids))
    report.handoffs = await _count_delete(session, Handoff, Handoff.contact_id.in_(ids))
    report.outbox = await _count_delete(session, Outbox, Outbox.contact_id.in_(ids))
    report.inbound_messages = await _count_delete(session, InboundMessage, InboundMessage.contact_id.in_(ids))
    token_where: list[Any] = [LinkToken.used_by_contact_id.in_(ids)]
    if lid:
        others = await session.scalar(
            select(func.count()).select_from(Contact).where(Contact.learner_id == lid, Contact.id.not_in(ids))
        )
        if subject.by_learner or not others:
            # nothing else of this learner stays: the tokens issued for them go too, the extensions mentors
            # granted them (with their reasons), and the reminder experiment keeps its counts without the
            # learner's ids
            token_where.append(LinkToken.learner_id == lid)
            await _count_delete(session, DeadlineExtension, DeadlineExtension.learner_id == lid)
            result = await session.execute(
                sa.update(ReminderAssignment).where(ReminderAssignment.learner_id == lid)
                .values(learner_id=None, deadline_id=None).execution_options(synchronize_session=False)
            )
            report.experiment_pairs = int(getattr(result, "rowcount", 0) or 0)
    report.link_tokens = await _count_delete(session, LinkToken, or_(*token_where))
    report.audit_entries_scrubbed = await _scrub_audit(session, refs, needles)
    report.contacts = await _count_delete(session, Contact, Contact.id.in_(ids))
    await _bump_stats(session, report)
    session.add(
        AuditEntry(
            actor=actor,
            action="erase",
            subject_ref=erased_ref(),
            detail={
                "contacts": report.contacts,
                "messages": report.inbound_messages + report.outbox,
                "handoffs": report.handoffs,
                "notes": report.mentor_notes,
                "by": "learner_id" if subject.by_learner else "contact",
            },
        )
    )


def _glob_escape(value: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in value)


async def erase_redis(
    coord: Coordinator, contact_keys: list[str], learner_id: str | None, addresses: list[str] | None = None
) -> int:
    """Delete cached platform data and every key that carries a contact key, an address
    (e.g. the sender's `rate:telegram:chat:<id>`) or the learner id.

    Held locks are left alone (they vanish when released): deleting one would let a
    second process into the conversation while the erasure still runs.
    """
    deleted = 0
    if learner_id:
        # the platform client's own key prefix: ids it quotes (`a@b.org`) are found as it wrote them
        deleted += await coord.cache_delete_prefix(cache_prefix(learner_id))
    patterns = [f"*{_glob_escape(k)}*" for k in contact_keys]
    bounded = [v for v in [*(addresses or []), *([learner_id] if learner_id else [])] if v]
    for value in bounded:
        escaped = _glob_escape(value)
        patterns += [f"*:{escaped}", f"*:{escaped}:*"]
    redis = getattr(coord, "redis", None)
    if redis is not None:
        lock_prefix = coord.prefix + "lock:"
        for pattern in patterns:
            async for key in redis.scan_iter(match=_glob_escape(coord.prefix) + pattern, count=500):
                if not str(key).startswith(lock_prefix):
                    deleted += int(await redis.delete(key))
        return deleted
    if isinstance(coord, LocalCoordinator):
        needles = list(contact_keys) + [f":{v}:" for v in bounded]
        endings = tuple(f":{v}" for v in bounded)
        stores: list[dict[str, Any]] = [coord._cache, coord._hits, coord._pauses]
        for store in stores:
            doomed = [k for k in store if any(n in k for n in needles) or (endings and k.endswith(endings))]
            for key in doomed:
                del store[key]
                deleted += 1
    return deleted


async def erase_rasa(services: Services, contact_keys: list[str], report: ErasureReport) -> None:
    """Delete the conversations from the tracker store, then reset Rasa's view of them (best effort)."""
    try:
        report.rasa_events = await tracker_store.delete_conversations(services.settings, contact_keys)
    except Exception as exc:  # noqa: BLE001  (reported and retried by running the erasure again)
        report.errors.append(f"rasa tracker store: {type(exc).__name__}")
    if services.rasa is None:
        return
    # An SQL store keeps nothing in memory, and replacing with no events adds nothing;
    # with an in-memory store (a development Rasa) this is what forgets the conversation.
    reset = True
    for key in contact_keys:
        try:
            await services.rasa.replace_events(key, [])
        except Exception:  # noqa: BLE001  (Rasa down: the rows are already gone)
            reset = False
    report.rasa_api_reset = reset and bool(contact_keys)


async def erase_contact(
    services: Services, contact_key_or_learner_id: str | int, actor: str = "admin", hold_locks: bool = True
) -> ErasureReport:
    """Erase a contact (by key, `#id` or address) or every contact of a learner id; see the module doc.

    With `hold_locks` the contacts' conversation leases (bot/conversation/lease.py, the pipeline's)
    are held so no message of theirs is being processed meanwhile; the `erase` command runs
    while the pipeline holds the lease already and passes False.
    """
    report = ErasureReport()
    async with services.db.session() as session:
        keys = (await resolve_subject(session, contact_key_or_learner_id)).contact_keys
    async with AsyncExitStack() as stack:
        if hold_locks:
            for key in sorted(keys):
                await stack.enter_async_context(contact_lease.hold(services, key, ttl_s=120.0, wait_s=60.0))
        async with services.db.session() as session:
            subject = await resolve_subject(session, contact_key_or_learner_id)
            if not subject.found:
                return report
            report.found = True
            keys = subject.contact_keys
            addresses = [c.address for c in subject.contacts]
            learner_id = subject.learner_id
            await erase_database(services, session, subject, actor, report)
    try:
        report.redis_keys = await erase_redis(services.coord, keys, learner_id, addresses)
        # the send rate counters kept in this process when there is no Redis (with Redis, erased above)
        for key in keys:
            await services.send_rates.forget_contact(key)
    except Exception as exc:  # noqa: BLE001
        report.errors.append(f"redis: {type(exc).__name__}")
    await erase_rasa(services, keys, report)
    try:
        # the hand-offs' topics in the Telegram mentor group went orphaned with the hand-offs: delete them
        # now (whatever Telegram refuses for the moment, the worker deletes later)
        from bot.mentoring.group.sender import delete_orphaned_topics

        report.mentor_group_topics = await delete_orphaned_topics(services)
    except Exception as exc:  # noqa: BLE001  (reported; the worker's next pass deletes them)
        report.errors.append(f"mentor group: {type(exc).__name__}")
    log.info(
        "erasure done by %s: %d contact(s), %d message(s), %d hand-off(s), %d rasa event(s)",
        actor, report.contacts, report.inbound_messages + report.outbox, report.handoffs, report.rasa_events,
    )
    if report.errors:
        raise ErasureIncomplete(report)
    return report


@command("erase")
async def erase_command(services: Services, contact: Contact, args: dict[str, Any]) -> CommandResult:
    """The learner confirmed delete_my_data: say goodbye through the channel first (no outbox row
    may outlive the erasure), then erase. Runs inside the contact's lock (pipeline)."""
    key = contact.key
    language = contact.language or "en"
    channel = services.channels.get(contact.channel)
    if channel is not None and not contact.stopped:
        rendered = services.catalogue.render("erasure_done", language)
        try:
            await channel.send(contact.address, OutboundMessage(text=rendered.text, language=language))
        except SendError as exc:
            # the learner asked for erasure: it happens even if the goodbye cannot be delivered
            log.warning("erasure goodbye to %s not delivered: %s", contact_ref(key), exc.kind.value)
    try:
        await erase_contact(services, key, actor="learner", hold_locks=False)
    except ErasureIncomplete as exc:
        log.error("erasure of %s incomplete: %s", contact_ref(key), "; ".join(exc.report.errors))
    return CommandResult(suppress_bot_replies=True)
