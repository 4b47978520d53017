"""Files a mentor takes from the console: a learner's media, relayed from the provider, and the
learner's data export.

Media follow the hand-off's visibility (`bot/mentoring/visibility.py`): a file is readable when
its message is. The learner chooses the stored media type (Telegram `mime_type`, Twilio
`MediaContentType`), so only an allow-list of image, audio and video types is served inline
(never SVG, HTML or anything a browser would run); everything else is an attachment of type
`application/octet-stream`. Media carry `nosniff` and `Content-Security-Policy: sandbox`, and are
streamed from the provider with a size cap (`MEDIA_MAX_BYTES`) instead of read whole first.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot.mentoring.audit import audit, mentor_actor
from bot.mentoring.visibility import may_export, view_of
from bot.storage.db import utcnow
from bot.storage.models import Contact, Handoff, InboundMessage
from bot.web.console.common import (
    Ctx,
    LoginRequired,
    login_redirect,
    path_id,
    render,
    require_mentor,
    services_of,
)
from bot.web.console.i18n import text

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)
# what a browser shows itself without running anything: photos, voice notes, audio and video
INLINE_MEDIA_TYPES: frozenset[str] = frozenset({
    "image/jpeg", "image/png", "image/gif", "image/webp",
    "audio/ogg", "audio/mpeg", "audio/mp4", "audio/aac", "audio/amr", "audio/wav", "audio/webm", "audio/opus",
    "video/mp4", "video/3gpp", "video/webm", "video/quicktime",
})
MEDIA_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Cache-Control": "private, no-store",
}
PROVIDER_TIMEOUT = httpx.Timeout(20.0, connect=5.0)


def served_as(media_type: str | None) -> tuple[str, str]:
    """(Content-Type, disposition) for a stored media type: inline only from the allow-list."""
    base = (media_type or "").split(";", 1)[0].strip().lower()
    if base in INLINE_MEDIA_TYPES:
        return base, "inline"
    return "application/octet-stream", "attachment"


async def export_download(request: Request) -> Response:
    """The learner's data export (GDPR Art. 15) as a JSON file, for the mentor to pass on.

    It holds everything, later messages too: leads, and the mentor who holds the open hand-off
    (`may_export`); every download is audited."""
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    svc = services_of(request)
    async with svc.db.session() as session:
        handoff = await session.get(Handoff, path_id(request, "handoff_id", ctx.lang))
        if handoff is None:
            raise HTTPException(404, text("console_error_no_conversation", ctx.lang))
        if not may_export(ctx.mentor, handoff):
            raise HTTPException(403, text("console_error_export_forbidden", ctx.lang))
        contact = await session.get(Contact, handoff.contact_id)
        if contact is None:
            raise HTTPException(404, text("console_error_data_gone", ctx.lang))
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="export.download",
              contact_key=contact.key, detail={"handoff_id": handoff.id})
        key = contact.key
    from bot.privacy.export import build_export, export_json

    body = export_json(await build_export(svc, key))
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="sanad-export-{handoff.id}.json"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    })


async def _readable_message(svc: Services, ctx: Ctx, message_id: int) -> tuple[InboundMessage, Contact]:
    """The media message if one of its contact's hand-offs lets this mentor read it (audited)."""
    async with svc.db.session() as session:
        message = await session.get(InboundMessage, message_id)
        if message is None or not message.media_ref:
            raise HTTPException(404, text("console_error_no_media", ctx.lang))
        contact = await session.get(Contact, message.contact_id)
        handoffs = (await session.execute(
            select(Handoff).where(Handoff.contact_id == message.contact_id))).scalars().all()
        now = utcnow()
        views = [view_of(ctx.mentor, h, now, svc.settings.handoff_review_window_s) for h in handoffs]
        if contact is None or not any(view.shows(message.created_at) for view in views):
            raise HTTPException(403, text("console_error_not_yours", ctx.lang))
        audit(session, svc.settings, actor=mentor_actor(ctx.mentor.id), action="media.read",
              contact_key=contact.key, detail={"message_id": message.id})
    return message, contact


