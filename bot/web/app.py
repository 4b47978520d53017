"""The gateway: a Starlette app with webhooks, NLG, web chat, console, admin API and health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from bot.outbox.sender import OutboxSender
from bot.runtime.services import Services
from bot.runtime.settings import Settings
from bot.security.bearer import check_bearer
from bot.web import nlg, webchat, webhooks
from bot.web.headers import SecurityHeaders
from bot.web.webhooks import WebhookEndpoint

log = logging.getLogger(__name__)


# modules that register gateway commands and interceptors when imported
COMMAND_MODULES = (
    "bot.learners.linking",
    "bot.mentoring.handoff",
    "bot.mentoring.held",
    "bot.mentoring.satisfaction",
    "bot.conversation.preferences",
    "bot.privacy.erasure",
    "bot.privacy.export",
    "bot.privacy.pin",
    "bot.reminders.optout",
)
# modules with `routes() -> list[BaseRoute]`
ROUTE_MODULES = (
    "bot.learners.linking", "bot.reminders.admin", "bot.web.console.routes", "bot.analytics.api",
)


def _import(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


def load_components() -> None:
    """Import every module that registers commands and interceptors."""
    for name in COMMAND_MODULES:
        _import(name)


def component_routes(settings: Settings) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for name in ROUTE_MODULES:
        routes.extend(_import(name).routes())
    if not settings.platform_api_url:
        from integrations.demo_platform import demo_app

        routes.append(Mount("/demo-platform", app=demo_app()))
    return routes


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    checks: dict[str, str] = {}
    try:
        async with services.db.engine.connect() as conn:
            await conn.execute(select(1))
        checks["db"] = "ok"
    except Exception:  # noqa: BLE001  (health reports, never raises)
        checks["db"] = "down"
    checks["redis"] = ("ok" if await services.coord.ping() else "down") if services.settings.redis_url else "off"
    checks["rasa"] = "ok" if services.rasa is not None and await services.rasa.ping() else "down"
    fatal = checks["db"] != "ok" or checks["redis"] == "down"
    status = "down" if fatal else ("degraded" if checks["rasa"] != "ok" else "ok")
    return JSONResponse({"status": status, **checks}, status_code=503 if fatal else 200)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus metrics, for a scraper that presents `METRICS_TOKEN` (404 while it is unset)."""
    token = request.app.state.services.settings.metrics_token
    if (denied := check_bearer(request, token, "/metrics (METRICS_TOKEN is unset)")) is not None:
        return denied
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


class GatewayApp(Starlette):
    """The gateway's app: provider webhooks skip Starlette's middleware stack and router.

    Those cost ~30 µs of CPU a request, about what verifying, parsing and storing a Telegram
    update costs; webhook POSTs are most of the gateway's requests and answer every outcome
    themselves (bot/web/webhooks.py). Every other request, and any other method on those paths,
    goes through Starlette as usual."""

    def __init__(self, routes: list[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes=routes, **kwargs)
        self.webhook_posts: dict[str, WebhookEndpoint] = {
            route.path: route.endpoint
            for route in routes
            if isinstance(route, Route) and isinstance(route.endpoint, WebhookEndpoint)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.webhook_posts.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def home(request: Request) -> Response:
    enabled = request.app.state.services.settings.webchat_enabled
    return RedirectResponse("/chat" if enabled else "/console")


def create_app(
    services: Services | None = None,
    settings: Settings | None = None,
    run_worker: bool | None = None,
    redelivery_interval_s: float = 5.0,
    recover_on_start: bool | None = None,
) -> Starlette:
    """Build the gateway. With `services` given (tests), the caller owns their lifetime; a gateway that
    owns its services recovers what it left before a restart (`recover_on_start`)."""
    settings = services.settings if services is not None else (settings or Settings.from_env())
    load_components()
    owns_services = services is None
    recover_on_start = owns_services if recover_on_start is None else recover_on_start
    in_process_worker = (settings.redis_url is None) if run_worker is None else run_worker

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = app.state.services
        if owns_services and svc.settings.is_sqlite:
            await svc.db.create_all()
        if svc.sender is None:
            svc.sender = OutboxSender(svc)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        if recover_on_start:
            # what this process left when it stopped (crash): its own leases and claims, at once
            tasks.append(asyncio.create_task(_recover(svc)))
        if in_process_worker:
            from bot.runtime.worker import run_forever

            tasks.append(asyncio.create_task(run_forever(svc, stop)))
        elif redelivery_interval_s > 0:
            tasks.append(asyncio.create_task(_redelivery_loop(svc, stop, redelivery_interval_s)))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await svc.conversations.drain()
            if owns_services:
                await svc.close()

    routes: list[BaseRoute] = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        *webhooks.routes(),
        *nlg.routes(),
        *(webchat.routes() if settings.webchat_enabled else []),
        *component_routes(settings),
    ]
    app = GatewayApp(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)])
    app.state.services = services if services is not None else Services.build(settings)
    return app


async def _recover(services: Services) -> None:
    try:
        await services.conversations.recover()
    except Exception:
        log.exception("recovery at start-up failed; redelivery will pick the messages up")


async def _redelivery_loop(services: Services, stop: asyncio.Event, interval_s: float) -> None:
    while not stop.is_set():
        try:
            await services.conversations.redeliver()
        except Exception:
            log.exception("redelivery failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass
