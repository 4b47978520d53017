"""Export (GDPR Art. 15): one JSON document of everything Sanad holds about a contact or learner."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from bot.conversation.commands import CommandResult, command
from bot.privacy import tracker_store
from bot.privacy.audit import audit, subject_ref
from bot.privacy.erasure import resolve_subject, subject_refs
from bot.storage.db import as_utc, utcnow
from bot.storage.models import AuditEntry, Contact, Handoff, InboundMessage, LinkToken, MentorNote, Outbox, Reminder

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.runtime.services import Services

EXPORT_FORMAT = "sanad-export/1"
# secrets and internal bookkeeping that say nothing about the learner
_SKIP_COLUMNS = {
    "pin_hash", "pin_flow", "token_hash", "idempotency_key", "claimed_at", "dedup_key", "lease_token", "lease_until",
}


class SubjectNotFound(LookupError):
    """No contact or learner matches the reference."""


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return value


def _row(obj: Any) -> dict[str, Any]:
    return {
        col.key: _value(getattr(obj, col.key))
        for col in obj.__table__.columns
        if col.key not in _SKIP_COLUMNS
    }


async def _rows(session: AsyncSession, model: Any, *where: Any) -> list[dict[str, Any]]:
    result = await session.execute(select(model).where(*where).order_by(model.id))
    return [_row(obj) for obj in result.scalars()]


async def _contact_section(services: Services, session: AsyncSession, contact: Contact) -> dict[str, Any]:
    data = _row(contact)
    data["pin_set"] = contact.pin_hash is not None
    handoffs = await _rows(session, Handoff, Handoff.contact_id == contact.id)
    notes = await _rows(session, MentorNote, MentorNote.contact_id == contact.id)
    return {
        "contact": data,
        "messages_received": await _rows(session, InboundMessage, InboundMessage.contact_id == contact.id),
        "messages_sent": await _rows(session, Outbox, Outbox.contact_id == contact.id),
        "handoffs": handoffs,
        "mentor_notes": notes,
        "reminders": await _rows(session, Reminder, Reminder.contact_id == contact.id),
        "link_tokens_used": await _rows(session, LinkToken, LinkToken.used_by_contact_id == contact.id),
        "rasa_events": await tracker_store.conversation_events(services.settings, contact.key),
    }


async def build_export(services: Services, contact_key_or_learner_id: str | int) -> dict[str, Any]:
    """Everything held about the subject, as one JSON-ready dict; raises SubjectNotFound."""
    async with services.db.session() as session:
        subject = await resolve_subject(session, contact_key_or_learner_id)
        if not subject.found:
            raise SubjectNotFound(str(contact_key_or_learner_id))
        contacts = [await _contact_section(services, session, c) for c in subject.contacts]
        issued: list[dict[str, Any]] = []
        if subject.learner_id:
            issued = await _rows(session, LinkToken, LinkToken.learner_id == subject.learner_id)
        refs = subject_refs(services, subject)
        audit = (
            await _rows(session, AuditEntry, or_(AuditEntry.subject_ref.in_(refs)))
            if refs
            else []
        )
    return {
        "format": EXPORT_FORMAT,
        "exported_at": utcnow().isoformat(),
        "learner_id": subject.learner_id,
        "contacts": contacts,
        "link_tokens_issued": issued,
        "audit": audit,
        "notes": (
            "Messages, hand-offs and notes older than the retention period are deleted automatically. "
            "The learning platform keeps your enrolments, deadlines and credits; ask the programme for those."
        ),
    }


def export_json(data: dict[str, Any]) -> str:
    """The export as readable JSON (UTF-8, Arabic and Farsi kept as they are)."""
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False)


async def write_export(services: Services, contact_key_or_learner_id: str | int, out: Path) -> Path:
    """Write the export to `out` (readable by its owner only)."""
    text = export_json(await build_export(services, contact_key_or_learner_id))
    await asyncio.to_thread(_write_private, out, text)
    return out


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


@command("export")
async def export_command(services: Services, contact: Contact, args: dict[str, Any]) -> CommandResult:
    """The learner asks for their data: audit it and tell the mentors (a mentor sends the export)."""
    async with services.db.session() as session:
        entry = audit(
            session, services.settings, actor="learner", action="export_requested", contact_key=contact.key,
            detail={"contact_id": contact.id},
        )
    entry_id = entry.id  # given at the commit
    await services.coord.publish(
        "console",
        {
            "type": "export_requested",
            "contact_id": contact.id,
            "subject_ref": subject_ref(services.settings, contact.key),
            "language": contact.language or "en",
            "audit_id": entry_id,
        },
    )
    return CommandResult(replies=[services.catalogue.render("export_requested", contact.language or "en")])
