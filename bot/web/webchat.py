"""The web chat page (`/chat`): talk to Sanad with no Telegram or WhatsApp credentials.

Messages carry a client-made id, so a resend after a network drop is idempotent;
replies are read from the outbox by polling, which survives flaky connections."""

from __future__ import annotations

import html
import json
from pathlib import Path

from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.channels.webchat.channel import CLIENT_ID
from bot.i18n.catalogue import normalise_language
from bot.runtime.services import Services
from bot.runtime.settings import LANGUAGES, RTL_LANGUAGES
from bot.storage.models import Contact, Outbox
from bot.web.webhooks import WebhookEndpoint

PAGE = (Path(__file__).parent / "templates" / "webchat.html").read_text(encoding="utf-8")
UI_KEYS = ("webchat_title", "webchat_intro", "webchat_placeholder", "webchat_send", "webchat_offline")


def page_language(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked:
        return normalise_language(asked)
    accept = request.headers.get("accept-language", "")
    for part in accept.split(","):
        code = part.split(";", 1)[0].strip()
        if code and normalise_language(code) == code.split("-", 1)[0].lower():
            return normalise_language(code)
    return "en"


async def chat_page(request: Request) -> Response:
    services: Services = request.app.state.services
    lang = page_language(request)
    strings = {key: services.catalogue.text(key, lang) for key in UI_KEYS}
    options = "".join(
        f'<option value="{code}"{" selected" if code == lang else ""}>{code.upper()}</option>' for code in LANGUAGES
    )
    body = (
        PAGE.replace("{{lang}}", lang)
        .replace("{{dir}}", "rtl" if lang in RTL_LANGUAGES else "ltr")
        .replace("{{title}}", html.escape(strings["webchat_title"]))
        .replace("{{language_options}}", options)
        .replace("{{strings_json}}", json.dumps(strings, ensure_ascii=False).replace("</", "<\\/"))
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})


async def get_messages(request: Request) -> Response:
    services: Services = request.app.state.services
    client_id = request.query_params.get("client_id", "")
    if not CLIENT_ID.match(client_id):
        return JSONResponse({"error": "bad client_id"}, status_code=400)
    try:
        after = int(request.query_params.get("after", "0"))
    except ValueError:
        return JSONResponse({"error": "bad after"}, status_code=400)
    async with services.db.session() as session:
        contact = (await session.execute(select(Contact).where(Contact.key == f"web:{client_id}"))).scalar_one_or_none()
        if contact is None:
            return JSONResponse({"messages": [], "language": None})
        rows = (
            await session.execute(
                select(Outbox)
                .where(
                    Outbox.contact_id == contact.id,
                    Outbox.id > after,
                    Outbox.status.in_(("sent", "sending", "queued")),
                )
                .order_by(Outbox.id)
                .limit(50)
            )
        ).scalars().all()
        messages = [
            {
                "id": row.id,
                "text": row.text or "",
                "buttons": (row.payload or {}).get("buttons", []),
                "from": "mentor" if row.origin == "mentor" else "bot",
            }
            for row in rows
        ]
        language = contact.language
        fetched = [row.id for row in rows if row.origin == "mentor" and row.status == "sent"
                   and row.delivery_status in (None, "sent")]
        if fetched:
            # the page has the mentor's reply: the console shows it as delivered
            await session.execute(update(Outbox).where(Outbox.id.in_(fetched)).values(delivery_status="delivered")
                                  .execution_options(synchronize_session=False))
    return JSONResponse({"messages": messages, "language": language}, headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [
        Route("/chat", chat_page, methods=["GET"]),
        Route("/chat/api/messages", WebhookEndpoint("web", form=False), methods=["POST"]),
        Route("/chat/api/messages", get_messages, methods=["GET"]),
    ]
