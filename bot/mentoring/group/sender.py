"""Sends the mentor group's posts: creates each hand-off's topic, then its posts in order.

One hand-off's posts go out one at a time, oldest first, under a lock named after the
hand-off (so two processes never interleave them), within Telegram's limits: the channel's
pause and overall rate are the outbox sender's (`services.send_rates`), and one group
gets `TELEGRAM_GROUP_RATE_PER_MIN`. A post that failed for a reason that may pass (429,
network) waits and keeps the ones after it waiting; one Telegram refuses for good is
marked failed and the next goes. Topics whose hand-off is gone (erasure, retention) are
deleted from the group here too (`delete_orphaned_topics`).
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import delete, or_, select

from bot.channels.base import SendError, SendErrorKind
from bot.channels.telegram.mentor_group import Button, MentorGroupClient
from bot.i18n.catalogue import normalise_language
from bot.runtime.coordination import LockTimeout
from bot.storage.db import as_utc, utcnow
from bot.storage.models import (
    Contact,
    Handoff,
    InboundMessage,
    Mentor,
    MentorGroupPost,
    MentorGroupTopic,
    MentorNote,
    Outbox,
)

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

MAX_INLINE_WAIT_S = 2.0
BACKOFF_BASE_S = 5.0
MAX_ATTEMPTS = 8
MEDIA_MAX_BYTES = 20 * 1024 * 1024
LAST_MESSAGES_ON_CARD = 3
# anything that looks like a phone number never goes into a topic's name
_PHONE_LIKE = re.compile(r"\+?\d[\d\s().\-/]{4,}\d")


def client_of(services: Services) -> MentorGroupClient | None:
    channel = services.channels.get("telegram")
    bot = getattr(channel, "bot", None)
    return MentorGroupClient(bot) if bot is not None else None


def learner_label(services: Services, contact: Contact, language: str) -> str:
    """The learner's first name without anything phone-like, else a pseudonym."""
    name = _PHONE_LIKE.sub("", contact.display_name or "").strip(" -·,")
    if not name or not any(ch.isalpha() for ch in name):
        return services.catalogue.text("group_pseudonym", language, number=str(contact.id))
    return name[:40]


def topic_name(services: Services, contact: Contact, handoff: Handoff) -> str:
    language = normalise_language(handoff.language)
    cat = services.catalogue
    name = cat.text("group_topic_name", language, name=learner_label(services, contact, language),
                    language=handoff.language.upper(), channel=cat.text(f"console_channel_{contact.channel}", language),
                    reason=cat.text(f"console_reason_{handoff.reason}", language))
    return ("🔴 " + name) if handoff.urgent else name


# --- rendering ----------------------------------------------------------------------

async def _card(services: Services, session: Any, handoff: Handoff, contact: Contact) -> tuple[str, list[Button]]:
    language = normalise_language(handoff.language)
    cat = services.catalogue
    lines = []
    if handoff.urgent:
        lines.append(cat.text("group_card_urgent", language))
    lines.append(cat.text("group_card_head", language, name=learner_label(services, contact, language),
                          language=handoff.language.upper(),
                          channel=cat.text(f"console_channel_{contact.channel}", language),
                          reason=cat.text(f"console_reason_{handoff.reason}", language)))
    recent = (await session.execute(
        select(InboundMessage.text, InboundMessage.kind).where(
            InboundMessage.contact_id == contact.id, InboundMessage.created_at <= handoff.created_at)
        .order_by(InboundMessage.id.desc()).limit(LAST_MESSAGES_ON_CARD))).all()
    if recent:
        lines.append(cat.text("group_card_last", language))
        lines.extend(f"› {text or '[' + kind + ']'}" for text, kind in reversed(recent))
    buttons: list[Button] = []
    if handoff.state == "waiting":
        lines.append(cat.text("group_card_waiting", language))
        buttons.append(Button(cat.text("group_button_claim", language), data=f"claim:{handoff.id}"))
    elif handoff.state == "with_mentor":
        holder = await session.get(Mentor, handoff.mentor_id) if handoff.mentor_id else None
        lines.append(cat.text("group_card_with", language, mentor=_mentor_name(holder)))
    else:
        outcome = handoff.resolution or cat.text(f"console_outcome_{handoff.outcome}", language)
        lines.append(cat.text("group_card_closed", language, outcome=outcome))
    base = services.settings.public_base_url
    if base.startswith("https://"):
        buttons.append(Button(cat.text("group_button_console", language), url=f"{base}/console/h/{handoff.id}"))
    return "\n".join(lines), buttons


