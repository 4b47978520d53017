"""Daily roll-ups: the counts of each UTC day and language, computed from the raw tables.

Definitions (the analytics page states them too):
- a conversation is a contact's messages with no gap longer than `CONVERSATION_GAP` (30 min);
  it belongs to the day and language of its first message (the message's detected language,
  else the contact's). It is handed off when a hand-off of the contact was created between its
  first message and `CONVERSATION_GAP` after its last one (followed for at most `CONVERSATION_TAIL`
  past the day), contained otherwise;
- a fallback is an inbound message answered by the fallback (bot/analytics/understanding.py);
- first response time: from a hand-off's creation to the first mentor reply; resolution time: to
  its end; the SLA is met when the first response came within `HANDOFF_SLA_S` (a hand-off with no
  reply yet counts once that time has passed);
- reminders of the day by planned send time: planned (not cancelled), sent, delivered, read,
  failed; held out: pairs of the experiment held out, by due date.

A day is rolled up once it is over and again while late events may still change it
(`REFRESH_DAYS`); retention deletes raw rows only far later (and rolls up first), so the
figures outlive the messages. Roll-ups keep counts and durations only, never who.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import groupby
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select

from bot.i18n.catalogue import normalise_language
from bot.storage.db import as_utc, utcnow
from bot.storage.models import (
    AnalyticsDay,
    AnalyticsRollup,
    Contact,
    Handoff,
    InboundMessage,
    Outbox,
    Reminder,
    ReminderAssignment,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.runtime.services import Services

log = logging.getLogger(__name__)

CONVERSATION_GAP = timedelta(minutes=30)
CONVERSATION_TAIL = timedelta(hours=12)
REFRESH_DAYS = 7
MAX_DAYS_PER_RUN = 62
COUNT_FIELDS = (
    "inbound", "fallback", "conversations", "handed_off", "handoffs", "urgent", "sla_eligible", "sla_met",
    "reminders_planned", "reminders_sent", "reminders_delivered", "reminders_read", "reminders_failed",
    "reminders_held_out",
)


@dataclass
class DayCounts:
    """One day and language (or any merge of them)."""

    inbound: int = 0
    fallback: int = 0
    conversations: int = 0
    handed_off: int = 0
    handoffs: int = 0
    urgent: int = 0
    sla_eligible: int = 0
    sla_met: int = 0
    first_response_s: list[int] = field(default_factory=list)
    resolution_s: list[int] = field(default_factory=list)
    satisfaction: dict[str, int] = field(default_factory=dict)
    intents: dict[str, int] = field(default_factory=dict)
    reminders_planned: int = 0
    reminders_sent: int = 0
    reminders_delivered: int = 0
    reminders_read: int = 0
    reminders_failed: int = 0
    reminders_held_out: int = 0

    def add(self, other: DayCounts) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_response_s.extend(other.first_response_s)
        self.resolution_s.extend(other.resolution_s)
        for target, source in ((self.satisfaction, other.satisfaction), (self.intents, other.intents)):
            for key, n in source.items():
                target[key] = target.get(key, 0) + n

    @classmethod
    def from_row(cls, row: AnalyticsDay) -> DayCounts:
        counts = cls()
        for name in COUNT_FIELDS:
            setattr(counts, name, int(getattr(row, name) or 0))
        counts.first_response_s = [int(v) for v in row.first_response_s or []]
        counts.resolution_s = [int(v) for v in row.resolution_s or []]
        counts.satisfaction = {str(k): int(v) for k, v in (row.satisfaction or {}).items()}
        counts.intents = {str(k): int(v) for k, v in (row.intents or {}).items()}
        return counts


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _seconds(later: datetime, earlier: datetime) -> int:
    return max(0, round((as_utc(later) - as_utc(earlier)).total_seconds()))


Buckets = dict[tuple[date, str], DayCounts]


def _bucket(buckets: Buckets, moment: datetime, language: str | None) -> DayCounts:
    key = (as_utc(moment).date(), normalise_language(language))
    if key not in buckets:
        buckets[key] = DayCounts()
    return buckets[key]


async def _messages(session: AsyncSession, buckets: Buckets, start: datetime, end: datetime) -> None:
    language = func.coalesce(InboundMessage.language, Contact.language, "en")
    rows = (await session.execute(
        select(InboundMessage.created_at, language, InboundMessage.intent, InboundMessage.fallback)
        .join(Contact, Contact.id == InboundMessage.contact_id)
        .where(InboundMessage.created_at >= start, InboundMessage.created_at < end)
    )).all()
    for created, lang, intent, fallback in rows:
        day = _bucket(buckets, created, lang)
        day.inbound += 1
        day.fallback += int(fallback is True)
        if intent:
            day.intents[intent] = day.intents.get(intent, 0) + 1


async def _conversations(session: AsyncSession, buckets: Buckets, start: datetime, end: datetime) -> None:
    language = func.coalesce(InboundMessage.language, Contact.language, "en")
    messages = (await session.execute(
        select(InboundMessage.contact_id, InboundMessage.created_at, language)
        .join(Contact, Contact.id == InboundMessage.contact_id)
        .where(InboundMessage.created_at >= start - CONVERSATION_GAP,
               InboundMessage.created_at < end + CONVERSATION_TAIL)
        .order_by(InboundMessage.contact_id, InboundMessage.created_at, InboundMessage.id)
    )).all()
    handoffs: dict[int, list[datetime]] = defaultdict(list)
    for contact_id, created in (await session.execute(
        select(Handoff.contact_id, Handoff.created_at)
        .where(Handoff.created_at >= start, Handoff.created_at < end + CONVERSATION_TAIL + CONVERSATION_GAP)
    )).all():
        handoffs[contact_id].append(as_utc(created))
    for contact_id, rows in groupby(messages, key=lambda r: r[0]):
        spans: list[list[Any]] = []  # [first, last, language]
        for _, at, lang in rows:
            at = as_utc(at)
            if spans and at - spans[-1][1] <= CONVERSATION_GAP:
                spans[-1][1] = at
            else:
                spans.append([at, at, lang])
        for first, last, lang in spans:
            if not start <= first < end:
                continue
            day = _bucket(buckets, first, lang)
            day.conversations += 1
            if any(first <= h <= last + CONVERSATION_GAP for h in handoffs.get(contact_id, ())):
                day.handed_off += 1


async def _handoffs(session: AsyncSession, buckets: Buckets, start: datetime, end: datetime,
                    sla_s: float, now: datetime) -> None:
    first_reply = (
        select(func.min(Outbox.created_at))
        .where(Outbox.contact_id == Handoff.contact_id, Outbox.origin == "mentor",
               Outbox.created_at >= Handoff.created_at,
               or_(Handoff.resolved_at.is_(None), Outbox.created_at <= Handoff.resolved_at))
        .scalar_subquery()
    )
    rows = (await session.execute(
        select(Handoff.language, Handoff.urgent, Handoff.created_at, Handoff.resolved_at, Handoff.satisfaction,
               first_reply)
        .where(Handoff.created_at >= start, Handoff.created_at < end)
    )).all()
    for lang, urgent, created, resolved, satisfaction, replied in rows:
        day = _bucket(buckets, created, lang)
        day.handoffs += 1
        day.urgent += int(bool(urgent))
        if replied is not None:
            waited = _seconds(replied, created)
            day.first_response_s.append(waited)
            day.sla_eligible += 1
            day.sla_met += int(waited <= sla_s)
        elif _seconds(resolved or now, created) > sla_s:
            day.sla_eligible += 1  # nobody answered within the target
        if resolved is not None:
            day.resolution_s.append(_seconds(resolved, created))
        if isinstance(satisfaction, int) and 1 <= satisfaction <= 5:
            day.satisfaction[str(satisfaction)] = day.satisfaction.get(str(satisfaction), 0) + 1


async def _reminders(session: AsyncSession, buckets: Buckets, start: datetime, end: datetime) -> None:
    rows = (await session.execute(
        select(Reminder.send_at, Contact.language, Reminder.status, Outbox.status, Outbox.delivery_status)
        .join(Contact, Contact.id == Reminder.contact_id)
        .outerjoin(Outbox, Outbox.id == Reminder.outbox_id)
        .where(Reminder.send_at >= start, Reminder.send_at < end, Reminder.status != "cancelled")
    )).all()
    for send_at, lang, _status, sent_status, delivery in rows:
        day = _bucket(buckets, send_at, lang)
        day.reminders_planned += 1
        if sent_status == "sent":
            day.reminders_sent += 1
            day.reminders_delivered += int(delivery in ("delivered", "read"))
            day.reminders_read += int(delivery == "read")
        if sent_status == "failed" or delivery in ("failed", "undelivered"):
            day.reminders_failed += 1
    for due_at, lang in (await session.execute(
        select(ReminderAssignment.due_at, ReminderAssignment.language)
        .where(ReminderAssignment.arm == "held_out", ReminderAssignment.due_at >= start,
               ReminderAssignment.due_at < end)
    )).all():
        _bucket(buckets, due_at, lang).reminders_held_out += 1


async def aggregate(services: Services, first: date, last: date, now: datetime | None = None) -> Buckets:
    """Counts by (day, language) of the days `first`..`last` (inclusive), from the raw tables, in one pass."""
    now = now or utcnow()
    start, _ = day_bounds(first)
    _, end = day_bounds(last)
    buckets: Buckets = {}
    async with services.db.session() as session:
        await _messages(session, buckets, start, end)
        await _conversations(session, buckets, start, end)
        await _handoffs(session, buckets, start, end, services.settings.handoff_sla_s, now)
        await _reminders(session, buckets, start, end)
    return buckets


async def aggregate_day(services: Services, day: date, now: datetime | None = None) -> dict[str, DayCounts]:
    """One day's counts by language, from the raw tables."""
    return {lang: counts for (_, lang), counts in (await aggregate(services, day, day, now)).items()}


