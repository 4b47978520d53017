"""The audit log of mentors' work: who read or wrote to whose conversation, never what was said."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.models import AuditEntry


def subject_ref(settings: Settings, contact_key: str) -> str:
    """Pseudonymous reference of a contact: HMAC-SHA256 of its key (64 hex chars).

    Keyed, so a phone number cannot be recovered by hashing candidate numbers.
    """
    return hmac.new(settings.secret_key.encode(), contact_key.encode(), hashlib.sha256).hexdigest()


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