def _twilio_request(svc: Services, http: httpx.AsyncClient, message: InboundMessage) -> httpx.Request | None:
    """The request for a WhatsApp file at Twilio (basic auth), or None when this gateway cannot fetch it."""
    settings = svc.settings
    ref = message.media_ref or ""
    if (message.channel == "whatsapp" and settings.twilio_account_sid and settings.twilio_auth_token
            and ref.startswith(settings.twilio_api_base_url + "/")):
        request = http.build_request("GET", ref)
        auth = httpx.BasicAuth(settings.twilio_account_sid, settings.twilio_auth_token)
        return next(auth.auth_flow(request))
    return None


async def _telegram_file_request(svc: Services, ctx: Ctx, http: httpx.AsyncClient, file_id: str) -> httpx.Request:
    settings = svc.settings
    base = f"{settings.telegram_api_base_url}/bot{settings.telegram_bot_token}"
    answer = await http.get(f"{base}/getFile", params={"file_id": file_id})
    try:
        info = answer.json()
    except ValueError:
        info = {}
    result = info.get("result") if isinstance(info, dict) else None
    path = result.get("file_path") if isinstance(result, dict) else None
    if not isinstance(path, str) or not path:
        raise HTTPException(404, text("console_error_telegram_file_gone", ctx.lang))
    return http.build_request("GET", f"{settings.telegram_api_base_url}/file/bot{settings.telegram_bot_token}/{path}")


async def media_download(request: Request) -> Response:
    """Relay a learner's voice note / photo / document from the provider (the browser has no provider token)."""
    try:
        ctx = await require_mentor(request)
    except LoginRequired:
        return login_redirect()
    svc = services_of(request)
    message, _ = await _readable_message(svc, ctx, path_id(request, "message_id", ctx.lang))
    cap = svc.settings.media_max_bytes
    http = httpx.AsyncClient(timeout=PROVIDER_TIMEOUT, follow_redirects=True)
    try:
        if message.channel == "telegram" and svc.settings.telegram_bot_token:
            outgoing: httpx.Request | None = await _telegram_file_request(svc, ctx, http, message.media_ref or "")
        else:
            outgoing = _twilio_request(svc, http, message)
        if outgoing is None:
            await http.aclose()
            return render(request, "media_ref.html",
                          {"me": ctx.mentor, "csrf": ctx.csrf, "ref": message.media_ref, "message": message})
        upstream = await http.send(outgoing, stream=True)
    except httpx.HTTPError:
        await http.aclose()
        raise HTTPException(502, text("console_error_provider_file", ctx.lang)) from None
    except BaseException:
        await http.aclose()
        raise
    declared = upstream.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > cap
    if upstream.status_code != 200 or too_big:
        await upstream.aclose()
        await http.aclose()
        if too_big:
            log.warning("media %s refused: the provider declares more than %d bytes", message.id, cap)
        raise HTTPException(502, text("console_error_provider_file", ctx.lang))

    async def relay() -> AsyncIterator[bytes]:
        relayed = 0
        try:
            async for chunk in upstream.aiter_bytes():
                relayed += len(chunk)
                if relayed > cap:
                    # the provider sent more than it declared (or declared nothing): cut the response
                    # off, so the browser sees a failed download rather than a truncated file
                    log.warning("media %s cut off past %d bytes", message.id, cap)
                    raise RuntimeError("media larger than MEDIA_MAX_BYTES")
                yield chunk
        finally:
            await upstream.aclose()
            await http.aclose()

    content_type, disposition = served_as(message.media_type or upstream.headers.get("content-type"))
    headers = {**MEDIA_HEADERS, "Content-Disposition": f'{disposition}; filename="message-{message.id}"'}
    if declared.isdigit() and "content-encoding" not in upstream.headers:
        headers["Content-Length"] = declared
    return StreamingResponse(relay(), media_type=content_type, headers=headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/console/h/{handoff_id:int}/export", export_download, methods=["GET"]),
        Route("/console/media/{message_id:int}", media_download, methods=["GET"]),
    ]
