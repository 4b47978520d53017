"""The hand-off state machine: bot -> waiting -> with_mentor -> resolved (-> bot).

`contact.mode` says who answers the learner's next message; a `handoffs` row
records each escalation. Every transition runs in one transaction that locks the
contact row first and the hand-off row second (one order everywhere, so two
gateways never deadlock), and claiming is a conditional UPDATE, so when two
mentors claim at once exactly one wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_object_session

from bot.conversation.commands import CommandResult, command
from bot.i18n.catalogue import Rendered, normalise_language
from bot.mentoring.events import after_commit, publish_after_commit
from bot.mentoring.group import posts as group_posts
from bot.outbox.queue import enqueue
from bot.privacy.audit import audit, mentor_actor
from bot.storage.db import utcnow
from bot.storage.models import Contact, Handoff, Mentor

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

REASONS: frozenset[str] = frozenset({"request_human", "fallback", "distress", "extension", "media", "mentor"})
OPEN_STATES: tuple[str, ...] = ("waiting", "with_mentor")
# how a hand-off went back to the bot -> what the learner is told
OUTCOME_MESSAGES: dict[str, str] = {
    "resolved": "handoff_resolved",
    "handed_back": "handoff_handed_back",
    "idle": "handoff_idle_closed",
    "learner": "handoff_back_to_bot",
}


class HandoffError(Exception):
    """A transition that is not allowed from the current state (shown to the mentor, never to a learner).

    `code` names it for the console, which shows the catalogue's `console_error_<code>` in the
    mentor's language."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def mentor_languages(mentor: Mentor) -> set[str]:
    return {part.strip().lower() for part in (mentor.languages or "").split(",") if part.strip()}


def mentor_name(mentor: Mentor) -> str:
    """How a mentor is named to colleagues (console, mentor group)."""
    return mentor.display_name or mentor.email.split("@", 1)[0]


def deliver_after_commit(services: Services, session: AsyncSession, outbox_ids: list[int]) -> None:
    """Send these queued rows right after the transaction commits (the worker sends what this misses)."""
    from bot.mentoring.routing import deliver

    if outbox_ids:
        after_commit(session, lambda: deliver(services, list(outbox_ids)))


def console_event(kind: str, handoff: Handoff, **extra: Any) -> dict[str, Any]:
    """A live event: ids and flags only, never message text."""
    data: dict[str, Any] = {
        "type": kind,
        "handoff_id": handoff.id,
        "contact_id": handoff.contact_id,
        "language": handoff.language,
        "urgent": bool(handoff.urgent),
        "state": handoff.state,
        "mentor_id": handoff.mentor_id,
    }
    data.update(extra)
    return data


async def open_handoff(session: AsyncSession, contact_id: int, *, for_update: bool = False) -> Handoff | None:
    """The contact's open hand-off (waiting or with a mentor), if any."""
    stmt = select(Handoff).where(Handoff.contact_id == contact_id, Handoff.state.in_(OPEN_STATES))
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt.order_by(Handoff.id.desc()).limit(1))).scalars().first()


async def lock_contact(session: AsyncSession, contact_id: int) -> Contact:
    """Re-read the contact row under a row lock (first lock of every transition)."""
    contact = (
        await session.execute(
            select(Contact).where(Contact.id == contact_id).with_for_update().execution_options(populate_existing=True)
        )
    ).scalars().first()
    if contact is None:
        raise HandoffError("contact not found", "contact_not_found")
    return contact


# --- transitions -------------------------------------------------------------

@dataclass(frozen=True)
class Opened:
    """The contact's open hand-off after a request (None: refused, the web chat's cap), whether the request
    made it urgent, the learner's replies."""

    handoff: Handoff | None
    newly_urgent: bool
    replies: list[Rendered]


