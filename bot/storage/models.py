"""Every table of Sanad. Sections: contacts and messages, linking, hand-off and
console, reminders and broadcasts, privacy. Times are UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from bot.storage.db import Base, utcnow

# BigInteger ids on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
PK = BigInteger().with_variant(Integer(), "sqlite")
TS = DateTime(timezone=True)


# --- contacts and messages -------------------------------------------------

class Contact(Base):
    """One chat address on one channel; `key` is `telegram:123` / `whatsapp:+49…` / `web:abc`,
    the same key in Redis and as Rasa's sender_id."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str | None] = mapped_column(String(128))
    language: Mapped[str | None] = mapped_column(String(8))
    # detected | telegram | explicit | platform: an explicit choice is never overridden by detection
    language_source: Mapped[str | None] = mapped_column(String(16))
    timezone: Mapped[str | None] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(8))
    learner_id: Mapped[str | None] = mapped_column(String(64), index=True)
    linked_at: Mapped[datetime | None] = mapped_column(TS)
    # bot | waiting | with_mentor: who answers the learner's next message
    mode: Mapped[str] = mapped_column(String(16), default="bot")
    reminders_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    # the provider told us the contact blocked us / unsubscribed: nothing is sent any more
    stopped: Mapped[bool] = mapped_column(Boolean, default=False)
    last_inbound_at: Mapped[datetime | None] = mapped_column(TS)
    rasa_trouble_notified_at: Mapped[datetime | None] = mapped_column(TS)
    pending_buttons: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    pin_hash: Mapped[str | None] = mapped_column(String(256))
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    pin_locked_until: Mapped[datetime | None] = mapped_column(TS)
    pin_verified_at: Mapped[datetime | None] = mapped_column(TS)
    # a /pin conversation under way: {"step", "first" (peppered), "until" (ISO time)}
    pin_flow: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # who works on this conversation now (bot/conversation/lease.py): the holder's token and until when
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(TS)
    # a mentor's reply is held (outbox status `held`) since then: WhatsApp's 24-hour window was closed,
    # the template went out instead, and the text follows when the learner answers (bot/mentoring/held.py)
    held_since: Mapped[datetime | None] = mapped_column(TS)
    # the hand-off whose satisfaction comment the learner's next message is (bot/mentoring/satisfaction.py)
    feedback_handoff_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class InboundMessage(Base):
    """A message from a learner, persisted before the webhook answers."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("dedup_key", name="uq_inbound_dedup"),
        Index("ix_inbound_contact_status", "contact_id", "status", "id"),
        # the analytics roll-up reads one day at a time
        Index("ix_inbound_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    # `telegram:<update_id>` / `whatsapp:<MessageSid>` / `web:<client id>`: a redelivery collides here
    dedup_key: Mapped[str] = mapped_column(String(128))
    provider_id: Mapped[str | None] = mapped_column(String(128))
    # text | button | voice | audio | photo | video | document | sticker | location | contact | command | other
    kind: Mapped[str] = mapped_column(String(16), default="text")
    text: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    media_ref: Mapped[str | None] = mapped_column(Text)
    media_type: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    # received -> done | failed ; `routed_to`: bot | mentor
    status: Mapped[str] = mapped_column(String(16), default="received")
    routed_to: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # when the message was first taken for handling, before any call to Rasa: a later take reads Rasa's
    # tracker before asking again (bot/conversation/rasa_turn.py)
    taken_at: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(TS)
    # what Rasa understood (bot/analytics/understanding.py): no text, so it outlives the text in the roll-ups
    intent: Mapped[str | None] = mapped_column(String(64))
    intent_confidence: Mapped[float | None] = mapped_column(Float)
    fallback: Mapped[bool | None] = mapped_column(Boolean)


class Outbox(Base):
    """An outbound message: replies, mentor messages, reminders and broadcasts alike."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_outbox_idempotency"),
        Index("ix_outbox_status_next", "status", "next_attempt_at"),
        Index("ix_outbox_contact", "contact_id", "id"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    # reply | mentor | system | reminder | broadcast
    origin: Mapped[str] = mapped_column(String(16), default="reply")
    author_mentor_id: Mapped[int | None] = mapped_column(ForeignKey("mentors.id", ondelete="SET NULL"))
    text: Mapped[str | None] = mapped_column(Text)
    # {"buttons": [{"title","payload"}], "template": {...}, "image": url}
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    in_reply_to: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # queued | sending | sent | failed | cancelled | held (a mentor's text waiting for WhatsApp's window)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # sent | delivered | read | failed | undelivered (provider callbacks)
    delivery_status: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(TS)
    # the process that claimed the row (its lease token): a restarted process takes its own claims back at once
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(String(64))
    provider_id: Mapped[str | None] = mapped_column(String(128), index=True)
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(TS)


# --- linking a chat to a learner ------------------------------------------

class EarlyReceipt(Base):
    """A provider's delivery status that arrived before the send's outcome (and its provider id)
    was stored; the worker applies it once the id is there (bot/outbox/sender.py)."""

    __tablename__ = "early_receipts"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    provider_id: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class LinkToken(Base):
    """Single-use token (and short code) that links a contact to a learner."""

    __tablename__ = "link_tokens"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    short_code: Mapped[str] = mapped_column(String(16), unique=True)
    learner_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TS)
    used_at: Mapped[datetime | None] = mapped_column(TS)
    used_by_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))


