"""What mentors do in the mentor group, and linking their accounts from a private chat.

Telegram posts the group's updates to the same webhook as learners' messages. The webhook
hands this module (`take_mentor_updates`) what the channel ignored (group chats) and what
it would pass to the pipeline (a private `/mentor CODE`); the rest goes on as before.

In a hand-off's topic, a linked mentor's
- Claim button or `/claim` claims it;
- plain text is a reply to the learner on the learner's channel, exactly like a console
  reply (claiming first if nobody has it; WhatsApp's 24-hour rules apply);
- `/note text` is an internal note; `/resolve [outcome]`, `/back`, `/transfer [e-mail]`
  (back to the queue without one), `/saved NAME` (a saved reply), `/help`.
Messages from anyone not linked are ignored and logged; so are those outside hand-off
topics. Each update is handled once (`mentor_group_updates`), its database work done before
the webhook answers; sending to the learner and posting back into the group follow at once
in the background (the worker retries what fails).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels.base import Ignored, InboundEvent, SendError
from bot.channels.telegram.mentor_group import (
    GroupButton,
    GroupMessage,
    LinkRequest,
    load,
    parse_group_update,
    parse_link_request,
)
from bot.i18n.catalogue import get_catalogue
from bot.mentoring.events import spawn
from bot.mentoring.group import posts
from bot.mentoring.group.linking import mentor_by_telegram, redeem
from bot.mentoring.group.sender import client_of, flush_handoff
from bot.mentoring.handoff import HandoffError, claim, mentor_name, transfer
from bot.mentoring.labels import outcome_named
from bot.mentoring.routing import add_note, deliver, end_handoff, send_mentor_reply
from bot.mentoring.saved_replies import find_filled
from bot.privacy.audit import mentor_actor
from bot.storage.models import Contact, Handoff, Mentor, MentorGroupTopic, MentorGroupUpdate

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

COMMANDS = frozenset({"claim", "note", "resolve", "back", "transfer", "saved", "help"})


@dataclass
class Outcome:
    """What handling one update did: the webhook's answer, and work for after it."""

    answer: str
    outbox_ids: list[int]
    handoff_id: int | None = None


def mentor_language(mentor: Mentor) -> str:
    from bot.web.console.i18n import mentor_default

    return mentor_default(mentor)


async def take_mentor_updates(
    services: Services, body: bytes, parsed: list[InboundEvent] | Ignored
) -> tuple[list[InboundEvent] | Ignored, dict[str, Any] | None]:
    """Handle what belongs to the mentor group; returns what is left for the pipeline, or the webhook's
    answer when the update was the group's (or a mentor's link request)."""
    groups = services.settings.mentor_group_ids
    if isinstance(parsed, Ignored):
        if not groups:
            return parsed, None
        update = load(body)
        found = parse_group_update(update, groups) if update is not None else None
        if found is None:
            return parsed, None
        return parsed, {"ok": True, "mentor_group": await handle_group_update(services, found)}
    if any(event.kind == "command" for event in parsed):
        update = load(body)
        request = parse_link_request(update) if update is not None else None
        if request is not None:
            return parsed, {"ok": True, "mentor_group": await handle_link_request(services, request)}
    return parsed, None


async def _first_time(session: AsyncSession, services: Services, update_id: int) -> bool:
    """Record the update id in the caller's transaction; False when it was handled before."""
    insert = sqlite_insert if services.db.is_sqlite else pg_insert
    result = await session.execute(
        insert(MentorGroupUpdate).values(update_id=update_id).on_conflict_do_nothing(
            index_elements=["update_id"]).returning(MentorGroupUpdate.update_id))
    return result.first() is not None


async def handle_link_request(services: Services, request: LinkRequest) -> str:
    async with services.db.session() as session:
        if not await _first_time(session, services, request.update_id):
            return "duplicate"
        mentor = await redeem(session, services.settings, request.code, request.user_id)
        language = mentor_language(mentor) if mentor else "en"
        key = "group_linked" if mentor else "group_link_invalid"
        text = get_catalogue().text(key, language, email=mentor.email if mentor else "")
    client = client_of(services)
    if client is not None:
        spawn(_say(client, request.chat_id, None, text))
    log.info("mentor link request %s", "accepted" if mentor else "refused")
    return "linked" if mentor else "link_refused"


