"""Bearer tokens of the admin API and `/metrics`: one parser and one constant-time check for all.

`Authorization: Bearer <token>`: the scheme in any case, any spaces or tabs around the token.
Both sides are hashed before `hmac.compare_digest`, so the time taken says nothing about the
token's length and any header (even one with non-ASCII bytes) is compared, never a 500.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def bearer_of(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    parts = (header or "").split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1].strip() or None


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if given is None or not expected:
        return False
    presented = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(presented, hashlib.sha256(expected.encode("utf-8")).digest())


def check_bearer(request: Request, expected: str | None, what: str) -> Response | None:
    """None when the request carries `expected`; else 404 when the token is unset ("`what` is off")
    or 401 with `WWW-Authenticate: Bearer`."""
    if not expected:
        return JSONResponse({"error": "not_found", "message": f"{what} is off"}, status_code=404)
    if not token_matches(bearer_of(request.headers.get("authorization")), expected):
        return JSONResponse({"error": "unauthorized", "message": "missing or wrong bearer token"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return None


def require_admin(request: Request) -> Response | None:
    """The admin API's check (`ADMIN_API_TOKEN`); every `/api/…` endpoint starts with it:
    `if (denied := require_admin(request)) is not None: return denied`."""
    token = request.app.state.services.settings.admin_api_token
    return check_bearer(request, token, "the admin API (ADMIN_API_TOKEN is unset)")
