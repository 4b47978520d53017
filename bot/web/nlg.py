"""Rasa's NLG endpoint: renders a response name from the catalogue in the learner's language.

Rasa 3.6 POSTs `{"response", "arguments", "tracker", "channel"}`; the answer's `text`
and `buttons` go back to the learner. Language: the `language` slot (set when the
learner asked to switch) wins, then the gateway's metadata on the latest message.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.analytics.understanding import record_from_nlg
from bot.i18n.catalogue import Catalogue, normalise_language
from bot.security.inputs import BadInput, loads_json

log = logging.getLogger(__name__)
# Rasa 3.6 sends the whole tracker with every events (`EventVerbosity.ALL`), which grows with the
# conversation: the cap only keeps an endless body from filling the memory
MAX_BODY_BYTES = 16_000_000


def language_of(tracker: dict[str, Any]) -> str:
    slots = tracker.get("slots") or {}
    slot = slots.get("language") if isinstance(slots, dict) else None
    if isinstance(slot, str) and slot:
        return normalise_language(slot)
    latest = tracker.get("latest_message") or {}
    meta = latest.get("metadata") or {} if isinstance(latest, dict) else {}
    return normalise_language(meta.get("language") if isinstance(meta, dict) else None)


def render_nlg(catalogue: Catalogue, body: dict[str, Any]) -> dict[str, Any]:
    """The NLG answer for one Rasa request."""
    response = str(body.get("response") or "")
    tracker: dict[str, Any] = body["tracker"] if isinstance(body.get("tracker"), dict) else {}
    language = language_of(tracker)
    params: dict[str, Any] = {}
    slots = tracker.get("slots")
    if isinstance(slots, dict):
        params.update({k: v for k, v in slots.items() if v is not None})
    arguments = body.get("arguments")
    if isinstance(arguments, dict):
        params.update(arguments)
    if not catalogue.has(response):
        log.warning("NLG asked for unknown response %s", response)
        response = "gateway_error"
    rendered = catalogue.render(response, language, **params)
    return {
        "text": rendered.text,
        "buttons": [{"title": b.title, "payload": b.payload} for b in rendered.buttons],
        "image": None,
        "elements": [],
        "attachments": [],
        "custom": {},
    }


async def _body(request: Request) -> bytes:
    """The request body, refused past MAX_BODY_BYTES while it arrives."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadInput("body too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def nlg_endpoint(request: Request) -> Response:
    try:
        body = loads_json(await _body(request))
    except BadInput as exc:
        log.warning("NLG request refused: %s", exc)
        return JSONResponse({"error": "bad request", "detail": str(exc)}, status_code=400)
    if not isinstance(body, dict):
        log.warning("NLG request refused: not a JSON object")
        return JSONResponse({"error": "bad request"}, status_code=400)
    services = request.app.state.services
    answer = render_nlg(services.catalogue, body)
    # what the learner's message was understood as, for the analytics and the review inbox
    await record_from_nlg(services, body)
    return JSONResponse(answer)


def routes() -> list[BaseRoute]:
    return [Route("/nlg", nlg_endpoint, methods=["POST"])]