async def _say(client: Any, chat_id: int, thread_id: int | None, text: str) -> None:
    try:
        await client.post(chat_id, thread_id, text, silent=True)
    except SendError as exc:
        log.info("mentor group answer not sent: %s", exc.kind.value)


async def _answer_button(client: Any, callback_id: str, text: str) -> None:
    try:
        await client.answer_button(callback_id, text)
    except SendError as exc:
        log.info("button answer not sent: %s", exc.kind.value)


async def handle_group_update(services: Services, update: GroupMessage | GroupButton) -> str:
    """One update from a mentor group; returns what was done (for the webhook's answer and logs)."""
    if isinstance(update, GroupMessage) and (update.is_bot or update.is_service):
        return "ignored: service or bot message"
    async with services.db.session() as session:
        if not await _first_time(session, services, update.update_id):
            return "duplicate"
        mentor = await mentor_by_telegram(session, update.user_id)
        topic = None
        if update.thread_id is not None:
            topic = (await session.execute(select(MentorGroupTopic).where(
                MentorGroupTopic.chat_id == update.chat_id, MentorGroupTopic.thread_id == update.thread_id)
            )).scalars().first()
        handoff = await session.get(Handoff, topic.handoff_id) if topic is not None and topic.handoff_id else None
    client = client_of(services)
    if mentor is None:
        log.info("mentor group: update from a Telegram account no mentor linked was ignored")
        if isinstance(update, GroupButton) and client is not None:
            spawn(_answer_button(client, update.callback_id, get_catalogue().text("group_not_linked", "en")))
        return "ignored: not a linked mentor"
    if handoff is None:
        return "ignored: not a hand-off topic"
    try:
        outcome = await _act(services, update, mentor, handoff)
    except HandoffError as exc:
        outcome = Outcome(f"refused: {exc.code}", [], handoff.id)
        key = f"console_error_{exc.code}"
        text = get_catalogue().text(key if get_catalogue().has(key) else "group_refused", mentor_language(mentor))
        if isinstance(update, GroupButton) and client is not None:
            spawn(_answer_button(client, update.callback_id, text))
        else:
            await _notice_to(services, handoff, mentor, "group_refused_because", reason=text)
    if outcome.outbox_ids:
        spawn(deliver(services, outcome.outbox_ids))
    if outcome.handoff_id is not None:
        spawn(_flush(services, outcome.handoff_id))
    return outcome.answer


async def _flush(services: Services, handoff_id: int) -> None:
    await flush_handoff(services, handoff_id)


async def _notice_to(services: Services, handoff: Handoff, mentor: Mentor, key: str, **args: str) -> None:
    """A short answer to one mentor's action, in the topic, in that mentor's language."""
    async with services.db.session() as session:
        attached = await session.get(Handoff, handoff.id)
        if attached is not None:
            await posts.notice_with(services, session, attached, key, dict(args), mention=[mentor], silent=True,
                                    language=mentor_language(mentor))


async def _act(services: Services, update: GroupMessage | GroupButton, mentor: Mentor, handoff: Handoff) -> Outcome:
    if isinstance(update, GroupButton):
        if update.data != f"claim:{handoff.id}":
            return Outcome("ignored: unknown button", [])
        return await _claim(services, mentor, handoff, update.callback_id)
    text = (update.text or "").strip()
    if text.startswith("/"):
        word, _, rest = text[1:].partition(" ")
        command = word.split("@", 1)[0].lower()
        if command in COMMANDS:
            return await _command(services, mentor, handoff, command, rest.strip())
    if update.has_media or not text:
        await _notice_to(services, handoff, mentor, "group_only_text")
        return Outcome("refused: media", [], handoff.id)
    return await _reply(services, mentor, handoff, text)


