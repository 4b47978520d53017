"""Every route of the mentor console (`/console…`), collected from the modules that serve them.

A console page lives in a module of its own with `routes() -> list[BaseRoute]` (paths start with
`/console`); adding one to `CONSOLE_ROUTE_MODULES` mounts it, behind the same session, CSRF and
security headers (`bot/web/console/headers.py`) as the rest.
"""

from __future__ import annotations

import importlib

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bot.web.console.common import HERE

CONSOLE_ROUTE_MODULES: tuple[str, ...] = (
    "bot.web.console.login",
    "bot.web.console.queue",
    "bot.web.console.conversation",
    "bot.web.console.actions",
    "bot.web.console.files",
    "bot.web.console.live",
)


def routes() -> list[BaseRoute]:
    """The routes of every console module, then the console's static files."""
    collected: list[BaseRoute] = []
    for name in CONSOLE_ROUTE_MODULES:
        collected.extend(importlib.import_module(name).routes())
    collected.append(Mount("/console/static", app=StaticFiles(directory=str(HERE / "static")), name="console-static"))
    return collected
