"""The audit log: who read or changed whose data, never what was said or who the learner is.

The one writer of `audit_log` (mentors' work in the console, learners' and admins' requests,
privacy tools); erasure re-keys and scrubs these entries (bot/privacy/erasure.py)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from bot.privacy.logs import SENSITIVE_EXTRA_FIELDS, contact_ref
from bot.storage.models import AuditEntry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.runtime.settings import Settings

SUBJECT_REF_LENGTH = 16


def subject_ref(settings: Settings, contact_key_or_learner_id: str) -> str:
    """The pseudonymous `audit_log.subject_ref` of a contact key (or `learner:<id>`)."""
    return contact_ref(contact_key_or_learner_id, settings.secret_key, length=SUBJECT_REF_LENGTH)


def erased_ref() -> str:
    """A fresh reference for the entries of an erased subject: still grouped, no longer linkable."""
    return "erased_" + secrets.token_hex(8)


def clean_detail(detail: dict[str, Any] | None, needles: set[str] | None = None) -> dict[str, Any] | None:
    """Drop text and name fields, and any value that contains one of `needles` (keys, numbers, names)."""
    if not detail:
        return detail
    lowered = {n.lower() for n in (needles or set()) if n}
    cleaned: dict[str, Any] = {}
    for key, value in detail.items():
        if key.lower() in SENSITIVE_EXTRA_FIELDS:
            continue
        if isinstance(value, dict):
            cleaned[key] = clean_detail(value, needles)
            continue
        flat = str(value).lower()
        if any(n in flat for n in lowered):
            continue
        cleaned[key] = value
    return cleaned


def mentor_actor(mentor_id: int) -> str:
    """The `actor` of an entry written for a mentor."""
    return f"mentor:{mentor_id}"


def audit(
    session: AsyncSession,
    settings: Settings,
    *,
    actor: str,
    action: str,
    contact_key: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one audit entry to the caller's transaction: who did what to whose data (a pseudonymous
    `subject_ref`), and `detail` with ids and counts only (text and name fields are dropped)."""
    entry = AuditEntry(
        actor=actor,
        action=action,
        subject_ref=subject_ref(settings, contact_key) if contact_key else None,
        detail=clean_detail(detail),
    )
    session.add(entry)
    return entry
