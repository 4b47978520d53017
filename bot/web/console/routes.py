"""Routes of the mentor console (`/console…`): login, queue, conversation, actions, live events.

Plain server-rendered HTML (Jinja2) with a little vanilla JS; every form carries a
CSRF token; every read of a learner's record and every reply goes to the audit log.
Every string a mentor sees comes from the catalogue in the mentor's console language
(`bot/web/console/i18n.py`); learner content is shown as written.
The process's `Services` is `request.app.state.services`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bot.i18n.catalogue import get_catalogue
from bot.mentoring.accounts import find_by_email, verify_password
from bot.mentoring.audit import audit, mentor_actor
from bot.mentoring.events import CONSOLE_CHANNEL
from bot.mentoring.handoff import HandoffError, can_see, claim, mentor_languages, transfer
from bot.mentoring.record import load_record
from bot.mentoring.routing import add_note, deliver, end_handoff, outside_whatsapp_window, send_mentor_reply
from bot.runtime.settings import DEFAULT_LANGUAGE, LANGUAGES, RTL_LANGUAGES
from bot.storage.db import as_utc
from bot.storage.models import Contact, Handoff, InboundMessage, Mentor, MentorNote, Outbox
from bot.web.console.auth import (
    LOGIN_MAX_PER_EMAIL,
    LOGIN_MAX_PER_IP,
    LOGIN_WINDOW_S,
    clear_session,
    client_ip,
    csrf_ok,
    email_bucket,
    new_session,
    read_session,
    write_session,
)
from bot.web.console.i18n import LANG_COOKIE, LANG_COOKIE_MAX_AGE_S, UI, text, ui_language

if TYPE_CHECKING:
    from bot.runtime.services import Services
    from bot.web.console.mentor_tools import QueueFilter

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
SSE_KEEPALIVE_S = 15.0
TRANSCRIPT_LIMIT = 300
MEDIA_MAX_BYTES = 25 * 1024 * 1024
# `?notice=` codes -> their catalogue keys (every console string is a `console_…` key, in five languages)
NOTICES: dict[str, str] = {
    "claimed": "console_notice_claimed",
    "taken": "console_notice_taken",
    "sent": "console_notice_sent",
    "template": "console_notice_template",
    "noted": "console_notice_noted",
    "resolved": "console_notice_resolved",
    "handed_back": "console_notice_handed_back",
    "transferred": "console_notice_transferred",
    "duty_on": "console_notice_duty_on",
    "duty_off": "console_notice_duty_off",
    "labelled": "console_notice_labelled",
    "extension": "console_notice_extension",
}


def notice_text(code: str | None, language: str) -> str | None:
    key = NOTICES.get(code or "")
    return text(key, language) if key else None


def error_text(error: str | None, language: str) -> str | None:
    """The `?error=` of a redirect: a HandoffError's code in the mentor's language, anything else as it is."""
    if not error:
        return None
    key = f"console_error_{error}"
    return text(key, language) if get_catalogue().has(key) else error


def services_of(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


# --- session helpers -----------------------------------------------------------

@dataclass
class Ctx:
    """The signed-in mentor of a request and their session."""

    mentor: Mentor
    session: dict[str, Any]
    lang: str = DEFAULT_LANGUAGE  # the console's language for this mentor and request

    @property
    def csrf(self) -> str:
        return str(self.session.get("c", ""))


class LoginRequired(Exception):
    """No valid session: redirect to the login page."""


async def require_mentor(request: Request) -> Ctx:
    svc = services_of(request)
    data = read_session(request, svc.settings)
    mentor_id = data.get("m")
    if not isinstance(mentor_id, int):
        raise LoginRequired
    async with svc.db.session() as session:
        mentor = await session.get(Mentor, mentor_id)
    if mentor is None or not mentor.active:
        raise LoginRequired
    return Ctx(mentor=mentor, session=data, lang=ui_language(request, mentor))


async def checked_form(request: Request, ctx: Ctx) -> FormData:
    """The posted form, after checking its CSRF token (403 otherwise)."""
    form = await request.form()
    token = form.get("csrf_token")
    if not csrf_ok(ctx.session, token if isinstance(token, str) else request.headers.get("x-csrf-token")):
        raise HTTPException(403, text("console_error_csrf", ctx.lang))
    return form


def login_redirect() -> RedirectResponse:
    return RedirectResponse("/console/login", status_code=303)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A console page in the UI language of the request (its mentor's, `context["me"]`, if signed in)."""
    me = context.get("me")
    ui = UI(ui_language(request, me if isinstance(me, Mentor) else None))
    return templates.TemplateResponse(request, name, {"ui": ui, "t": ui.t, **context}, status_code=status_code)


