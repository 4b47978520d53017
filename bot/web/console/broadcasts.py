"""Broadcasts for staff (`/console/broadcasts`, leads): compose in the five languages, choose a
segment, see how many learners it reaches, send now or at a set time, follow the progress live
(a static script polls the progress as JSON), cancel.

The work is `bot.reminders.broadcasts`' own (validation, recipients, expansion, progress); this
page only turns a form into its arguments. A language left empty is not sent to: the segment's
`language` becomes the languages that have a text."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.mentoring.audit import audit, mentor_actor
from bot.reminders.broadcasts import (
    ENROLMENT_STATUSES,
    BroadcastError,
    PlatformNeeded,
    cancel_broadcast,
    create_broadcast,
    list_broadcasts,
    parse_segment,
    preview,
    progress,
)
from bot.runtime.settings import LANGUAGES
from bot.web.console.analytics import require_lead
from bot.web.console.common import Ctx, LoginRequired, checked_form, login_redirect, path_id, render, services_of
from bot.web.console.i18n import text

CHANNELS = ("telegram", "whatsapp", "web")
LINKED = ("yes", "any", "no")


def _draft(form: FormData) -> dict[str, Any]:
    """The form as the page shows it again (every field, as typed)."""
    return {
        "texts": {lang: str(form.get(f"text_{lang}") or "") for lang in LANGUAGES},
        "channel": [str(v) for v in form.getlist("channel") if v in CHANNELS],
        "enrolment_status": [str(v) for v in form.getlist("enrolment_status") if v in ENROLMENT_STATUSES],
        "country": str(form.get("country") or "").strip(),
        "course": str(form.get("course") or "").strip(),
        "linked": str(form.get("linked") or "yes") if form.get("linked") in LINKED else "yes",
        "send_at": str(form.get("send_at") or "").strip(),
    }


def _arguments(draft: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[str]], str | None]:
    """(texts, segment, send_at) for the broadcasts module; BroadcastError when there is no text."""
    texts = {lang: value for lang, value in draft["texts"].items() if value.strip()}
    if not texts:
        raise BroadcastError("no_text")
    raw: dict[str, Any] = {"language": sorted(texts), "linked": draft["linked"]}
    for key in ("channel", "enrolment_status"):
        if draft[key]:
            raw[key] = draft[key]
    for key in ("country", "course"):
        values = [v.strip() for v in draft[key].split(",") if v.strip()]
        if values:
            raw[key] = values
    send_at = draft["send_at"]
    # the form's time is UTC (the page says so): a browser's datetime-local has no offset
    return texts, parse_segment(raw), (send_at + ":00+00:00" if len(send_at) == 16 else send_at) or None


def _error_text(exc: Exception, ctx: Ctx) -> str:
    if isinstance(exc, PlatformNeeded):
        return text("console_broadcasts_error_platform", ctx.lang)
    if str(exc) == "no_text":
        return text("console_broadcasts_error_no_text", ctx.lang)
    return text("console_broadcasts_error_invalid", ctx.lang, reason=str(exc))


async def _page(request: Request, ctx: Ctx, draft: dict[str, Any] | None = None, **extra: Any) -> Response:
    return render(request, "broadcasts.html", {
        "me": ctx.mentor, "csrf": ctx.csrf, "languages": LANGUAGES, "channels": CHANNELS, "linked_options": LINKED,
        "statuses": ENROLMENT_STATUSES, "recent": await list_broadcasts(services_of(request), 20),
        "draft": draft or _draft(FormData()), "preview": None, "error": None, **extra,
    }, status_code=400 if extra.get("error") else 200)


async def broadcasts_page(request: Request) -> Response:
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return login_redirect()
    return await _page(request, ctx)


async def preview_action(request: Request) -> Response:
    """The recipients the draft would reach, by language and channel, with the button that sends it."""
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return login_redirect()
    draft = _draft(await checked_form(request, ctx))
    try:
        _texts, segment, _when = _arguments(draft)
        counted = await preview(services_of(request), segment)
    except (BroadcastError, PlatformNeeded) as exc:
        return await _page(request, ctx, draft, error=_error_text(exc, ctx))
    return await _page(request, ctx, draft, preview=counted)


async def create_action(request: Request) -> Response:
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return login_redirect()
    draft = _draft(await checked_form(request, ctx))
    svc = services_of(request)
    try:
        texts, segment, when = _arguments(draft)
        row = await create_broadcast(svc, texts=texts, segment=segment, send_at=when,
                                     created_by=mentor_actor(ctx.mentor.id))
    except BroadcastError as exc:
        return await _page(request, ctx, draft, error=_error_text(exc, ctx))
    async with svc.db.session() as session:
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="broadcast.create", contact_key=None,
              detail={"broadcast_id": row.id})
    return RedirectResponse(f"/console/broadcasts/{row.id}", status_code=303)


async def _found(request: Request, ctx: Ctx) -> dict[str, Any]:
    found = await progress(services_of(request), path_id(request, "broadcast_id", ctx.lang))
    if found is None:
        raise HTTPException(404, text("console_broadcasts_error_none", ctx.lang))
    return found


async def broadcast_page(request: Request) -> Response:
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return login_redirect()
    return render(request, "broadcast.html", {"me": ctx.mentor, "csrf": ctx.csrf, "b": await _found(request, ctx)})


async def progress_json(request: Request) -> Response:
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return Response(status_code=401)
    return JSONResponse(await _found(request, ctx), headers={"Cache-Control": "no-store"})


async def cancel_action(request: Request) -> Response:
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return login_redirect()
    await checked_form(request, ctx)
    svc = services_of(request)
    broadcast_id = path_id(request, "broadcast_id", ctx.lang)
    if await cancel_broadcast(svc, broadcast_id) is None:
        raise HTTPException(404, text("console_broadcasts_error_none", ctx.lang))
    async with svc.db.session() as session:
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="broadcast.cancel", contact_key=None,
              detail={"broadcast_id": broadcast_id})
    return RedirectResponse(f"/console/broadcasts/{broadcast_id}", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/console/broadcasts", broadcasts_page, methods=["GET"]),
        Route("/console/broadcasts", create_action, methods=["POST"]),
        Route("/console/broadcasts/preview", preview_action, methods=["POST"]),
        Route("/console/broadcasts/{broadcast_id:int}", broadcast_page, methods=["GET"]),
        Route("/console/broadcasts/{broadcast_id:int}/progress", progress_json, methods=["GET"]),
        Route("/console/broadcasts/{broadcast_id:int}/cancel", cancel_action, methods=["POST"]),
    ]
