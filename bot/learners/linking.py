"""Linking a chat (Telegram, WhatsApp, web) to a learner of the platform.

Staff issue a link token (`POST /api/link-tokens`, `sanad link-token LEARNER_ID`):
a signed, single-use token valid 7 days, usable as a Telegram deep link
(`/start <token>`) or, on any channel, as `LINK <code>` with a short code that is
easy to type. Only keyed hashes of the token and the code are stored. The
gateway answers these messages itself (interceptor, before Rasa); `unlink`
undoes the link. A learner may link several chats; a chat links one learner.

Guessing codes is slowed three ways: per chat (5 wrong in 15 minutes blocks that chat for 15
minutes), per source address for the web chat, where new chats cost nothing
(`LINK_FAILURES_PER_ADDRESS`), and over everyone (`LINK_FAILURES_GLOBAL`): past that, codes are
not checked for a while and the mentors' leads are alerted (bot/security/alerts.py). The
counters are the `limits` library's moving windows, shared through Redis when configured.
Telegram deep links carry a signed token that cannot be guessed; they are not paused globally.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import sys
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.channels.base import display_name as clean_display_name
from bot.conversation.commands import CommandResult, command
from bot.conversation.interceptors import Intercepted, interceptor
from bot.i18n.catalogue import Rendered, normalise_language
from bot.runtime.coordination import LockTimeout
from bot.security.alerts import raise_alert
from bot.security.bearer import require_admin
from bot.security.inputs import BadInput, loads_json, storable_text
from bot.security.throttle import Throttle
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, InboundMessage, LinkToken
from integrations.platform import (
    DEMO_PLATFORM_TOKEN,
    Learner,
    LearnerNotFound,
    PlatformClient,
    PlatformDataError,
    PlatformUnavailable,
)

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

TOKEN_TTL = timedelta(days=7)
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud and typed on a phone
CODE_LENGTH = 8
MAX_FAILURES = 5  # per chat, then the chat is blocked for FAILURE_WINDOW_S
FAILURE_WINDOW_S = 15 * 60.0
GLOBAL_ID = "all"
_TOKEN_RANDOM_BYTES = 24  # 32 url-safe characters
_TOKEN_SIG_CHARS = 16
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_START_RE = re.compile(r"^/start(?:@\w+)?\s+(\S+)\s*$", re.IGNORECASE)
_LINK_RE = re.compile(r"^\s*/?link(?:@\w+)?\b[\s:#-]*(?P<code>[A-Za-z0-9][A-Za-z0-9 -]{0,24})\s*$", re.IGNORECASE)
_UNLINK_WORDS = frozenset({"unlink", "/unlink"})
PLATFORM_EXTRA = "platform"


# --- tokens and codes ---------------------------------------------------------

def _keyed_hash(secret: str, purpose: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _signature(secret: str, random_part: str) -> str:
    digest = hmac.new(secret.encode(), f"link-token:{random_part}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:_TOKEN_SIG_CHARS]


def make_token(secret: str) -> str:
    """A random part and its signature: 48 characters of [A-Za-z0-9_-], fits Telegram's start parameter."""
    random_part = secrets.token_urlsafe(_TOKEN_RANDOM_BYTES)
    return random_part + _signature(secret, random_part)


def token_signature_ok(secret: str, token: str) -> bool:
    """Cheap check before the database: a forged or mistyped token fails here."""
    if not _TOKEN_RE.match(token) or len(token) <= _TOKEN_SIG_CHARS:
        return False
    random_part, sig = token[:-_TOKEN_SIG_CHARS], token[-_TOKEN_SIG_CHARS:]
    return hmac.compare_digest(sig, _signature(secret, random_part))


def token_hash(secret: str, token: str) -> str:
    return _keyed_hash(secret, "token", token)


def make_code() -> str:
    """8 characters of the unambiguous alphabet, at least one digit (so `LINK my account` is no attempt)."""
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if any(ch.isdigit() for ch in code):
            return code


def normalise_code(raw: str) -> str:
    """Case-insensitive, spaces and dashes ignored."""
    return re.sub(r"[^A-Za-z0-9]", "", raw).upper()


def code_hash(secret: str, code: str) -> str:
    return _keyed_hash(secret, "code", normalise_code(code))[:16]


async def issue_link_token(services: Services, learner_id: str) -> dict[str, str]:
    """Create a single-use link token for `learner_id` (the caller checks the learner exists)."""
    learner_id = valid_learner_id(learner_id)
    secret = services.settings.secret_key
    now = utcnow()
    expires_at = now + TOKEN_TTL
    async with services.db.session() as session:
        for _ in range(5):
            token, code = make_token(secret), make_code()
            t_hash, c_hash = token_hash(secret, token), code_hash(secret, code)
            clash = await session.execute(
                select(LinkToken.id).where((LinkToken.token_hash == t_hash) | (LinkToken.short_code == c_hash))
            )
            if clash.first() is None:
                break
        else:  # pragma: no cover - 31^8 codes
            raise RuntimeError("could not find a free link code")
        session.add(LinkToken(token_hash=t_hash, short_code=c_hash, learner_id=learner_id, created_at=now,
                              expires_at=expires_at))
    return {
        "token": token,
        "telegram_url": f"https://t.me/{services.settings.telegram_bot_username}?start={token}",
        "whatsapp_text": f"LINK {code}",
        "expires_at": expires_at.isoformat(),
    }


# --- the platform client of this process ------------------------------------------

# --- recognising link messages ------------------------------------------------

@dataclass(frozen=True)
class LinkRequest:
    """What a message asks: `token` (Telegram deep link), `code` (LINK code) or `unlink`."""

    kind: str
    value: str = ""


def parse_link_message(message: InboundMessage) -> LinkRequest | None:
    """Recognise `/start <token>`, `LINK <code>` and `unlink`; anything else is not ours."""
    text = (message.text or "").strip()
    payload = message.payload or {}
    if message.kind == "command" and isinstance(payload, dict) and payload.get("command"):
        name = str(payload.get("command", "")).lower()
        args = str(payload.get("args") or "").strip()
        if name == "start":
            return LinkRequest("token", args.split()[0]) if args else None
        if name == "unlink":
            return LinkRequest("unlink")
        if name == "link" and args:
            return _code_request(args)
    if not text or len(text) > 200:
        return None
    match = _START_RE.match(text)
    if match:
        return LinkRequest("token", match.group(1))
    if text.lower() in _UNLINK_WORDS or re.fullmatch(r"/unlink@\w+", text, re.IGNORECASE):
        return LinkRequest("unlink")
    match = _LINK_RE.match(text)
    if match:
        return _code_request(match.group("code"))
    return None


def is_link_attempt(kind: str, text: str | None, payload: dict[str, Any] | None) -> bool:
    """Would `parse_link_message` read this message as a token or code (not as `unlink`)?"""
    request = parse_link_message(InboundMessage(kind=kind, text=text, payload=payload))
    return request is not None and request.kind != "unlink"


def _code_request(raw: str) -> LinkRequest | None:
    chunks = raw.split()
    code = normalise_code(raw)
    # a code has digits and at most a few chunks; "link my account" is a question for Rasa
    if len(chunks) > 3 or not 4 <= len(code) <= 12 or not any(ch.isdigit() for ch in code):
        return None
    return LinkRequest("code", code)


# --- linking and unlinking ----------------------------------------------------------

def _failure_key(contact: Contact) -> str:
    return f"link-fail:{contact.key}"


def _block_key(contact: Contact) -> str:
    return f"link-block:{contact.key}"


async def _record_failure(services: Services, contact: Contact) -> None:
    count = await services.coord.hit(_failure_key(contact), FAILURE_WINDOW_S)
    if count >= MAX_FAILURES:
        await services.coord.pause(_block_key(contact), FAILURE_WINDOW_S)
        await services.coord.reset_hits(_failure_key(contact))
        log.info("link attempts blocked for %.0f s after %d wrong codes", FAILURE_WINDOW_S, count)


async def _audit(services: Services, action: str, contact: Contact, detail: dict[str, Any]) -> None:
    try:
        from bot.privacy.audit import record_audit
    except ImportError:  # pragma: no cover - privacy area absent
        return
    async with services.db.session() as session:
        await record_audit(session, services.settings, actor="learner", action=action, contact_key=contact.key,
                           detail=detail)


def _render(services: Services, key: str, language: str | None, **params: Any) -> Rendered:
    return services.catalogue.render(key, language or "en", **params)


def _per_address(services: Services) -> Throttle:
    return Throttle.of("link-fail-address", services.settings.link_failures_per_address)


def _global(services: Services) -> Throttle:
    return Throttle.of("link-fail-global", services.settings.link_failures_global)


async def _wait_minutes(throttle: Throttle, services: Services, *ids: str) -> int:
    return max(1, math.ceil(await throttle.retry_after_s(services.rate_limits, *ids) / 60))


async def _count_failure(services: Services, contact: Contact, request: LinkRequest, source: str | None) -> None:
    """A wrong token or code: counted for the chat, its source address and (codes) everyone."""
    await _record_failure(services, contact)
    if source:
        await _per_address(services).hit(services.rate_limits, source)
    if request.kind == "code":
        glob = _global(services)
        counted = await glob.hit(services.rate_limits, GLOBAL_ID)
        if not counted or not await glob.allowed(services.rate_limits, GLOBAL_ID):
            # the window is full: codes are paused for everyone, and the leads hear of it
            await raise_alert(services, "link_guessing", {"window": services.settings.link_failures_global})


def _check_lock(services: Services, request: LinkRequest, source: str | None) -> Any:
    """Checking a limit and counting a failure happen under one lock, so a burst of attempts cannot all
    pass the check before the first failure is counted: codes share one lock (the global limit spans
    them all), a web chat token its source address's; other tokens need none (a chat's messages are
    handled one at a time)."""
    if request.kind == "code":
        return services.coord.lock("link-check:codes", ttl_s=15.0, wait_s=15.0)
    if source:
        return services.coord.lock(f"link-check:{source}", ttl_s=15.0, wait_s=15.0)
    return contextlib.nullcontext()


async def _refused(
    services: Services, request: LinkRequest, source: str | None, lang: str | None
) -> Intercepted | None:
    """The answer when this source address, or everyone (codes), sent too many wrong ones lately."""
    if source and not await _per_address(services).allowed(services.rate_limits, source):
        minutes = await _wait_minutes(_per_address(services), services, source)
        return Intercepted([_render(services, "link_rate_limited", lang, minutes=minutes)])
    if request.kind == "code" and not await _global(services).allowed(services.rate_limits, GLOBAL_ID):
        await raise_alert(services, "link_guessing", {"window": services.settings.link_failures_global})
        minutes = await _wait_minutes(_global(services), services, GLOBAL_ID)
        return Intercepted([_render(services, "link_paused", lang, minutes=minutes)])
    return None


async def _find_token(services: Services, request: LinkRequest) -> tuple[Any, ...] | None:
    """(id, learner id, used at, used by, expires at) of the token or code asked for, if it exists."""
    secret = services.settings.secret_key
    async with services.db.session() as session:
        if request.kind == "token":
            row = None
            if token_signature_ok(secret, request.value):
                row = (await session.execute(
                    select(LinkToken).where(LinkToken.token_hash == token_hash(secret, request.value))
                )).scalar_one_or_none()
        else:
            row = (await session.execute(
                select(LinkToken).where(LinkToken.short_code == code_hash(secret, request.value))
            )).scalar_one_or_none()
        if row is None:
            return None
        return row.id, row.learner_id, row.used_at, row.used_by_contact_id, as_utc(row.expires_at)


