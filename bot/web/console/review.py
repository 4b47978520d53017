"""The review inbox (`/console/review`, leads and mentors): messages the assistant did not understand
well, newest first, each with one button per intent (and "not an intent"); a click labels it.
The count of labelled messages waiting for `sanad nlu export-reviewed` is shown too."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.mentoring.audit import audit, mentor_actor
from bot.review.inbox import NOT_AN_INTENT, ReviewError, domain_intents, exportable_count, label_item, list_items
from bot.review.inbox import waiting_count as review_waiting_count
from bot.web.console.common import (
    LoginRequired,
    checked_form,
    login_redirect,
    path_id,
    render,
    require_mentor,
    services_of,
)
from bot.web.console.i18n import text

NOTICES = {"labelled": "console_review_notice_labelled"}


async def review_page(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    svc = services_of(request)
    show_done = request.query_params.get("show") == "labelled"
    items = await list_items(svc, ctx.mentor, waiting=not show_done)
    error = request.query_params.get("error")
    notice = NOTICES.get(request.query_params.get("notice") or "")
    return render(request, "review.html", {
        "me": ctx.mentor, "csrf": ctx.csrf, "items": items, "show_done": show_done,
        "intents": domain_intents(), "none_label": NOT_AN_INTENT,
        "waiting": await review_waiting_count(svc, ctx.mentor), "exportable": await exportable_count(svc),
        "notice": text(notice, ctx.lang) if notice else None,
        "error": text(f"console_review_error_{error}", ctx.lang) if error in (
            "unknown_intent", "no_item", "not_yours", "exported") else None,
    })


async def label_action(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    form = await checked_form(request, ctx)
    svc = services_of(request)
    item_id = path_id(request, "item_id", ctx.lang)
    back = "/console/review" + ("?show=labelled&" if form.get("show") == "labelled" else "?")
    try:
        await label_item(svc, ctx.mentor, item_id, str(form.get("label") or ""))
    except ReviewError as exc:
        return RedirectResponse(back + f"error={exc.code}", status_code=303)
    async with svc.db.session() as session:
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="review.label", contact_key=None,
              detail={"item_id": item_id})
    return RedirectResponse(back + "notice=labelled", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/console/review", review_page, methods=["GET"]),
        Route("/console/review/{item_id:int}/label", label_action, methods=["POST"]),
    ]
