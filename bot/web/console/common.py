"""What every console page shares: the signed-in mentor, CSRF-checked forms, templates, redirects.

Plain server-rendered HTML (Jinja2) with a little JavaScript from static files (no inline
script: the console's Content-Security-Policy forbids it); every form carries a CSRF token.
Every string a mentor sees comes from the catalogue in the mentor's console language
(`bot/web/console/i18n.py`); learner content is shown as written. The process's `Services`
is `request.app.state.services`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.templating import Jinja2Templates

from bot.i18n.catalogue import get_catalogue
from bot.runtime.settings import DEFAULT_LANGUAGE, RTL_LANGUAGES
from bot.security.inputs import BadInput, db_id
from bot.storage.models import Mentor
from bot.web.console.auth import csrf_ok, read_cookie, session_mentor
from bot.web.console.i18n import UI, text, ui_language

if TYPE_CHECKING:
    from bot.runtime.services import Services

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
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
    "logged_out_everywhere": "console_notice_logged_out_everywhere",
    "labelled": "console_notice_labelled",
    "extension": "console_notice_extension",
    "saved": "console_notice_saved",
    "deleted": "console_notice_deleted",
    "lists": "console_notice_lists",
}


def text_dir(language: str | None) -> str:
    return "rtl" if (language or "") in RTL_LANGUAGES else "ltr"


templates.env.globals["RTL"] = RTL_LANGUAGES
templates.env.globals["text_dir"] = text_dir


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


@dataclass
class Ctx:
    """The signed-in mentor of a request and their cookie."""

    mentor: Mentor
    cookie: dict[str, Any]
    lang: str = DEFAULT_LANGUAGE  # the console's language for this mentor and request

    @property
    def csrf(self) -> str:
        return str(self.cookie.get("c", ""))


class LoginRequired(Exception):
    """No live session: redirect to the login page."""


async def require_mentor(request: Request) -> Ctx:
    """The mentor of the request's live server-side session (LoginRequired otherwise)."""
    svc = services_of(request)
    cookie = read_cookie(request, svc.settings)
    mentor = await session_mentor(svc, cookie)
    if mentor is None:
        raise LoginRequired
    return Ctx(mentor=mentor, cookie=cookie, lang=ui_language(request, mentor))


async def checked_form(request: Request, ctx: Ctx) -> FormData:
    """The posted form, after checking its CSRF token (403 otherwise)."""
    form = await request.form()
    token = form.get("csrf_token")
    if not csrf_ok(ctx.cookie, token if isinstance(token, str) else request.headers.get("x-csrf-token")):
        raise HTTPException(403, text("console_error_csrf", ctx.lang))
    return form


def path_id(request: Request, name: str, lang: str) -> int:
    """A numeric path parameter that fits the database (400 for one that cannot be an id)."""
    try:
        return db_id(request.path_params[name])
    except (BadInput, KeyError):
        raise HTTPException(400, text("console_error_bad_id", lang)) from None


def login_redirect() -> RedirectResponse:
    return RedirectResponse("/console/login", status_code=303)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A console page in the UI language of the request (its mentor's, `context["me"]`, if signed in)."""
    me = context.get("me")
    ui = UI(ui_language(request, me if isinstance(me, Mentor) else None))
    return templates.TemplateResponse(request, name, {"ui": ui, "t": ui.t, **context}, status_code=status_code)


def go(url: str, notice: str | None = None) -> RedirectResponse:
    return RedirectResponse(url + (f"?notice={notice}" if notice else ""), status_code=303)