async def open_or_upgrade(
    services: Services, session: AsyncSession, contact: Contact, reason: str, *, urgent: bool, actor: str = "learner"
) -> Opened:
    """Open a hand-off for `contact` (or upgrade the open one) and say what happens next, from the facts
    (bot/mentoring/promise.py). Idempotent: a second request while one is open does not open another;
    an urgent request makes an open one urgent. A new hand-off gets its mentor group topic and is
    offered to a mentor (bot/mentoring/assignment.py); an urgent one alerts everyone (bot/mentoring/urgent.py).
    """
    from bot.mentoring.assignment import offer
    from bot.mentoring.group.posts import open_topic
    from bot.mentoring.promise import promise_for
    from bot.mentoring.urgent import alert_leads, alert_urgent

    if reason not in REASONS:
        raise ValueError(f"unknown hand-off reason {reason!r}")
    urgent = bool(urgent) or reason == "distress"
    language = normalise_language(contact.language)
    contact = await lock_contact(session, contact.id)
    now = utcnow()
    handoff = await open_handoff(session, contact.id, for_update=True)
    if handoff is not None:
        handoff.last_activity_at = now
        newly = urgent and not handoff.urgent
        if newly:
            handoff.urgent = True
            if handoff.state == "waiting":
                handoff.reason = reason
                handoff.offered_mentor_id, handoff.offered_at = None, None
            await session.flush()
            audit(session, services.settings, actor=actor, action="handoff.urgent", contact_key=contact.key,
                  detail={"handoff_id": handoff.id, "reason": reason})
            await alert_urgent(services, session, handoff, upgraded=True)
        if handoff.state == "with_mentor":
            return Opened(handoff, newly, [services.catalogue.render("handoff_with_mentor_already", language)])
        message, _facts = await promise_for(services, session, contact, handoff, again=not newly)
        return Opened(handoff, newly, [message])

    if contact.channel == "web" and await _webchat_full(services, session):
        # the web chat is anonymous: a cap keeps it from filling the mentors' queue
        log.warning("web chat hand-off refused: %d open from the web chat",
                    services.settings.webchat_max_open_handoffs)
        audit(session, services.settings, actor="learner", action="handoff.refused_webchat_full",
              contact_key=contact.key, detail={"reason": reason, "urgent": urgent})
        return Opened(None, False, [services.catalogue.render("handoff_webchat_full", language)])
    handoff = Handoff(
        contact_id=contact.id,
        state="waiting",
        reason=reason,
        urgent=urgent,
        language=language,
        created_at=now,
        last_activity_at=now,
    )
    session.add(handoff)
    contact.mode = "waiting"
    await session.flush()
    audit(session, services.settings, actor=actor, action="handoff.requested", contact_key=contact.key,
          detail={"handoff_id": handoff.id, "reason": reason, "urgent": urgent})
    publish_after_commit(services, session, console_event("handoff_new", handoff, everyone=urgent))
    log.info("hand-off %s opened (reason=%s urgent=%s language=%s)", handoff.id, reason, urgent, language)
    await open_topic(services, session, handoff)
    if urgent:
        await alert_urgent(services, session, handoff)
    else:
        await offer(services, session, handoff)
    message, facts = await promise_for(services, session, contact, handoff)
    if facts.on_duty == 0 and facts.back_at is None:
        await alert_leads(services, session, handoff, "nobody_on_duty")
    return Opened(handoff, urgent, [message])


async def request_handoff(
    services: Services, session: AsyncSession, contact: Contact, reason: str, urgent: bool
) -> list[Rendered]:
    """Open (or upgrade) the contact's hand-off; the learner's replies. Urgent requests go through
    `bot.mentoring.urgent.escalate`, which says the same with the hand-off."""
    if urgent or reason == "distress":
        from bot.mentoring.urgent import escalate

        return (await escalate(services, session, contact, reason=reason, source="learner")).replies
    return (await open_or_upgrade(services, session, contact, reason, urgent=False)).replies


async def _webchat_full(services: Services, session: AsyncSession) -> bool:
    """Are WEBCHAT_MAX_OPEN_HANDOFFS hand-offs from the web chat open already?"""
    open_from_web = (await session.execute(
        select(func.count()).select_from(Handoff).join(Contact, Contact.id == Handoff.contact_id)
        .where(Handoff.state.in_(OPEN_STATES), Contact.channel == "web")
    )).scalar_one()
    return int(open_from_web) >= services.settings.webchat_max_open_handoffs


