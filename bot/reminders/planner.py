"""Plans deadline reminders from the platform's global deadline feed, in bulk.

For every linked, opted-in contact and each of its learner's deadlines in the coming
window, one reminder per offset (`REMINDER_OFFSETS_H`, default 168 h and 24 h before)
with the idempotency key `reminder:{learner}:{deadline}:{offset}`. Planning is
set-based: one query for the contacts, bulk upserts (`ON CONFLICT`) in chunks, one
UPDATE each for expiry and cancellation, never a query per learner.

- Planning again never adds a second reminder (the key is unique).
- A moved deadline moves its reminders that are not sent yet (the upsert rewrites
  `due_at`/`send_at` of rows still `planned`, `cancelled`, or `expired` with another due date);
  rows that did not change are not rewritten, so planning again is cheap.
- A submitted deadline (`submitted_at` set), one the feed no longer lists, or one of a
  learner who opted out, stopped or unlinked: its planned reminders are cancelled.
- A reminder whose time passed while no worker ran stays sendable for `REMINDER_GRACE_S`
  after its time, then it is marked `expired` (never sent late).
- Quiet hours are applied here in the learner's zone (`bot.reminders.quiet`) and again at
  dispatch time, because a worker that was down may find a reminder at night.
- A deadline a mentor extended (bot/mentoring/extensions.py) is planned for the mentor's date,
  and its reminders say so (`data.extended`). One whose platform date is already outside the
  window is looked up around that old date (one request per such learner), so a submission
  there still cancels its reminders.
- The reminder experiment (`REMINDER_HOLDOUT`, bot/analytics/holdout.py): each (learner, deadline)
  pair that would get reminders is assigned once, at random, to reminded or held out, and the
  assignment is stored with its chunk of reminders; a held-out pair gets no reminder rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from sqlalchemy import select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.analytics.holdout import Assignments, load_assignments, record_assignments
from bot.mentoring.extensions import all_extensions
from bot.reminders.quiet import shift_out_of_quiet
from bot.runtime.services import Services
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, DeadlineExtension, Outbox, Reminder

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000
UPSERT_CONCURRENCY = 2
# a deadline enters the window this long before its earliest reminder is due
LOOKAHEAD_MARGIN = timedelta(hours=24)
PLAN_LOCK = "reminders:plan"


class DeadlineSource(Protocol):
    """What planning needs from the platform client: every learner's deadlines in a window."""

    def all_deadlines(self, from_: datetime | None = None, to: datetime | None = None) -> AsyncIterator[Any]: ...


def reminder_key(learner_id: str, deadline_id: str, offset_h: int) -> str:
    return f"reminder:{learner_id}:{deadline_id}:{offset_h}"


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return as_utc(parsed)


def iter_deadlines(source: Any, start: datetime, end: datetime) -> AsyncIterator[Any]:
    """The platform client's `all_deadlines(from_, to)`, or a double's `iter_all_deadlines(start, end)`."""
    if hasattr(source, "all_deadlines"):
        return source.all_deadlines(start, end)  # type: ignore[no-any-return]
    if hasattr(source, "iter_all_deadlines"):
        return source.iter_all_deadlines(start, end)  # type: ignore[no-any-return]
    raise TypeError("deadline source needs all_deadlines(from_, to) or iter_all_deadlines(start, end)")


@dataclass
class PlanStats:
    """What one planning pass did."""

    contacts: int = 0
    deadlines_seen: int = 0
    upserted: int = 0
    skipped_late: int = 0
    cancelled: int = 0
    expired: int = 0
    held_out: int = 0  # pairs of this pass left without reminders by the experiment
    seconds: float = 0.0


@dataclass(frozen=True)
class _Target:
    contact_id: int
    timezone: str | None
    language: str | None = None


async def eligible_contacts(session: AsyncSession) -> dict[str, _Target]:
    """learner_id -> the contact reminders go to: linked, opted in, not stopped; when a learner has
    several chats, the one they wrote from most recently."""
    rows = (
        await session.execute(
            select(Contact.id, Contact.learner_id, Contact.timezone, Contact.last_inbound_at, Contact.linked_at,
                   Contact.language)
            .where(
                Contact.learner_id.is_not(None),
                Contact.reminders_opt_out.is_(False),
                Contact.stopped.is_(False),
            )
        )
    ).all()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    best: dict[str, tuple[datetime, int, _Target]] = {}
    for contact_id, learner_id, tz, last_inbound, linked, language in rows:
        if learner_id is None:
            continue
        recency = as_utc(last_inbound or linked or epoch)
        current = best.get(learner_id)
        if current is None or (recency, contact_id) > (current[0], current[1]):
            best[learner_id] = (recency, contact_id, _Target(contact_id, tz, language))
    return {learner: entry[2] for learner, entry in best.items()}


