"""The console's door: log in, log out, log out everywhere, and the language switcher."""

from __future__ import annotations

import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.mentoring.accounts import find_by_email, revoke_all_sessions, verify_password
from bot.mentoring.audit import audit, mentor_actor
from bot.runtime.settings import LANGUAGES
from bot.web.console.auth import (
    anonymous_cookie,
    clear_cookie,
    csrf_ok,
    login_failed,
    login_keys,
    login_succeeded,
    login_wait_s,
    open_session,
    read_cookie,
    revoke_session,
    session_mentor,
    write_cookie,
)
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
from bot.web.console.i18n import LANG_COOKIE, LANG_COOKIE_MAX_AGE_S, text, ui_language


async def login_page(request: Request) -> Response:
    svc = services_of(request)
    cookie = read_cookie(request, svc.settings)
    if await session_mentor(svc, cookie) is not None:
        return RedirectResponse("/console", status_code=303)
    if not cookie.get("c") or cookie.get("s"):
        cookie = anonymous_cookie()
    notice = notice_text(request.query_params.get("notice"), ui_language(request))
    response = render(request, "login.html", {"csrf": cookie["c"], "error": None, "notice": notice})
    write_cookie(response, svc.settings, cookie)
    return response


async def login_submit(request: Request) -> Response:
    svc = services_of(request)
    cookie = read_cookie(request, svc.settings)
    form = await request.form()
    token = form.get("csrf_token")
    lang = ui_language(request)
    if not csrf_ok(cookie, token if isinstance(token, str) else None):
        raise HTTPException(403, text("console_error_csrf", lang))
    email = str(form.get("email") or "").strip()[:254]
    password = str(form.get("password") or "")[:1024]
    keys = login_keys(request, svc.settings, email)
    wait_s = await login_wait_s(svc, keys)
    if wait_s > 0:
        minutes = max(1, math.ceil(wait_s / 60))
        return render(request, "login.html",
                      {"csrf": cookie.get("c"), "error": text("console_login_too_many", lang, minutes=minutes)},
                      status_code=429)
    async with svc.db.session() as session:
        mentor = await find_by_email(session, email) if email else None
    ok = await verify_password(mentor.password_hash if mentor else None, password)
    if mentor is None or not ok or not mentor.active:
        await login_failed(svc, keys)
        return render(request, "login.html", {"csrf": cookie.get("c"), "error": text("console_login_wrong", lang)},
                      status_code=401)
    await login_succeeded(svc, keys)
    async with svc.db.session() as session:
        audit(session, svc.settings, actor=mentor_actor(mentor.id), action="console.login", contact_key=None)
    response = RedirectResponse("/console", status_code=303)
    write_cookie(response, svc.settings, await open_session(svc, mentor.id))
    return response


async def _signed_in_post(request: Request) -> Ctx | Response:
    """The mentor of a CSRF-checked form post, or the redirect to the login page."""
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    await checked_form(request, ctx)
    return ctx


async def logout(request: Request) -> Response:
    """End this session on the server, then forget the cookie."""
    ctx = await _signed_in_post(request)
    if isinstance(ctx, Response):
        return ctx
    svc = services_of(request)
    await revoke_session(svc, ctx.cookie)
    response = login_redirect()
    clear_cookie(response, svc.settings)
    return response


async def logout_everywhere(request: Request) -> Response:
    """End every session of this mentor (a lost phone, a shared computer), this one included."""
    ctx = await _signed_in_post(request)
    if isinstance(ctx, Response):
        return ctx
    svc = services_of(request)
    async with svc.db.session() as session:
        ended = await revoke_all_sessions(session, ctx.mentor.id)
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="console.logout_everywhere",
              contact_key=None, detail={"sessions": ended})
    response = go("/console/login", "logged_out_everywhere")
    clear_cookie(response, svc.settings)
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


def routes() -> list[BaseRoute]:
    return [
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/login", login_submit, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Route("/console/logout-everywhere", logout_everywhere, methods=["POST"]),
        Route("/console/lang/{code}", set_language, methods=["GET"]),
    ]
