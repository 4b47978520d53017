"""What a waiting learner is told, from the facts, and keeping to it.

The promise of a hand-off comes from: the mentors on duty for the learner's language,
the hand-off's place in that language's queue, recent first-response times, and the
language's office hours (`bot/mentoring/office_hours.py`). Outside office hours the
learner hears when mentors are back (in their time zone and language) and what to do
in an emergency; with nobody on duty, that the team was alerted, and no made-up time.
`handoffs.promised_by` keeps the time given; when it passes unclaimed, the worker writes
to the learner once more and alerts the leads (`follow_up_broken_promises`).
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n.catalogue import Rendered, day_phrase, local_time, normalise_language, number
from bot.mentoring import office_hours
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, Handoff, Mentor

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

# samples of recent first responses needed before they replace the configured minutes per position
MIN_RESPONSE_SAMPLES = 3
RESPONSE_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Facts:
    """What the promise is made of."""

    position: int  # 1 = next in the queue of the language
    on_duty: int  # mentors on duty who speak the language
    seconds_per_answer: float  # recent median time to a first response (or the configured default)
    back_at: datetime | None  # outside office hours: when they open; None inside them (or with no hours set)


@dataclass(frozen=True)
class Promise:
    """The learner's message and the time it commits us to (None: no time was promised)."""

    message: Rendered
    promised_by: datetime | None


async def queue_position(session: AsyncSession, handoff: Handoff) -> int:
    """1 = next to be claimed: urgent first, then by waiting time, among the same language."""
    rows = (
        await session.execute(
            select(Handoff.id, Handoff.urgent, Handoff.created_at).where(
                Handoff.state == "waiting", Handoff.language == handoff.language
            )
        )
    ).all()
    mine = (not handoff.urgent, as_utc(handoff.created_at), handoff.id)
    ahead = [hid for hid, urgent, created in rows if hid != handoff.id and (not urgent, as_utc(created), hid) < mine]
    return 1 + len(ahead)


async def mentors_on_duty(session: AsyncSession, language: str) -> list[Mentor]:
    """Active mentors on duty whose languages include `language`."""
    rows = (await session.execute(
        select(Mentor).where(Mentor.active.is_(True), Mentor.on_duty.is_(True)).order_by(Mentor.id)
    )).scalars().all()
    return [m for m in rows if language in {p.strip() for p in (m.languages or "").split(",")}]


async def seconds_per_answer(services: Services, session: AsyncSession, language: str) -> float:
    """Median time from hand-off to a mentor's first reply (or claim) in this language over the last
    week; the configured minutes per position until there are enough samples."""
    since = utcnow() - RESPONSE_WINDOW
    answered = func.coalesce(Handoff.first_response_at, Handoff.claimed_at)
    rows = (
        await session.execute(
            select(Handoff.created_at, answered)
            .where(Handoff.language == language, answered.is_not(None), Handoff.created_at >= since)
            .order_by(answered.desc())
            .limit(50)
        )
    ).all()
    samples = [(as_utc(done) - as_utc(created)).total_seconds() for created, done in rows if done]
    if len(samples) >= MIN_RESPONSE_SAMPLES:
        return max(60.0, statistics.median(samples))
    return max(60.0, services.settings.handoff_minutes_per_position * 60.0)


async def gather_facts(services: Services, session: AsyncSession, handoff: Handoff,
                       now: datetime | None = None) -> Facts:
    now = now or utcnow()
    spec = services.settings.office_hours_for(handoff.language)
    back_at = office_hours.next_opening(spec, now)
    return Facts(
        position=await queue_position(session, handoff),
        on_duty=len(await mentors_on_duty(session, handoff.language)),
        seconds_per_answer=await seconds_per_answer(services, session, handoff.language),
        back_at=None if back_at is None or back_at <= now else back_at,
    )


def expected_wait_s(facts: Facts) -> float:
    """Learners ahead are shared among the mentors on duty; each one takes a first-response time."""
    rounds = math.ceil(facts.position / max(1, facts.on_duty))
    return rounds * facts.seconds_per_answer


def eta_phrase(services: Services, minutes: int, language: str) -> str:
    """"about 10 minutes" / "about 2 hours" in the learner's language."""
    if minutes < 90:
        return services.catalogue.text("handoff_eta_minutes", language, minutes=number(minutes, language))
    return services.catalogue.text("handoff_eta_hours", language, hours=number(round(minutes / 60), language))


