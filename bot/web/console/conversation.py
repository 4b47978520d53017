"""One conversation in the console: the transcript, the learner record and the notes, as far as the
mentor's view of the hand-off reaches (`bot/mentoring/visibility.py`); every read is audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.mentoring.handoff import mentor_languages
from bot.mentoring.record import load_record
from bot.mentoring.routing import outside_whatsapp_window
from bot.mentoring.visibility import View, may_export, view_of
from bot.privacy.audit import audit, mentor_actor
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, Handoff, InboundMessage, Mentor, MentorNote, Outbox
from bot.web.console.common import (
    Ctx,
    LoginRequired,
    error_text,
    login_redirect,
    notice_text,
    path_id,
    render,
    require_mentor,
    services_of,
    text_dir,
)
from bot.web.console.i18n import text

if TYPE_CHECKING:
    from bot.runtime.services import Services

TRANSCRIPT_LIMIT = 300


@dataclass
class Line:
    """One message of the transcript."""

    at: datetime
    who: str  # learner | bot | mentor | system
    text: str | None
    kind: str
    direction: str  # in | out
    language: str | None
    media_id: int | None = None
    media_type: str | None = None
    author: str | None = None
    status: str | None = None
    template: bool = False
    delivery: str | None = None  # sent | delivered | read, where the channel reports it


async def load_handoff(svc: Services, ctx: Ctx, handoff_id: int) -> tuple[Handoff, Contact, View]:
    """The hand-off and this mentor's view of it: 404 unknown, 403 when the view allows nothing."""
    async with svc.db.session() as session:
        handoff = await session.get(Handoff, handoff_id)
        contact = await session.get(Contact, handoff.contact_id) if handoff else None
    if handoff is None or contact is None:
        raise HTTPException(404, text("console_error_no_conversation", ctx.lang))
    view = view_of(ctx.mentor, handoff, utcnow(), svc.settings.handoff_review_window_s)
    if not view.allowed:
        raise HTTPException(403, text("console_error_not_visible", ctx.lang))
    return handoff, contact, view


async def transcript(svc: Services, contact: Contact, until: datetime | None = None) -> list[Line]:
    """Learner, bot and mentor messages of the contact up to `until` (None: all), merged by time."""
    async with svc.db.session() as session:
        inbound_q = select(InboundMessage).where(InboundMessage.contact_id == contact.id)
        outbound_q = select(Outbox).where(Outbox.contact_id == contact.id)
        if until is not None:
            inbound_q = inbound_q.where(InboundMessage.created_at <= until)
            outbound_q = outbound_q.where(Outbox.created_at <= until)
        inbound = (await session.execute(
            inbound_q.order_by(InboundMessage.id.desc()).limit(TRANSCRIPT_LIMIT))).scalars().all()
        outbound = (await session.execute(
            outbound_q.order_by(Outbox.id.desc()).limit(TRANSCRIPT_LIMIT))).scalars().all()
        author_ids = {row.author_mentor_id for row in outbound if row.author_mentor_id}
        authors = {}
        if author_ids:
            for m in (await session.execute(select(Mentor).where(Mentor.id.in_(author_ids)))).scalars():
                authors[m.id] = m.display_name or m.email
    lines = [
        Line(at=as_utc(m.created_at), who="learner", text=m.text, kind=m.kind, direction="in",
             language=m.language or contact.language, media_id=m.id if m.media_ref else None,
             media_type=m.media_type)
        for m in inbound
    ]
    for row in outbound:
        who = {"mentor": "mentor", "reply": "bot"}.get(row.origin, "system" if row.origin == "system" else row.origin)
        lines.append(Line(
            at=as_utc(row.created_at), who=who, text=row.text, kind="text", direction="out",
            language=contact.language, author=authors.get(row.author_mentor_id or 0), status=row.status,
            template=bool((row.payload or {}).get("template")), delivery=row.delivery_status,
        ))
    lines.sort(key=lambda line: (line.at, 0 if line.direction == "in" else 1))
    return lines[-TRANSCRIPT_LIMIT:]


def _audit_read(svc: Services, session: AsyncSession, ctx: Ctx, contact: Contact, handoff: Handoff, view: View,
                part: str) -> None:
    audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="conversation.read",
          contact_key=contact.key, detail={"handoff_id": handoff.id, "part": part, "view": view.why})


async def conversation_page(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    svc = services_of(request)
    handoff, contact, view = await load_handoff(svc, ctx, path_id(request, "handoff_id", ctx.lang))
    lines = await transcript(svc, contact, view.until)
    # the learner's record is live data from the platform: for an open hand-off (and for leads)
    record = await load_record(svc, contact.learner_id) if view.until is None or view.why == "lead" else None
    async with svc.db.session() as session:
        _audit_read(svc, session, ctx, contact, handoff, view, "page")
        if contact.learner_id and record is not None:
            audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="learner_record.read",
                  contact_key=contact.key, detail={"handoff_id": handoff.id, "available": record.error is None})
        notes_q = (select(MentorNote, Mentor).outerjoin(Mentor, Mentor.id == MentorNote.mentor_id)
                   .where(MentorNote.contact_id == contact.id))
        if view.until is not None:
            notes_q = notes_q.where(MentorNote.created_at <= view.until)
        notes = (await session.execute(notes_q.order_by(MentorNote.id))).all()
        colleagues = (await session.execute(
            select(Mentor).where(Mentor.active.is_(True), Mentor.id != ctx.mentor.id).order_by(Mentor.email)
        )).scalars().all()
        holder = await session.get(Mentor, handoff.mentor_id) if handoff.mentor_id else None
    colleagues = [m for m in colleagues if m.role == "lead" or handoff.language in mentor_languages(m)]
    from bot.web.console.mentor_tools import conversation_tools

    tools = await conversation_tools(svc, ctx.mentor, handoff, contact, record)
    return render(request, "conversation.html", {
        **tools,
        "me": ctx.mentor, "csrf": ctx.csrf, "h": handoff, "contact": contact, "lines": lines,
        "record": record, "notes": notes,
        "colleagues": colleagues, "holder": holder, "view": view,
        "outside_window": outside_whatsapp_window(contact),
        "can_act": handoff.state == "with_mentor" and (handoff.mentor_id == ctx.mentor.id or ctx.mentor.role == "lead"),
        "can_export": may_export(ctx.mentor, handoff),
        "notice": notice_text(request.query_params.get("notice"), ctx.lang),
        "error": error_text(request.query_params.get("error"), ctx.lang),
        "dir": text_dir(contact.language),
    })


async def transcript_fragment(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return Response(status_code=401)
    svc = services_of(request)
    handoff, contact, view = await load_handoff(svc, ctx, path_id(request, "handoff_id", ctx.lang))
    lines = await transcript(svc, contact, view.until)
    async with svc.db.session() as session:
        _audit_read(svc, session, ctx, contact, handoff, view, "transcript")
    return render(request, "_transcript.html", {"me": ctx.mentor, "lines": lines, "contact": contact, "h": handoff})


def routes() -> list[BaseRoute]:
    return [
        Route("/console/h/{handoff_id:int}", conversation_page, methods=["GET"]),
        Route("/console/h/{handoff_id:int}/transcript", transcript_fragment, methods=["GET"]),
    ]