async def expire_overdue(session: AsyncSession, now: datetime, grace_s: float) -> int:
    """Planned reminders whose time is more than the grace period ago are never sent."""
    result = await session.execute(
        update(Reminder)
        .where(Reminder.status == "planned", Reminder.send_at < now - timedelta(seconds=grace_s))
        .values(status="expired", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


_PG_UPSERT = text(
    """
    INSERT INTO reminders (idempotency_key, learner_id, contact_id, deadline_id, offset_h,
                           due_at, send_at, status, data, created_at, updated_at)
    SELECT k, l, c, d, o, du, s, 'planned',
           CASE WHEN ex THEN json_build_object('title', ti, 'course_title', ct, 'course_id', ci, 'kind', ki,
                                               'extended', true)
                ELSE json_build_object('title', ti, 'course_title', ct, 'course_id', ci, 'kind', ki) END,
           :now, :now
    FROM unnest(CAST(:keys AS text[]), CAST(:learners AS text[]), CAST(:contacts AS bigint[]),
                CAST(:deadlines AS text[]), CAST(:offsets AS int[]), CAST(:dues AS timestamptz[]),
                CAST(:sends AS timestamptz[]), CAST(:titles AS text[]), CAST(:courses AS text[]),
                CAST(:course_ids AS text[]), CAST(:kinds AS text[]), CAST(:extended AS bool[]))
         AS t(k, l, c, d, o, du, s, ti, ct, ci, ki, ex)
    ON CONFLICT (idempotency_key) DO UPDATE SET
        contact_id = EXCLUDED.contact_id, due_at = EXCLUDED.due_at, send_at = EXCLUDED.send_at,
        data = EXCLUDED.data, status = 'planned', updated_at = EXCLUDED.updated_at
    WHERE reminders.status = 'cancelled'
       OR (reminders.status = 'planned' AND (reminders.send_at <> EXCLUDED.send_at
           OR reminders.due_at <> EXCLUDED.due_at OR reminders.contact_id <> EXCLUDED.contact_id
           OR reminders.data::text <> EXCLUDED.data::text))
       OR (reminders.status = 'expired' AND reminders.due_at <> EXCLUDED.due_at)
    """
)


async def _upsert(session: AsyncSession, rows: list[dict[str, Any]], now: datetime, postgres: bool) -> None:
    """Insert new reminders and move/revive unsent ones, in one statement per chunk."""
    if not rows:
        return
    if postgres:
        # planning is redone on the next pass if a crash loses this commit: no need to wait for the disk
        await session.execute(text("SET LOCAL synchronous_commit = off"))
        await session.execute(
            _PG_UPSERT,
            {
                "now": now,
                "keys": [r["idempotency_key"] for r in rows],
                "learners": [r["learner_id"] for r in rows],
                "contacts": [r["contact_id"] for r in rows],
                "deadlines": [r["deadline_id"] for r in rows],
                "offsets": [r["offset_h"] for r in rows],
                "dues": [r["due_at"] for r in rows],
                "sends": [r["send_at"] for r in rows],
                "titles": [r["data"]["title"] for r in rows],
                "courses": [r["data"]["course_title"] for r in rows],
                "course_ids": [r["data"]["course_id"] for r in rows],
                "kinds": [r["data"]["kind"] for r in rows],
                "extended": [bool(r["data"].get("extended")) for r in rows],
            },
        )
        return
    stmt = sqlite_insert(Reminder)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Reminder.idempotency_key],
        set_={
            "contact_id": stmt.excluded.contact_id,
            "due_at": stmt.excluded.due_at,
            "send_at": stmt.excluded.send_at,
            "data": stmt.excluded.data,
            "status": "planned",
            "updated_at": stmt.excluded.updated_at,
        },
        where=(Reminder.status == "cancelled")
        | (
            (Reminder.status == "planned")
            & (
                (Reminder.send_at != stmt.excluded.send_at)
                | (Reminder.due_at != stmt.excluded.due_at)
                | (Reminder.contact_id != stmt.excluded.contact_id)
            )
        )
        | ((Reminder.status == "expired") & (Reminder.due_at != stmt.excluded.due_at)),
    )
    await session.execute(
        stmt,
        [
            row | {"status": "planned", "created_at": now, "updated_at": now}
            for row in rows
        ],
    )