def go(url: str, notice: str | None = None) -> RedirectResponse:
    return RedirectResponse(url + (f"?notice={notice}" if notice else ""), status_code=303)


templates.env.globals["RTL"] = RTL_LANGUAGES


def text_dir(language: str | None) -> str:
    return "rtl" if (language or "") in RTL_LANGUAGES else "ltr"


templates.env.globals["text_dir"] = text_dir


# --- login / logout ------------------------------------------------------------

async def login_page(request: Request) -> Response:
    svc = services_of(request)
    data = read_session(request, svc.settings)
    if isinstance(data.get("m"), int):
        return RedirectResponse("/console", status_code=303)
    if not data.get("c"):
        data = new_session(None)
    response = render(request, "login.html", {"csrf": data["c"], "error": None})
    write_session(response, svc.settings, data)
    return response


async def login_submit(request: Request) -> Response:
    svc = services_of(request)
    data = read_session(request, svc.settings)
    form = await request.form()
    token = form.get("csrf_token")
    lang = ui_language(request)
    if not csrf_ok(data, token if isinstance(token, str) else None):
        raise HTTPException(403, text("console_error_csrf", lang))
    email = str(form.get("email") or "").strip()
    password = str(form.get("password") or "")
    ip_hits = await svc.coord.hit(f"console-login:ip:{client_ip(request)}", LOGIN_WINDOW_S)
    email_hits = await svc.coord.hit(f"console-login:email:{email_bucket(email)}", LOGIN_WINDOW_S)
    if ip_hits > LOGIN_MAX_PER_IP or email_hits > LOGIN_MAX_PER_EMAIL:
        return render(request, "login.html",
                      {"csrf": data.get("c"), "error": text("console_login_too_many", lang)},
                      status_code=429)
    async with svc.db.session() as session:
        mentor = await find_by_email(session, email) if email else None
    ok = await verify_password(mentor.password_hash if mentor else None, password)
    if mentor is None or not ok or not mentor.active:
        return render(request, "login.html", {"csrf": data.get("c"), "error": text("console_login_wrong", lang)},
                      status_code=401)
    await svc.coord.reset_hits(f"console-login:email:{email_bucket(email)}")
    async with svc.db.session() as session:
        audit(session, svc.settings, actor=mentor_actor(mentor.id), action="console.login", contact_key=None)
    response = RedirectResponse("/console", status_code=303)
    write_session(response, svc.settings, new_session(mentor.id))
    return response


async def logout(request: Request) -> Response:
    svc = services_of(request)
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    await checked_form(request, ctx)
    response = login_redirect()
    clear_session(response, svc.settings)
    return response


def _safe_next(target: str | None) -> str:
    """Only a console path (never another site) to go back to after switching the language."""
    if not target or not target.startswith("/console") or any(ch in target for ch in "\\\r\n"):
        return "/console"
    return target


async def set_language(request: Request) -> Response:
    """The header's language switcher: remember the choice in a cookie and go back to the page."""
    code = str(request.path_params["code"]).lower()
    response = RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    if code in LANGUAGES:
        response.set_cookie(LANG_COOKIE, code, max_age=LANG_COOKIE_MAX_AGE_S, path="/console", httponly=True,
                            samesite="lax", secure=services_of(request).settings.public_base_url.startswith("https://"))
    return response


# --- queue ---------------------------------------------------------------------

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
    from bot.web.console.mentor_tools import QueueFilter

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


async def _queue_context(request: Request, ctx: Ctx) -> dict[str, Any]:
    from bot.web.console.mentor_tools import QueueFilter, queue_extras

    svc = services_of(request)
    filters = QueueFilter.from_request(request)
    waiting, mine = await queue_items(svc, ctx.mentor, filters)
    extras = await queue_extras(svc, [it.handoff.id for it in waiting + mine])
    return {"me": ctx.mentor, "csrf": ctx.csrf, "waiting": waiting, "mine": mine, "filters": filters, **extras}


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


