"""Every route of the mentor console (`/console…`), collected from the modules that serve them.

A console page lives in a module of its own with `routes() -> list[BaseRoute]` (paths start with
`/console`); adding one to `CONSOLE_ROUTE_MODULES` mounts it, behind the same sessions, CSRF checks
and security headers (`bot/web/headers.py`) as the rest. What such a module needs (the signed-in
mentor, checked forms, rendering) is in `bot/web/console/common.py`, and importable from here too.
"""

from __future__ import annotations

import importlib

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bot.web.console.common import (
    HERE,
    Ctx,
    LoginRequired,
    checked_form,
    error_text,
    go,
    login_redirect,
    notice_text,
    path_id,
    render,
    require_mentor,
    services_of,
    text_dir,
)

__all__ = [
    "CONSOLE_ROUTE_MODULES", "Ctx", "LoginRequired", "checked_form", "error_text", "go", "login_redirect",
    "notice_text", "path_id", "render", "require_mentor", "routes", "services_of", "text_dir",
]

CONSOLE_ROUTE_MODULES: tuple[str, ...] = (
    "bot.web.console.login",
    "bot.web.console.queue",
    "bot.web.console.conversation",
    "bot.web.console.actions",
    "bot.web.console.files",
    "bot.web.console.live",
    "bot.web.console.mentor_tools",
    # pages for programme staff: analytics, the review inbox, broadcasts
    "bot.web.console.analytics",
    "bot.web.console.review",
    "bot.web.console.broadcasts",
)


def routes() -> list[BaseRoute]:
    """The routes of every console module, then the console's static files."""
    collected: list[BaseRoute] = []
    for name in CONSOLE_ROUTE_MODULES:
        collected.extend(importlib.import_module(name).routes())
    collected.append(Mount("/console/static", app=StaticFiles(directory=str(HERE / "static")), name="console-static"))
    return collected
