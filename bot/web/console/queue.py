"""The console's queue: waiting conversations a mentor may claim, those they hold, the duty switch,
and (for leads) the security alerts of the last day."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.mentoring.handoff import mentor_languages
from bot.security.alerts import ALERT_KINDS, recent_alerts
from bot.storage.models import Contact, Handoff, InboundMessage, Mentor
from bot.web.console.common import (
    Ctx,
    LoginRequired,
    checked_form,
    go,
    login_redirect,
    notice_text,
    render,
    require_mentor,
    services_of,
)
from bot.web.console.mentor_tools import QueueFilter, queue_extras

if TYPE_CHECKING:
    from bot.runtime.services import Services


@dataclass
class QueueItem:
    handoff: Handoff
    contact: Contact
    last_text: str | None
    last_kind: str | None


async def _last_messages(session: AsyncSession, contact_ids: list[int]) -> dict[int, InboundMessage]:
    if not contact_ids:
        return {}
    latest = (
        select(func.max(InboundMessage.id))
        .where(InboundMessage.contact_id.in_(contact_ids))
        .group_by(InboundMessage.contact_id)
    )
    rows = (await session.execute(select(InboundMessage).where(InboundMessage.id.in_(latest)))).scalars().all()
    return {row.contact_id: row for row in rows}


async def queue_items(svc: Services, mentor: Mentor, filters: QueueFilter | None = None,
                      ) -> tuple[list[QueueItem], list[QueueItem]]:
    """(waiting conversations this mentor may claim, conversations they — or, for a lead, anyone — hold),
    narrowed by the queue's search and filters (bot/web/console/mentor_tools.py); oldest first within urgency."""
    filters = filters or QueueFilter()
    async with svc.db.session() as session:
        waiting_q = filters.apply(select(Handoff, Contact).join(Contact, Contact.id == Handoff.contact_id).where(
            Handoff.state == "waiting"))
        mine_q = filters.apply(select(Handoff, Contact).join(Contact, Contact.id == Handoff.contact_id).where(
            Handoff.state == "with_mentor"))
        if mentor.role != "lead":
            waiting_q = waiting_q.where(Handoff.language.in_(sorted(mentor_languages(mentor)) or ["-"]))
            mine_q = mine_q.where(Handoff.mentor_id == mentor.id)
        waiting = (await session.execute(
            waiting_q.order_by(Handoff.urgent.desc(), Handoff.created_at, Handoff.id))).all()
        mine = (await session.execute(mine_q.order_by(Handoff.last_activity_at.desc()))).all()
        last = await _last_messages(session, [c.id for _, c in waiting] + [c.id for _, c in mine])

    def item(h: Handoff, c: Contact) -> QueueItem:
        msg = last.get(c.id)
        return QueueItem(h, c, msg.text if msg else None, msg.kind if msg else None)

    return [item(h, c) for h, c in waiting], [item(h, c) for h, c in mine]


async def _alerts(svc: Services, mentor: Mentor) -> list[tuple[str, object]]:
    """(catalogue key, when) of the recent security alerts, for leads only."""
    if mentor.role != "lead":
        return []
    return [(ALERT_KINDS[kind], at) for kind, at in await recent_alerts(svc)]


async def _queue_context(request: Request, ctx: Ctx) -> dict[str, Any]:
    svc = services_of(request)
    filters = QueueFilter.from_request(request)
    waiting, mine = await queue_items(svc, ctx.mentor, filters)
    extras = await queue_extras(svc, [it.handoff.id for it in waiting + mine])
    return {"me": ctx.mentor, "csrf": ctx.csrf, "waiting": waiting, "mine": mine, "filters": filters,
            "alerts": await _alerts(svc, ctx.mentor), **extras}


async def queue_page(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    return render(request, "queue.html", {
        **await _queue_context(request, ctx), "notice": notice_text(request.query_params.get("notice"), ctx.lang),
    })


async def queue_fragment(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return Response(status_code=401)
    return render(request, "_queue.html", await _queue_context(request, ctx))


async def toggle_duty(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    await checked_form(request, ctx)
    svc = services_of(request)
    async with svc.db.session() as session:
        mentor = await session.get(Mentor, ctx.mentor.id)
        if mentor is None:
            return login_redirect()
        mentor.on_duty = not mentor.on_duty
        on_duty = mentor.on_duty
    return go("/console", "duty_on" if on_duty else "duty_off")


def routes() -> list[BaseRoute]:
    return [
        Route("/console", queue_page, methods=["GET"]),
        Route("/console/", queue_page, methods=["GET"]),
        Route("/console/queue", queue_fragment, methods=["GET"]),
        Route("/console/duty", toggle_duty, methods=["POST"]),
    ]