def when_phrase(services: Services, moment: datetime, now: datetime, tz: str | None, language: str) -> str:
    """"tomorrow at 09:00" in the learner's time zone and language."""
    return services.catalogue.text("handoff_when", language, day=day_phrase(moment, now, tz, language),
                                   time=local_time(moment, tz, language))


def make_promise(services: Services, contact: Contact, handoff: Handoff, facts: Facts, *, again: bool = False,
                 now: datetime | None = None) -> Promise:
    """The message for a learner whose hand-off waits (`again`: they asked while already waiting)."""
    now = now or utcnow()
    language = normalise_language(contact.language)
    cat = services.catalogue
    position = number(facts.position, language)
    if handoff.urgent:
        if facts.back_at is not None or facts.on_duty == 0:
            key = "handoff_waiting_urgent_closed" if facts.back_at is not None else "handoff_waiting_urgent_nobody"
            when = when_phrase(services, facts.back_at, now, contact.timezone, language) if facts.back_at else ""
            return Promise(cat.render(key, language, when=when), None)
        return Promise(cat.render("handoff_waiting_urgent", language), None)
    if facts.back_at is not None:
        # the queue is answered from the opening on
        promised = facts.back_at + timedelta(seconds=expected_wait_s(facts))
        when = when_phrase(services, facts.back_at, now, contact.timezone, language)
        return Promise(cat.render("handoff_waiting_closed", language, when=when, position=position), promised)
    if facts.on_duty == 0:
        return Promise(cat.render("handoff_waiting_nobody", language, position=position), None)
    wait_s = expected_wait_s(facts)
    eta = eta_phrase(services, max(1, math.ceil(wait_s / 60.0)), language)
    key = "handoff_still_waiting" if again else "handoff_waiting"
    return Promise(cat.render(key, language, eta=eta, position=position), now + timedelta(seconds=wait_s))


async def promise_for(services: Services, session: AsyncSession, contact: Contact, handoff: Handoff, *,
                      again: bool = False) -> tuple[Rendered, Facts]:
    """Work out the promise, remember the time it commits us to (a learner who asks again is not
    given a later time than before), and return the learner's message with the facts behind it."""
    facts = await gather_facts(services, session, handoff)
    promise = make_promise(services, contact, handoff, facts, again=again)
    if promise.promised_by is not None and (handoff.promised_by is None or not again):
        handoff.promised_by = promise.promised_by
        handoff.promise_followed_up_at = None
    return promise.message, facts


async def follow_up_broken_promises(services: Services) -> int:
    """Waiting hand-offs whose promised time passed: tell the learner once, alert the leads."""
    from bot.mentoring.routing import deliver
    from bot.mentoring.urgent import alert_leads
    from bot.outbox.queue import enqueue

    now = utcnow()
    async with services.db.session() as session:
        due = (await session.execute(
            select(Handoff.id).where(Handoff.state == "waiting", Handoff.promised_by < now,
                                     Handoff.promise_followed_up_at.is_(None)).limit(200)
        )).scalars().all()
    followed = 0
    for handoff_id in due:
        outbox_id: int | None = None
        async with services.db.session() as session:
            taken = await session.execute(
                update(Handoff)
                .where(Handoff.id == handoff_id, Handoff.state == "waiting", Handoff.promise_followed_up_at.is_(None))
                .values(promise_followed_up_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(taken, "rowcount", 0) != 1:
                continue  # another worker did it, or the hand-off was claimed meanwhile
            handoff = await session.get(Handoff, handoff_id, populate_existing=True)
            contact = await session.get(Contact, handoff.contact_id) if handoff else None
            if handoff is None or contact is None:
                continue
            language = normalise_language(contact.language)
            position = await queue_position(session, handoff)
            message = services.catalogue.render("handoff_promise_late", language,
                                                position=number(position, language))
            outbox_id = (await enqueue(session, contact, message, origin="system")).id
            await alert_leads(services, session, handoff, "promise_broken")
            followed += 1
        await deliver(services, [outbox_id])
    if followed:
        log.info("followed up %d hand-off(s) past their promised time", followed)
    return followed
