"""Staff broadcasts: a text per language (or a catalogue key) to a segment, now or at a set time.

Expansion writes one outbox row per recipient with the idempotency key
`broadcast:{id}:{contact_id}`, in the same transaction that moves the broadcast from
`scheduled` to `sending`: a crash before the commit leaves it scheduled (expanded again,
nothing was written), a crash after leaves every row in place, and the unique key makes a
second expansion a no-op. Status: scheduled -> sending -> done, or cancelled; a broadcast
that cannot be expanded (other than the platform being away, which it waits out) is
`failed` with its `failure_reason`, and the others go ahead. Texts are checked like a
learner's text: NUL and lone surrogates are refused, controls and bidi overrides stripped.

Segments: `language`, `country`, `channel` (contact fields), `course` and `enrolment_status`
(from the platform's `GET /v1/learners/{id}/enrolments`, through the platform client and its
cache), `linked` (`yes` default: learners only; `any`: every contact). Each value may list
alternatives (`language=ar|fa`). Contacts that opted out or stopped are never recipients.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.text import clean_text, storable
from bot.i18n.catalogue import normalise_language
from bot.reminders.dispatch import insert_ignore
from bot.runtime.services import Services
from bot.runtime.settings import DEFAULT_LANGUAGE, LANGUAGES
from bot.security.inputs import BadInput, storable_text, utc_time
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Broadcast, Contact, Outbox

log = logging.getLogger(__name__)

SEGMENT_KEYS = ("language", "country", "channel", "course", "enrolment_status", "linked")
PLATFORM_KEYS = ("course", "enrolment_status")
ENROLMENT_STATUSES = ("pending", "active", "completed", "dropped")
MAX_TEXT_CHARS = 4000
MAX_SEGMENT_VALUES = 100
PLATFORM_CONCURRENCY = 10
INSERT_CHUNK = 5000


class BroadcastError(ValueError):
    """Invalid broadcast input (shown to staff as is)."""


class PlatformNeeded(RuntimeError):
    """The segment needs the platform and the platform did not answer."""


@dataclass(frozen=True)
class Recipient:
    contact_id: int
    channel: str
    language: str


def broadcast_key(broadcast_id: int, contact_id: int) -> str:
    return f"broadcast:{broadcast_id}:{contact_id}"


# --- validation ---------------------------------------------------------------------

def _segment_value(key: str, value: str) -> str:
    try:
        storable_text(value, f"segment {key}")
    except BadInput as exc:
        raise BroadcastError(str(exc)) from exc
    value = value.strip()
    if len(value) > 128 or any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise BroadcastError(f"segment {key!r} has a value that is too long or holds control characters")
    return value


def parse_segment(raw: Any) -> dict[str, list[str]]:
    """`{"language": "ar", "channel": ["telegram"]}` or `"language=ar|fa,channel=telegram"` -> lists."""
    if raw is None or raw == "" or raw == {}:
        return {}
    items: list[tuple[str, Any]]
    if isinstance(raw, str):
        items = []
        for part in (p.strip() for p in raw.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            if not sep or not value.strip():
                raise BroadcastError(f"segment part {part!r} must look like key=value")
            items.append((key.strip(), value.split("|")))
    elif isinstance(raw, dict):
        items = list(raw.items())
    else:
        raise BroadcastError("segment must be an object or key=value,… text")
    segment: dict[str, list[str]] = {}
    for key, value in items:
        if key not in SEGMENT_KEYS:
            raise BroadcastError(f"unknown segment key {key!r}; use {', '.join(SEGMENT_KEYS)}")
        values = value if isinstance(value, list) else [value]
        if len(values) > MAX_SEGMENT_VALUES or any(not isinstance(v, str | int) or isinstance(v, bool) for v in values):
            raise BroadcastError(f"segment {key!r} takes up to {MAX_SEGMENT_VALUES} plain values")
        cleaned = [_segment_value(key, str(v)) for v in values if str(v).strip()]
        if not cleaned:
            raise BroadcastError(f"segment {key!r} needs a value")
        if key == "language":
            bad = [v for v in cleaned if v not in LANGUAGES]
            if bad:
                raise BroadcastError(f"unknown language {bad[0]!r}; use {', '.join(LANGUAGES)}")
        if key == "enrolment_status":
            bad = [v for v in cleaned if v not in ENROLMENT_STATUSES]
            if bad:
                raise BroadcastError(f"unknown enrolment status {bad[0]!r}; use {', '.join(ENROLMENT_STATUSES)}")
        if key == "linked" and (len(cleaned) != 1 or cleaned[0] not in ("yes", "no", "any")):
            raise BroadcastError("linked must be yes, no or any")
        if key == "country":
            cleaned = [v.upper() for v in cleaned]
        segment[key] = cleaned
    return segment


def validate_texts(texts: Any, catalogue_key: Any, services: Services) -> tuple[dict[str, str] | None, str | None]:
    if texts and catalogue_key:
        raise BroadcastError("give texts or a catalogue key, not both")
    if catalogue_key:
        if not isinstance(catalogue_key, str) or not services.catalogue.has(catalogue_key):
            raise BroadcastError(f"unknown catalogue key {catalogue_key!r}")
        return None, catalogue_key
    if not isinstance(texts, dict) or not texts:
        raise BroadcastError("texts must map a language (en, ar, fa, fr, de) to its text")
    cleaned: dict[str, str] = {}
    for lang, text in texts.items():
        if lang not in LANGUAGES:
            raise BroadcastError(f"unknown language {lang!r}; use {', '.join(LANGUAGES)}")
        if not isinstance(text, str) or not text.strip():
            raise BroadcastError(f"text for {lang} is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise BroadcastError(f"text for {lang} is longer than {MAX_TEXT_CHARS} characters")
        try:
            # what no database or provider takes is refused; the rest is cleaned like a learner's text
            storable_text(text, f"text for {lang}")
        except BadInput as exc:
            raise BroadcastError(str(exc)) from exc
        cleaned[lang], _ = clean_text(text)
        if not cleaned[lang]:
            raise BroadcastError(f"text for {lang} is empty")
    return cleaned, None


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 with an offset (a time without one is ambiguous across learners' zones)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BroadcastError("send_at must be an ISO 8601 string")
    if len(value) > 64:
        raise BroadcastError("send_at is not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BroadcastError(f"send_at {value[:64]!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise BroadcastError("send_at needs a UTC offset, e.g. 2026-03-01T09:00:00+00:00")
    try:
        return utc_time(moment, "send_at")
    except BadInput as exc:
        raise BroadcastError(str(exc)) from exc


# --- recipients -----------------------------------------------------------------------

async def recipients(services: Services, segment: dict[str, list[str]]) -> list[Recipient]:
    """Every contact in the segment that may receive a broadcast."""
    query = select(Contact.id, Contact.channel, Contact.language, Contact.learner_id).where(
        Contact.stopped.is_(False), Contact.reminders_opt_out.is_(False)
    )
    linked = segment.get("linked", ["yes"])[0]
    if linked == "yes" or any(k in segment for k in PLATFORM_KEYS):
        query = query.where(Contact.learner_id.is_not(None))
    elif linked == "no":
        query = query.where(Contact.learner_id.is_(None))
    if "channel" in segment:
        query = query.where(Contact.channel.in_(segment["channel"]))
    if "country" in segment:
        query = query.where(func.upper(Contact.country).in_(segment["country"]))
    if "language" in segment:
        langs = segment["language"]
        if DEFAULT_LANGUAGE in langs:
            query = query.where(Contact.language.in_(langs) | Contact.language.is_(None))
        else:
            query = query.where(Contact.language.in_(langs))
    async with services.db.session() as session:
        rows = (await session.execute(query.order_by(Contact.id))).all()
    found = [(Recipient(r[0], r[1], normalise_language(r[2])), r[3]) for r in rows]
    if any(k in segment for k in PLATFORM_KEYS):
        learners = sorted({str(learner) for _, learner in found if learner})
        matching = await _learners_matching(services, learners, segment)
        found = [(rec, learner) for rec, learner in found if learner in matching]
    return [rec for rec, _ in found]


async def _learners_matching(services: Services, learners: list[str], segment: dict[str, list[str]]) -> set[str]:
    """Learners with an enrolment in one of the courses (and/or with one of the statuses)."""
    from integrations.platform import LearnerNotFound, PlatformError

    client = services.platform()
    courses = set(segment.get("course", []))
    statuses = set(segment.get("enrolment_status", []))
    gate = asyncio.Semaphore(PLATFORM_CONCURRENCY)
    matching: set[str] = set()

    async def check(learner_id: str) -> None:
        async with gate:
            try:
                enrolments = await client.enrolments(learner_id)
            except LearnerNotFound:
                return
            except PlatformError as exc:
                raise PlatformNeeded("the platform did not answer; try again later") from exc
        for enrolment in enrolments:
            if courses and enrolment.course_id not in courses:
                continue
            if statuses and enrolment.status not in statuses:
                continue
            matching.add(learner_id)
            return

    await asyncio.gather(*(check(learner) for learner in learners))
    return matching


async def preview(services: Services, segment: dict[str, list[str]]) -> dict[str, Any]:
    """How many contacts a segment reaches, by language and by channel."""
    found = await recipients(services, segment)
    by_language: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    for rec in found:
        by_language[rec.language] = by_language.get(rec.language, 0) + 1
        by_channel[rec.channel] = by_channel.get(rec.channel, 0) + 1
    return {"recipients": len(found), "by_language": by_language, "by_channel": by_channel, "segment": segment}


# --- lifecycle ------------------------------------------------------------------------

async def create_broadcast(
    services: Services,
    *,
    texts: Any = None,
    catalogue_key: Any = None,
    segment: Any = None,
    send_at: Any = None,
    created_by: str = "admin",
) -> Broadcast:
    """Validate and store a broadcast (expanded by the worker at `send_at`, or right away)."""
    clean_texts, key = validate_texts(texts, catalogue_key, services)
    parsed_segment = parse_segment(segment)
    author = _segment_value("created_by", str(created_by))[:64] or "admin"
    when = send_at if isinstance(send_at, datetime) else parse_time(send_at)
    async with services.db.session() as session:
        row = Broadcast(
            created_by=author,
            texts=clean_texts,
            catalogue_key=key,
            segment=parsed_segment,
            send_at=as_utc(when) if when else None,
            status="scheduled",
            recipients=0,
        )
        session.add(row)
        await session.flush()
    log.info("broadcast %s created by %s", row.id, row.created_by)
    return row


def text_for(broadcast: Broadcast, language: str, services: Services) -> str:
    """The broadcast in the learner's language; English, then any language, when missing."""
    if broadcast.catalogue_key:
        return services.catalogue.text(broadcast.catalogue_key, language)
    texts = broadcast.texts or {}
    return texts.get(language) or texts.get(DEFAULT_LANGUAGE) or next(iter(texts.values()), "")