def _mentor_name(mentor: Mentor | None) -> str:
    if mentor is None:
        return "—"
    return mentor.display_name or mentor.email.split("@", 1)[0]


async def _download_whatsapp(services: Services, url: str) -> bytes | None:
    settings = services.settings
    if not (settings.twilio_account_sid and settings.twilio_auth_token and url.startswith(
            settings.twilio_api_base_url + "/")):
        return None
    async with httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0), follow_redirects=True) as http:
        response = await http.get(url, auth=(settings.twilio_account_sid, settings.twilio_auth_token))
    if response.status_code != 200 or len(response.content) > MEDIA_MAX_BYTES:
        return None
    return response.content


async def _send_learner(services: Services, client: MentorGroupClient, topic: MentorGroupTopic,
                        message: InboundMessage, contact: Contact, language: str) -> int | None:
    thread = topic.thread_id
    cat = services.catalogue
    kind_label = cat.text(f"console_kind_{message.kind}", language) if cat.has(f"console_kind_{message.kind}") \
        else message.kind
    if message.media_ref and contact.channel == "telegram" and (message.provider_id or "").isdigit():
        return await client.copy(topic.chat_id, thread, contact.address, int(message.provider_id or 0))
    if message.media_ref and contact.channel == "whatsapp":
        data = await _download_whatsapp(services, message.media_ref)
        if data is not None:
            extension = (message.media_type or "").rpartition("/")[2][:8] or "bin"
            return await client.upload(topic.chat_id, thread, data, f"message-{message.id}.{extension}",
                                       message.text or kind_label)
    text = message.text
    if message.kind == "location" and isinstance(message.payload, dict):
        text = f"📍 {message.payload.get('latitude')}, {message.payload.get('longitude')}"
    if not text:
        text = f"[{kind_label}]"
    return await client.post(topic.chat_id, thread, cat.text("group_learner_says", language, text=text))


async def _send_post(services: Services, client: MentorGroupClient, session: Any, topic: MentorGroupTopic,
                     post: MentorGroupPost) -> int | None:
    handoff = await session.get(Handoff, post.handoff_id)
    contact = await session.get(Contact, handoff.contact_id) if handoff else None
    if handoff is None or contact is None or topic.thread_id is None:
        return None
    language = normalise_language(handoff.language)
    cat = services.catalogue
    chat, thread = topic.chat_id, int(topic.thread_id)
    params: dict[str, Any] = dict(post.params or {})
    if post.kind == "card":
        text, buttons = await _card(services, session, handoff, contact)
        message_id = await client.post(chat, thread, text, buttons=buttons)
        topic.card_message_id = message_id
        if handoff.urgent:
            await client.pin(chat, message_id)
        return message_id
    if post.kind == "card_update":
        if topic.card_message_id:
            text, buttons = await _card(services, session, handoff, contact)
            await client.edit(chat, int(topic.card_message_id), text, buttons=buttons)
        if params.get("rename"):
            await client.rename_topic(chat, thread, topic_name(services, contact, handoff))
            if handoff.urgent and topic.card_message_id:
                await client.pin(chat, int(topic.card_message_id))
        if params.get("close"):
            await client.close_topic(chat, thread)
            topic.status = "closed"
        return None
    if post.kind == "learner":
        message = await session.get(InboundMessage, post.inbound_id) if post.inbound_id else None
        if message is None:
            return None
        return await _send_learner(services, client, topic, message, contact, language)
    if post.kind == "reply":
        row = await session.get(Outbox, post.outbox_id) if post.outbox_id else None
        if row is None:
            return None
        author = await session.get(Mentor, row.author_mentor_id) if row.author_mentor_id else None
        key = "group_reply_held" if row.status == "held" else "group_reply"
        text = cat.text(key, language, mentor=_mentor_name(author), text=row.text or "")
        return await client.post(chat, thread, text, silent=True)
    if post.kind == "note":
        note = await session.get(MentorNote, post.note_id) if post.note_id else None
        if note is None:
            return None
        author = await session.get(Mentor, note.mentor_id) if note.mentor_id else None
        return await client.post(chat, thread, cat.text("group_note", language, mentor=_mentor_name(author),
                                                        text=note.text), silent=True)
    # a notice: catalogue text naming mentors, with their Telegram accounts mentioned
    language = normalise_language(params.get("language") or language)
    text = html.escape(cat.text(str(params.get("key")), language, **dict(params.get("args") or {})))
    mentions = [f'<a href="tg://user?id={int(uid)}">{html.escape(str(name))}</a>'
                for uid, name in params.get("mentions") or []]
    if mentions:
        text += "\n" + " ".join(mentions)
    message_id = await client.post(chat, thread, text, html=True, silent=bool(params.get("silent")))
    if params.get("pin"):
        await client.pin(chat, message_id)
    return message_id


