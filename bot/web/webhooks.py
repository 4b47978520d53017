"""HTTP entry points of the channels: verify first, parse, persist, then answer.

Status codes (docs/architecture.md, "A message's path"): unverified -> 401/403, unparseable -> 400, understood
but not needed -> 200 with a reason, persisted -> 200, our own failure -> 5xx so the
provider retries. A payload that can never succeed never gets a 5xx.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bot.channels.base import (
    Channel,
    HttpRequestData,
    Ignored,
    InboundEvent,
    ParseError,
    ParseResult,
    VerifyError,
)
from bot.conversation.accept import accept
from bot.runtime import metrics
from bot.runtime.services import Services

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1_000_000
# the database or its connection failed: our fault, answered 503 so that the provider retries
_STORAGE_ERRORS = (SQLAlchemyError, OSError)


class UnexpectedShape(ParseError):
    """A channel's parser failed on a verified body: logged with its traceback (a parser to mend)."""


class ClientGone(Exception):
    """The provider hung up before its body arrived: nothing to answer."""


async def read_body(receive: Receive) -> bytes:
    """The request body, refused past MAX_BODY_BYTES while it is still arriving."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ParseError("body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _request_data(scope: Scope, body: bytes, form: bool) -> HttpRequestData:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    fields: dict[str, str] | None = None
    if form:
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            # Twilio posts urlencoded forms: https://www.twilio.com/docs/usage/webhooks/webhooks-overview
            raise ParseError("not a urlencoded form body")
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError("malformed form body") from exc
    host = headers.get("host") or "localhost"
    query = scope.get("query_string", b"").decode("latin-1")
    url = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}"
    return HttpRequestData(url=f"{url}?{query}" if query else url, headers=headers, body=body, form=fields)


async def answer_json(send: Send, status: int, content: dict[str, Any],
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class WebhookEndpoint:
    """A provider webhook as a bare ASGI app: the gateway serves it ahead of Starlette's middleware
    and router (bot/web/app.py), which would cost as much again as verifying, parsing and storing a
    Telegram update. It answers every outcome itself (see the module doc)."""

    def __init__(self, channel_name: str, form: bool, status_callback: bool = False) -> None:
        self.channel_name = channel_name
        self.form = form
        self.status_callback = status_callback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = scope["app"].state.services
        try:
            body = await read_body(receive)
        except ClientGone:
            return
        except ParseError as exc:
            metrics.REJECTED.labels(self.channel_name, "400").inc()
            await answer_json(send, 400, {"error": "bad request", "detail": str(exc)})
            return
        if self.status_callback:
            status, content = await handle_status(services, scope, body)
            await answer_json(send, status, content)
            return
        status, content, keys = await handle_inbound(services, self.channel_name, scope, body, self.form)
        if keys:
            services.conversations.schedule(keys)
        await answer_json(send, status, content)


def _parse(channel: Channel, data: HttpRequestData) -> ParseResult:
    """The channel's parse of a verified request. Parsing depends on the body alone, so a parser
    that fails on some shape would fail on every redelivery too: that is a 400, logged with its
    traceback, never a 5xx the provider retries forever."""
    try:
        return channel.parse(data)
    except ParseError:
        raise
    except Exception as exc:  # (see above: the body can never succeed)
        raise UnexpectedShape(f"unexpected update shape ({type(exc).__name__})") from exc


async def handle_inbound(
    services: Services, channel_name: str, scope: Scope, body: bytes, form: bool,
    amend: Callable[[list[InboundEvent]], None] | None = None,
) -> tuple[int, dict[str, Any], list[str]]:
    """The shared webhook flow of every channel: (status, answer, contact keys to process).

    `amend` may add what only the HTTP request knows to the parsed events before they are stored."""
    started = time.perf_counter()
    channel: Channel | None = services.channels.get(channel_name)
    if channel is None:
        return 404, {"error": f"{channel_name} channel is not configured"}, []
    status = 200
    try:
        data = _request_data(scope, body, form)
        channel.verify(data)
        parsed = _parse(channel, data)
        if channel_name == "telegram":
            # the mentor group's updates and mentors' link requests come to the same bot
            from bot.mentoring.group.inbound import take_mentor_updates

            parsed, answer = await take_mentor_updates(services, data.body, parsed)
            if answer is not None:
                return 200, answer, []
        if isinstance(parsed, Ignored):
            metrics.IGNORED.labels(channel_name).inc()
            log.info("%s update ignored: %s", channel_name, parsed.reason)
            return 200, {"ok": True, "ignored": parsed.reason}, []
        if amend is not None:
            amend(parsed)
        keys = await accept(services, parsed)
    except VerifyError as exc:
        status = exc.status
        metrics.REJECTED.labels(channel_name, str(status)).inc()
        log.warning("%s webhook rejected: %s", channel_name, exc.reason)
        return status, {"error": "unauthorized" if status == 401 else "forbidden"}, []
    except ParseError as exc:
        status = 400
        metrics.REJECTED.labels(channel_name, "400").inc()
        log.warning("%s webhook unparseable: %s", channel_name, exc, exc_info=isinstance(exc, UnexpectedShape))
        return 400, {"error": "bad request", "detail": str(exc)}, []
    except _STORAGE_ERRORS:
        status = 503
        log.exception("%s webhook could not persist", channel_name)
        return 503, {"error": "temporarily unavailable"}, []
    finally:
        metrics.WEBHOOK.labels(channel_name, str(status)).observe(time.perf_counter() - started)
    return 200, {"ok": True, "accepted": len(keys) > 0}, keys


async def handle_status(services: Services, scope: Scope, body: bytes) -> tuple[int, dict[str, Any]]:
    """Twilio status callbacks: sent, delivered, read, failed, undelivered."""
    channel: Any = services.channels.get("whatsapp")
    if channel is None:
        return 404, {"error": "whatsapp channel is not configured"}
    try:
        data = _request_data(scope, body, form=True)
        channel.verify(data)
        sid, status, error_code = channel.parse_status(data.form or {})
    except VerifyError as exc:
        metrics.REJECTED.labels("whatsapp_status", str(exc.status)).inc()
        return exc.status, {"error": "forbidden"}
    except ParseError as exc:
        return 400, {"error": "bad request", "detail": str(exc)}
    from bot.outbox.sender import receive_delivery_status

    try:
        known = await receive_delivery_status(services, "whatsapp", sid, status, error_code)
    except _STORAGE_ERRORS:
        log.exception("status callback could not be stored")
        return 503, {"error": "temporarily unavailable"}
    return 200, {"ok": True, "known": known}


def routes() -> list[Route]:
    return [
        Route("/webhooks/telegram", WebhookEndpoint("telegram", form=False), methods=["POST"]),
        Route("/webhooks/whatsapp", WebhookEndpoint("whatsapp", form=True), methods=["POST"]),
        Route("/webhooks/whatsapp/status", WebhookEndpoint("whatsapp", form=True, status_callback=True),
              methods=["POST"]),
    ]
