"""Worker job: the hand-off timers.

Unclaimed hand-offs are re-alerted (urgent ones to everyone and the leads, see
bot/mentoring/urgent.py), assignment offers not accepted in time move on
(bot/mentoring/assignment.py), learners whose promised time passed hear from us again
(bot/mentoring/promise.py), and conversations idle for `HANDOFF_IDLE_TIMEOUT_S` go back to
the bot — except an urgent one nobody claimed, which is never closed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mentoring.events import publish_after_commit
from bot.mentoring.handoff import OPEN_STATES, console_event
from bot.mentoring.routing import end_handoff
from bot.privacy.audit import audit
from bot.storage.db import utcnow
from bot.storage.models import Contact, Handoff

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)
_BATCH = 200


# what a re-alert does with the hand-off whose turn it is (in the turn's transaction)
Realert = Callable[[AsyncSession, Handoff], Awaitable[None]]


async def realert(services: Services, *, urgent: bool, period_s: float, alert: Realert) -> int:
    """Alert again for waiting hand-offs (urgent or not) nobody claimed, at most once per `period_s`
    each; the turn is taken with a conditional UPDATE, so two workers never alert twice for a period."""
    now = utcnow()
    cutoff = now - timedelta(seconds=period_s)
    last = func.coalesce(Handoff.last_alert_at, Handoff.created_at)
    async with services.db.session() as session:
        due = (
            await session.execute(
                select(Handoff.id)
                .where(Handoff.state == "waiting", Handoff.urgent.is_(urgent), last < cutoff)
                .order_by(Handoff.created_at)
                .limit(_BATCH)
            )
        ).scalars().all()
    alerted = 0
    for handoff_id in due:
        async with services.db.session() as session:
            result = await session.execute(
                update(Handoff)
                .where(Handoff.id == handoff_id, Handoff.state == "waiting", Handoff.urgent.is_(urgent),
                       or_(Handoff.last_alert_at.is_(None), Handoff.last_alert_at < cutoff), last < cutoff)
                .values(last_alert_at=now, alert_count=Handoff.alert_count + 1)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                continue
            handoff = await session.get(Handoff, handoff_id, populate_existing=True)
            if handoff is None:
                continue
            contact = await session.get(Contact, handoff.contact_id)
            audit(session, services.settings, actor="system", action="handoff.realert",
                  contact_key=contact.key if contact else None,
                  detail={"handoff_id": handoff.id, "alert_count": handoff.alert_count, "urgent": handoff.urgent})
            await alert(session, handoff)
            alerted += 1
    if alerted:
        log.info("re-alerted %d unclaimed %shand-off(s)", alerted, "urgent " if urgent else "")
    return alerted


async def realert_unclaimed(services: Services) -> int:
    """Alert again for (not urgent) hand-offs nobody claimed within the claim timeout."""

    async def alert(session: AsyncSession, handoff: Handoff) -> None:
        publish_after_commit(services, session, console_event("alert", handoff, alert_count=handoff.alert_count))

    return await realert(services, urgent=False, period_s=services.settings.handoff_claim_timeout_s, alert=alert)


async def close_idle(services: Services) -> int:
    """Return conversations with no activity for the idle timeout to the bot."""
    cutoff = utcnow() - timedelta(seconds=services.settings.handoff_idle_timeout_s)
    async with services.db.session() as session:
        idle = (
            await session.execute(
                select(Handoff.id)
                .where(Handoff.state.in_(OPEN_STATES), Handoff.last_activity_at < cutoff,
                       # an urgent hand-off nobody claimed is never closed: it escalates until claimed
                       or_(Handoff.urgent.is_(False), Handoff.state != "waiting"))
                .order_by(Handoff.last_activity_at)
                .limit(_BATCH)
            )
        ).scalars().all()
    closed = 0
    for handoff_id in idle:
        if await end_handoff(services, handoff_id, "idle", actor="system", expect_open=False, idle_since=cutoff):
            closed += 1
    if closed:
        log.info("closed %d idle hand-off(s)", closed)
    return closed


async def job(services: Services) -> None:
    """One pass of the hand-off timers (run it every few seconds from the worker)."""
    from bot.mentoring.assignment import move_stale_offers
    from bot.mentoring.promise import follow_up_broken_promises
    from bot.mentoring.urgent import realert_urgent

    await realert_urgent(services)
    await realert_unclaimed(services)
    await move_stale_offers(services)
    await follow_up_broken_promises(services)
    await close_idle(services)
