"""The web chat page (`/chat`): talk to Sanad with no Telegram or WhatsApp credentials.

Messages carry a client-made id, so a resend after a network drop is idempotent;
replies are read from the outbox by polling, which survives flaky connections.

The web chat is anonymous, so it is the easiest door to abuse: `WEBCHAT_ENABLED` switches it off
(on by default for the embedded default; a production deployment that only serves Telegram and
WhatsApp turns it off), and every post is counted per browser (client id) and per source address
(`WEBCHAT_LIMIT_PER_CLIENT`, `WEBCHAT_LIMIT_PER_ADDRESS`). Past a limit the post is answered 429
with a translated "slow down" text and `Retry-After`; the page keeps the message and sends it
when the wait is over, so nothing typed is lost. A link code sent from the web chat carries a
pseudonym of its source address, so wrong codes are limited per address too (bot/learners/linking.py).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from bot.channels.base import InboundEvent, ParseError
from bot.channels.webchat.channel import CLIENT_ID
from bot.i18n.catalogue import normalise_language
from bot.learners.linking import is_link_attempt
from bot.runtime import metrics
from bot.runtime.services import Services
from bot.runtime.settings import LANGUAGES, RTL_LANGUAGES
from bot.security.client_address import client_address
from bot.security.inputs import DB_ID_MAX, BadInput, bounded_int, loads_json
from bot.security.throttle import Throttle, pseudonym
from bot.storage.models import Contact, Outbox
from bot.web.webhooks import ClientGone, WebhookEndpoint, answer_json, handle_inbound, read_body

HERE = Path(__file__).parent
PAGE = (HERE / "templates" / "webchat.html").read_text(encoding="utf-8")
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
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


async def get_messages(request: Request) -> Response:
    services: Services = request.app.state.services
    client_id = request.query_params.get("client_id", "")
    if not CLIENT_ID.match(client_id):
        return JSONResponse({"error": "bad client_id"}, status_code=400)
    try:
        after = bounded_int(request.query_params.get("after", "0"), 0, DB_ID_MAX, "after")
    except BadInput as exc:
        return JSONResponse({"error": "bad after", "message": str(exc)}, status_code=400)
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


def _post_fields(body: bytes) -> tuple[str | None, str]:
    """(client id, language) of a post, as far as the body tells them (the channel checks it properly)."""
    try:
        data: Any = loads_json(body)
    except BadInput:
        return None, "en"
    if not isinstance(data, dict):
        return None, "en"
    client_id = data.get("client_id")
    language = data.get("language")
    return (client_id if isinstance(client_id, str) and CLIENT_ID.match(client_id) else None,
            normalise_language(language if isinstance(language, str) else None))


class WebChatPost(WebhookEndpoint):
    """`POST /chat/api/messages`: the web chat's messages, counted per source address and per
    client id before they are parsed and stored (see the module doc)."""

    def __init__(self) -> None:
        super().__init__("web", form=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:

        services: Services = scope["app"].state.services
        settings = services.settings
        try:
            body = await read_body(receive)
        except ClientGone:
            return
        except ParseError as exc:
            metrics.REJECTED.labels("web", "400").inc()
            await answer_json(send, 400, {"error": "bad request", "detail": str(exc)})
            return
        source = pseudonym(settings.secret_key, "address", client_address(scope, settings.forwarded_allow_ips))
        client_id, language = _post_fields(body)
        per_address = Throttle.of("webchat-address", settings.webchat_limit_per_address)
        per_client = Throttle.of("webchat-client", settings.webchat_limit_per_client)
        storage = services.rate_limits
        refused = None
        if not await per_address.hit(storage, source):
            refused = await per_address.retry_after_s(storage, source)
        elif client_id is not None and not await per_client.hit(storage, client_id):
            refused = await per_client.retry_after_s(storage, client_id)
        if refused is not None:
            wait_s = max(1, math.ceil(refused))
            metrics.REJECTED.labels("web", "429").inc()
            await answer_json(send, 429, {
                "error": "slow_down", "retry_after_s": wait_s,
                "message": services.catalogue.text("webchat_slow_down", language, seconds=wait_s),
            }, headers=[(b"retry-after", str(wait_s).encode())])
            return

        def tag_link_attempts(events: list[InboundEvent]) -> None:
            for event in events:
                if is_link_attempt(event.kind, event.text, event.payload):
                    event.payload = {**(event.payload or {}), "source": source}

        status, content, keys = await handle_inbound(services, "web", scope, body, False, amend=tag_link_attempts)
        if keys:
            services.conversations.schedule(keys)
        await answer_json(send, status, content)


def routes() -> list[BaseRoute]:
    """Nothing when WEBCHAT_ENABLED is off (the app checks the setting)."""
    return [
        Route("/chat", chat_page, methods=["GET"]),
        Route("/chat/api/messages", WebChatPost(), methods=["POST"]),
        Route("/chat/api/messages", get_messages, methods=["GET"]),
        Mount("/chat/static", app=StaticFiles(directory=str(HERE / "static")), name="webchat-static"),
    ]
