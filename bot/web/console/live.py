"""Live updates of open consoles (server-sent events): ids and flags only, never message text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot.mentoring.events import CONSOLE_CHANNEL
from bot.mentoring.handoff import mentor_languages
from bot.storage.models import Mentor
from bot.web.console.common import LoginRequired, require_mentor, services_of

SSE_KEEPALIVE_S = 15.0


def wants(mentor: Mentor, languages: set[str], event: dict[str, Any]) -> bool:
    """Does this mentor's console care about `event`?"""
    if mentor.role == "lead":
        return True
    if event.get("leads_only"):
        return False
    if event.get("mentor_id") == mentor.id:
        return True
    if event.get("everyone") and mentor.on_duty:
        return True
    return str(event.get("language")) in languages


async def events_stream(request: Request) -> Response:
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return Response(status_code=401)
    svc = services_of(request)
    mentor = ctx.mentor
    languages = mentor_languages(mentor)

    async def stream() -> AsyncIterator[bytes]:
        async with svc.coord.subscribe(CONSOLE_CHANNEL) as queue:
            yield b"retry: 3000\nevent: hello\ndata: {}\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=SSE_KEEPALIVE_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if isinstance(event, dict) and wants(mentor, languages, event):
                    yield f"event: console\ndata: {json.dumps(event)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def routes() -> list[BaseRoute]:
    return [Route("/console/events", events_stream, methods=["GET"])]
