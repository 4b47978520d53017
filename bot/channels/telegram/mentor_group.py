"""The Telegram side of the mentor group: reading its updates and the Bot API calls for topics.

A mentor group is a forum supergroup where the bot is an administrator (it then receives
every message: https://core.telegram.org/bots/features#privacy-mode). A message in a topic
carries `message_thread_id` and `is_topic_message`; the topic's first message is the
service message `forum_topic_created` (https://core.telegram.org/bots/api#message). The
logic of what mentors do there lives in `bot/mentoring/group/`; this module only parses and
calls, through the Telegram channel's `Bot` and its error classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.channels.base import SendError, SendErrorKind
from bot.channels.telegram.channel import classified_errors
from bot.security.inputs import BadInput, loads_json
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile

# topic icon colours Telegram accepts: https://core.telegram.org/bots/api#createforumtopic
ICON_BLUE = 0x6FB9F0
ICON_RED = 0xFB6F5F
TOPIC_NAME_MAX = 128
# `/mentor CODE` or the deep link `/start mentor-CODE` in a private chat links a mentor's account
LINK_COMMAND = "mentor"
LINK_START_PREFIX = "mentor-"
# the console's one-time codes (bot/mentoring/group/linking.py): 8 of these letters and digits
LINK_CODE = re.compile(r"^[A-HJ-NP-Z2-9]{8}$")


@dataclass(frozen=True)
class GroupMessage:
    """A message someone wrote in a mentor group."""

    update_id: int
    chat_id: int
    thread_id: int | None  # the topic; None in the General topic
    message_id: int
    user_id: int | None
    is_bot: bool
    text: str | None  # the text (or a media caption)
    has_media: bool
    is_service: bool  # topic created/closed, members joined…


@dataclass(frozen=True)
class GroupButton:
    """A mentor pressed an inline button on one of the bot's messages in a mentor group."""

    update_id: int
    chat_id: int
    thread_id: int | None
    message_id: int | None
    user_id: int
    callback_id: str
    data: str


@dataclass(frozen=True)
class LinkRequest:
    """`/mentor CODE` sent to the bot in a private chat."""

    update_id: int
    chat_id: int
    user_id: int
    code: str


GroupUpdate = GroupMessage | GroupButton

_SERVICE_KEYS = ("forum_topic_created", "forum_topic_closed", "forum_topic_reopened", "forum_topic_edited",
                 "new_chat_members", "left_chat_member", "pinned_message", "new_chat_title",
                 "general_forum_topic_hidden", "general_forum_topic_unhidden")
_MEDIA_KEYS = ("photo", "document", "voice", "audio", "video", "video_note", "animation", "sticker")


def load(body: bytes) -> dict[str, Any] | None:
    """The update as a dict (the channel has already refused what is not JSON)."""
    try:
        update = loads_json(body)
    except BadInput:
        return None
    return update if isinstance(update, dict) and isinstance(update.get("update_id"), int) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _thread(message: dict[str, Any]) -> int | None:
    thread = message.get("message_thread_id")
    return int(thread) if isinstance(thread, int) and message.get("is_topic_message") else None


def parse_group_update(update: dict[str, Any], group_ids: frozenset[int]) -> GroupUpdate | None:
    """The update if it comes from one of the mentor groups, else None."""
    update_id = int(update["update_id"])
    message = update.get("message")
    if isinstance(message, dict):
        chat = _dict(message.get("chat"))
        if not isinstance(chat.get("id"), int) or chat["id"] not in group_ids:
            return None
        user = _dict(message.get("from"))
        text = message.get("text") if isinstance(message.get("text"), str) else message.get("caption")
        return GroupMessage(
            update_id=update_id,
            chat_id=int(chat["id"]),
            thread_id=_thread(message),
            message_id=int(message.get("message_id") or 0),
            user_id=int(user["id"]) if isinstance(user.get("id"), int) else None,
            is_bot=bool(user.get("is_bot")),
            text=text if isinstance(text, str) else None,
            has_media=any(key in message for key in _MEDIA_KEYS),
            is_service=any(key in message for key in _SERVICE_KEYS),
        )
    query = update.get("callback_query")
    if isinstance(query, dict):
        origin = _dict(query.get("message"))
        chat = _dict(origin.get("chat"))
        user = _dict(query.get("from"))
        if not isinstance(chat.get("id"), int) or chat["id"] not in group_ids or not isinstance(user.get("id"), int) \
                or "id" not in query:
            return None
        return GroupButton(
            update_id=update_id,
            chat_id=int(chat["id"]),
            thread_id=_thread(origin),
            message_id=int(origin["message_id"]) if isinstance(origin.get("message_id"), int) else None,
            user_id=int(user["id"]),
            callback_id=str(query["id"]),
            data=str(query.get("data") or ""),
        )
    return None


