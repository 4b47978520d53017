"""Admin API of broadcasts (Bearer `ADMIN_API_TOKEN`; the API is off when the token is unset).

POST /api/broadcasts             {"texts": {"en": …, "ar": …} | "catalogue_key": …, "segment": {…}, "send_at": ISO}
GET  /api/broadcasts             recent broadcasts
GET  /api/broadcasts/{id}        progress: queued, sent, delivered, read, failed, stopped, cancelled
POST /api/broadcasts/preview     {"segment": {…}} -> recipient count by language and channel
POST /api/broadcasts/{id}/cancel
"""

from __future__ import annotations

import hmac
import json
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


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _unauthorised(request: Request) -> Response | None:
    token = _services(request).settings.admin_api_token
    if not token:
        return JSONResponse({"error": "the admin API is off (ADMIN_API_TOKEN is not set)"}, status_code=404)
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        return JSONResponse(
            {"error": "a valid bearer token is required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    return None


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BroadcastError("the body must be JSON") from exc
    if not isinstance(body, dict):
        raise BroadcastError("the body must be a JSON object")
    return body


def _broadcast_id(request: Request) -> int | None:
    try:
        return int(request.path_params["broadcast_id"])
    except (KeyError, ValueError):
        return None


async def create(request: Request) -> Response:
    if (denied := _unauthorised(request)) is not None:
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
    if (denied := _unauthorised(request)) is not None:
        return denied
    try:
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        return JSONResponse({"error": "limit must be a number"}, status_code=400)
    return JSONResponse({"items": await list_broadcasts(_services(request), limit)})


async def show(request: Request) -> Response:
    if (denied := _unauthorised(request)) is not None:
        return denied
    broadcast_id = _broadcast_id(request)
    found = await progress(_services(request), broadcast_id) if broadcast_id is not None else None
    if found is None:
        return JSONResponse({"error": "no such broadcast"}, status_code=404)
    return JSONResponse(found)


async def preview_view(request: Request) -> Response:
    if (denied := _unauthorised(request)) is not None:
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
    if (denied := _unauthorised(request)) is not None:
        return denied
    broadcast_id = _broadcast_id(request)
    found = await cancel_broadcast(_services(request), broadcast_id) if broadcast_id is not None else None
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