async def expand_broadcast(services: Services, broadcast_id: int) -> int:
    """Write the outbox rows of one scheduled broadcast; returns the recipients (0 if not scheduled)."""
    async with services.db.session() as session:
        broadcast = await session.get(Broadcast, broadcast_id)
        if broadcast is None or broadcast.status != "scheduled":
            return 0
        segment = dict(broadcast.segment or {})
    found = await recipients(services, segment)
    now = utcnow()
    async with services.db.session() as session:
        claimed = await session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast_id, Broadcast.status == "scheduled")
            .values(status="sending", started_at=now, recipients=len(found))
            .execution_options(synchronize_session=False)
        )
        if int(getattr(claimed, "rowcount", 0) or 0) != 1:
            return 0  # another worker expanded it, or it was cancelled meanwhile
        texts: dict[str, str] = {}
        rows: list[dict[str, Any]] = []
        for rec in found:
            if rec.language not in texts:
                texts[rec.language] = text_for(broadcast, rec.language, services)
            text = texts[rec.language]
            rows.append(
                {
                    "contact_id": rec.contact_id,
                    "channel": rec.channel,
                    "origin": "broadcast",
                    "text": text,
                    "payload": {"template_params": {"text": text}},
                    "idempotency_key": broadcast_key(broadcast_id, rec.contact_id),
                    "broadcast_id": broadcast_id,
                    "status": "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
        for start in range(0, len(rows), INSERT_CHUNK):
            await session.execute(insert_ignore(not services.db.is_sqlite), rows[start : start + INSERT_CHUNK])
    log.info("broadcast %s expanded to %d recipients", broadcast_id, len(found))
    return len(found)


async def expand_due_broadcasts(services: Services, now: datetime | None = None) -> int:
    """Expand every scheduled broadcast whose time has come; returns how many were expanded."""
    now = now or utcnow()
    async with services.db.session() as session:
        due = (
            await session.execute(
                select(Broadcast.id)
                .where(Broadcast.status == "scheduled", (Broadcast.send_at.is_(None)) | (Broadcast.send_at <= now))
                .order_by(Broadcast.id)
            )
        ).scalars().all()
    expanded = 0
    for broadcast_id in due:
        try:
            await expand_broadcast(services, broadcast_id)
            expanded += 1
        except PlatformNeeded:
            log.warning("broadcast %s waits for the platform to expand its segment", broadcast_id)
        except Exception as exc:  # noqa: BLE001  (one broadcast that cannot expand must not hold up the others)
            if _transient(exc):
                log.warning("broadcast %s not expanded this round: %s", broadcast_id, type(exc).__name__)
                continue
            await _mark_failed(services, broadcast_id, exc)
    return expanded


def _transient(exc: BaseException) -> bool:
    """The database or the network went away for a moment: try again next round, do not fail it."""
    if isinstance(exc, OSError | TimeoutError | OperationalError | DisconnectionError):
        return True
    return bool(getattr(exc, "connection_invalidated", False))


def failure_reason(exc: BaseException) -> str:
    """Why an expansion failed, for staff: the error's kind and first line (no statement, no parameters)."""
    cause = getattr(exc, "orig", None) or exc
    cause = cause.__cause__ or cause  # the driver's own error under SQLAlchemy's adapter
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"could not expand: {type(cause).__name__}: {first_line}"[:300]


async def _mark_failed(services: Services, broadcast_id: int, exc: BaseException) -> None:
    """Mark a scheduled broadcast failed with its reason (the worker never tries it again)."""
    reason = failure_reason(exc)
    log.warning("broadcast %s failed: %s", broadcast_id, reason)
    async with services.db.session() as session:
        await session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast_id, Broadcast.status == "scheduled")
            .values(status="failed", failure_reason=storable(reason), finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def finish_broadcasts(services: Services) -> int:
    """Broadcasts with nothing left queued or sending are done."""
    async with services.db.session() as session:
        pending = select(Outbox.id).where(
            Outbox.broadcast_id == Broadcast.id, Outbox.status.in_(("queued", "sending"))
        ).exists()
        result = await session.execute(
            update(Broadcast)
            .where(Broadcast.status == "sending", ~pending)
            .values(status="done", finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def cancel_broadcast(services: Services, broadcast_id: int) -> dict[str, Any] | None:
    """Stop a broadcast: nothing not yet sent goes out (a send already in flight may still land)."""
    async with services.db.session() as session:
        broadcast = await session.get(Broadcast, broadcast_id)
        if broadcast is None:
            return None
        if broadcast.status in ("scheduled", "sending"):
            broadcast.status = "cancelled"
            broadcast.finished_at = utcnow()
            await session.execute(
                update(Outbox)
                .where(Outbox.broadcast_id == broadcast_id, Outbox.status == "queued")
                .values(status="cancelled", last_error="broadcast_cancelled")
                .execution_options(synchronize_session=False)
            )
    log.info("broadcast %s cancelled", broadcast_id)
    return await progress(services, broadcast_id)


async def _counts(session: AsyncSession, broadcast_id: int) -> dict[str, int]:
    rows = (
        await session.execute(
            select(Outbox.status, Outbox.delivery_status, Outbox.last_error, func.count())
            .where(Outbox.broadcast_id == broadcast_id)
            .group_by(Outbox.status, Outbox.delivery_status, Outbox.last_error)
        )
    ).all()
    counts = {"queued": 0, "sent": 0, "delivered": 0, "read": 0, "failed": 0, "stopped": 0, "cancelled": 0}
    for status, delivery, error, n in rows:
        n = int(n)
        if error in ("contact_stopped", "opted_out"):
            counts["stopped"] += n
        elif status in ("queued", "sending"):
            counts["queued"] += n
        elif status == "cancelled":
            counts["cancelled"] += n
        elif status == "failed" or delivery in ("failed", "undelivered"):
            counts["failed"] += n
        elif status == "sent":
            counts["sent"] += n
            if delivery in ("delivered", "read"):
                counts["delivered"] += n
            if delivery == "read":
                counts["read"] += n
    return counts


def describe(broadcast: Broadcast) -> dict[str, Any]:
    return {
        "id": broadcast.id,
        "status": broadcast.status,
        "created_by": broadcast.created_by,
        "languages": sorted((broadcast.texts or {}).keys()),
        "catalogue_key": broadcast.catalogue_key,
        "segment": broadcast.segment or {},
        "send_at": as_utc(broadcast.send_at).isoformat() if broadcast.send_at else None,
        "created_at": as_utc(broadcast.created_at).isoformat() if broadcast.created_at else None,
        "started_at": as_utc(broadcast.started_at).isoformat() if broadcast.started_at else None,
        "finished_at": as_utc(broadcast.finished_at).isoformat() if broadcast.finished_at else None,
        "recipients": broadcast.recipients,
        "failure_reason": broadcast.failure_reason,
    }


async def progress(services: Services, broadcast_id: int) -> dict[str, Any] | None:
    """The broadcast and its counts: queued, sent (delivered and read included), delivered (read
    included), read, failed, stopped (opted out or blocked), cancelled."""
    async with services.db.session() as session:
        broadcast = await session.get(Broadcast, broadcast_id)
        if broadcast is None:
            return None
        return {**describe(broadcast), **(await _counts(session, broadcast_id))}


async def list_broadcasts(services: Services, limit: int = 50) -> list[dict[str, Any]]:
    async with services.db.session() as session:
        rows = (
            await session.execute(select(Broadcast).order_by(Broadcast.id.desc()).limit(max(1, min(limit, 500))))
        ).scalars().all()
        return [describe(b) for b in rows]
