"""A mentor's actions on one conversation: claim, reply, note, resolve, hand back, transfer.

Each is a CSRF-checked form post on a hand-off the mentor's view allows (`load_handoff`); the
hand-off state machine (`bot/mentoring/`) decides the rest and audits it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.mentoring.handoff import HandoffError, claim, transfer
from bot.mentoring.labels import outcome_named
from bot.mentoring.routing import add_note, deliver, end_handoff, send_mentor_reply
from bot.privacy.audit import mentor_actor
from bot.storage.models import Handoff, Outbox
from bot.web.console.common import (
    Ctx,
    LoginRequired,
    checked_form,
    go,
    login_redirect,
    path_id,
    require_mentor,
    services_of,
)
from bot.web.console.conversation import load_handoff
from bot.web.console.i18n import text

if TYPE_CHECKING:
    from bot.runtime.services import Services

T = TypeVar("T")


def _error_redirect(handoff_id: int, exc: Exception) -> RedirectResponse:
    error = getattr(exc, "code", None) or str(exc)[:200]
    return RedirectResponse(f"/console/h/{handoff_id}?error={quote(error)}", status_code=303)


@dataclass
class _ConversationAction:
    """A mentor's form post on one conversation, past login, CSRF and visibility checks."""

    ctx: Ctx
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
    handoff_id = path_id(request, "handoff_id", ctx.lang)
    handoff, _, _ = await load_handoff(svc, ctx, handoff_id)
    return _ConversationAction(ctx, form, svc, handoff_id, handoff)


async def _on_handoff(action: _ConversationAction, work: Callable[[AsyncSession, Handoff], Awaitable[T]]) -> T:
    """Run `work` on the hand-off, re-read in a transaction of its own (404 when it is gone meanwhile)."""
    async with action.svc.db.session() as session:
        handoff = await session.get(Handoff, action.handoff_id)
        if handoff is None:
            raise HTTPException(404, text("console_error_no_conversation", action.ctx.lang))
        return await work(session, handoff)


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
    reply = str(action.form.get("text") or "")
    try:
        outcome = await _on_handoff(action, lambda session, handoff: send_mentor_reply(
            svc, session, handoff, ctx.mentor, reply))
    except HandoffError as exc:
        return _error_redirect(handoff_id, exc)
    await deliver(svc, [outcome.outbox_id])
    return go(f"/console/h/{handoff_id}", "template" if outcome.used_template else "sent")


async def note_action(request: Request) -> Response:
    action = await _conversation_action(request)
    if isinstance(action, Response):
        return action
    ctx, svc, handoff_id = action.ctx, action.svc, action.handoff_id
    note = str(action.form.get("text") or "")
    try:
        await _on_handoff(action, lambda session, handoff: add_note(svc, session, handoff, ctx.mentor, note))
    except HandoffError as exc:
        return _error_redirect(handoff_id, exc)
    return go(f"/console/h/{handoff_id}", "noted")


async def _end(request: Request, outcome: str) -> Response:
    action = await _conversation_action(request)
    if isinstance(action, Response):
        return action
    ctx, svc, handoff_id = action.ctx, action.svc, action.handoff_id
    if ctx.mentor.role != "lead" and action.handoff.mentor_id != ctx.mentor.id:
        raise HTTPException(403, text("console_error_claim_first", ctx.lang))
    try:
        resolution = None
        if outcome == "resolved":
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
    raw = str(action.form.get("to") or "")
    try:
        to_id = None if raw in ("", "queue") else int(raw)
    except ValueError:
        return _error_redirect(handoff_id, HandoffError("choose a mentor", "choose_mentor"))
    if to_id is not None and not 0 < to_id < 2**63:
        return _error_redirect(handoff_id, HandoffError("choose a mentor", "choose_mentor"))
    try:
        await _on_handoff(action, lambda session, handoff: transfer(svc, session, handoff, ctx.mentor, to_id))
    except HandoffError as exc:
        return _error_redirect(handoff_id, exc)
    return go("/console", "transferred")


def routes() -> list[BaseRoute]:
    return [
        Route("/console/h/{handoff_id:int}/claim", claim_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/reply", reply_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/note", note_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/resolve", resolve_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/handback", handback_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/transfer", transfer_action, methods=["POST"]),
    ]