async def _claim(services: Services, mentor: Mentor, handoff: Handoff, callback_id: str | None) -> Outcome:
    async with services.db.session() as session:
        claimed = await claim(services, session, handoff.id, mentor)
        holder = None
        if claimed is None:
            current = await session.get(Handoff, handoff.id)
            holder = await session.get(Mentor, current.mentor_id) if current and current.mentor_id else None
    language = mentor_language(mentor)
    if claimed is not None:
        text = get_catalogue().text("group_claim_ok", language)
    elif holder is not None:
        text = get_catalogue().text("group_claim_taken", language, mentor=mentor_name(holder))
    else:
        text = get_catalogue().text("group_closed", language)
    client = client_of(services)
    if callback_id is not None and client is not None:
        spawn(_answer_button(client, callback_id, text))
    elif claimed is None:
        await _notice_to(services, handoff, mentor, "group_refused_because", reason=text)
    return Outcome("claimed" if claimed is not None else "claim_refused", [], handoff.id)


async def _reply(services: Services, mentor: Mentor, handoff: Handoff, text: str, *, mirror: bool = False) -> Outcome:
    """A mentor's words in the topic go to the learner (claiming a waiting conversation first); `mirror`
    shows them in the topic (a saved reply, which the mentor did not type there)."""
    if handoff.state == "waiting":
        claimed = await _claim(services, mentor, handoff, None)
        if claimed.answer != "claimed":
            return claimed
    async with services.db.session() as session:
        current = await session.get(Handoff, handoff.id)
        if current is None or current.state == "resolved":
            raise HandoffError("conversation closed", "already_closed")
        outcome = await send_mentor_reply(services, session, current, mentor, text, mirror=mirror)
    return Outcome("replied", [outcome.outbox_id], handoff.id)


async def _command(services: Services, mentor: Mentor, handoff: Handoff, command: str, rest: str) -> Outcome:
    actor = mentor_actor(mentor.id)
    if command == "claim":
        return await _claim(services, mentor, handoff, None)
    if command == "help":
        await _notice_to(services, handoff, mentor, "group_help")
        return Outcome("help", [], handoff.id)
    if command == "note":
        async with services.db.session() as session:
            current = await session.get(Handoff, handoff.id)
            if current is None:
                raise HandoffError("unknown conversation", "no_conversation")
            await add_note(services, session, current, mentor, rest, mirror=False)
        await _notice_to(services, handoff, mentor, "group_note_saved")
        return Outcome("noted", [], handoff.id)
    if command == "saved":
        async with services.db.session() as session:
            contact = await session.get(Contact, handoff.contact_id)
            filled = await find_filled(services, session, contact, rest) if contact and rest else None
        if filled is None:
            await _notice_to(services, handoff, mentor, "group_saved_unknown", name=rest or "—")
            return Outcome("refused: saved_unknown", [], handoff.id)
        # the saved text is not in the topic yet (a typed reply is): show what went to the learner
        return await _reply(services, mentor, handoff, filled.text, mirror=True)
    if handoff.state != "with_mentor" or (handoff.mentor_id != mentor.id and mentor.role != "lead"):
        raise HandoffError("claim the conversation first", "claim_first")
    if command in ("resolve", "back"):
        async with services.db.session() as session:
            resolution = await outcome_named(session, rest) if command == "resolve" else None
        await end_handoff(services, handoff.id, "resolved" if command == "resolve" else "handed_back", actor=actor,
                          resolution=resolution)
        return Outcome(command, [], handoff.id)
    # transfer: to the queue, or to the mentor with this e-mail address
    async with services.db.session() as session:
        current = await session.get(Handoff, handoff.id)
        if current is None:
            raise HandoffError("unknown conversation", "no_conversation")
        target_id = None
        if rest:
            target = (await session.execute(select(Mentor).where(
                func.lower(Mentor.email) == rest.strip().lower()))).scalars().first()
            if target is None:
                raise HandoffError("unknown mentor", "unknown_mentor")
            target_id = target.id
        await transfer(services, session, current, mentor, target_id)
    return Outcome("transferred", [], handoff.id)
