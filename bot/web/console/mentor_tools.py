"""Console pages and actions of the mentors' tools: saved replies, labels and outcomes, extensions,
the queue's filters, linking a Telegram account.

Leads edit the saved replies (`/console/saved`) and the label and outcome lists
(`/console/lists`); any mentor labels the conversations they may see, records an extension on
one they hold (`/console/h/{id}/extension`) and links their Telegram account for the mentor
group (`/console/telegram`). The conversation page gets its tools from `conversation_tools`.
Every string is a `console_…` catalogue key; forms carry the CSRF token; no inline script.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote

from sqlalchemy import func, or_, select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.i18n.catalogue import zone
from bot.mentoring.extensions import LOOK_AHEAD, LOOK_BACK, extensions_of, record_extension
from bot.mentoring.group.linking import new_link_code
from bot.mentoring.handoff import HandoffError
from bot.mentoring.labels import KINDS, add_entry, entries, labels_of, retire_entry, set_labels
from bot.mentoring.record import LearnerRecord
from bot.mentoring.saved_replies import all_replies, filled_for, remove, save
from bot.runtime.settings import LANGUAGES
from bot.storage.db import utcnow
from bot.storage.models import Contact, Handoff, HandoffLabelLink, Mentor
from bot.web.console.common import (
    Ctx,
    LoginRequired,
    checked_form,
    error_text,
    go,
    login_redirect,
    notice_text,
    render,
    require_mentor,
    services_of,
)
from bot.web.console.conversation import load_handoff

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)
FILTERS = ("q", "language", "channel", "reason", "label", "urgent")
_Query = TypeVar("_Query")


# --- the queue's search and filters ------------------------------------------------

@dataclass(frozen=True)
class QueueFilter:
    """Search (learner name or learner id) and filters of the queue, from the query string."""

    q: str = ""
    language: str = ""
    channel: str = ""
    reason: str = ""
    label: int | None = None
    urgent: bool = False

    @classmethod
    def from_request(cls, request: Request) -> QueueFilter:
        params = request.query_params
        label = params.get("label", "")
        return cls(
            q=params.get("q", "").strip()[:100],
            language=params.get("language", "") if params.get("language", "") in LANGUAGES else "",
            channel=params.get("channel", "") if params.get("channel", "") in ("telegram", "whatsapp", "web") else "",
            reason=params.get("reason", "")[:32],
            label=int(label) if label.isdigit() else None,
            urgent=params.get("urgent") == "1",
        )

    @property
    def active(self) -> bool:
        return any((self.q, self.language, self.channel, self.reason, self.label, self.urgent))

    def query_string(self) -> str:
        pairs = [(name, getattr(self, name)) for name in FILTERS]
        return "&".join(f"{name}={quote(str(int(value) if isinstance(value, bool) else value))}"
                        for name, value in pairs if value)

    def apply(self, statement: _Query) -> _Query:
        """Narrow a select over (Handoff, Contact)."""
        query: Any = statement
        if self.q:
            needle = self.q.lower()
            query = query.where(or_(func.lower(Contact.display_name).contains(needle, autoescape=True),
                                    func.lower(Contact.learner_id).contains(needle, autoescape=True)))
        if self.language:
            query = query.where(Handoff.language == self.language)
        if self.channel:
            query = query.where(Contact.channel == self.channel)
        if self.reason:
            query = query.where(Handoff.reason == self.reason)
        if self.urgent:
            query = query.where(Handoff.urgent.is_(True))
        if self.label is not None:
            query = query.where(Handoff.id.in_(
                select(HandoffLabelLink.handoff_id).where(HandoffLabelLink.label_id == self.label)))
        return cast(_Query, query)


async def queue_extras(svc: Services, handoff_ids: list[int]) -> dict[str, Any]:
    """What the queue shows besides the hand-offs: their labels and the label list for the filter."""
    async with svc.db.session() as session:
        return {"labels_by_handoff": await labels_of(session, handoff_ids),
                "label_choices": await entries(session, "label")}


# --- the conversation page's tools ----------------------------------------------------

async def conversation_tools(svc: Services, mentor: Mentor, handoff: Handoff, contact: Contact,
                             record: LearnerRecord | None) -> dict[str, Any]:
    """Saved replies filled for this learner, labels, outcomes, the deadlines an extension may move.
    Without a record (a view that may not read the learner's live data) there is nothing to fill or extend."""
    deadlines: list[Any] = []
    if record is not None and contact.learner_id and record.error is None:
        now = utcnow()
        try:
            deadlines = [d for d in await svc.platform.deadlines(contact.learner_id, now - LOOK_BACK,
                                                                   now + LOOK_AHEAD) if not d.submitted]
        except Exception:  # noqa: BLE001  (the record already says the platform is down)
            log.info("deadlines for the extension form unavailable")
    async with svc.db.session() as session:
        saved = await filled_for(svc, session, contact, record) if record is not None else []
        extensions = await extensions_of(session, [contact.learner_id]) if contact.learner_id else {}
        return {
            "saved_replies": saved,
            "saved_json": [{"name": r.name, "text": r.text} for r in saved],
            "label_choices": await entries(session, "label"),
            "labels": (await labels_of(session, [handoff.id]))[handoff.id],
            "outcomes": await entries(session, "outcome"),
            "extension_deadlines": deadlines,
            "extensions": {deadline_id: row for (_, deadline_id), row in extensions.items()},
        }


async def learner_timezone(svc: Services, contact: Contact) -> str | None:
    """The learner's time zone: the chat's, else the platform's (None: UTC)."""
    if contact.timezone or not contact.learner_id:
        return contact.timezone
    try:
        return (await svc.platform.learner(contact.learner_id)).timezone
    except Exception:  # noqa: BLE001  (the platform is down: the extension form falls back to UTC)
        return None


Handler = Callable[[Request, Ctx, "Services", Any], Awaitable[Response]]


def signed_in(post: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A console endpoint for a signed-in mentor (the login page otherwise); `post`: its form, CSRF-checked."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                ctx = await require_mentor(request)
            except LoginRequired:
                return login_redirect()
            form = await checked_form(request, ctx) if post else None
            return await handler(request, ctx, services_of(request), form)

        return endpoint

    return wrap


def _back(handoff_id: int, notice: str | None = None, error: HandoffError | None = None) -> RedirectResponse:
    if error is not None:
        return RedirectResponse(f"/console/h/{handoff_id}?error={quote(error.code or 'changed')}", status_code=303)
    return go(f"/console/h/{handoff_id}", notice)


@signed_in(post=True)
async def labels_action(request: Request, ctx: Ctx, svc: Services, form: FormData) -> Response:
    handoff_id = int(request.path_params["handoff_id"])
    await load_handoff(svc, ctx, handoff_id)
    chosen = [int(v) for v in form.getlist("label") if isinstance(v, str) and v.isdigit()]
    async with svc.db.session() as session:
        handoff = await session.get(Handoff, handoff_id)
        if handoff is not None:
            await set_labels(svc, session, handoff, ctx.mentor, chosen)
    return _back(handoff_id, "labelled")


@signed_in(post=True)
async def extension_action(request: Request, ctx: Ctx, svc: Services, form: FormData) -> Response:
    handoff_id = int(request.path_params["handoff_id"])
    await load_handoff(svc, ctx, handoff_id)
    try:
        new_date = datetime.fromisoformat(str(form.get("new_due_at") or ""))
    except ValueError:
        return _back(handoff_id, error=HandoffError("bad date", "extension_date"))
    try:
        async with svc.db.session() as session:
            handoff = await session.get(Handoff, handoff_id)
            contact = await session.get(Contact, handoff.contact_id) if handoff else None
            if handoff is None or contact is None:
                raise HandoffError("unknown conversation", "no_conversation")
            if new_date.tzinfo is None:
                # the form's date and time are the learner's own, in their zone (as the console shows deadlines)
                new_date = new_date.replace(tzinfo=zone(await learner_timezone(svc, contact)))
            await record_extension(svc, session, handoff, ctx.mentor, str(form.get("deadline_id") or ""),
                                   new_date, str(form.get("reason") or ""))
    except HandoffError as exc:
        return _back(handoff_id, error=exc)
    return _back(handoff_id, "extension")


# --- leads: saved replies and lists ------------------------------------------------------

@signed_in()
async def saved_page(request: Request, ctx: Ctx, svc: Services, _form: FormData | None) -> Response:
    async with svc.db.session() as session:
        replies = await all_replies(session)
    return render(request, "saved.html", {
        "me": ctx.mentor, "csrf": ctx.csrf, "replies": replies, "languages": LANGUAGES,
        "notice": _notice(request, ctx.lang), "error": _error(request, ctx.lang),
    })


@signed_in(post=True)
async def saved_save(request: Request, ctx: Ctx, svc: Services, form: FormData) -> Response:
    raw_id = str(form.get("id") or "")
    try:
        async with svc.db.session() as session:
            await save(svc, session, ctx.mentor, str(form.get("language") or ""), str(form.get("name") or ""),
                       str(form.get("text") or ""), int(raw_id) if raw_id.isdigit() else None)
    except HandoffError as exc:
        return RedirectResponse(f"/console/saved?error={quote(exc.code or '')}", status_code=303)
    return go("/console/saved", "saved")


@signed_in(post=True)
async def saved_delete(request: Request, ctx: Ctx, svc: Services, _form: FormData) -> Response:
    try:
        async with svc.db.session() as session:
            await remove(svc, session, ctx.mentor, int(request.path_params["reply_id"]))
    except HandoffError as exc:
        return RedirectResponse(f"/console/saved?error={quote(exc.code or '')}", status_code=303)
    return go("/console/saved", "deleted")


@signed_in()
async def lists_page(request: Request, ctx: Ctx, svc: Services, _form: FormData | None) -> Response:
    async with svc.db.session() as session:
        lists = {kind: await entries(session, kind) for kind in KINDS}
    return render(request, "lists.html", {
        "me": ctx.mentor, "csrf": ctx.csrf, "lists": lists,
        "notice": _notice(request, ctx.lang), "error": _error(request, ctx.lang),
    })


@signed_in(post=True)
async def lists_change(request: Request, ctx: Ctx, svc: Services, form: FormData) -> Response:
    kind, name = str(form.get("kind") or ""), str(form.get("name") or "")
    try:
        async with svc.db.session() as session:
            if form.get("retire"):
                await retire_entry(svc, session, ctx.mentor, kind, name)
            else:
                await add_entry(svc, session, ctx.mentor, kind, name)
    except HandoffError as exc:
        return RedirectResponse(f"/console/lists?error={quote(exc.code or '')}", status_code=303)
    return go("/console/lists", "lists")


# --- linking a Telegram account ------------------------------------------------------------

@signed_in()
async def telegram_page(request: Request, ctx: Ctx, svc: Services, _form: FormData | None) -> Response:
    return render(request, "telegram.html", {
        "me": ctx.mentor, "csrf": ctx.csrf, "code": None, "bot": svc.settings.telegram_bot_username,
        "group_on": bool(svc.settings.mentor_group_ids),
    })


@signed_in(post=True)
async def telegram_code(request: Request, ctx: Ctx, svc: Services, _form: FormData) -> Response:
    async with svc.db.session() as session:
        code = await new_link_code(session, svc.settings, ctx.mentor)
    response = render(request, "telegram.html", {
        "me": ctx.mentor, "csrf": ctx.csrf, "code": code, "bot": svc.settings.telegram_bot_username,
        "group_on": bool(svc.settings.mentor_group_ids),
    })
    response.headers["Cache-Control"] = "no-store"
    return response


def _notice(request: Request, language: str) -> str | None:
    return notice_text(request.query_params.get("notice"), language)


def _error(request: Request, language: str) -> str | None:
    return error_text(request.query_params.get("error"), language)


def routes() -> list[BaseRoute]:
    return [
        Route("/console/saved", saved_page, methods=["GET"]),
        Route("/console/saved", saved_save, methods=["POST"]),
        Route("/console/saved/{reply_id:int}/delete", saved_delete, methods=["POST"]),
        Route("/console/lists", lists_page, methods=["GET"]),
        Route("/console/lists", lists_change, methods=["POST"]),
        Route("/console/telegram", telegram_page, methods=["GET"]),
        Route("/console/telegram", telegram_code, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/labels", labels_action, methods=["POST"]),
        Route("/console/h/{handoff_id:int}/extension", extension_action, methods=["POST"]),
    ]