async def link_contact(
    services: Services, contact: Contact, request: LinkRequest, source: str | None = None
) -> Intercepted:
    """Check a token or code and link the contact; every outcome has a clear answer.

    `source` is the pseudonym of the web chat's source address (None on other channels)."""
    lang = contact.language
    wrong_key = "link_invalid_token" if request.kind == "token" else "link_invalid_code"
    blocked_s = await services.coord.paused_for(_block_key(contact))
    if blocked_s > 0:
        minutes = max(1, round(blocked_s / 60))
        return Intercepted([_render(services, "link_rate_limited", lang, minutes=minutes)])
    try:
        async with _check_lock(services, request, source):
            refused = await _refused(services, request, source, lang)
            if refused is not None:
                return refused
            found = await _find_token(services, request)
            if found is None:
                await _count_failure(services, contact, request, source)
                return Intercepted([_render(services, wrong_key, lang)])
    except LockTimeout:
        return Intercepted([_render(services, "link_paused", lang, minutes=1)])
    now = utcnow()
    token_id, learner_id, used_at, used_by, expires_at = found
    if used_at is not None:
        if used_by == contact.id and contact.learner_id == learner_id:
            return Intercepted([_render(services, "link_already_linked", lang)])
        return Intercepted([_render(services, "link_used", lang)])
    if expires_at <= now:
        return Intercepted([_render(services, "link_expired", lang)])

    learner: Learner | None = None
    try:
        learner = await services.platform().learner(learner_id)
    except LearnerNotFound:
        log.warning("link token names a learner the platform does not know")
        return Intercepted([_render(services, wrong_key, lang)])
    except (PlatformUnavailable, PlatformDataError) as exc:
        # the token is good: link now, the profile (language, zone) comes with the next answer
        log.warning("linking without the learner profile: %s", type(exc).__name__)

    async with services.db.session() as session:
        consumed = await session.execute(
            update(LinkToken)
            .where(LinkToken.id == token_id, LinkToken.used_at.is_(None))
            .values(used_at=now, used_by_contact_id=contact.id)
        )
        if getattr(consumed, "rowcount", 0) != 1:
            return Intercepted([_render(services, "link_used", lang)])
        fresh = await session.get(Contact, contact.id)
        if fresh is None:
            return Intercepted([])
        previous = fresh.learner_id
        _apply_link(fresh, learner_id, learner, now)
        _apply_link(contact, learner_id, learner, now)
        lang = fresh.language
        first_name = fresh.display_name if learner is not None else None
    await services.coord.reset_hits(_failure_key(contact))
    await _audit(services, "link", contact, {"channel": contact.channel, "relinked": previous is not None})
    if first_name:
        return Intercepted([_render(services, "link_success", lang, first_name=first_name)])
    return Intercepted([_render(services, "link_success_noname", lang)])


def _apply_link(contact: Contact, learner_id: str, learner: Learner | None, now: datetime) -> None:
    contact.learner_id = learner_id
    contact.linked_at = now
    if learner is None:
        return
    if contact.language_source != "explicit":
        contact.language = normalise_language(learner.preferred_language)
        contact.language_source = "platform"
    contact.timezone = learner.timezone or contact.timezone
    if learner.country:
        contact.country = learner.country.upper()[:8]
    contact.display_name = clean_display_name(learner.first_name)


async def unlink_contact(services: Services, contact: Contact) -> bool:
    """Remove the link of this chat; True when there was one. Names from the platform go with it."""
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
        if fresh is None or fresh.learner_id is None:
            return False
        for target in (fresh, contact):
            target.learner_id = None
            target.linked_at = None
            target.display_name = None
            if target.language_source == "platform":
                target.language_source = "detected"
    await _audit(services, "unlink", contact, {"channel": contact.channel})
    return True


@interceptor("linking", order=10)
async def linking_interceptor(services: Services, contact: Contact, message: InboundMessage) -> Intercepted | None:
    """`/start <token>`, `LINK <code>` and `unlink`, answered by the gateway."""
    request = parse_link_message(message)
    if request is None:
        return None
    if request.kind == "unlink":
        lang = contact.language
        was_linked = await unlink_contact(services, contact)
        return Intercepted([_render(services, "link_unlinked" if was_linked else "link_not_linked", lang)])
    source = (message.payload or {}).get("source") if contact.channel == "web" else None
    return await link_contact(services, contact, request, source if isinstance(source, str) else None)


@command("unlink")
async def unlink_command(services: Services, contact: Contact, args: dict[str, Any]) -> CommandResult | None:
    """An action found the learner unknown to the platform (404): drop the link; the action explains."""
    await unlink_contact(services, contact)
    return CommandResult()


# --- admin API ------------------------------------------------------------------

