"""Retention: the worker deletes messages and transcripts older than `settings.retention_days`.

The analytics roll up the days concerned first (bot/analytics/rollup.py), so counts, intents
and durations outlive the rows. Inbound messages, finished outbox rows (sent, failed, cancelled,
still held), mentor notes,
resolved hand-offs, finished reminders and old Rasa events (of finished
sessions) go. Audit entries stay (who did what); their details are stripped of
any text field. Deletes run in batches so the tables are never locked for long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import and_, select

from bot.analytics.rollup import roll_up
from bot.privacy import tracker_store
from bot.privacy.logs import SENSITIVE_EXTRA_FIELDS
from bot.storage.db import utcnow
from bot.storage.models import AuditEntry, Handoff, InboundMessage, MentorNote, Outbox, Reminder

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

BATCH_SIZE = 2000
# a mentor's text still held for WhatsApp's window after the retention period goes too
FINISHED_OUTBOX = ("sent", "failed", "cancelled", "held")
FINISHED_REMINDERS = ("sent", "cancelled", "expired")


@dataclass
class RetentionReport:
    """How many rows of each kind one run deleted."""

    cutoff: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


async def _delete_batched(services: Services, model: Any, where: Any) -> int:
    total = 0
    while True:
        async with services.db.session() as session:
            ids = list((await session.execute(select(model.id).where(where).limit(BATCH_SIZE))).scalars())
            if not ids:
                return total
            await session.execute(
                sa.delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
            )
            total += len(ids)
        if len(ids) < BATCH_SIZE:
            return total


async def _strip_audit_text(services: Services, cutoff: datetime) -> int:
    """Old audit details keep ids and counts; any text field that slipped in goes."""
    changed = 0
    async with services.db.session() as session:
        entries = (await session.execute(
            select(AuditEntry).where(AuditEntry.at < cutoff, AuditEntry.detail.is_not(None))
        )).scalars()
        for entry in entries:
            detail = entry.detail or {}
            kept = {k: v for k, v in detail.items() if k.lower() not in SENSITIVE_EXTRA_FIELDS}
            if kept != detail:
                entry.detail = kept
                changed += 1
    return changed


async def run_retention(services: Services, now: datetime | None = None) -> RetentionReport:
    """Delete everything older than the retention period; returns the counts."""
    days = services.settings.retention_days
    if days <= 0:
        raise ValueError("retention_days must be positive")
    cutoff = (now or utcnow()) - timedelta(days=days)
    report = RetentionReport(cutoff=cutoff)
    # the analytics keep their counts: every day about to lose raw rows is rolled up first
    await roll_up(services, now=now, before=cutoff.date() + timedelta(days=1), refresh=False, max_days=100_000)
    plan: list[tuple[str, Any, Any]] = [
        ("reminders", Reminder, and_(Reminder.send_at < cutoff, Reminder.status.in_(FINISHED_REMINDERS))),
        ("outbox", Outbox, and_(Outbox.created_at < cutoff, Outbox.status.in_(FINISHED_OUTBOX))),
        ("inbound_messages", InboundMessage, InboundMessage.created_at < cutoff),
        ("mentor_notes", MentorNote, MentorNote.created_at < cutoff),
        ("handoffs", Handoff, and_(Handoff.state == "resolved", Handoff.resolved_at < cutoff)),
    ]
    for name, model, where in plan:
        report.deleted[name] = await _delete_batched(services, model, where)
    report.deleted["audit_details_stripped"] = await _strip_audit_text(services, cutoff)
    try:
        report.deleted["rasa_events"] = await tracker_store.delete_events_before(
            services.settings, cutoff.timestamp()
        )
    except Exception as exc:  # noqa: BLE001  (the next run tries again)
        report.errors.append(f"rasa tracker store: {type(exc).__name__}")
        log.warning("retention could not reach the Rasa tracker store: %s", type(exc).__name__)
    log.info("retention (%d days): %s", days, report.deleted)
    return report


async def job(services: Services) -> None:
    """Worker job: run the retention once (idempotent; daily is plenty)."""
    await run_retention(services)