async def cancel_for_submitted(session: AsyncSession, keys: list[str], now: datetime) -> int:
    """A submitted deadline: cancel its planned reminders and the ones queued but not sent yet."""
    cancelled = 0
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        result = await session.execute(
            update(Reminder)
            .where(Reminder.idempotency_key.in_(chunk), Reminder.status.in_(("planned", "queued")))
            .values(status="cancelled", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        cancelled += int(getattr(result, "rowcount", 0) or 0)
        await session.execute(
            update(Outbox)
            .where(Outbox.idempotency_key.in_(chunk), Outbox.status == "queued")
            .values(status="cancelled", last_error="submitted")
            .execution_options(synchronize_session=False)
        )
    return cancelled


def planning_window(now: datetime, offsets_h: Iterable[int]) -> tuple[datetime, datetime]:
    """Deadlines due from now until the earliest reminder of the farthest offset, plus a margin."""
    return now, now + timedelta(hours=max(offsets_h, default=24)) + LOOKAHEAD_MARGIN


async def plan_reminders(services: Services, source: DeadlineSource, now: datetime | None = None) -> PlanStats:
    """One planning pass over the platform's deadlines feed (see the module docstring).

    Reading the feed and preparing rows overlaps with the database work: each chunk is upserted
    in the background (at most UPSERT_CONCURRENCY at once) while the next one is prepared.
    """
    started = time.perf_counter()
    settings = services.settings
    now = now or utcnow()
    offsets = sorted({int(h) for h in settings.reminder_offsets_h if int(h) > 0}, reverse=True)
    if not offsets:
        raise ValueError("REMINDER_OFFSETS_H must list at least one positive number of hours")
    grace = timedelta(seconds=settings.reminder_grace_s)
    quiet_start, quiet_end_h = settings.quiet_hours_start, settings.quiet_hours_end
    postgres = not services.db.is_sqlite
    window_start, window_end = planning_window(now, offsets)
    stats = PlanStats()

    async with services.db.session() as session:
        stats.expired = await expire_overdue(session, now, settings.reminder_grace_s)
        targets = await eligible_contacts(session)
        extensions = await all_extensions(session, now)
        assignments: Assignments = await load_assignments(session, settings.reminder_holdout, now)
    stats.contacts = len(targets)

    seen: set[str] = set()
    submitted: list[str] = []
    pending: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(UPSERT_CONCURRENCY if postgres else 1)
    tasks: list[asyncio.Task[None]] = []

    async def upsert(rows: list[dict[str, Any]], drawn: list[dict[str, Any]]) -> None:
        async with gate, services.db.session() as session:
            # the pairs' assignments commit with their reminders: a crash never leaves one without the other
            await record_assignments(session, drawn, postgres)
            await _upsert(session, rows, now, postgres)

    async def flush() -> None:
        if not pending and not assignments.drawn:
            return
        rows = list(pending)
        pending.clear()
        drawn = assignments.take_drawn()
        stats.upserted += len(rows)
        await gate.acquire()  # back-pressure: never more than the gate's chunks waiting
        gate.release()
        tasks.append(asyncio.create_task(upsert(rows, drawn)))

    def plan_one(learner_id: str, deadline_id: str, due_at: datetime, data: dict[str, Any], target: _Target) -> None:
        """The reminders of one (learner, deadline) pair, unless the experiment holds the pair out."""
        pair_rows: list[dict[str, Any]] = []
        for offset_h in offsets:
            key = reminder_key(learner_id, deadline_id, offset_h)
            if key in seen:
                continue  # the feed listed the deadline twice
            send_at = due_at - timedelta(hours=offset_h)
            send_at = shift_out_of_quiet(send_at, due_at, target.timezone, quiet_start, quiet_end_h)
            if send_at + grace < now:
                stats.skipped_late += 1
                continue
            pair_rows.append(
                {
                    "idempotency_key": key,
                    "learner_id": learner_id,
                    "contact_id": target.contact_id,
                    "deadline_id": deadline_id,
                    "offset_h": offset_h,
                    "due_at": due_at,
                    "send_at": send_at,
                    "data": data,
                }
            )
        if pair_rows and assignments.arm(learner_id, deadline_id, due_at, target.language) == "held_out":
            stats.held_out += 1
            return
        seen.update(row["idempotency_key"] for row in pair_rows)
        pending.extend(pair_rows)

    try:
        async for item in iter_deadlines(source, window_start, window_end):
            stats.deadlines_seen += 1
            get = item.get if isinstance(item, dict) else partial(getattr, item)
            learner_id = get("learner_id", None)
            target = targets.get(str(learner_id)) if learner_id is not None else None
            if target is None:
                continue
            learner_id = str(learner_id)
            deadline_id = str(get("id", ""))
            due_at = _as_datetime(get("due_at", None))
            extension = extensions.pop((learner_id, deadline_id), None)
            if extension is not None:
                due_at = as_utc(extension.new_due_at)
            if due_at is None or due_at <= now:
                continue
            if get("submitted_at", None) is not None:
                submitted.extend(reminder_key(learner_id, deadline_id, h) for h in offsets)
                continue
            data: dict[str, Any] = {
                "title": str(get("title", None) or ""),
                "course_title": str(get("course_title", None) or ""),
                "course_id": str(get("course_id", None) or ""),
                "kind": str(get("kind", None) or "deadline"),
            }
            if extension is not None:
                data["extended"] = True
            plan_one(learner_id, deadline_id, due_at, data, target)
            if len(pending) >= CHUNK_ROWS:
                await flush()
        # extended deadlines the window's feed did not list: their platform date lies outside it
        for moved in await _moved_into_window(source, extensions, targets, window_start, window_end, submitted,
                                              offsets):
            plan_one(*moved)
        await flush()
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

    async with services.db.session() as session:
        await assignments.store_moved(session)
        if submitted:
            stats.cancelled += await cancel_for_submitted(session, submitted, now)
        # still planned in the window but not in this pass: removed deadlines, learners who opted
        # out, stopped or unlinked (the feed was read to its end, so absence means gone)
        planned = (
            await session.execute(
                select(Reminder.id, Reminder.idempotency_key).where(
                    Reminder.status == "planned", Reminder.due_at > window_start, Reminder.due_at < window_end
                )
            )
        ).all()
        gone = [rid for rid, key in planned if key not in seen]
        for chunk_start in range(0, len(gone), 5000):
            result = await session.execute(
                update(Reminder)
                .where(Reminder.id.in_(gone[chunk_start : chunk_start + 5000]), Reminder.status == "planned")
                .values(status="cancelled", updated_at=now)
                .execution_options(synchronize_session=False)
            )
            stats.cancelled += int(getattr(result, "rowcount", 0) or 0)
    stats.seconds = time.perf_counter() - started
    log.info(
        "planned reminders: contacts=%d deadlines=%d upserted=%d cancelled=%d expired=%d in %.2f s",
        stats.contacts, stats.deadlines_seen, stats.upserted, stats.cancelled, stats.expired, stats.seconds,
    )
    return stats


async def _moved_into_window(
    source: Any, extensions: dict[tuple[str, str], DeadlineExtension], targets: dict[str, _Target],
    start: datetime, end: datetime, submitted: list[str], offsets: list[int],
) -> list[tuple[str, str, datetime, dict[str, Any], _Target]]:
    """Extensions into the window of deadlines the feed did not list there (their old date is elsewhere):
    the learner's deadlines around the old date tell whether it was submitted meanwhile."""
    found: list[tuple[str, str, datetime, dict[str, Any], _Target]] = []
    for (learner_id, deadline_id), extension in extensions.items():
        target = targets.get(learner_id)
        due_at = as_utc(extension.new_due_at)
        if target is None or not start <= due_at < end:
            continue
        if extension.original_due_at is not None and hasattr(source, "deadlines"):
            old = as_utc(extension.original_due_at)
            try:
                around = await source.deadlines(learner_id, old - timedelta(hours=1), old + timedelta(hours=1))
            except Exception:  # noqa: BLE001  (the platform is down: plan from what the mentor recorded)
                around = []
            item = next((d for d in around if str(_get(d, "id")) == deadline_id), None)
            if item is not None and _get(item, "submitted_at") is not None:
                submitted.extend(reminder_key(learner_id, deadline_id, h) for h in offsets)
                continue
        data = {"title": extension.title or "", "course_title": extension.course_title or "",
                "course_id": extension.course_id or "", "kind": extension.kind or "deadline", "extended": True}
        found.append((learner_id, deadline_id, due_at, data, target))
    return found


async def cancel_contact_reminders(session: AsyncSession, contact_id: int, reason: str) -> int:
    """Opt-out or stop: cancel the contact's planned reminders and its proactive messages not sent yet."""
    now = utcnow()
    result = await session.execute(
        update(Reminder)
        .where(Reminder.contact_id == contact_id, Reminder.status.in_(("planned", "queued")))
        .values(status="cancelled", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Outbox)
        .where(
            Outbox.contact_id == contact_id,
            Outbox.status == "queued",
            Outbox.origin.in_(("reminder", "broadcast")),
        )
        .values(status="cancelled", last_error=reason)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