# --- conversation --------------------------------------------------------------

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


async def load_handoff(svc: Services, ctx: Ctx, handoff_id: int) -> tuple[Handoff, Contact]:
    """The hand-off if this mentor may see it: 404 unknown, 403 outside their languages / not theirs."""
    async with svc.db.session() as session:
        handoff = await session.get(Handoff, handoff_id)
        contact = await session.get(Contact, handoff.contact_id) if handoff else None
    if handoff is None or contact is None:
        raise HTTPException(404, text("console_error_no_conversation", ctx.lang))
    if not can_see(ctx.mentor, handoff):
        raise HTTPException(403, text("console_error_not_visible", ctx.lang))
    return handoff, contact


async def transcript(svc: Services, contact: Contact) -> list[Line]:
    """Learner, bot and mentor messages of the contact, merged by time."""
    async with svc.db.session() as session:
        inbound = (await session.execute(
            select(InboundMessage).where(InboundMessage.contact_id == contact.id)
            .order_by(InboundMessage.id.desc()).limit(TRANSCRIPT_LIMIT))).scalars().all()
        outbound = (await session.execute(
            select(Outbox).where(Outbox.contact_id == contact.id)
            .order_by(Outbox.id.desc()).limit(TRANSCRIPT_LIMIT))).scalars().all()
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


async def conversation_page(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    svc = services_of(request)
    handoff, contact = await load_handoff(svc, ctx, int(request.path_params["handoff_id"]))
    lines = await transcript(svc, contact)
    record = await load_record(svc, contact.learner_id)
    async with svc.db.session() as session:
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="conversation.read",
              contact_key=contact.key, detail={"handoff_id": handoff.id})
        if contact.learner_id:
            audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="learner_record.read",
                  contact_key=contact.key, detail={"handoff_id": handoff.id, "available": record.error is None})
        notes = (await session.execute(
            select(MentorNote, Mentor).outerjoin(Mentor, Mentor.id == MentorNote.mentor_id)
            .where(MentorNote.contact_id == contact.id).order_by(MentorNote.id))).all()
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
        "record": record, "notes": notes, "colleagues": colleagues, "holder": holder,
        "outside_window": outside_whatsapp_window(contact),
        "can_act": handoff.state == "with_mentor" and (handoff.mentor_id == ctx.mentor.id or ctx.mentor.role == "lead"),
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
    handoff, contact = await load_handoff(svc, ctx, int(request.path_params["handoff_id"]))
    lines = await transcript(svc, contact)
    return render(request, "_transcript.html", {"me": ctx.mentor, "lines": lines, "contact": contact, "h": handoff})


def _error_redirect(handoff_id: int, exc: Exception) -> RedirectResponse:
    from urllib.parse import quote

    error = getattr(exc, "code", None) or str(exc)[:200]
    return RedirectResponse(f"/console/h/{handoff_id}?error={quote(error)}", status_code=303)


@dataclass
class _ConversationAction:
    """A mentor's form post on one conversation, past login, CSRF and visibility checks."""

    ctx: Any
    form: FormData
    svc: Services
    handoff_id: int
    handoff: Handoff


async def _conversation_action(request: Request) -> _ConversationAction | Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    form = await checked_form(request, ctx)
    svc = services_of(request)
    handoff_id = int(request.path_params["handoff_id"])
    handoff, _ = await load_handoff(svc, ctx, handoff_id)
    return _ConversationAction(ctx, form, svc, handoff_id, handoff)


async def claim_action(request: Request) -> Response:
    action = await _conversation_action(request)
    if isinstance(action, Response):
        return action
    ctx, svc, handoff_id = action.ctx, action.svc, action.handoff_id
    outbox_id: int | None = None
    async with svc.db.session() as session:
        claimed = await claim(svc, session, handoff_id, ctx.mentor)
        if claimed is not None:
            outbox_id = (await session.execute(
                select(Outbox.id).where(Outbox.contact_id == claimed.contact_id, Outbox.origin == "system")
                .order_by(Outbox.id.desc()).limit(1))).scalars().first()
    if claimed is None:
        return go("/console", "taken")
    if outbox_id is not None:
        await deliver(svc, [outbox_id])
    return go(f"/console/h/{handoff_id}", "claimed")


