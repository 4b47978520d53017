"""The reminder experiment: random hold-out of (learner, deadline) pairs and their outcome.

`REMINDER_HOLDOUT` = p (default 0). When the planner first finds a pair that would get
reminders, it draws once: held out with probability p, else reminded, and stores the draw
(`reminder_assignments`) in the transaction that plans the pair's reminders. A held-out pair
gets no reminder for that deadline; nothing else about the learner changes. Pairs are
recorded with p = 0 too (all reminded), so the funnel knows which reminded deadlines were met.

After a deadline has passed (plus `OUTCOME_DELAY`, for the platform to catch up), the worker
reads the platform's deadline feed for that day (`GET /v1/deadlines`) and stores whether it was
submitted on time (`submitted_at` <= `due_at`). Analysis is by assignment ("intention to
treat"): a reminded learner who opted out later still counts as reminded. Once the outcome is
known and the deadline is `ANONYMISE_AFTER` old, the learner and deadline ids are cleared.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n.catalogue import normalise_language
from bot.storage.db import as_utc, utcnow
from bot.storage.models import ReminderAssignment

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

REMINDED = "reminded"
HELD_OUT = "held_out"
OUTCOME_DELAY = timedelta(hours=6)
ANONYMISE_AFTER = timedelta(days=30)
OUTCOME_WINDOW = timedelta(days=1)
OUTCOME_MAX_WINDOWS = 30
INSERT_CHUNK = 10_000


@dataclass
class Assignments:
    """The pairs already assigned (not yet checked) and the draws of this planning pass."""

    holdout: float
    known: dict[tuple[str, str], tuple[str, datetime]]
    drawn: list[dict[str, Any]] = field(default_factory=list)
    moved: list[dict[str, Any]] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)  # seeded from the OS once

    def arm(self, learner_id: str, deadline_id: str, due_at: datetime, language: str | None) -> str:
        """The pair's arm: the stored one, else a fresh draw (kept for this pass and stored with its chunk)."""
        pair = (learner_id, deadline_id)
        found = self.known.get(pair)
        if found is not None:
            if found[1] != due_at:
                self.moved.append({"learner_id": learner_id, "deadline_id": deadline_id, "due_at": due_at})
                self.known[pair] = (found[0], due_at)
            return found[0]
        arm = HELD_OUT if self.holdout > 0 and self.rng.random() < self.holdout else REMINDED
        self.known[pair] = (arm, due_at)
        self.drawn.append({
            "learner_id": learner_id, "deadline_id": deadline_id, "arm": arm,
            "language": normalise_language(language), "due_at": due_at,
        })
        return arm

    def take_drawn(self) -> list[dict[str, Any]]:
        drawn, self.drawn = self.drawn, []
        return drawn

    async def store_moved(self, session: AsyncSession) -> None:
        """A moved deadline moves its assignment's due time (its outcome is judged against the new one)."""
        for row in self.moved:
            await session.execute(
                update(ReminderAssignment)
                .where(ReminderAssignment.learner_id == row["learner_id"],
                       ReminderAssignment.deadline_id == row["deadline_id"],
                       ReminderAssignment.checked_at.is_(None))
                .values(due_at=row["due_at"])
            )
        self.moved = []


async def load_assignments(session: AsyncSession, holdout: float, now: datetime) -> Assignments:
    """The assignments a planning pass may meet again: those whose outcome is not known yet."""
    rows = (await session.execute(
        select(ReminderAssignment.learner_id, ReminderAssignment.deadline_id, ReminderAssignment.arm,
               ReminderAssignment.due_at)
        .where(ReminderAssignment.checked_at.is_(None), ReminderAssignment.learner_id.is_not(None))
    )).all()
    known = {(str(lid), str(did)): (arm, as_utc(due)) for lid, did, arm, due in rows}
    return Assignments(holdout=holdout, known=known)


# PostgreSQL: one statement per chunk over arrays, as the planner's own upsert (a row per parameter set
# cost the first planning pass of 100,000 learners several seconds)
_PG_INSERT = text(
    """
    INSERT INTO reminder_assignments (learner_id, deadline_id, arm, language, due_at, assigned_at)
    SELECT l, d, a, g, du, :now
    FROM unnest(CAST(:learners AS text[]), CAST(:deadlines AS text[]), CAST(:arms AS text[]),
                CAST(:languages AS text[]), CAST(:dues AS timestamptz[])) AS t(l, d, a, g, du)
    ON CONFLICT (learner_id, deadline_id) DO NOTHING
    """
)