async def store_day(services: Services, day: date, counts: dict[str, DayCounts]) -> None:
    """Replace the day's roll-up rows (in one transaction) and mark it rolled up."""
    key = day.isoformat()
    async with services.db.session() as session:
        await session.execute(delete(AnalyticsDay).where(AnalyticsDay.day == key))
        for language, c in sorted(counts.items()):
            session.add(AnalyticsDay(
                day=key, language=language, first_response_s=sorted(c.first_response_s),
                resolution_s=sorted(c.resolution_s), satisfaction=c.satisfaction, intents=c.intents,
                **{name: getattr(c, name) for name in COUNT_FIELDS},
            ))
        marker = await session.get(AnalyticsRollup, key)
        if marker is None:
            session.add(AnalyticsRollup(day=key, rolled_up_at=utcnow()))
        else:
            marker.rolled_up_at = utcnow()


async def _first_raw_day(services: Services) -> date | None:
    async with services.db.session() as session:
        firsts = [
            await session.scalar(select(func.min(InboundMessage.created_at))),
            await session.scalar(select(func.min(Handoff.created_at))),
            await session.scalar(select(func.min(Reminder.send_at))),
        ]
    days = [as_utc(f).date() for f in firsts if f is not None]
    return min(days) if days else None


async def days_to_roll(services: Services, today: date, before: date | None = None, refresh: bool = True) -> list[date]:
    """Days before `before` (default: today) with raw data and no roll-up yet, oldest first, and with
    `refresh` the last `REFRESH_DAYS` days again (late replies, resolutions and receipts change them)."""
    limit = before or today
    first = await _first_raw_day(services)
    if first is None:
        return []
    async with services.db.session() as session:
        done = set((await session.execute(
            select(AnalyticsRollup.day).where(AnalyticsRollup.day >= first.isoformat())
        )).scalars())
    days: list[date] = []
    day = first
    while day < limit:
        if day.isoformat() not in done or (refresh and day >= today - timedelta(days=REFRESH_DAYS)):
            days.append(day)
        day += timedelta(days=1)
    return days


async def roll_up(services: Services, now: datetime | None = None, before: date | None = None,
                  refresh: bool = True, max_days: int = MAX_DAYS_PER_RUN) -> int:
    """Roll up the days that need it (at most `max_days` per run); returns how many were written."""
    now = now or utcnow()
    days = (await days_to_roll(services, now.date(), before, refresh))[:max_days]
    for day in days:
        await store_day(services, day, await aggregate_day(services, day, now))
    if days:
        log.info("analytics: %d day(s) rolled up (%s .. %s)", len(days), days[0], days[-1])
    return len(days)
