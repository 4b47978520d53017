"""Telegram over the Bot API: webhook verification and parsing, sending through PTB's `Bot`.

The `Bot` sends over PTB's own `HTTPXRequest` (its connection pool, timeouts, and a proxy from
`HTTPS_PROXY`/`ALL_PROXY`). Bot API reference: https://core.telegram.org/bots/api
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
from bot.security.inputs import BadInput, loads_json
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest

log = logging.getLogger(__name__)

# concurrent Bot API calls of one process (replies and the outbox sender's tasks)
CONNECTION_POOL_SIZE = 64
SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105  (a header name, not a secret)
MAX_CALLBACK_DATA_BYTES = 64  # https://core.telegram.org/bots/api#inlinekeyboardbutton
MEDIA_KINDS = ("voice", "audio", "video", "video_note", "document", "animation", "sticker")
# Update kinds we understand but never answer: https://core.telegram.org/bots/api#update
IGNORED_UPDATES = (
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)


def webhook_secret(settings: Settings) -> str | None:
    """The secret Telegram must echo; derived from the bot token when not configured explicitly."""
    if settings.telegram_webhook_secret:
        return settings.telegram_webhook_secret
    if not settings.telegram_bot_token:
        return None
    digest = hmac.new(settings.secret_key.encode(), settings.telegram_bot_token.encode(), hashlib.sha256)
    return digest.hexdigest()[:48]


def callback_data_for(payload: str, index: int) -> str:
    """Telegram caps callback_data at 64 bytes; a longer payload is sent as its button index."""
    if len(payload.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
        return payload
    return f"btn:{index}"


@contextmanager
def classified_errors() -> Iterator[None]:
    """PTB's errors as the closed set of send failures (bot/channels/base.py)."""
    try:
        yield
    except RetryAfter as exc:
        retry = exc.retry_after
        seconds = retry.total_seconds() if hasattr(retry, "total_seconds") else float(retry)
        raise SendError(SendErrorKind.THROTTLED, "429", retry_after_s=seconds) from exc
    except Forbidden as exc:
        raise SendError(SendErrorKind.CONTACT_STOPPED, "403 " + exc.message[:80]) from exc
    except (BadRequest, InvalidToken) as exc:
        raise SendError(SendErrorKind.PERMANENT, exc.message[:80]) from exc
    except (TimedOut, NetworkError) as exc:
        raise SendError(SendErrorKind.TRANSIENT, type(exc).__name__) from exc
    except TelegramError as exc:
        raise SendError(SendErrorKind.TRANSIENT, exc.message[:80]) from exc
# Telegram's ids are integers of at most 52 significant bits: https://core.telegram.org/bots/api#chat
MAX_CHAT_ID = 2**53


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, limit: int | None = None) -> str | None:
    """A string field (cut at `limit`), or None when the update carries anything else there."""
    return value[:limit] if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _chat_id(value: Any) -> str:
    """A chat id as the address: Telegram's are integers; anything else is not a Telegram update."""
    chat_id = _int(value)
    if chat_id is None or abs(chat_id) > MAX_CHAT_ID:
        raise ParseError("chat id is not a Telegram chat id (an integer)")
    return str(chat_id)


def _name(user: dict[str, Any]) -> str | None:
    return display_name(user.get("first_name"))


def _language(user: dict[str, Any]) -> str | None:
    return _str(user.get("language_code"), 16)


def _largest_photo(sizes: list[Any]) -> str | None:
    """The file id of the largest photo size, going by file_size, then width; sizes that are not
    objects with a string file_id are passed over."""
    best: tuple[int, str] | None = None
    for size in sizes:
        if not isinstance(size, dict):
            continue
        file_id = _str(size.get("file_id"), 512)
        if file_id is None:
            continue
        weight = _int(size.get("file_size")) or _int(size.get("width")) or 0
        if best is None or weight > best[0]:
            best = (weight, file_id)
    return best[1] if best else None