# --- flushing ------------------------------------------------------------------------

async def flush_handoff(services: Services, handoff_id: int) -> int:
    """Create the hand-off's topic if needed and send its due posts in order; returns how many went."""
    client = client_of(services)
    if client is None:
        return 0
    try:
        async with services.coord.lock(f"mentor-group:{handoff_id}", ttl_s=120.0, wait_s=30.0):
            return await _flush(services, client, handoff_id)
    except LockTimeout:
        return 0  # another process is sending them; the worker looks again
    except Exception:  # (a post stays pending and is retried by the worker)
        log.exception("mentor group posts of hand-off %s not sent", handoff_id)
        return 0


async def _create_topic(services: Services, client: MentorGroupClient, handoff_id: int) -> MentorGroupTopic | None:
    async with services.db.session() as session:
        topic = (await session.execute(
            select(MentorGroupTopic).where(MentorGroupTopic.handoff_id == handoff_id))).scalars().first()
        if topic is None or topic.status == "failed":
            return None
        if topic.thread_id is not None:
            return topic
        if topic.next_attempt_at is not None and as_utc(topic.next_attempt_at) > utcnow():
            return None  # Telegram refused a moment ago: the worker tries again after the back-off
        handoff = await session.get(Handoff, handoff_id)
        contact = await session.get(Contact, handoff.contact_id) if handoff else None
        if handoff is None or contact is None:
            return None
        try:
            topic.thread_id = await client.create_topic(topic.chat_id, topic_name(services, contact, handoff),
                                                        bool(handoff.urgent))
            topic.status = "open"
        except SendError as exc:
            topic.attempts += 1
            if exc.kind is SendErrorKind.THROTTLED:
                delay_s = max(exc.retry_after_s or 1.0, 0.1)
                await services.send_rates.pause("telegram", delay_s)
                topic.next_attempt_at = utcnow() + timedelta(seconds=delay_s)
            elif not exc.kind.retryable or topic.attempts >= MAX_ATTEMPTS:
                topic.status = "failed"
                log.warning("mentor group topic of hand-off %s not created: %s", handoff_id, exc.kind.value)
            else:
                topic.next_attempt_at = utcnow() + timedelta(seconds=BACKOFF_BASE_S * 2 ** (topic.attempts - 1))
            return None
        return topic


