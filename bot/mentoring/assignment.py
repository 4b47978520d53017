"""Fair assignment: each waiting hand-off is offered to one mentor at a time.

Per language, a new (not urgent) hand-off is offered to the on-duty mentor with the
fewest open conversations — those they hold plus those offered to them — below their
capacity (`sanad mentor add … --capacity N`, default 5); ties go round-robin (the mentor
offered to longest ago first). An offer nobody accepted within `HANDOFF_OFFER_TIMEOUT_S`
moves on to the next mentor (the worker's `move_stale_offers`), and a hand-off nobody could
take is offered as soon as a mentor has room. Accepting is claiming; anyone who may see
the hand-off can still claim it from the queue. Urgent hand-offs are not offered to one
mentor: they alert every on-duty mentor of the language and the leads (bot/mentoring/urgent.py).

Concurrent offers in one language are serialised by locking that language's on-duty mentor
rows (PostgreSQL), so 30 hand-offs arriving at once spread evenly; every lock here is taken
after the contact and hand-off rows, the order of every transition (bot/mentoring/handoff.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mentoring.events import publish_after_commit
from bot.privacy.audit import audit
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Handoff, Mentor

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def speaks(mentor: Mentor, language: str) -> bool:
    return language in {part.strip().lower() for part in (mentor.languages or "").split(",")}


async def open_load(session: AsyncSession, mentor_ids: list[int], *, besides: int | None = None) -> dict[int, int]:
    """Open conversations per mentor: held (with_mentor) plus offered (waiting), `besides` left out."""
    load = dict.fromkeys(mentor_ids, 0)
    if not mentor_ids:
        return load
    held = select(Handoff.mentor_id, func.count()).where(
        Handoff.state == "with_mentor", Handoff.mentor_id.in_(mentor_ids)).group_by(Handoff.mentor_id)
    offered = select(Handoff.offered_mentor_id, func.count()).where(
        Handoff.state == "waiting", Handoff.offered_mentor_id.in_(mentor_ids)).group_by(Handoff.offered_mentor_id)
    if besides is not None:
        held, offered = held.where(Handoff.id != besides), offered.where(Handoff.id != besides)
    for statement in (held, offered):
        for mentor_id, count in (await session.execute(statement)).all():
            if mentor_id is not None:
                load[int(mentor_id)] += int(count)
    return load


async def _candidates(session: AsyncSession, language: str, postgres: bool) -> list[Mentor]:
    query = select(Mentor).where(Mentor.active.is_(True), Mentor.on_duty.is_(True)).order_by(Mentor.id)
    if postgres:
        query = query.with_for_update()
    return [m for m in (await session.execute(query)).scalars().all() if speaks(m, language)]


async def offer(services: Services, session: AsyncSession, handoff: Handoff) -> Mentor | None:
    """Offer the waiting hand-off to the next mentor (in the caller's transaction); None when nobody has room."""
    if handoff.state != "waiting" or handoff.urgent:
        return None
    candidates = await _candidates(session, handoff.language, not services.db.is_sqlite)
    load = await open_load(session, [m.id for m in candidates], besides=handoff.id)
    roomy = [m for m in candidates if load[m.id] < max(0, m.capacity)]
    already = set(handoff.offered_ids or [])
    fresh = [m for m in roomy if m.id not in already]
    if not fresh:
        # everyone with room had it once: a new round, passing over whoever has it now
        fresh = [m for m in roomy if m.id != handoff.offered_mentor_id]
        already = set()
    if not fresh:
        if handoff.offered_mentor_id is not None and handoff.offered_mentor_id not in {m.id for m in roomy}:
            handoff.offered_mentor_id, handoff.offered_at = None, None
        return None
    pick = min(fresh, key=lambda m: (load[m.id], m.last_offered_at or _EPOCH, m.id))
    now = utcnow()
    handoff.offered_mentor_id, handoff.offered_at = pick.id, now
    handoff.offered_ids = sorted(already | {pick.id})
    pick.last_offered_at = now
    await session.flush()
    audit(session, services.settings, actor="system", action="handoff.offer", contact_key=None,
          detail={"handoff_id": handoff.id, "mentor_id": pick.id})
    from bot.mentoring.group.posts import notice
    from bot.mentoring.handoff import console_event

    publish_after_commit(services, session, console_event("offer", handoff, offered_to=pick.id))
    await notice(services, session, handoff, "group_offered", mention=[pick], silent=False,
                 mentor=pick.display_name or pick.email.split("@", 1)[0])
    return pick


async def move_stale_offers(services: Services, limit: int = 200) -> int:
    """Worker job: offers not accepted in time move on; waiting hand-offs without an offer get one."""
    stale = utcnow() - timedelta(seconds=services.settings.handoff_offer_timeout_s)
    async with services.db.session() as session:
        due = (await session.execute(
            select(Handoff.id).where(
                Handoff.state == "waiting", Handoff.urgent.is_(False),
                or_(Handoff.offered_at.is_(None), Handoff.offered_at < stale))
            .order_by(Handoff.created_at).limit(limit))).scalars().all()
    moved = 0
    for handoff_id in due:
        async with services.db.session() as session:
            query = select(Handoff).where(Handoff.id == handoff_id).execution_options(populate_existing=True)
            if not services.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            handoff = (await session.execute(query)).scalars().first()
            if handoff is None or handoff.state != "waiting" or handoff.urgent:
                continue
            if handoff.offered_at is not None and as_utc(handoff.offered_at) >= stale:
                continue
            before = handoff.offered_mentor_id
            if await offer(services, session, handoff) is not None or before != handoff.offered_mentor_id:
                moved += 1
    if moved:
        log.info("moved %d hand-off offer(s) on", moved)
    return moved