async def record_assignments(session: AsyncSession, rows: list[dict[str, Any]], postgres: bool) -> None:
    """Store fresh draws; a pair stored already keeps its first draw."""
    now = utcnow()
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        if postgres:
            await session.execute(_PG_INSERT, {
                "now": now, "learners": [r["learner_id"] for r in chunk],
                "deadlines": [r["deadline_id"] for r in chunk],
                "arms": [r["arm"] for r in chunk], "languages": [r["language"] for r in chunk],
                "dues": [r["due_at"] for r in chunk],
            })
        else:
            await session.execute(
                sqlite_insert(ReminderAssignment).on_conflict_do_nothing(index_elements=["learner_id", "deadline_id"]),
                [{**row, "assigned_at": now} for row in chunk],
            )


@dataclass
class OutcomeStats:
    checked: int = 0
    on_time: int = 0
    missing: int = 0
    anonymised: int = 0


async def check_outcomes(services: Services, source: Any, now: datetime | None = None) -> OutcomeStats:
    """Read whether the passed deadlines of the experiment were submitted on time, one day of deadlines
    at a time from the platform's feed; then clear the ids of old, checked pairs."""
    # the planner's readers of the feed (it imports this module, so not at the top)
    from bot.reminders.planner import _as_datetime as _moment
    from bot.reminders.planner import _get, iter_deadlines

    now = now or utcnow()
    stats = OutcomeStats()
    ready_before = now - OUTCOME_DELAY
    for _ in range(OUTCOME_MAX_WINDOWS):
        async with services.db.session() as session:
            first = await session.scalar(
                select(ReminderAssignment.due_at)
                .where(ReminderAssignment.checked_at.is_(None), ReminderAssignment.learner_id.is_not(None),
                       ReminderAssignment.due_at < ready_before)
                .order_by(ReminderAssignment.due_at).limit(1)
            )
            if first is None:
                break
            start = as_utc(first)
            end = min(start + OUTCOME_WINDOW, ready_before)
            pending = (await session.execute(
                select(ReminderAssignment.id, ReminderAssignment.learner_id, ReminderAssignment.deadline_id)
                .where(ReminderAssignment.checked_at.is_(None), ReminderAssignment.learner_id.is_not(None),
                       ReminderAssignment.due_at >= start, ReminderAssignment.due_at < end)
            )).all()
        wanted = {(str(lid), str(did)): rid for rid, lid, did in pending}
        found: dict[int, tuple[datetime, datetime | None]] = {}
        # the feed's window is inclusive of its end on some platforms: read a second more, match by id
        async for item in iter_deadlines(source, start, end + timedelta(seconds=1)):
            rid = wanted.get((str(_get(item, "learner_id")), str(_get(item, "id"))))
            due = _moment(_get(item, "due_at"))
            if rid is not None and due is not None:
                found[rid] = (due, _moment(_get(item, "submitted_at")))
        async with services.db.session() as session:
            for rid in wanted.values():
                outcome = found.get(rid)
                if outcome is None:
                    # the platform no longer lists it: no outcome, left out of the effect
                    values: dict[str, Any] = {"checked_at": now, "on_time": None}
                    stats.missing += 1
                else:
                    due, submitted = outcome
                    on_time = submitted is not None and submitted <= due
                    values = {"checked_at": now, "on_time": on_time, "submitted_at": submitted, "due_at": due}
                    stats.on_time += int(on_time)
                await session.execute(update(ReminderAssignment).where(ReminderAssignment.id == rid).values(**values))
                stats.checked += 1
    async with services.db.session() as session:
        result = await session.execute(
            update(ReminderAssignment)
            .where(ReminderAssignment.checked_at.is_not(None), ReminderAssignment.learner_id.is_not(None),
                   ReminderAssignment.due_at < now - ANONYMISE_AFTER)
            .values(learner_id=None, deadline_id=None)
            .execution_options(synchronize_session=False)
        )
        stats.anonymised = int(getattr(result, "rowcount", 0) or 0)
    if stats.checked:
        log.info("reminder experiment: %d outcome(s) read, %d on time, %d no longer listed",
                 stats.checked, stats.on_time, stats.missing)
    return stats
