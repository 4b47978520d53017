"""Linking a mentor's Telegram account, so that what they do in the mentor group counts.

The console makes a one-time code (valid `CODE_TTL`, only its hash is stored); the mentor
sends `/mentor CODE` to the bot in a private chat (or opens the deep link
`t.me/<bot>?start=mentor-CODE`). An operator can also set the account directly with
`sanad mentor add … --telegram-user-id ID`. One Telegram account belongs to one mentor.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.privacy.audit import audit, mentor_actor
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Mentor

if TYPE_CHECKING:
    from bot.runtime.settings import Settings

CODE_TTL = timedelta(minutes=15)
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a screen and typed on a phone
CODE_LENGTH = 8


def code_hash(settings: Settings, code: str) -> str:
    normalised = "".join(ch for ch in code.upper() if ch.isalnum())
    return hmac.new(settings.secret_key.encode(), f"mentor-link:{normalised}".encode(), hashlib.sha256).hexdigest()


async def new_link_code(session: AsyncSession, settings: Settings, mentor: Mentor) -> str:
    """A fresh code for `mentor` (an earlier one stops working)."""
    code = "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))
    row = await session.get(Mentor, mentor.id)
    if row is None:
        raise ValueError("unknown mentor")
    row.telegram_link_code_hash = code_hash(settings, code)
    row.telegram_link_expires_at = utcnow() + CODE_TTL
    audit(session, settings, actor=mentor_actor(mentor.id), action="mentor.telegram_code", contact_key=None)
    return code


async def redeem(session: AsyncSession, settings: Settings, code: str, telegram_user_id: int) -> Mentor | None:
    """Link the Telegram account to the mentor whose code this is; None for a wrong or expired code."""
    found = (await session.execute(
        select(Mentor).where(Mentor.telegram_link_code_hash == code_hash(settings, code)).with_for_update()
    )).scalars().first()
    if found is None or found.telegram_link_expires_at is None or as_utc(found.telegram_link_expires_at) < utcnow():
        return None
    await set_telegram_account(session, found, telegram_user_id)
    audit(session, settings, actor=mentor_actor(found.id), action="mentor.telegram_linked", contact_key=None)
    return found


async def set_telegram_account(session: AsyncSession, mentor: Mentor, telegram_user_id: int | None) -> None:
    """Give `mentor` this Telegram account (taking it from any other mentor), or unlink with None."""
    if telegram_user_id is not None:
        await session.execute(
            update(Mentor).where(Mentor.telegram_user_id == telegram_user_id, Mentor.id != mentor.id)
            .values(telegram_user_id=None).execution_options(synchronize_session=False))
        await session.flush()
    mentor.telegram_user_id = telegram_user_id
    mentor.telegram_link_code_hash = None
    mentor.telegram_link_expires_at = None
    await session.flush()


async def mentor_by_telegram(session: AsyncSession, telegram_user_id: int | None) -> Mentor | None:
    """The active mentor linked to this Telegram account."""
    if telegram_user_id is None:
        return None
    return (await session.execute(
        select(Mentor).where(Mentor.telegram_user_id == telegram_user_id, Mentor.active.is_(True))
    )).scalars().first()
