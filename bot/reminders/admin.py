"""Admin API of broadcasts (Bearer `ADMIN_API_TOKEN`, checked by `bot.security.bearer.require_admin`;
the API is off when the token is unset).

POST /api/broadcasts             {"texts": {"en": …, "ar": …} | "catalogue_key": …, "segment": {…}, "send_at": ISO}
GET  /api/broadcasts             recent broadcasts
GET  /api/broadcasts/{id}        progress: queued, sent, delivered, read, failed, stopped, cancelled
POST /api/broadcasts/preview     {"segment": {…}} -> recipient count by language and channel
POST /api/broadcasts/{id}/cancel
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.reminders.broadcasts import (
    BroadcastError,
    PlatformNeeded,
    cancel_broadcast,
    create_broadcast,
    describe,
    list_broadcasts,
    parse_segment,
    preview,
    progress,
)
from bot.runtime.services import Services
from bot.security.bearer import require_admin
from bot.security.inputs import BadInput, bounded_int, db_id, loads_json


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = loads_json(await request.body() or b"{}")
    except BadInput as exc:
        raise BroadcastError(f"the body must be JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise BroadcastError("the body must be a JSON object")
    return body


def _broadcast_id(request: Request) -> int | None:
    """The path's id, None when it cannot be one (out of the database's range)."""
    try:
        return db_id(request.path_params["broadcast_id"])
    except (KeyError, BadInput):
        return None


def _bad_id() -> Response:
    return JSONResponse({"error": "the broadcast id is not a valid id"}, status_code=400)


async def create(request: Request) -> Response:
    if (denied := require_admin(request)) is not None:
        return denied
    try:
        body = await _json_body(request)
        row = await create_broadcast(
            _services(request),
            texts=body.get("texts"),
            catalogue_key=body.get("catalogue_key") or body.get("key"),
            segment=body.get("segment"),
            send_at=body.get("send_at"),
            created_by=str(body.get("created_by") or "admin"),
        )
    except BroadcastError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({**describe(row), "queued": 0}, status_code=201)


async def index(request: Request) -> Response:
    if (denied := require_admin(request)) is not None:
        return denied
    try:
        limit = bounded_int(request.query_params.get("limit", "50"), 1, 500, "limit")
    except BadInput as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"items": await list_broadcasts(_services(request), limit)})


async def show(request: Request) -> Response:
    if (denied := require_admin(request)) is not None:
        return denied
    broadcast_id = _broadcast_id(request)
    if broadcast_id is None:
        return _bad_id()
    found = await progress(_services(request), broadcast_id)
    if found is None:
        return JSONResponse({"error": "no such broadcast"}, status_code=404)
    return JSONResponse(found)


async def preview_view(request: Request) -> Response:
    if (denied := require_admin(request)) is not None:
        return denied
    try:
        body = await _json_body(request)
        segment = parse_segment(body.get("segment"))
        result = await preview(_services(request), segment)
    except BroadcastError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except PlatformNeeded as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    return JSONResponse(result)


async def cancel(request: Request) -> Response:
    if (denied := require_admin(request)) is not None:
        return denied
    broadcast_id = _broadcast_id(request)
    if broadcast_id is None:
        return _bad_id()
    found = await cancel_broadcast(_services(request), broadcast_id)
    if found is None:
        return JSONResponse({"error": "no such broadcast"}, status_code=404)
    return JSONResponse(found)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/broadcasts", create, methods=["POST"]),
        Route("/api/broadcasts", index, methods=["GET"]),
        Route("/api/broadcasts/preview", preview_view, methods=["POST"]),
        Route("/api/broadcasts/{broadcast_id:int}", show, methods=["GET"]),
        Route("/api/broadcasts/{broadcast_id:int}/cancel", cancel, methods=["POST"]),
    ]