async def reply_action(request: Request) -> Response:
    action = await _conversation_action(request)
    if isinstance(action, Response):
        return action
    ctx, svc, handoff_id = action.ctx, action.svc, action.handoff_id
    form = action.form
    try:
        async with svc.db.session() as session:
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None:
                raise HTTPException(404, text("console_error_no_conversation", ctx.lang))
            outcome = await send_mentor_reply(svc, session, handoff, ctx.mentor, str(form.get("text") or ""))
    except HandoffError as exc:
        return _error_redirect(handoff_id, exc)
    await deliver(svc, [outcome.outbox_id])
    return go(f"/console/h/{handoff_id}", "template" if outcome.used_template else "sent")


async def note_action(request: Request) -> Response:
    action = await _conversation_action(request)
    if isinstance(action, Response):
        return action
    ctx, svc, handoff_id = action.ctx, action.svc, action.handoff_id
    form = action.form
    try:
        async with svc.db.session() as session:
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None:
                raise HTTPException(404, text("console_error_no_conversation", ctx.lang))
            await add_note(svc, session, handoff, ctx.mentor, str(form.get("text") or ""))
    except HandoffError as exc:
        return _error_redirect(handoff_id, exc)
    return go(f"/console/h/{handoff_id}", "noted")


async def _end(request: Request, outcome: str) -> Response:
    action = await _conversation_action(request)
    if isinstance(action, Response):
        return action
    ctx, svc, handoff_id = action.ctx, action.svc, action.handoff_id
    handoff = action.handoff
    if ctx.mentor.role != "lead" and handoff.mentor_id != ctx.mentor.id:
        raise HTTPException(403, text("console_error_claim_first", ctx.lang))
    try:
        resolution = None
        if outcome == "resolved":
            from bot.mentoring.labels import outcome_named

            async with svc.db.session() as session:
                resolution = await outcome_named(session, str(action.form.get("outcome") or ""))
        await end_handoff(svc, handoff_id, outcome, actor=mentor_actor(ctx.mentor.id), resolution=resolution)
    except HandoffError as exc:
        return _error_redirect(handoff_id, exc)
    return go("/console", outcome)


async def resolve_action(request: Request) -> Response:
    return await _end(request, "resolved")


async def handback_action(request: Request) -> Response:
    return await _end(request, "handed_back")


async def transfer_action(request: Request) -> Response:
    action = await _conversation_action(request)
    if isinstance(action, Response):
        return action
    ctx, svc, handoff_id = action.ctx, action.svc, action.handoff_id
    form = action.form
    raw = str(form.get("to") or "")
    try:
        to_id = None if raw in ("", "queue") else int(raw)
    except ValueError:
        return _error_redirect(handoff_id, HandoffError("choose a mentor", "choose_mentor"))
    try:
        async with svc.db.session() as session:
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None:
                raise HTTPException(404, text("console_error_no_conversation", ctx.lang))
            await transfer(svc, session, handoff, ctx.mentor, to_id)
    except HandoffError as exc:
        return _error_redirect(handoff_id, exc)
    return go("/console", "transferred")


# --- media -----------------------------------------------------------------------

async def export_download(request: Request) -> Response:
    """The learner's data export (GDPR Art. 15) as a JSON file, for the mentor to pass on.

    Only a lead or the mentor who has the conversation may take it; every download is audited."""
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    svc = services_of(request)
    async with svc.db.session() as session:
        handoff = await session.get(Handoff, int(request.path_params["handoff_id"]))
        if handoff is None:
            raise HTTPException(404, text("console_error_no_conversation", ctx.lang))
        if ctx.mentor.role != "lead" and handoff.mentor_id != ctx.mentor.id:
            raise HTTPException(403, text("console_error_export_forbidden", ctx.lang))
        contact = await session.get(Contact, handoff.contact_id)
        if contact is None:
            raise HTTPException(404, text("console_error_data_gone", ctx.lang))
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="export.download",
              contact_key=contact.key, detail={"handoff_id": handoff.id})
        key = contact.key
    from bot.privacy.export import build_export, export_json

    body = export_json(await build_export(svc, key))
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="sanad-export-{handoff.id}.json"',
        "Cache-Control": "no-store",
    })


