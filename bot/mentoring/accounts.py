"""Mentor accounts: argon2 password hashes, creation, lookup, deactivation, and ending their console
sessions (a password change or deactivation ends them all)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels.base import display_name as clean_display_name
from bot.runtime.settings import LANGUAGES
from bot.storage.db import utcnow
from bot.storage.models import ConsoleSession, Mentor

ROLES: frozenset[str] = frozenset({"mentor", "lead"})
MIN_PASSWORD_LEN = 10
_hasher = PasswordHasher()
# verified against when the e-mail is unknown, so a wrong e-mail costs as long as a wrong password
_DUMMY_HASH = _hasher.hash("sanad-no-such-mentor")


class AccountError(ValueError):
    """Bad input for a mentor account (clear message for the operator)."""


def parse_languages(raw: str) -> str:
    """`ar, EN` -> `ar,en`; every code must be one of the five catalogue languages."""
    codes = [part.strip().lower() for part in raw.split(",") if part.strip()]
    if not codes:
        raise AccountError("give at least one language, e.g. --languages ar,en")
    unknown = [c for c in codes if c not in LANGUAGES]
    if unknown:
        raise AccountError(f"unknown language(s) {', '.join(unknown)}; use {', '.join(LANGUAGES)}")
    return ",".join(dict.fromkeys(codes))


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LEN:
        raise AccountError(f"the password needs at least {MIN_PASSWORD_LEN} characters")
    return _hasher.hash(password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Check a password off the event loop (argon2 is deliberately slow)."""
    return await asyncio.to_thread(_verify, stored or _DUMMY_HASH, password) and stored is not None


async def find_by_email(session: AsyncSession, email: str) -> Mentor | None:
    stmt = select(Mentor).where(func.lower(Mentor.email) == email.strip().lower())
    return (await session.execute(stmt)).scalars().first()


async def add_mentor(
    session: AsyncSession,
    email: str,
    password: str,
    languages: str,
    role: str = "mentor",
    display_name: str | None = None,
    *,
    telegram_user_id: int | None = None,
    capacity: int | None = None,
) -> Mentor:
    """Create a mentor, or update the password/languages/role of an existing e-mail; `telegram_user_id`
    links their Telegram account (the mentor group), `capacity` caps the conversations offered to them."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise AccountError("give a valid e-mail address")
    if role not in ROLES:
        raise AccountError("role must be mentor or lead")
    if capacity is not None and not 0 <= capacity <= 100:
        raise AccountError("capacity must be between 0 and 100")
    if telegram_user_id is not None and telegram_user_id <= 0:
        raise AccountError("a Telegram user id is a positive number (a person, not a group)")
    langs = parse_languages(languages)
    password_hash = await asyncio.to_thread(hash_password, password)
    name = clean_display_name(display_name)
    mentor = await find_by_email(session, email)
    if mentor is None:
        mentor = Mentor(email=email, password_hash=password_hash, languages=langs, role=role,
                        display_name=name or email.split("@", 1)[0], on_duty=True, active=True,
                        capacity=5 if capacity is None else capacity)
        session.add(mentor)
    else:
        mentor.password_hash = password_hash
        mentor.languages = langs
        mentor.role = role
        mentor.active = True
        if name:
            mentor.display_name = name
        # a new password ends every session opened with the old one
        await revoke_all_sessions(session, mentor.id)
    if capacity is not None:
        mentor.capacity = capacity
    await session.flush()
    if telegram_user_id is not None:
        from bot.mentoring.group.linking import set_telegram_account

        await set_telegram_account(session, mentor, telegram_user_id)
    return mentor


async def _existing(session: AsyncSession, email: str) -> Mentor:
    mentor = await find_by_email(session, email)
    if mentor is None:
        raise AccountError(f"no mentor with the e-mail {email.strip().lower()}")
    return mentor


async def deactivate_mentor(session: AsyncSession, email: str) -> Mentor:
    """Close a mentor's account: no login, and every open console session ends now."""
    mentor = await _existing(session, email)
    mentor.active = False
    mentor.on_duty = False
    await revoke_all_sessions(session, mentor.id)
    await session.flush()
    return mentor


async def log_out_everywhere(session: AsyncSession, email: str) -> int:
    """End every console session of a mentor (a lost phone); returns how many were open."""
    return await revoke_all_sessions(session, (await _existing(session, email)).id)


async def revoke_all_sessions(session: AsyncSession, mentor_id: int) -> int:
    """End every console session of a mentor, in the caller's transaction; returns how many were live."""
    result = await session.execute(
        update(ConsoleSession).where(ConsoleSession.mentor_id == mentor_id, ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)