@command("handoff")
async def handle_handoff_command(services: Services, contact: Contact, args: dict[str, Any]) -> CommandResult:
    """Gateway command `{"sanad": {"command": "handoff", "reason": ..., "urgent": ...}}` from a custom action."""
    reason = str(args.get("reason") or "request_human")
    if reason not in REASONS:
        log.warning("hand-off command with unknown reason %r: treated as request_human", reason)
        reason = "request_human"
    urgent = args.get("urgent") in (True, "true", "True", 1, "1")
    session = async_object_session(contact)
    if session is not None:
        replies = await request_handoff(services, session, contact, reason, urgent)
    else:
        async with services.db.session() as own:
            attached = await own.get(Contact, contact.id)
            if attached is None:
                raise HandoffError("contact not found", "contact_not_found")
            replies = await request_handoff(services, own, attached, reason, urgent)
        contact.mode = attached.mode
    return CommandResult(replies=replies)


async def claim(services: Services, session: AsyncSession, handoff_id: int, mentor: Mentor) -> Handoff | None:
    """Atomically take a waiting hand-off; None when someone else was faster (or it is gone)."""
    handoff = await session.get(Handoff, handoff_id)
    if handoff is None:
        return None
    if mentor.role != "lead" and handoff.language not in mentor_languages(mentor):
        raise HandoffError("not allowed", "not_allowed")
    if handoff.state != "waiting":
        return None
    contact = await lock_contact(session, handoff.contact_id)
    now = utcnow()
    result = await session.execute(
        update(Handoff)
        .where(Handoff.id == handoff_id, Handoff.state == "waiting")
        .values(state="with_mentor", mentor_id=mentor.id, claimed_at=now, last_activity_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    await session.refresh(handoff)
    handoff.offered_mentor_id, handoff.offered_at, handoff.offered_ids = None, None, None
    contact.mode = "with_mentor"
    language = normalise_language(contact.language)
    name = mentor.display_name or services.catalogue.text("handoff_mentor_default_name", language)
    joined = services.catalogue.render("handoff_mentor_joined", language, name=name)
    row = await enqueue(session, contact, joined, origin="system")
    audit(session, services.settings, actor=mentor_actor(mentor.id), action="handoff.claim", contact_key=contact.key,
          detail={"handoff_id": handoff.id})
    publish_after_commit(services, session, console_event("handoff_claimed", handoff))
    deliver_after_commit(services, session, [row.id])
    await group_posts.card_changed(services, session, handoff)
    await group_posts.notice(services, session, handoff, "group_claimed", mentor=mentor_name(mentor))
    return handoff


@dataclass(frozen=True)
class Closed:
    """A hand-off went back to the bot: the learner's messages, queued (`outbox_ids`) or to send as replies."""

    replies: list[Rendered]
    outbox_ids: list[int]


async def close(
    services: Services, session: AsyncSession, handoff: Handoff, outcome: str, *, actor: str, notify: bool = True,
    resolution: str | None = None,
) -> Closed:
    """Return the conversation to the bot. With `notify` the learner's messages are queued in the outbox;
    without, they are returned as replies (the pipeline sends them). `resolution`: what came of it,
    from the leads' list of outcomes. A resolved hand-off asks the learner for a rating
    (bot/mentoring/satisfaction.py)."""
    from bot.mentoring.satisfaction import survey

    if outcome not in OUTCOME_MESSAGES:
        raise ValueError(f"unknown outcome {outcome!r}")
    contact = await lock_contact(session, handoff.contact_id)
    result = await session.execute(
        update(Handoff)
        .where(Handoff.id == handoff.id, Handoff.state.in_(OPEN_STATES))
        .values(state="resolved", resolved_at=utcnow(), outcome=outcome, resolution=resolution,
                offered_mentor_id=None, offered_at=None)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise HandoffError("already closed", "already_closed")
    await session.refresh(handoff)
    if await open_handoff(session, contact.id) is None:
        contact.mode = "bot"
    message = services.catalogue.render(OUTCOME_MESSAGES[outcome], normalise_language(contact.language))
    audit(session, services.settings, actor=actor, action=f"handoff.{outcome}", contact_key=contact.key,
          detail={"handoff_id": handoff.id})
    publish_after_commit(services, session, console_event("handoff_closed", handoff, outcome=outcome))
    await group_posts.card_changed(services, session, handoff, close=True)
    messages = [message]
    if outcome == "resolved":
        messages += await survey(services, session, contact, handoff)
    if notify:
        rows = [await enqueue(session, contact, m, origin="system") for m in messages]
        return Closed(replies=[], outbox_ids=[row.id for row in rows])
    return Closed(replies=messages, outbox_ids=[])


async def transfer(
    services: Services, session: AsyncSession, handoff: Handoff, actor: Mentor, to_mentor_id: int | None
) -> Handoff:
    """Give a conversation to another mentor who speaks the language, or (None) back to the queue."""
    if handoff.state != "with_mentor":
        raise HandoffError("only a conversation with a mentor can be transferred", "transfer_state")
    if actor.role != "lead" and handoff.mentor_id != actor.id:
        raise HandoffError("not your conversation", "not_yours")
    contact = await lock_contact(session, handoff.contact_id)
    values: dict[str, Any]
    target: Mentor | None = None
    if to_mentor_id is None:
        # the mentor who gives it back is not offered it again in this round
        values = {"state": "waiting", "mentor_id": None, "claimed_at": None, "last_alert_at": None,
                  "offered_mentor_id": None, "offered_at": None, "offered_ids": [handoff.mentor_id]}
        contact.mode = "waiting"
    else:
        target = await session.get(Mentor, to_mentor_id)
        if target is None or not target.active:
            raise HandoffError("unknown mentor", "unknown_mentor")
        if target.role != "lead" and handoff.language not in mentor_languages(target):
            raise HandoffError("that mentor does not speak the learner's language", "mentor_language")
        values = {"mentor_id": target.id}
    result = await session.execute(
        update(Handoff)
        .where(Handoff.id == handoff.id, Handoff.state == "with_mentor", Handoff.mentor_id == handoff.mentor_id)
        .values(last_activity_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise HandoffError("the conversation changed meanwhile", "changed")
    await session.refresh(handoff)
    audit(session, services.settings, actor=mentor_actor(actor.id), action="handoff.transfer", contact_key=contact.key,
          detail={"handoff_id": handoff.id, "to_mentor_id": to_mentor_id})
    publish_after_commit(services, session, console_event("handoff_transferred", handoff, everyone=False))
    await group_posts.card_changed(services, session, handoff)
    if target is None:
        from bot.mentoring.assignment import offer

        # the learner hears that someone else takes over (in their language), and the queue gets it back
        told = services.catalogue.render("handoff_transferred_to_queue", normalise_language(contact.language))
        row = await enqueue(session, contact, told, origin="system")
        deliver_after_commit(services, session, [row.id])
        await group_posts.notice(services, session, handoff, "group_transferred_queue", mentor=mentor_name(actor))
        await offer(services, session, handoff)
    else:
        await group_posts.notice(services, session, handoff, "group_transferred_to", mention=[target],
                                 silent=False, mentor=mentor_name(actor), to=mentor_name(target))
    return handoff


async def tell_rasa_resumed(services: Services, contact_key: str) -> None:
    """Tell Rasa's tracker the human part is over so the dialogue resumes cleanly; an outage never blocks."""
    if services.rasa is None:
        return
    events: list[dict[str, Any]] = [
        {"event": "active_loop", "name": None},
        {"event": "action", "name": "action_listen"},
    ]
    try:
        await services.rasa.append_events(contact_key, events)
    except Exception:  # (Rasa being down must not keep a learner stuck with a mentor)
        log.warning("could not tell Rasa that a hand-off ended", exc_info=True)


