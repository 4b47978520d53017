"""Turns due reminders into outbox rows, rendered in the contact's language and time zone.

The outbox row takes the reminder's idempotency key, so two workers dispatching the same
reminder (or one dispatching it again after a crash) insert one row: `ON CONFLICT DO NOTHING`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.i18n.catalogue import Catalogue, day_phrase, local_time, normalise_language
from bot.outbox.queue import rendered_payload
from bot.reminders.quiet import quiet_end
from bot.runtime.services import Services
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, Outbox, Reminder

log = logging.getLogger(__name__)

DISPATCH_BATCH = 2000


@dataclass
class DispatchStats:
    queued: int = 0
    deferred_quiet: int = 0
    expired: int = 0
    cancelled: int = 0


def render_reminder(
    catalogue: Catalogue, data: dict[str, Any], due_at: datetime, now: datetime, language: str, tz: str | None
) -> tuple[str, dict[str, str]]:
    """The reminder text and the parameters a WhatsApp template may use."""
    kind = str(data.get("kind") or "deadline")
    key = f"reminder_{kind}" if catalogue.has(f"reminder_{kind}") else "reminder_deadline"
    params = {
        "title": str(data.get("title") or ""),
        "course": str(data.get("course_title") or ""),
        "when": day_phrase(due_at, now, tz, language),
        "time": local_time(due_at, tz, language),
    }
    text = catalogue.render(key, language, **params).text
    if data.get("extended"):
        # the date is a mentor's extension (bot/mentoring/extensions.py): say so
        text = f"{text}\n{catalogue.text('reminder_extended_note', language)}"
    return text, {**params, "text": text}


def insert_ignore(postgres: bool) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING for the outbox, per dialect."""
    stmt = (pg_insert if postgres else sqlite_insert)(Outbox)
    return stmt.on_conflict_do_nothing(index_elements=[Outbox.idempotency_key])


async def dispatch_due_reminders(services: Services, now: datetime | None = None, limit: int = 10_000) -> DispatchStats:
    """Queue every planned reminder whose time has come (quiet hours and grace period respected)."""
    now = now or utcnow()
    settings = services.settings
    grace = timedelta(seconds=settings.reminder_grace_s)
    stats = DispatchStats()
    postgres = not services.db.is_sqlite
    done = 0
    while done < limit:
        async with services.db.session() as session:
            rows = (
                await session.execute(
                    select(
                        Reminder.id, Reminder.idempotency_key, Reminder.send_at, Reminder.due_at, Reminder.data,
                        Contact.id, Contact.channel, Contact.language, Contact.timezone,
                        Contact.stopped, Contact.reminders_opt_out, Contact.learner_id, Reminder.learner_id,
                    )
                    .join(Contact, Contact.id == Reminder.contact_id)
                    .where(Reminder.status == "planned", Reminder.send_at <= now)
                    .order_by(Reminder.send_at, Reminder.id)
                    .limit(min(DISPATCH_BATCH, limit - done))
                )
            ).all()
            if not rows:
                break
            done += len(rows)
            outbox_rows: list[dict[str, Any]] = []
            status_updates: list[dict[str, Any]] = []
            for (rid, key, send_at, due_at, data, contact_id, channel, language, tz,
                 stopped, opted_out, contact_learner, learner) in rows:
                send_at, due_at = as_utc(send_at), as_utc(due_at)
                if stopped or opted_out or contact_learner != learner:
                    status_updates.append({"rid": rid, "st": "cancelled"})
                    stats.cancelled += 1
                    continue
                if now > send_at + grace or now >= due_at:
                    status_updates.append({"rid": rid, "st": "expired"})
                    stats.expired += 1
                    continue
                not_before = now
                night_end = quiet_end(now, tz, settings.quiet_hours_start, settings.quiet_hours_end)
                if night_end is not None:
                    # found at night (a worker was down): wait for the morning if still within grace
                    if night_end > send_at + grace or night_end >= due_at:
                        status_updates.append({"rid": rid, "st": "expired"})
                        stats.expired += 1
                        continue
                    not_before = night_end
                    stats.deferred_quiet += 1
                lang = normalise_language(language)
                text, params = render_reminder(services.catalogue, data or {}, due_at, now, lang, tz)
                outbox_rows.append(
                    {
                        "contact_id": contact_id,
                        "channel": channel,
                        "origin": "reminder",
                        "text": text,
                        "payload": rendered_payload_for(params),
                        "idempotency_key": key,
                        "status": "queued",
                        "attempts": 0,
                        "next_attempt_at": not_before,
                        "created_at": now,
                    }
                )
                status_updates.append({"rid": rid, "st": "queued"})
                stats.queued += 1
            if outbox_rows:
                await session.execute(insert_ignore(postgres), outbox_rows)
            if status_updates:
                table: Any = Reminder.__table__
                await session.execute(
                    update(table)
                    .where(table.c.id == bindparam("rid"))
                    .values(status=bindparam("st"), updated_at=now),
                    status_updates,
                )
            if outbox_rows:
                # link each reminder to its outbox row (which may predate this pass after a crash)
                await session.execute(
                    update(Reminder)
                    .where(Reminder.status == "queued", Reminder.outbox_id.is_(None))
                    .values(
                        outbox_id=select(Outbox.id)
                        .where(Outbox.idempotency_key == Reminder.idempotency_key)
                        .scalar_subquery()
                    )
                    .execution_options(synchronize_session=False)
                )
    if stats.queued or stats.expired:
        log.info("reminders dispatched=%d deferred=%d expired=%d cancelled=%d",
                 stats.queued, stats.deferred_quiet, stats.expired, stats.cancelled)
    return stats


def rendered_payload_for(params: dict[str, str]) -> dict[str, Any] | None:
    """Outbox payload of a reminder: the template parameters for WhatsApp outside the 24-hour window."""
    from bot.i18n.catalogue import Rendered

    return rendered_payload(Rendered(""), {"template_params": params})
