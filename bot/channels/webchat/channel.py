"""The web chat: the embedded default channel, to try Sanad without Telegram or WhatsApp.

The page (`bot/web/webchat.py`) posts messages as JSON and reads replies from the outbox,
so "sending" here only marks the row as delivered to the page's mailbox."""

from __future__ import annotations

import re
import uuid

from bot.channels.base import (
    HttpRequestData,
    InboundEvent,
    OutboundMessage,
    ParseError,
    ParseResult,
    SendResult,
    VerifyError,
)
from bot.security.inputs import BadInput, loads_json

CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class WebChannel:
    """Web chat sessions keyed by a random client id kept in the browser."""

    name = "web"
    max_text_len = 4096
    numbered_buttons = False

    def verify(self, request: HttpRequestData) -> None:
        if request.headers.get("x-requested-with") != "sanad-webchat":
            # a plain cross-site form post cannot set this header
            raise VerifyError(403, "missing web chat header")

    def parse(self, request: HttpRequestData) -> ParseResult:
        try:
            data = loads_json(request.body)
        except BadInput as exc:
            raise ParseError(str(exc)) from exc
        if not isinstance(data, dict):
            raise ParseError("body must be an object")
        client_id = data.get("client_id")
        message_id = data.get("message_id") or uuid.uuid4().hex
        if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
            raise ParseError("client_id must be 16-64 url-safe characters")
        if not isinstance(message_id, str) or len(message_id) > 64:
            raise ParseError("message_id must be a short string")
        text = data.get("text")
        payload = data.get("payload")
        if payload is not None and not isinstance(payload, str):
            raise ParseError("payload must be a string")
        if not isinstance(text, str) and payload is None:
            raise ParseError("text is required")
        language = data["language"][:16] if isinstance(data.get("language"), str) else None
        event = InboundEvent(
            channel=self.name,
            address=client_id,
            dedup_key=f"web:{client_id}:{message_id}",
            provider_id=message_id,
            text=payload if payload is not None else text,
            language_hint=language,
        )
        if payload is not None:
            event.kind = "button"
            event.payload = {"payload": payload}
        elif isinstance(text, str) and text.startswith("/"):
            command, _, args = text[1:].partition(" ")
            event.kind = "command"
            event.payload = {"command": command.lower(), "args": args.strip()}
        return [event]

    async def send(self, address: str, message: OutboundMessage) -> SendResult:
        return SendResult(("web",))

    async def acknowledge(self, event: InboundEvent) -> None:
        return None

    async def close(self) -> None:
        return None
