"""The one small protocol every channel implements (after nyaruka/courier).

A channel verifies a webhook request, parses it into channel-neutral inbound
events (or says why it ignores it), and sends one outbound message through the
provider's official client. Send failures are a closed set (`SendErrorKind`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.i18n.catalogue import Button


class VerifyError(Exception):
    """The request is not from the provider: answer `status` (401 or 403)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ParseError(Exception):
    """The body cannot be understood and never will be: answer 400."""


def display_name(raw: Any) -> str | None:
    """A name from a provider as the console may show it: a string, cleaned like message text
    (controls, zero-width and bidirectional-override characters stripped, NFC), at most 128 characters."""
    from bot.conversation.text import clean_text

    if not isinstance(raw, str):
        return None
    name, _ = clean_text(raw)
    return name[:128] or None


@dataclass(frozen=True)
class Ignored:
    """Understood, but nothing for us to do (edited message, channel post, ...): answer 200."""

    reason: str


@dataclass
class InboundEvent:
    """One learner message, independent of the channel it came from."""

    channel: str
    address: str  # Telegram chat id, WhatsApp number (E.164), web chat session id
    dedup_key: str  # unique per provider delivery: a redelivery has the same key
    provider_id: str
    # text | button | command | voice | audio | photo | video | document | sticker | location | contact | other
    kind: str = "text"
    text: str | None = None
    payload: dict[str, Any] | None = None  # button payload, /start parameter, location, contact card
    media_ref: str | None = None  # Telegram file_id or Twilio MediaUrl
    media_type: str | None = None
    display_name: str | None = None
    language_hint: str | None = None  # e.g. Telegram's language_code
    ack: dict[str, Any] | None = None  # what to acknowledge at the provider (Telegram callback_query id)

    @property
    def contact_key(self) -> str:
        return f"{self.channel}:{self.address}"


ParseResult = list[InboundEvent] | Ignored


@dataclass(frozen=True)
class Template:
    """A provider-approved template (WhatsApp outside the 24-hour window)."""

    sid: str
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    """What to send to one address."""

    text: str
    buttons: tuple[Button, ...] = ()
    template: Template | None = None
    language: str = "en"


@dataclass(frozen=True)
class SendResult:
    """Provider ids of the message(s) sent (a long text may go out in parts)."""

    provider_ids: tuple[str, ...]


class SendErrorKind(enum.Enum):
    """The closed set of send failures and what each one means."""

    THROTTLED = "throttled"  # retry after `retry_after_s`, pause the channel
    CONTACT_STOPPED = "contact_stopped"  # blocked / unsubscribed: never retry, opt the contact out
    OUTSIDE_WINDOW = "outside_window"  # WhatsApp 24-hour window: send a template instead
    TRANSIENT = "transient"  # network, 5xx: retry with backoff
    PERMANENT = "permanent"  # bad request, unknown chat: do not retry

    @property
    def retryable(self) -> bool:
        return self in (SendErrorKind.THROTTLED, SendErrorKind.TRANSIENT)

    @property
    def stops_contact(self) -> bool:
        return self is SendErrorKind.CONTACT_STOPPED


class SendError(Exception):
    """A send that failed, classified."""

    def __init__(self, kind: SendErrorKind, detail: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class HttpRequestData:
    """The parts of an HTTP request a channel needs, so channels do not depend on the web framework."""

    url: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    form: dict[str, str] | None = None


class Channel(Protocol):
    """A messaging channel."""

    name: str
    max_text_len: int
    numbered_buttons: bool  # buttons rendered as "1. …" and answered with a digit

    def verify(self, request: HttpRequestData) -> None:
        """Raise VerifyError unless the request comes from the provider."""

    def parse(self, request: HttpRequestData) -> ParseResult:
        """Turn a verified request into inbound events, or Ignored; raise ParseError for garbage."""

    async def send(self, address: str, message: OutboundMessage) -> SendResult:
        """Send one message; raise SendError on failure."""

    async def acknowledge(self, event: InboundEvent) -> None:
        """Tell the provider we handled an interaction (e.g. answer a Telegram callback query)."""

    async def close(self) -> None:
        """Release clients."""
