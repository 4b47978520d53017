"""The audit log of mentors' work: who read or wrote to whose conversation, never what was said."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.runtime.settings import Settings
from bot.storage.models import AuditEntry


def subject_ref(settings: Settings, contact_key: str) -> str:
    """Pseudonymous reference of a contact: the one privacy's audit uses, so erasure finds these too."""
    from bot.privacy.audit import subject_ref as privacy_subject_ref

    return privacy_subject_ref(settings, contact_key)


def mentor_actor(mentor_id: int) -> str:
    return f"mentor:{mentor_id}"


def audit(
    session: AsyncSession,
    settings: Settings,
    *,
    actor: str,
    action: str,
    contact_key: str | None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one audit entry to the caller's transaction (`detail` holds ids, never text)."""
    entry = AuditEntry(
        actor=actor,
        action=action,
        subject_ref=subject_ref(settings, contact_key) if contact_key else None,
        detail=detail,
    )
    session.add(entry)
    return entry