def parse_link_request(update: dict[str, Any]) -> LinkRequest | None:
    """`/mentor CODE` (or `/start mentor-CODE`) in a private chat with the bot."""
    message = update.get("message")
    if not isinstance(message, dict):
        return None
    chat = _dict(message.get("chat"))
    user = _dict(message.get("from"))
    text = message.get("text")
    if chat.get("type") != "private" or not isinstance(text, str) or not isinstance(user.get("id"), int):
        return None
    command, _, args = text.strip().partition(" ")
    command = command.split("@", 1)[0].lower()
    args = args.strip()
    if command == "/" + LINK_COMMAND and args:
        code = args
    elif command == "/start" and args.lower().startswith(LINK_START_PREFIX):
        code = args[len(LINK_START_PREFIX):]
    else:
        return None
    code = code.strip().upper()
    if not LINK_CODE.match(code):
        return None  # not a code the console makes: a learner's "/mentor please" goes on to the assistant
    return LinkRequest(int(update["update_id"]), int(chat["id"]), int(user["id"]), code)


@dataclass(frozen=True)
class Button:
    """An inline button: a callback (`data`) or a link (`url`)."""

    title: str
    data: str | None = None
    url: str | None = None


def _markup(buttons: list[Button] | None) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(b.title[:64], url=b.url) if b.url else InlineKeyboardButton(b.title[:64],
                                                                                        callback_data=b.data)
        for b in buttons
    ]])


class MentorGroupClient:
    """The Bot API calls of the mentor group, each raising `SendError` (bot/channels/base.py) on failure."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def create_topic(self, chat_id: int, name: str, urgent: bool) -> int:
        with classified_errors():
            topic = await self.bot.create_forum_topic(chat_id, name[:TOPIC_NAME_MAX] or "-",
                                                      icon_color=ICON_RED if urgent else ICON_BLUE)
        return int(topic.message_thread_id)

    async def post(self, chat_id: int, thread_id: int | None, text: str, *, buttons: list[Button] | None = None,
                   html: bool = False, silent: bool = False) -> int:
        with classified_errors():
            sent = await self.bot.send_message(
                chat_id, text[:4096] or "-", message_thread_id=thread_id, reply_markup=_markup(buttons),
                parse_mode="HTML" if html else None, disable_notification=silent,
            )
        return int(sent.message_id)

    async def edit(self, chat_id: int, message_id: int, text: str, *, buttons: list[Button] | None = None,
                   html: bool = False) -> None:
        try:
            with classified_errors():
                await self.bot.edit_message_text(text[:4096] or "-", chat_id=chat_id, message_id=message_id,
                                                 reply_markup=_markup(buttons), parse_mode="HTML" if html else None)
        except SendError as exc:
            if exc.kind is SendErrorKind.PERMANENT and "not modified" in exc.detail:
                return  # the card already says this
            raise

    async def pin(self, chat_id: int, message_id: int) -> None:
        with classified_errors():
            await self.bot.pin_chat_message(chat_id, message_id, disable_notification=False)

    async def copy(self, chat_id: int, thread_id: int | None, from_chat_id: int | str, message_id: int) -> int:
        with classified_errors():
            copied = await self.bot.copy_message(chat_id, from_chat_id, message_id, message_thread_id=thread_id)
        return int(copied.message_id)

    async def upload(self, chat_id: int, thread_id: int | None, data: bytes, filename: str, caption: str) -> int:
        with classified_errors():
            sent = await self.bot.send_document(chat_id, InputFile(data, filename=filename), caption=caption[:1024],
                                                message_thread_id=thread_id)
        return int(sent.message_id)

    async def rename_topic(self, chat_id: int, thread_id: int, name: str) -> None:
        with classified_errors():
            await self.bot.edit_forum_topic(chat_id, thread_id, name=name[:TOPIC_NAME_MAX] or "-")

    async def close_topic(self, chat_id: int, thread_id: int) -> None:
        with classified_errors():
            await self.bot.close_forum_topic(chat_id, thread_id)

    async def delete_topic(self, chat_id: int, thread_id: int) -> None:
        with classified_errors():
            await self.bot.delete_forum_topic(chat_id, thread_id)

    async def answer_button(self, callback_id: str, text: str) -> None:
        with classified_errors():
            await self.bot.answer_callback_query(callback_id, text=text[:200])