class TelegramChannel:
    """The Telegram channel (private chats with the bot)."""

    name = "telegram"
    max_text_len = 4096
    numbered_buttons = False

    def __init__(self, settings: Settings, request: BaseRequest | None = None) -> None:
        if not settings.telegram_bot_token:
            raise ValueError("TELEGRAM_BOT_TOKEN is not set")
        self.secret = webhook_secret(settings)
        base = settings.telegram_api_base_url
        self.bot = Bot(
            token=settings.telegram_bot_token,
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=request or HTTPXRequest(connection_pool_size=CONNECTION_POOL_SIZE, read_timeout=10.0,
                                            write_timeout=10.0, pool_timeout=5.0),
        )

    # -- inbound -------------------------------------------------------------

    def verify(self, request: HttpRequestData) -> None:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            raise VerifyError(401, "missing secret token header")
        if self.secret is None or not hmac.compare_digest(given.encode(), self.secret.encode()):
            raise VerifyError(403, "wrong secret token")

    def parse(self, request: HttpRequestData) -> ParseResult:
        try:
            update = loads_json(request.body)
        except BadInput as exc:
            raise ParseError(str(exc)) from exc
        if not isinstance(update, dict) or _int(update.get("update_id")) is None:
            raise ParseError("not a Telegram update (no integer update_id)")
        update_id = update["update_id"]
        if isinstance(update.get("message"), dict):
            return self._parse_message(update_id, update["message"])
        if isinstance(update.get("callback_query"), dict):
            return self._parse_callback(update_id, update["callback_query"])
        if isinstance(update.get("my_chat_member"), dict):
            return self._parse_member(update_id, update["my_chat_member"])
        for kind in IGNORED_UPDATES:
            if kind in update:
                return Ignored(kind.replace("_", " "))
        return Ignored("unknown update type")

    def _parse_message(self, update_id: int, msg: dict[str, Any]) -> ParseResult:
        """A message; fields of the wrong type are left out (the rest of the message is kept), a chat
        id that is not an integer makes it no Telegram update."""
        chat = msg.get("chat")
        if not isinstance(chat, dict) or "id" not in chat:
            raise ParseError("message without chat")
        if chat.get("type", "private") != "private":
            return Ignored("not a private chat")
        user = _dict(msg.get("from"))
        message_id = _int(msg.get("message_id"))
        event = InboundEvent(
            channel=self.name,
            address=_chat_id(chat["id"]),
            dedup_key=f"telegram:{update_id}",
            provider_id=str(update_id if message_id is None else message_id),
            display_name=_name(user) or _name(chat),
            language_hint=_language(user),
        )
        text = _str(msg.get("text"))
        caption = _str(msg.get("caption"))
        if text is not None:
            event.text = text
            if text.startswith("/"):
                command, _, args = text[1:].partition(" ")
                event.kind = "command"
                event.payload = {"command": command.split("@", 1)[0].lower(), "args": args.strip()}
            return [event]
        if isinstance(msg.get("photo"), list) and msg["photo"]:
            event.kind, event.media_ref, event.media_type = "photo", _largest_photo(msg["photo"]), "image/jpeg"
        elif isinstance(msg.get("location"), dict):
            loc = msg["location"]
            event.kind = "location"
            event.payload = {"latitude": _number(loc.get("latitude")), "longitude": _number(loc.get("longitude"))}
        elif isinstance(msg.get("contact"), dict):
            card = msg["contact"]
            event.kind = "contact"
            event.payload = {"phone_number": _str(card.get("phone_number"), 64),
                             "first_name": display_name(card.get("first_name"))}
        else:
            for kind in MEDIA_KINDS:
                media = msg.get(kind)
                if isinstance(media, dict):
                    event.kind = {"video_note": "video", "animation": "video"}.get(kind, kind)
                    event.media_ref = _str(media.get("file_id"), 512)
                    event.media_type = _str(media.get("mime_type"), 64) or kind
                    if kind == "sticker":
                        event.payload = {"emoji": _str(media.get("emoji"), 16)}
                    break
            else:
                if any(k in msg for k in ("pinned_message", "new_chat_members", "left_chat_member", "new_chat_title")):
                    return Ignored("service message")
                event.kind = "other"
        if caption is not None:
            event.text = caption
        return [event]

    def _parse_callback(self, update_id: int, query: dict[str, Any]) -> ParseResult:
        user = _dict(query.get("from"))
        message = _dict(query.get("message"))
        chat = _dict(message.get("chat"))
        chat_id = chat.get("id", user.get("id"))
        query_id = query.get("id")
        if chat_id is None or not isinstance(query_id, str | int) or isinstance(query_id, bool):
            raise ParseError("callback query without chat or id")
        if chat and chat.get("type", "private") != "private":
            return Ignored("not a private chat")
        data = _str(query.get("data"), 256)
        if data is None:
            return Ignored("callback query without data (game)")
        query_id = str(query_id)[:128]
        return [
            InboundEvent(
                channel=self.name,
                address=_chat_id(chat_id),
                dedup_key=f"telegram:{update_id}",
                provider_id=query_id,
                kind="button",
                text=data,
                payload={"payload": data},
                display_name=_name(user),
                language_hint=_language(user),
                ack={"callback_query_id": query_id},
            )
        ]

    def _parse_member(self, update_id: int, member: dict[str, Any]) -> ParseResult:
        chat = _dict(member.get("chat"))
        new = _dict(member.get("new_chat_member"))
        if chat.get("type") != "private" or "id" not in chat:
            return Ignored("chat member update outside a private chat")
        address = _chat_id(chat["id"])
        status = new.get("status")
        # "kicked" in a private chat means the learner blocked the bot
        kind = {"kicked": "blocked", "member": "unblocked"}.get(str(status))
        if kind is None:
            return Ignored("chat member update")
        return [
            InboundEvent(
                channel=self.name,
                address=address,
                dedup_key=f"telegram:{update_id}",
                provider_id=str(update_id),
                kind=kind,
            )
        ]

    # -- outbound ------------------------------------------------------------

    async def send(self, address: str, message: OutboundMessage) -> SendResult:
        parts = split_text(message.text, self.max_text_len) or [" "]
        markup = None
        if message.buttons:
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(b.title[:64], callback_data=callback_data_for(b.payload, i))]
                 for i, b in enumerate(message.buttons)]
            )
        ids: list[str] = []
        with classified_errors():
            for index, part in enumerate(parts):
                sent = await self.bot.send_message(
                    chat_id=address,
                    text=part,
                    reply_markup=markup if index == len(parts) - 1 else None,
                )
                ids.append(str(sent.message_id))
        return SendResult(tuple(ids))

    async def acknowledge(self, event: InboundEvent) -> None:
        if not event.ack or "callback_query_id" not in event.ack:
            return
        try:
            await self.bot.answer_callback_query(event.ack["callback_query_id"])
        except TelegramError:
            # an expired query (older than ~15 min) cannot be answered; the message is handled anyway
            log.info("callback query could not be answered")

    async def close(self) -> None:
        # the Bot was never `initialize()`d (that would call getMe): close its transport directly
        await self.bot.request.shutdown()
