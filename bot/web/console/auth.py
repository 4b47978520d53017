"""Console sessions: a signed cookie (itsdangerous), CSRF tokens and login rate limits."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from bot.runtime.settings import Settings

COOKIE_NAME = "sanad_console"
SESSION_MAX_AGE_S = 12 * 3600
LOGIN_WINDOW_S = 900.0
LOGIN_MAX_PER_IP = 20
LOGIN_MAX_PER_EMAIL = 8


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    if not settings.secret_key:
        raise RuntimeError("SANAD_SECRET_KEY is empty: console sessions cannot be signed")
    return URLSafeTimedSerializer(settings.secret_key, salt="sanad-console-session")


def read_session(request: Request, settings: Settings) -> dict[str, Any]:
    """The verified session of this request (empty when missing, forged or expired)."""
    raw = request.cookies.get(COOKIE_NAME)
    if not raw:
        return {}
    try:
        data = _serializer(settings).loads(raw, max_age=SESSION_MAX_AGE_S)
    except BadSignature:
        return {}
    return data if isinstance(data, dict) else {}


def new_session(mentor_id: int | None) -> dict[str, Any]:
    """A fresh session with a fresh CSRF token (rotated at login and logout)."""
    return {"m": mentor_id, "c": secrets.token_urlsafe(24)}


def write_session(response: Response, settings: Settings, data: dict[str, Any]) -> None:
    response.set_cookie(
        COOKIE_NAME,
        _serializer(settings).dumps(data),
        max_age=SESSION_MAX_AGE_S,
        path="/console",
        httponly=True,
        samesite="lax",
        secure=settings.public_base_url.startswith("https://"),
    )


def clear_session(response: Response, settings: Settings) -> None:
    response.delete_cookie(COOKIE_NAME, path="/console", httponly=True, samesite="lax",
                           secure=settings.public_base_url.startswith("https://"))


def csrf_ok(session: dict[str, Any], submitted: str | None) -> bool:
    """The submitted token matches the session's (constant-time)."""
    expected = session.get("c")
    if not expected or not submitted:
        return False
    return hmac.compare_digest(str(expected), str(submitted))


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def email_bucket(email: str) -> str:
    """Rate-limit key of an e-mail without keeping the address in Redis."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]