# --- hand-off and the mentor console ---------------------------------------

class Mentor(Base):
    """A staff member or volunteer who answers learners in the console."""

    __tablename__ = "mentors"
    __table_args__ = (
        UniqueConstraint("telegram_user_id", name="uq_mentors_telegram_user_id"),
        UniqueConstraint("telegram_link_code_hash", name="uq_mentors_telegram_link_code_hash"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(128))
    password_hash: Mapped[str] = mapped_column(String(256))
    languages: Mapped[str] = mapped_column(String(64), default="en")  # comma-separated codes
    role: Mapped[str] = mapped_column(String(16), default="mentor")  # mentor | lead
    on_duty: Mapped[bool] = mapped_column(Boolean, default=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # open conversations (held or offered) above which no new one is offered (bot/mentoring/assignment.py)
    capacity: Mapped[int] = mapped_column(Integer, default=5, server_default=text("5"))
    # round-robin between mentors with as many open conversations: the one offered to longest ago first
    last_offered_at: Mapped[datetime | None] = mapped_column(TS)
    # the mentor's Telegram account, for the mentor group (bot/mentoring/group/)
    telegram_user_id: Mapped[int | None] = mapped_column(BigInteger)
    # a one-time code to link it from a private chat with the bot: its hash and expiry
    telegram_link_code_hash: Mapped[str | None] = mapped_column(String(64))
    telegram_link_expires_at: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class ConsoleSession(Base):
    """A signed-in console: the cookie carries a random token whose hash is kept here, so logging
    out, a password change, deactivation and "log out everywhere" end it on the server."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    mentor_id: Mapped[int] = mapped_column(ForeignKey("mentors.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TS)
    revoked_at: Mapped[datetime | None] = mapped_column(TS)


class Handoff(Base):
    """One escalation of a conversation to a human, from waiting to resolved."""

    __tablename__ = "handoffs"
    __table_args__ = (
        Index("ix_handoffs_state", "state", "urgent", "created_at"),
        Index("ix_handoffs_created", "created_at"),
        # at most one open hand-off per contact, whatever the number of gateways
        Index(
            "uq_handoffs_open_contact",
            "contact_id",
            unique=True,
            postgresql_where=text("state <> 'resolved'"),
            sqlite_where=text("state <> 'resolved'"),
        ),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    # waiting | with_mentor | resolved
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    # request_human | fallback | distress | extension | media | mentor
    reason: Mapped[str] = mapped_column(String(32))
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(8), default="en")
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("mentors.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(TS)
    resolved_at: Mapped[datetime | None] = mapped_column(TS)
    last_activity_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    last_alert_at: Mapped[datetime | None] = mapped_column(TS)
    alert_count: Mapped[int] = mapped_column(Integer, default=0)
    # resolved | handed_back | learner | idle: how it went back to the bot
    outcome: Mapped[str | None] = mapped_column(String(16))
    # what came of it, chosen by the mentor on resolve from the leads' list (e.g. "extension granted")
    resolution: Mapped[str | None] = mapped_column(String(64))
    # the assignment offer under way (bot/mentoring/assignment.py) and who had it before in this round
    offered_mentor_id: Mapped[int | None] = mapped_column(
        ForeignKey("mentors.id", ondelete="SET NULL", name="fk_handoffs_offered_mentor_id"))
    offered_at: Mapped[datetime | None] = mapped_column(TS)
    offered_ids: Mapped[list[int] | None] = mapped_column(JSON)
    # the first reply a mentor sent (first-response time)
    first_response_at: Mapped[datetime | None] = mapped_column(TS)
    # the time the learner was told to expect a person by, and when they heard from us again after it
    promised_by: Mapped[datetime | None] = mapped_column(TS)
    promise_followed_up_at: Mapped[datetime | None] = mapped_column(TS)
    # an urgent hand-off nobody claimed was escalated to the leads (then re-alerted until claimed)
    escalated_at: Mapped[datetime | None] = mapped_column(TS)
    # the learner's 1–5 answer to the satisfaction question after a resolved hand-off (asked by the
    # hand-off flow, bot/mentoring/satisfaction.py; read by the analytics), its optional comment
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    satisfaction_at: Mapped[datetime | None] = mapped_column(TS)
    satisfaction_asked_at: Mapped[datetime | None] = mapped_column(TS)
    satisfaction_comment: Mapped[str | None] = mapped_column(Text)


class MentorNote(Base):
    """Internal note on a conversation, never sent to the learner."""

    __tablename__ = "mentor_notes"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    handoff_id: Mapped[int | None] = mapped_column(ForeignKey("handoffs.id", ondelete="CASCADE"))
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("mentors.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class SavedReply(Base):
    """A reply mentors insert with `/name` (console) or `/saved name` (Telegram group); leads edit them."""

    __tablename__ = "saved_replies"
    __table_args__ = (UniqueConstraint("language", "name", name="uq_saved_replies_language_name"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    language: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(64))
    # may hold {first_name} and {next_deadline}, filled from the learner's record when inserted
    text: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("mentors.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class HandoffLabel(Base):
    """An entry of the leads' lists: labels put on conversations, outcomes chosen on resolve."""

    __tablename__ = "handoff_labels"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_handoff_labels_kind_name"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # label | outcome
    name: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class HandoffLabelLink(Base):
    """A label on a hand-off."""

    __tablename__ = "handoff_label_links"

    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id", ondelete="CASCADE"), primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("handoff_labels.id", ondelete="CASCADE"), primary_key=True,
                                          index=True)


class DeadlineExtension(Base):
    """A new date a mentor granted for one of a learner's deadlines; the assistant's deadline answers
    and the reminder planner use it instead of the platform's date (bot/mentoring/extensions.py)."""

    __tablename__ = "deadline_extensions"
    __table_args__ = (UniqueConstraint("learner_id", "deadline_id", name="uq_deadline_extensions_deadline"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    learner_id: Mapped[str] = mapped_column(String(64), index=True)
    deadline_id: Mapped[str] = mapped_column(String(64))
    # the platform's deadline as it was when the extension was recorded
    course_id: Mapped[str | None] = mapped_column(String(64))
    course_title: Mapped[str | None] = mapped_column(String(256))
    title: Mapped[str | None] = mapped_column(String(256))
    kind: Mapped[str | None] = mapped_column(String(32))
    original_due_at: Mapped[datetime | None] = mapped_column(TS)
    new_due_at: Mapped[datetime] = mapped_column(TS)
    reason: Mapped[str] = mapped_column(Text)
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("mentors.id", ondelete="SET NULL"))
    handoff_id: Mapped[int | None] = mapped_column(ForeignKey("handoffs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


# --- the Telegram mentor group ----------------------------------------------

class MentorGroupTopic(Base):
    """The forum topic of one hand-off in a Telegram mentor group. A topic whose hand-off is gone
    (erased, or deleted by retention) is deleted from Telegram by the worker, then this row."""

    __tablename__ = "mentor_group_topics"
    __table_args__ = (UniqueConstraint("chat_id", "thread_id", name="uq_mentor_group_topics_thread"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    handoff_id: Mapped[int | None] = mapped_column(ForeignKey("handoffs.id", ondelete="SET NULL"), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    # null until createForumTopic answered
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    card_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # creating | open | closed | failed
    status: Mapped[str] = mapped_column(String(16), default="creating")
    # after a failed createForumTopic: not again before then
    next_attempt_at: Mapped[datetime | None] = mapped_column(TS)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class MentorGroupPost(Base):
    """One message to post in a hand-off's topic, in order: the learner's messages (read from their
    rows when posted, so erasure takes them along), mentors' replies and notes, state changes."""

    __tablename__ = "mentor_group_posts"
    __table_args__ = (Index("ix_mentor_group_posts_pending", "status", "handoff_id", "id"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id", ondelete="CASCADE"))
    # card | learner | reply | note | notice | card_update
    kind: Mapped[str] = mapped_column(String(16))
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id", ondelete="CASCADE"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"))
    note_id: Mapped[int | None] = mapped_column(ForeignKey("mentor_notes.id", ondelete="CASCADE"))
    # catalogue key and parameters of a notice (names of mentors, never learner text)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # pending | sent | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(TS)


class MentorGroupUpdate(Base):
    """Telegram update ids of the mentor group already handled: a redelivery is not handled twice."""

    __tablename__ = "mentor_group_updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    received_at: Mapped[datetime] = mapped_column(TS, default=utcnow, index=True)


class AuditEntry(Base):
    """Who did what to whose data; never what was said."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(TS, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))  # mentor:<id> | admin | system | learner
    action: Mapped[str] = mapped_column(String(64))
    # a pseudonymous reference (hash of the contact key), so erasure leaves nothing identifying
    subject_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


# --- reminders and broadcasts ---------------------------------------------

class Reminder(Base):
    """A planned deadline reminder; `idempotency_key` = reminder:{learner}:{deadline}:{offset}."""

    __tablename__ = "reminders"
    __table_args__ = (Index("ix_reminders_status_send", "status", "send_at"), Index("ix_reminders_send", "send_at"))

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    learner_id: Mapped[str] = mapped_column(String(64), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    deadline_id: Mapped[str] = mapped_column(String(64))
    offset_h: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime] = mapped_column(TS)
    send_at: Mapped[datetime] = mapped_column(TS)
    # planned | queued | sent | cancelled | expired
    status: Mapped[str] = mapped_column(String(16), default="planned")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class Broadcast(Base):
    """A staff message to a segment of learners."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    created_by: Mapped[str] = mapped_column(String(64), default="admin")
    texts: Mapped[dict[str, str] | None] = mapped_column(JSON)  # language -> text
    catalogue_key: Mapped[str | None] = mapped_column(String(128))
    segment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    send_at: Mapped[datetime | None] = mapped_column(TS)
    # scheduled | sending | done | cancelled | failed
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    # why a broadcast failed to expand (shown to staff; never learner data)
    failure_reason: Mapped[str | None] = mapped_column(String(300))
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)


class ReminderAssignment(Base):
    """The reminder experiment (bot/analytics/holdout.py): each (learner, deadline) pair that would get
    reminders, assigned once at random to `reminded` or `held_out`, and whether it was submitted on time.

    The learner and deadline ids are cleared once the outcome is known and the deadline is long past
    (they are only needed to keep the assignment and to read the outcome)."""

    __tablename__ = "reminder_assignments"
    __table_args__ = (
        UniqueConstraint("learner_id", "deadline_id", name="uq_reminder_assignment_pair"),
        Index("ix_reminder_assignments_due", "due_at"),
        Index("ix_reminder_assignments_unchecked", "checked_at", "due_at"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    learner_id: Mapped[str | None] = mapped_column(String(64))
    deadline_id: Mapped[str | None] = mapped_column(String(64))
    arm: Mapped[str] = mapped_column(String(16))  # reminded | held_out
    language: Mapped[str] = mapped_column(String(8), default="en")
    due_at: Mapped[datetime] = mapped_column(TS)
    assigned_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(TS)
    # None until checked; also None when the platform no longer listed the deadline (left out of the effect)
    on_time: Mapped[bool | None] = mapped_column(Boolean)
    checked_at: Mapped[datetime | None] = mapped_column(TS)


# --- analytics and the review inbox ------------------------------------------

class AnalyticsDay(Base):
    """Counts of one UTC day and one language, rolled up from the raw tables (bot/analytics/rollup.py), so
    that the figures survive retention and a long range is read from a few rows."""

    __tablename__ = "analytics_daily"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    inbound: Mapped[int] = mapped_column(Integer, default=0)
    fallback: Mapped[int] = mapped_column(Integer, default=0)
    conversations: Mapped[int] = mapped_column(Integer, default=0)
    handed_off: Mapped[int] = mapped_column(Integer, default=0)
    handoffs: Mapped[int] = mapped_column(Integer, default=0)
    urgent: Mapped[int] = mapped_column(Integer, default=0)
    sla_eligible: Mapped[int] = mapped_column(Integer, default=0)
    sla_met: Mapped[int] = mapped_column(Integer, default=0)
    # seconds of each hand-off of the day (answered / resolved ones): exact percentiles over any range
    first_response_s: Mapped[list[int]] = mapped_column(JSON, default=list)
    resolution_s: Mapped[list[int]] = mapped_column(JSON, default=list)
    # satisfaction answers by score ("1".."5")
    satisfaction: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    intents: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    reminders_planned: Mapped[int] = mapped_column(Integer, default=0)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    reminders_delivered: Mapped[int] = mapped_column(Integer, default=0)
    reminders_read: Mapped[int] = mapped_column(Integer, default=0)
    reminders_failed: Mapped[int] = mapped_column(Integer, default=0)
    reminders_held_out: Mapped[int] = mapped_column(Integer, default=0)


class AnalyticsRollup(Base):
    """A day whose `analytics_daily` rows are written (a day with no activity has this row only)."""

    __tablename__ = "analytics_rollups"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    rolled_up_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class AnalyticsCursor(Base):
    """How far a sweep has read (e.g. the last Rasa tracker event looked at)."""

    __tablename__ = "analytics_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)


class ReviewItem(Base):
    """A learner message the assistant did not understand well, waiting for a reviewer's label
    (bot/review/inbox.py); the text stays in `inbound_messages`, so retention and erasure take it."""

    __tablename__ = "review_items"
    __table_args__ = (
        UniqueConstraint("inbound_id", name="uq_review_items_inbound"),
        Index("ix_review_items_waiting", "label", "id"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    language: Mapped[str] = mapped_column(String(8), default="en")
    # the likeliest real intent (under a fallback: the best of the ranking) and its confidence
    predicted_intent: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    # an intent name, or "none" (not an intent: never exported)
    label: Mapped[str | None] = mapped_column(String(64))
    labelled_by: Mapped[int | None] = mapped_column(ForeignKey("mentors.id", ondelete="SET NULL"))
    labelled_at: Mapped[datetime | None] = mapped_column(TS)
    exported_at: Mapped[datetime | None] = mapped_column(TS)


# --- privacy ---------------------------------------------------------------

class ErasureStat(Base):
    """Anonymous count of erasures per day, kept for statistics after the data is gone."""

    __tablename__ = "erasure_stats"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    contacts: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    handoffs: Mapped[int] = mapped_column(Integer, default=0)
    notes: Mapped[int] = mapped_column(Integer, default=0)