async def media_download(request: Request) -> Response:
    """Proxy a learner's voice note / photo / document from the provider (the browser has no provider token)."""
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    svc = services_of(request)
    async with svc.db.session() as session:
        message = await session.get(InboundMessage, int(request.path_params["message_id"]))
        if message is None or not message.media_ref:
            raise HTTPException(404, text("console_error_no_media", ctx.lang))
        contact = await session.get(Contact, message.contact_id)
        handoffs = (await session.execute(
            select(Handoff).where(Handoff.contact_id == message.contact_id))).scalars().all()
        if contact is None or not any(can_see(ctx.mentor, h) for h in handoffs):
            raise HTTPException(403, text("console_error_not_yours", ctx.lang))
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="media.read",
              contact_key=contact.key, detail={"message_id": message.id})
    settings = svc.settings
    ref = message.media_ref
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0), follow_redirects=True) as http:
            if message.channel == "telegram" and settings.telegram_bot_token:
                base = f"{settings.telegram_api_base_url}/bot{settings.telegram_bot_token}"
                info = (await http.get(f"{base}/getFile", params={"file_id": ref})).json()
                path = (info.get("result") or {}).get("file_path")
                if not path:
                    raise HTTPException(404, text("console_error_telegram_file_gone", ctx.lang))
                upstream = await http.get(
                    f"{settings.telegram_api_base_url}/file/bot{settings.telegram_bot_token}/{path}")
            elif (message.channel == "whatsapp" and settings.twilio_account_sid and settings.twilio_auth_token
                  and ref.startswith(settings.twilio_api_base_url + "/")):
                upstream = await http.get(ref, auth=(settings.twilio_account_sid, settings.twilio_auth_token))
            else:
                return render(request, "media_ref.html",
                              {"me": ctx.mentor, "csrf": ctx.csrf, "ref": ref, "message": message})
    except httpx.HTTPError:
        raise HTTPException(502, text("console_error_provider_file", ctx.lang)) from None
    if upstream.status_code != 200 or len(upstream.content) > MEDIA_MAX_BYTES:
        raise HTTPException(502, text("console_error_provider_file", ctx.lang))
    media_type = message.media_type or upstream.headers.get("content-type") or "application/octet-stream"
    return Response(upstream.content, media_type=media_type,
                    headers={"Content-Disposition": f'inline; filename="message-{message.id}"',
                             "Cache-Control": "private, no-store"})


# --- live events (server-sent events) --------------------------------------------

def wants(mentor: Mentor, languages: set[str], event: dict[str, Any]) -> bool:
    """Does this mentor's console care about `event`?"""
    if mentor.role == "lead" or event.get("mentor_id") == mentor.id:
        return True
    if event.get("everyone") and mentor.on_duty:
        return True
    return str(event.get("language")) in languages


async def events_stream(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return Response(status_code=401)
    svc = services_of(request)
    mentor = ctx.mentor
    languages = mentor_languages(mentor)

    async def stream() -> AsyncIterator[bytes]:
        async with svc.coord.subscribe(CONSOLE_CHANNEL) as queue:
            yield b"retry: 3000\nevent: hello\ndata: {}\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=SSE_KEEPALIVE_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if isinstance(event, dict) and wants(mentor, languages, event):
                    yield f"event: console\ndata: {json.dumps(event)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# --- wiring ----------------------------------------------------------------------

def routes() -> list[BaseRoute]:
    """Every console route; the app mounts them as they are (paths start with /console)."""
    return [
        Route("/console", queue_page, methods=["GET"]),
        Route("/console/", queue_page, methods=["GET"]),
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/login", login_submit, methods=["POST"]),
        Route("/console/lang/{code}", set_language, methods=["GET"]),
        Route("/console/logout", logout, methods=["POST"]),
        Route("/console/queue", queue_fragment, methods=["GET"]),
        Route("/console/duty", toggle_duty, methods=["POST"]),
        Route("/console/events", events_stream, methods=["GET"]),
        Route("/console/h/{handoff_id:int}", conversation_page, methods=["GET"]),
        Route("/console/h/{handoff_id:int}/transcript", transcript_fragment, methods=["GET"]),
        Route("/console/h/{handoff_id:int}/claim", claim_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/reply", reply_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/note", note_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/resolve", resolve_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/handback", handback_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/transfer", transfer_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/export", export_download, methods=["GET"]),
        Route("/console/media/{message_id:int}", media_download, methods=["GET"]),
        Mount("/console/static", app=StaticFiles(directory=str(HERE / "static")), name="console-static"),
    ]