def valid_learner_id(raw: str) -> str:
    """A learner id as the platform and the database take it: 1-64 characters of valid Unicode,
    no control characters (BadInput otherwise)."""
    learner_id = storable_text(raw, "learner_id").strip()
    if not learner_id or len(learner_id) > 64:
        raise BadInput("learner_id must be 1 to 64 characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in learner_id):
        raise BadInput("learner_id contains control characters")
    return learner_id


def _json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


async def check_learner(services: Services, learner_id: str) -> None:
    """Raise LearnerNotFound / PlatformUnavailable unless the platform knows the learner."""
    try:
        await services.platform().learner(learner_id)
    except PlatformDataError as exc:
        raise PlatformUnavailable(str(exc)) from exc


async def create_link_token(request: Request) -> Response:
    """`POST /api/link-tokens` `{"learner_id"}` -> `{"token","telegram_url","whatsapp_text","expires_at"}`."""
    services: Services = request.app.state.services
    if (denied := require_admin(request)) is not None:
        return denied
    try:
        body = loads_json(await request.body())
    except BadInput:
        return _json_error(400, "bad_request", "the body must be JSON: {\"learner_id\": \"...\"}")
    learner_id = body.get("learner_id") if isinstance(body, dict) else None
    if isinstance(learner_id, int) and not isinstance(learner_id, bool):
        learner_id = str(learner_id)
    if not isinstance(learner_id, str) or not learner_id.strip() or len(learner_id.strip()) > 64:
        return _json_error(400, "bad_request", "learner_id must be a non-empty string of at most 64 characters")
    try:
        learner_id = valid_learner_id(learner_id)
    except BadInput as exc:
        return _json_error(400, "bad_request", str(exc))
    learner_id = learner_id.strip()
    try:
        await check_learner(services, learner_id)
    except LearnerNotFound:
        return _json_error(404, "unknown_learner", "the platform does not know this learner")
    except PlatformUnavailable:
        return _json_error(503, "platform_unavailable", "the learning platform cannot be reached; try again later")
    result = await issue_link_token(services, learner_id)
    async with services.db.session() as session:
        from bot.privacy.audit import record_audit

        await record_audit(session, services.settings, actor="admin", action="link_token_issued",
                           contact_key=f"learner:{learner_id}", detail={})
    return JSONResponse(result)


def routes() -> list[BaseRoute]:
    """Mounted by the gateway app."""
    return [Route("/api/link-tokens", create_link_token, methods=["POST"])]


# --- command line ------------------------------------------------------------------

def register_cli(subparsers: Any) -> None:
    """`sanad link-token LEARNER_ID`: print a new link token as JSON."""
    parser = subparsers.add_parser("link-token", help="issue a link token for a learner (prints JSON)")
    parser.add_argument("learner_id")
    parser.add_argument("--no-check", action="store_true", help="do not ask the platform whether the learner exists")
    parser.set_defaults(func=_run_link_token)


async def cli_link_token(learner_id: str, check: bool = True, settings: Any = None) -> tuple[int, dict[str, Any]]:
    """Issue a token from the command line; returns (exit code, JSON document)."""
    from bot.i18n.catalogue import get_catalogue
    from bot.runtime.coordination import make_coordinator
    from bot.runtime.services import Services
    from bot.runtime.settings import Settings
    from bot.storage.db import Database

    settings = settings or Settings.from_env()
    services = Services(
        settings=settings,
        db=Database(settings.database_url),
        coord=make_coordinator(settings.redis_url, settings.redis_prefix),
        catalogue=get_catalogue(),
    )
    try:
        if services.db.is_sqlite:
            await services.db.create_all()
        if not settings.platform_api_url and not settings.demo_platform_url:
            # the embedded demo platform lives inside the gateway, which may not run now: ask it in-process
            import httpx

            from integrations.demo_platform import demo_app

            services.extras[PLATFORM_EXTRA] = PlatformClient(
                "http://demo-platform.invalid", DEMO_PLATFORM_TOKEN, services.coord,
                transport=httpx.ASGITransport(app=demo_app()),
            )
        if check:
            try:
                await check_learner(services, learner_id)
            except LearnerNotFound:
                return 2, {"error": "unknown_learner", "learner_id": learner_id}
            except PlatformUnavailable as exc:
                return 3, {"error": "platform_unavailable", "message": str(exc)}
        return 0, await issue_link_token(services, learner_id)
    finally:
        await services.close()


def _run_link_token(args: argparse.Namespace) -> int:
    try:
        code, document = asyncio.run(cli_link_token(args.learner_id, check=not args.no_check))
    except ValueError as exc:
        print(json.dumps({"error": "bad_request", "message": str(exc)}), file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2), file=sys.stdout if code == 0 else sys.stderr)
    return code
