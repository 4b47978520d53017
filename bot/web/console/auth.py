"""Console sessions, CSRF tokens and the login throttle.

A session lives on the server (`console_sessions`): the signed cookie carries a random token,
the table its hash, so a session ends for good when a mentor logs out, logs out everywhere,
changes password or is deactivated. Before login the cookie carries only a CSRF token.

Logins are throttled per (account, address) with growing delays: a few wrong passwords cost a
minute, more cost a quarter of an hour, an hour, a day. The account itself is never locked, so
someone guessing from one address cannot keep its mentor out from another. Each address also
has a ceiling over all accounts together (password spraying). Addresses come from
`bot.security.client_address` (X-Forwarded-For only from `FORWARDED_ALLOW_IPS`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import Response

from bot.runtime.settings import Settings
from bot.security.client_address import client_address
from bot.security.throttle import Throttle, pseudonym
from bot.storage.db import utcnow
from bot.storage.models import ConsoleSession, Mentor

if TYPE_CHECKING:
    from bot.runtime.services import Services

COOKIE_NAME = "sanad_console"
SESSION_MAX_AGE_S = 12 * 3600
# wrong passwords for one account from one address: each window full means a longer wait
LOGIN_PER_ACCOUNT_ADDRESS = Throttle.of("console-login", "5/minute;10/15 minutes;20/hour;50/day")
# wrong passwords from one address over every account
LOGIN_PER_ADDRESS = Throttle.of("console-login-address", "30/15 minutes;200/day")


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    if not settings.secret_key:
        raise RuntimeError("SANAD_SECRET_KEY is empty: console sessions cannot be signed")
    return URLSafeTimedSerializer(settings.secret_key, salt="sanad-console-session")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_cookie(request: Request, settings: Settings) -> dict[str, Any]:
    """The verified cookie of this request (empty when missing, forged or expired)."""
    raw = request.cookies.get(COOKIE_NAME)
    if not raw:
        return {}
    try:
        data = _serializer(settings).loads(raw, max_age=SESSION_MAX_AGE_S)
    except BadSignature:
        return {}
    return data if isinstance(data, dict) else {}


def anonymous_cookie() -> dict[str, Any]:
    """What the login page's cookie holds: a CSRF token and no session."""
    return {"c": secrets.token_urlsafe(24)}


def signed_cookie(settings: Settings, data: dict[str, Any]) -> str:
    """The cookie's value for `data` (what `read_cookie` accepts back)."""
    return str(_serializer(settings).dumps(data))


def write_cookie(response: Response, settings: Settings, data: dict[str, Any]) -> None:
    response.set_cookie(
        COOKIE_NAME,
        signed_cookie(settings, data),
        max_age=SESSION_MAX_AGE_S,
        path="/console",
        httponly=True,
        samesite="lax",
        secure=settings.public_base_url.startswith("https://"),
    )


def clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(COOKIE_NAME, path="/console", httponly=True, samesite="lax",
                           secure=settings.public_base_url.startswith("https://"))


def csrf_ok(cookie: dict[str, Any], submitted: str | None) -> bool:
    """The submitted token matches the cookie's (constant-time)."""
    expected = cookie.get("c")
    if not expected or not submitted:
        return False
    return hmac.compare_digest(str(expected).encode(), str(submitted).encode("utf-8", "surrogateescape"))


# --- sessions on the server ------------------------------------------------------

async def open_session(services: Services, mentor_id: int) -> dict[str, Any]:
    """Start a session for a mentor who just logged in; returns the cookie's content (fresh CSRF token)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    async with services.db.session() as session:
        session.add(ConsoleSession(token_hash=_token_hash(token), mentor_id=mentor_id, created_at=now,
                                   expires_at=now + timedelta(seconds=SESSION_MAX_AGE_S)))
    return {"s": token, "c": secrets.token_urlsafe(24)}


async def session_mentor(services: Services, cookie: dict[str, Any]) -> Mentor | None:
    """The active mentor of a live (not revoked, not expired) session, or None."""
    token = cookie.get("s")
    if not isinstance(token, str) or not token:
        return None
    async with services.db.session() as session:
        row = (await session.execute(
            select(Mentor)
            .join(ConsoleSession, ConsoleSession.mentor_id == Mentor.id)
            .where(ConsoleSession.token_hash == _token_hash(token), ConsoleSession.revoked_at.is_(None),
                   ConsoleSession.expires_at > utcnow(), Mentor.active.is_(True))
        )).scalars().first()
    return row


async def revoke_session(services: Services, cookie: dict[str, Any]) -> None:
    """End the session of this cookie (logout)."""
    token = cookie.get("s")
    if not isinstance(token, str) or not token:
        return
    async with services.db.session() as session:
        await session.execute(
            update(ConsoleSession).where(ConsoleSession.token_hash == _token_hash(token),
                                         ConsoleSession.revoked_at.is_(None))
            .values(revoked_at=utcnow()).execution_options(synchronize_session=False))


# --- the login throttle ----------------------------------------------------------

def login_keys(request: Request, settings: Settings, email: str) -> tuple[str, str]:
    """(account-and-address key, address key) of a login attempt: pseudonyms, never the address or e-mail."""
    address = pseudonym(settings.secret_key, "address", client_address(request.scope, settings.forwarded_allow_ips))
    account = pseudonym(settings.secret_key, "account", email.strip().lower())
    return f"{account}:{address}", address


async def login_wait_s(services: Services, keys: tuple[str, str]) -> float:
    """Seconds this account-and-address must wait before the next attempt (0: it may try now)."""
    storage = services.rate_limits
    if await LOGIN_PER_ACCOUNT_ADDRESS.allowed(storage, keys[0]) and await LOGIN_PER_ADDRESS.allowed(storage, keys[1]):
        return 0.0
    waits = [await LOGIN_PER_ACCOUNT_ADDRESS.retry_after_s(storage, keys[0]),
             await LOGIN_PER_ADDRESS.retry_after_s(storage, keys[1])]
    return max(1.0, *waits)


async def login_failed(services: Services, keys: tuple[str, str]) -> None:
    await LOGIN_PER_ACCOUNT_ADDRESS.hit(services.rate_limits, keys[0])
    await LOGIN_PER_ADDRESS.hit(services.rate_limits, keys[1])


async def login_succeeded(services: Services, keys: tuple[str, str]) -> None:
    await LOGIN_PER_ACCOUNT_ADDRESS.clear(services.rate_limits, keys[0])
