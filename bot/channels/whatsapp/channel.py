"""WhatsApp through Twilio: signed webhooks, form parsing, sending with twilio's async `Client`.

Twilio docs: webhook security https://www.twilio.com/docs/usage/webhooks/webhooks-security ,
inbound parameters https://www.twilio.com/docs/messaging/guides/webhook-request ,
error codes https://www.twilio.com/docs/api/errors (21610 unsubscribed, 63016 outside the 24-hour window).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bot.channels.base import (
    HttpRequestData,
    Ignored,
    InboundEvent,
    OutboundMessage,
    ParseError,
    ParseResult,
    SendError,
    SendErrorKind,
    SendResult,
    VerifyError,
    display_name,
)
from bot.conversation.text import split_text
from bot.runtime.settings import Settings

log = logging.getLogger(__name__)
# twilio logs whole requests (numbers, bodies) at INFO: keep that out of our logs
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)

TWILIO_DEFAULT_BASE = "https://api.twilio.com"
STOP_CODES = {"21610"}  # recipient replied STOP / unsubscribed
WINDOW_CODES = {"63016"}  # free-form message outside the 24-hour session window
PERMANENT_CODES = {"21211", "21614", "63003", "63024"}
# Twilio sends at most 10 media per WhatsApp message (MediaUrl0..MediaUrl9):
# https://www.twilio.com/docs/messaging/guides/webhook-request#media-related-parameters
MAX_MEDIA = 10


class BaseUrlHttpClient(AsyncHttpClient):  # type: ignore[misc]
    """Twilio's async HTTP client with the API host swapped (a local test double or a proxy).

    It wraps `AsyncTwilioHttpClient` instead of extending it: twilio's `Client` builds absolute
    `https://api.twilio.com/...` URLs and this is the one place they can be redirected."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), True, timeout_s)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.inner: AsyncTwilioHttpClient | None = None  # built on first use, inside the event loop

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (twilio's interface)
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        if self.base_url != TWILIO_DEFAULT_BASE and uri.startswith(TWILIO_DEFAULT_BASE):
            uri = self.base_url + uri[len(TWILIO_DEFAULT_BASE):]
        if self.inner is None:
            self.inner = AsyncTwilioHttpClient(timeout=self.timeout_s)
        return await self.inner.request(method, uri, params, data, headers, auth, timeout, allow_redirects)

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()


def media_kind(content_type: str) -> str:
    if content_type.startswith("audio/"):
        return "voice"
    if content_type.startswith("image/"):
        return "photo"
    if content_type.startswith("video/"):
        return "video"
    if content_type in ("text/vcard", "text/x-vcard"):
        return "contact"
    return "document"


def numbered_text(message: OutboundMessage) -> str:
    """WhatsApp has no inline keyboards over plain messages: buttons become numbered options."""
    if not message.buttons:
        return message.text
    options = "\n".join(f"{i}. {b.title}" for i, b in enumerate(message.buttons, start=1))
    return f"{message.text}\n\n{options}"


class WhatsAppChannel:
    """WhatsApp via Twilio."""

    name = "whatsapp"
    max_text_len = 1600
    numbered_buttons = True

    def __init__(self, settings: Settings, http_client: AsyncHttpClient | None = None) -> None:
        if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_whatsapp_from):
            raise ValueError("TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_WHATSAPP_FROM must be set")
        self.validator = RequestValidator(settings.twilio_auth_token)
        self.public_base_url = settings.public_base_url
        sender = settings.twilio_whatsapp_from
        self.sender = sender if sender.startswith("whatsapp:") else f"whatsapp:{sender}"
        self.status_callback = f"{settings.public_base_url}/webhooks/whatsapp/status"
        self.http = http_client or BaseUrlHttpClient(settings.twilio_api_base_url)
        self.client = Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=self.http)

    # -- inbound -------------------------------------------------------------

    def verify(self, request: HttpRequestData) -> None:
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise VerifyError(401, "missing X-Twilio-Signature")
        # Twilio signs the public URL it called (PUBLIC_BASE_URL + path + query), not our bind address
        path_and_query = request.url.split("://", 1)[-1]
        path_and_query = path_and_query[path_and_query.find("/"):] if "/" in path_and_query else "/"
        url = self.public_base_url + path_and_query
        if not self.validator.validate(url, request.form or {}, signature):
            raise VerifyError(403, "bad signature")

    def parse(self, request: HttpRequestData) -> ParseResult:
        form = request.form
        if form is None:
            raise ParseError("not a form body")
        sender = form.get("From", "")
        sid = form.get("MessageSid") or form.get("SmsMessageSid")
        if not sender or not sid:
            raise ParseError("From and MessageSid are required")
        if not sender.startswith("whatsapp:"):
            return Ignored("not a WhatsApp message")
        address = sender.removeprefix("whatsapp:")
        event = InboundEvent(
            channel=self.name,
            address=address,
            dedup_key=f"whatsapp:{sid}",
            provider_id=sid,
            display_name=display_name(form.get("ProfileName")),
            text=form.get("Body") or None,
        )
        if form.get("ButtonPayload"):
            event.kind = "button"
            event.payload = {"payload": form["ButtonPayload"]}
            event.text = form["ButtonPayload"]
            return [event]
        try:
            num_media = int(form.get("NumMedia") or 0)
        except ValueError as exc:
            raise ParseError("NumMedia is not a number") from exc
        if num_media > MAX_MEDIA:
            # never build lists from a count the request merely claims
            log.warning("NumMedia %d is more than Twilio sends; reading the first %d", num_media, MAX_MEDIA)
        num_media = max(0, min(num_media, MAX_MEDIA))
        if num_media > 0:
            content_type = form.get("MediaContentType0") or "application/octet-stream"
            event.kind = media_kind(content_type)
            event.media_ref = form.get("MediaUrl0")
            event.media_type = content_type
            if num_media > 1:
                event.payload = {
                    "media": [
                        {"url": form.get(f"MediaUrl{i}"), "type": form.get(f"MediaContentType{i}")}
                        for i in range(num_media)
                    ]
                }
            return [event]
        if form.get("Latitude") and form.get("Longitude"):
            event.kind = "location"
            event.payload = {"latitude": form.get("Latitude"), "longitude": form.get("Longitude"),
                             "label": form.get("Label") or form.get("Address")}
            return [event]
        if not event.text:
            return Ignored("empty message")
        return [event]

    @staticmethod
    def parse_status(form: dict[str, str]) -> tuple[str, str, str | None]:
        """(MessageSid, MessageStatus, ErrorCode) of a status callback."""
        sid = form.get("MessageSid") or form.get("SmsSid")
        status = form.get("MessageStatus") or form.get("SmsStatus")
        if not sid or not status:
            raise ParseError("MessageSid and MessageStatus are required")
        return sid, status.lower(), form.get("ErrorCode") or None

    # -- outbound ------------------------------------------------------------

    async def send(self, address: str, message: OutboundMessage) -> SendResult:
        to = f"whatsapp:{address}"
        sids: list[str] = []
        try:
            if message.template is not None:
                sent = await self.client.messages.create_async(
                    to=to,
                    from_=self.sender,
                    content_sid=message.template.sid,
                    content_variables=json.dumps(message.template.variables),
                    status_callback=self.status_callback,
                )
                return SendResult((str(sent.sid),))
            for part in split_text(numbered_text(message), self.max_text_len) or [" "]:
                sent = await self.client.messages.create_async(
                    to=to, from_=self.sender, body=part, status_callback=self.status_callback
                )
                sids.append(str(sent.sid))
        except TwilioRestException as exc:
            raise _classify(exc) from exc
        except TwilioException as exc:
            raise SendError(SendErrorKind.TRANSIENT, type(exc).__name__) from exc
        except (OSError, TimeoutError) as exc:
            raise SendError(SendErrorKind.TRANSIENT, type(exc).__name__) from exc
        return SendResult(tuple(sids))

    async def acknowledge(self, event: InboundEvent) -> None:
        return None

    async def close(self) -> None:
        closer: Any = getattr(self.http, "close", None)
        if closer is not None:
            await closer()


def _classify(exc: TwilioRestException) -> SendError:
    code = str(exc.code) if exc.code is not None else ""
    if code in STOP_CODES:
        return SendError(SendErrorKind.CONTACT_STOPPED, code)
    if code in WINDOW_CODES:
        return SendError(SendErrorKind.OUTSIDE_WINDOW, code)
    if exc.status == 429:
        return SendError(SendErrorKind.THROTTLED, "429", retry_after_s=1.0)
    if exc.status >= 500:
        return SendError(SendErrorKind.TRANSIENT, str(exc.status))
    if code in PERMANENT_CODES or 400 <= exc.status < 500:
        return SendError(SendErrorKind.PERMANENT, code or str(exc.status))
    return SendError(SendErrorKind.TRANSIENT, code or str(exc.status))
