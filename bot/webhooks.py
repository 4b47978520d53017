"""HTTP entry points of the channels: verify first, parse, persist, then answer.

Status codes (CONVENTIONS.md): unverified -> 401/403, unparseable -> 400, understood
but not needed -> 200 with a reason, persisted -> 200, our own failure -> 5xx so the
provider retries. A payload that can never succeed never gets a 5xx.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import metrics, pipeline
from bot.channels.base import Channel, HttpRequestData, Ignored, ParseError, VerifyError
from bot.services import Services

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1_000_000


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _request_data(request: Request, form: bool) -> HttpRequestData:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ParseError("body too large")
    fields: dict[str, str] | None = None
    if form:
        try:
            parsed = await request.form()
        except Exception as exc:  # any multipart/urlencoded error is the sender's
            raise ParseError("malformed form body") from exc
        fields = {k: v for k, v in parsed.items() if isinstance(v, str)}
    headers = {k.lower(): v for k, v in request.headers.items()}
    return HttpRequestData(url=str(request.url), headers=headers, body=body, form=fields)


async def handle_inbound(request: Request, channel_name: str, form: bool) -> Response:
    """The shared webhook flow of every channel."""
    started = time.perf_counter()
    services = _services(request)
    channel: Channel | None = services.channels.get(channel_name)
    if channel is None:
        return JSONResponse({"error": f"{channel_name} channel is not configured"}, status_code=404)
    status = 200
    try:
        data = await _request_data(request, form)
        channel.verify(data)
        parsed = channel.parse(data)
        if isinstance(parsed, Ignored):
            metrics.IGNORED.labels(channel_name).inc()
            log.info("%s update ignored: %s", channel_name, parsed.reason)
            return JSONResponse({"ok": True, "ignored": parsed.reason})
        keys = await pipeline.accept(services, parsed)
    except VerifyError as exc:
        status = exc.status
        metrics.REJECTED.labels(channel_name, str(status)).inc()
        log.warning("%s webhook rejected: %s", channel_name, exc.reason)
        return JSONResponse({"error": "unauthorized" if status == 401 else "forbidden"}, status_code=status)
    except ParseError as exc:
        status = 400
        metrics.REJECTED.labels(channel_name, "400").inc()
        log.warning("%s webhook unparseable: %s", channel_name, exc)
        return JSONResponse({"error": "bad request", "detail": str(exc)}, status_code=400)
    except SQLAlchemyError:
        status = 503
        log.exception("%s webhook could not persist", channel_name)
        return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
    finally:
        metrics.WEBHOOK.labels(channel_name, str(status)).observe(time.perf_counter() - started)
    pipeline.schedule(services, keys)
    return JSONResponse({"ok": True, "accepted": len(keys) > 0})


async def telegram_webhook(request: Request) -> Response:
    return await handle_inbound(request, "telegram", form=False)


async def whatsapp_webhook(request: Request) -> Response:
    return await handle_inbound(request, "whatsapp", form=True)


async def whatsapp_status(request: Request) -> Response:
    """Twilio status callbacks: sent, delivered, read, failed, undelivered."""
    services = _services(request)
    channel: Any = services.channels.get("whatsapp")
    if channel is None:
        return JSONResponse({"error": "whatsapp channel is not configured"}, status_code=404)
    try:
        data = await _request_data(request, form=True)
        channel.verify(data)
        sid, status, error_code = channel.parse_status(data.form or {})
    except VerifyError as exc:
        metrics.REJECTED.labels("whatsapp_status", str(exc.status)).inc()
        return JSONResponse({"error": "forbidden"}, status_code=exc.status)
    except ParseError as exc:
        return JSONResponse({"error": "bad request", "detail": str(exc)}, status_code=400)
    from bot.sending import record_delivery_status

    try:
        known = await record_delivery_status(services, "whatsapp", sid, status, error_code)
    except SQLAlchemyError:
        log.exception("status callback could not be stored")
        return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
    return JSONResponse({"ok": True, "known": known})


def routes() -> list[BaseRoute]:
    return [
        Route("/webhooks/telegram", telegram_webhook, methods=["POST"]),
        Route("/webhooks/whatsapp", whatsapp_webhook, methods=["POST"]),
        Route("/webhooks/whatsapp/status", whatsapp_status, methods=["POST"]),
    ]