async def _flush(services: Services, client: MentorGroupClient, handoff_id: int) -> int:
    topic = await _create_topic(services, client, handoff_id)
    if topic is None or topic.thread_id is None:
        return 0
    settings = services.settings
    group_rate = settings.telegram_group_rate_per_min / 60.0
    sent = 0
    while True:
        async with services.db.session() as session:
            post = (await session.execute(
                select(MentorGroupPost).where(MentorGroupPost.handoff_id == handoff_id,
                                              MentorGroupPost.status == "pending")
                .order_by(MentorGroupPost.id).limit(1))).scalars().first()
            if post is None or post.next_attempt_at > utcnow():
                return sent
            admission = await services.send_rates.admit(
                "telegram", f"telegram:group:{topic.chat_id}", chat_rate_per_s=group_rate, chat_burst=5)
            while not admission.admitted:
                if admission.wait_s > MAX_INLINE_WAIT_S:
                    post.next_attempt_at = utcnow() + timedelta(seconds=admission.wait_s)
                    return sent
                await asyncio.sleep(admission.wait_s)
                admission = await services.send_rates.admit(
                    "telegram", f"telegram:group:{topic.chat_id}", chat_rate_per_s=group_rate, chat_burst=5)
            topic = await session.merge(topic)
            try:
                post.telegram_message_id = await _send_post(services, client, session, topic, post)
                post.status, post.sent_at = "sent", utcnow()
                sent += 1
            except SendError as exc:
                post.attempts += 1
                if exc.kind is SendErrorKind.THROTTLED:
                    delay_s = max(exc.retry_after_s or 1.0, 0.1)
                    await services.send_rates.pause("telegram", delay_s)
                    post.next_attempt_at = utcnow() + timedelta(seconds=delay_s)
                    return sent
                if exc.kind.retryable and post.attempts < MAX_ATTEMPTS:
                    post.next_attempt_at = utcnow() + timedelta(seconds=BACKOFF_BASE_S * 2 ** (post.attempts - 1))
                    return sent
                post.status = "failed"
                log.warning("mentor group post %s (%s) failed: %s", post.id, post.kind, exc.kind.value)


async def flush_due(services: Services, limit: int = 100) -> int:
    """Worker job: topics still to create and posts still due, whoever queued them."""
    now = utcnow()
    async with services.db.session() as session:
        ids: set[int | None] = set((await session.execute(
            select(MentorGroupPost.handoff_id).where(MentorGroupPost.status == "pending",
                                                     MentorGroupPost.next_attempt_at <= now)
            .group_by(MentorGroupPost.handoff_id).limit(limit))).scalars().all())
        ids |= set((await session.execute(
            select(MentorGroupTopic.handoff_id).where(
                MentorGroupTopic.status == "creating", MentorGroupTopic.handoff_id.is_not(None),
                or_(MentorGroupTopic.next_attempt_at.is_(None), MentorGroupTopic.next_attempt_at <= now))
            .limit(limit))).scalars().all())
    total = 0
    for handoff_id in sorted(i for i in ids if i is not None):
        total += await flush_handoff(services, handoff_id)
    return total


async def delete_orphaned_topics(services: Services, limit: int = 100) -> int:
    """Delete from Telegram the topics whose hand-off is gone (erased, or past retention), then their rows."""
    client = client_of(services)
    async with services.db.session() as session:
        orphans = (await session.execute(
            select(MentorGroupTopic).where(MentorGroupTopic.handoff_id.is_(None)).limit(limit))).scalars().all()
    deleted = 0
    for topic in orphans:
        if topic.thread_id is not None:
            if client is None:
                continue
            try:
                await client.delete_topic(topic.chat_id, int(topic.thread_id))
            except SendError as exc:
                if exc.kind.retryable:
                    continue  # the next run tries again
                # the topic is gone already (or the group): nothing left to delete
        async with services.db.session() as session:
            await session.execute(delete(MentorGroupTopic).where(MentorGroupTopic.id == topic.id))
        deleted += 1
    if deleted:
        log.info("deleted %d mentor group topic(s) of erased or expired hand-offs", deleted)
    return deleted


async def forget_old_updates(services: Services) -> None:
    """Update ids are kept a day against Telegram's redeliveries (it retries for less than that)."""
    from bot.storage.models import MentorGroupUpdate

    async with services.db.session() as session:
        await session.execute(delete(MentorGroupUpdate).where(
            MentorGroupUpdate.received_at < utcnow() - timedelta(days=1)))


async def job(services: Services) -> None:
    """Worker job: send what is due, delete orphaned topics, forget old update ids."""
    if client_of(services) is None:
        return
    if not services.settings.mentor_group_ids:
        # groups switched off: still delete the topics of erased learners
        await delete_orphaned_topics(services)
        return
    await flush_due(services)
    await delete_orphaned_topics(services)
    await forget_old_updates(services)

