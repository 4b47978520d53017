"""Shared phones: a 4-digit PIN that Sanad asks for before showing personal data after a silence.

When is the PIN required? (`pin_required`)
- never when the contact has no PIN;
- always when it has one and it was never verified (`pin_verified_at` is None);
- otherwise when more than `settings.pin_idle_s` passed since the *last verified
  activity*, which is `pin_verified_at`: set when the PIN is verified, and moved
  forward by the PIN interceptor on every message the learner sends while the PIN
  is still valid (the session slides while the learner keeps writing).
`last_inbound_at` cannot measure the silence on its own: the gateway stamps it
with the message being processed before this check runs. It is only used to
notice a verification stamped in the future (clock skew), which never counts.

The interceptor (`/pin`, `/pin off`, a PIN when one is required) runs before
Rasa. Wrong PINs are counted on the contact: 5 in a row lock the PIN for 15
minutes. The PIN is stored as an argon2 hash of an HMAC of it keyed with the
deployment secret, so a copy of the database alone does not reveal it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import unicodedata
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bot.conversation.interceptors import Intercepted, interceptor
from bot.outbox.queue import enqueue
from bot.privacy.audit import audit
from bot.privacy.logs import contact_ref
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact

if TYPE_CHECKING:
    from bot.i18n.catalogue import Rendered
    from bot.runtime.services import Services
    from bot.runtime.settings import Settings
    from bot.storage.models import InboundMessage

log = logging.getLogger(__name__)

PIN_LENGTH = 4
MAX_FAILURES = 5
LOCK_S = 15 * 60.0
FLOW_TTL_S = 600.0
_CANCEL_WORDS = {"cancel", "/cancel", "stop pin", "annuler", "abbrechen", "إلغاء", "الغاء", "لغو"}
# OWASP's minimum argon2id parameters: ~20 ms per hash, fine for a PIN checked now and then
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


class PinError(Exception):
    """A PIN operation that cannot be carried out (unknown contact)."""


def pin_required(contact: Contact, now: datetime, settings: Settings) -> bool:
    """True when a PIN is set and the learner has been silent too long since the last verified activity."""
    if not contact.pin_hash:
        return False
    if contact.pin_verified_at is None:
        return True
    verified = as_utc(contact.pin_verified_at)
    now = as_utc(now)
    if verified > now + timedelta(seconds=60):
        return True  # a verification from the future is not trusted
    return (now - verified).total_seconds() > settings.pin_idle_s


def pin_locked_for_s(contact: Contact, now: datetime) -> float:
    """Seconds left of a PIN lock (0 when not locked)."""
    if contact.pin_locked_until is None:
        return 0.0
    return max(0.0, (as_utc(contact.pin_locked_until) - as_utc(now)).total_seconds())


def parse_pin(text: str | None) -> str | None:
    """The 4 digits of a message (any script: ٤٨٢١, ۴۸۲۱ and 4 8 2 1 count), else None."""
    if not text:
        return None
    digits: list[str] = []
    for ch in text.strip():
        if ch in " -.":
            continue
        value = unicodedata.decimal(ch, None)
        if value is None:
            return None
        digits.append(str(value))
    return "".join(digits) if len(digits) == PIN_LENGTH else None


def _has_digit(text: str) -> bool:
    return any(unicodedata.decimal(ch, None) is not None for ch in text)


def _peppered(settings: Settings, pin: str) -> str:
    return hmac.new(settings.secret_key.encode(), f"pin:{pin}".encode(), hashlib.sha256).hexdigest()


async def hash_pin(settings: Settings, pin: str) -> str:
    """argon2 hash of the peppered PIN (in a thread: hashing is deliberately slow)."""
    return await asyncio.to_thread(_HASHER.hash, _peppered(settings, pin))


async def check_pin(settings: Settings, stored_hash: str, pin: str) -> bool:
    def verify() -> bool:
        try:
            return _HASHER.verify(stored_hash, _peppered(settings, pin))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def _get_flow(contact: Contact) -> dict[str, Any] | None:
    """The /pin conversation under way on this contact, unless it expired."""
    flow = contact.pin_flow
    if not isinstance(flow, dict):
        return None
    try:
        until = datetime.fromisoformat(str(flow.get("until")))
    except ValueError:
        return None
    return flow if as_utc(until) > utcnow() else None


def _set_flow(contact: Contact, step: str, first: str | None = None) -> None:
    until = utcnow() + timedelta(seconds=FLOW_TTL_S)
    contact.pin_flow = {"step": step, "first": first, "until": until.isoformat()}


def _end_flow(contact: Contact) -> None:
    contact.pin_flow = None


def _say(services: Services, contact: Contact, key: str, **params: Any) -> Intercepted:
    params.setdefault("minutes", round(services.settings.pin_idle_s / 60))
    return Intercepted(replies=[services.catalogue.render(key, contact.language or "en", **params)])


def _locked_reply(services: Services, contact: Contact, now: datetime) -> Intercepted:
    minutes = max(1, math.ceil(pin_locked_for_s(contact, now) / 60))
    return _say(services, contact, "pin_locked", minutes=minutes)


async def verify_attempt(services: Services, contact: Contact, pin: str, now: datetime) -> Intercepted | None:
    """Check a PIN with the rate limit; None when it is right (the caller says what comes next)."""
    if pin_locked_for_s(contact, now) > 0:
        return _locked_reply(services, contact, now)
    if contact.pin_hash and await check_pin(services.settings, contact.pin_hash, pin):
        contact.pin_failures = 0
        contact.pin_locked_until = None
        contact.pin_verified_at = now
        return None
    contact.pin_failures = (contact.pin_failures or 0) + 1
    if contact.pin_failures >= MAX_FAILURES:
        contact.pin_failures = 0
        contact.pin_locked_until = now + timedelta(seconds=LOCK_S)
        log.info("pin locked for %s after %d wrong attempts", contact_ref(contact.key), MAX_FAILURES)
        return _locked_reply(services, contact, now)
    return _say(services, contact, "pin_wrong", attempts=MAX_FAILURES - contact.pin_failures)


def _command(text: str) -> tuple[str, str] | None:
    """(`/pin`, rest) for `/pin`, `/pin@SanadBot off`, `PIN off`; None otherwise."""
    head, _, rest = text.strip().partition(" ")
    name = head.split("@", 1)[0].lower()
    if name in ("/pin", "pin"):
        return name, rest.strip().lower()
    return None


async def _start(services: Services, contact: Contact, rest: str, now: datetime) -> Intercepted:
    if rest in ("off", "remove", "delete"):
        if not contact.pin_hash:
            return _say(services, contact, "pin_not_set")
        _set_flow(contact, "off")
        return _say(services, contact, "pin_enter_current")
    if rest.startswith("off "):
        if not contact.pin_hash:
            return _say(services, contact, "pin_not_set")
        pin = parse_pin(rest[4:])
        if pin is None:
            _set_flow(contact, "off")
            return _say(services, contact, "pin_format")
        return await _remove(services, contact, pin, now)
    if rest in ("cancel",):
        _end_flow(contact)
        return _say(services, contact, "pin_cancelled")
    if contact.pin_hash and rest and parse_pin(rest) is not None and pin_required(contact, now, services.settings):
        refused = await verify_attempt(services, contact, parse_pin(rest) or "", now)
        return refused if refused is not None else _say(services, contact, "pin_ok")
    if contact.pin_hash:
        _set_flow(contact, "change")
        return _say(services, contact, "pin_enter_current")
    first = parse_pin(rest) if rest else None
    if first is not None:
        _set_flow(contact, "confirm", _peppered(services.settings, first))
        return _say(services, contact, "pin_confirm")
    _set_flow(contact, "new")
    return _say(services, contact, "pin_enter_new")


async def _remove(services: Services, contact: Contact, pin: str, now: datetime) -> Intercepted:
    refused = await verify_attempt(services, contact, pin, now)
    if refused is not None:
        return refused
    _end_flow(contact)
    contact.pin_hash = None
    contact.pin_verified_at = None
    return _say(services, contact, "pin_removed")


async def _continue(
    services: Services, contact: Contact, flow: dict[str, Any], pin: str, now: datetime
) -> Intercepted:
    step = flow.get("step")
    if step == "new":
        _set_flow(contact, "confirm", _peppered(services.settings, pin))
        return _say(services, contact, "pin_confirm")
    if step == "confirm":
        if not hmac.compare_digest(str(flow.get("first") or ""), _peppered(services.settings, pin)):
            _set_flow(contact, "new")
            return _say(services, contact, "pin_mismatch")
        contact.pin_hash = await hash_pin(services.settings, pin)
        contact.pin_failures = 0
        contact.pin_locked_until = None
        contact.pin_verified_at = now
        _end_flow(contact)
        return _say(services, contact, "pin_set_done")
    if step == "change":
        refused = await verify_attempt(services, contact, pin, now)
        if refused is not None:
            return refused
        _set_flow(contact, "new")
        return _say(services, contact, "pin_enter_new")
    if step == "off":
        return await _remove(services, contact, pin, now)
    _end_flow(contact)
    return _say(services, contact, "pin_cancelled")


@interceptor("pin", order=20)
async def pin_interceptor(services: Services, contact: Contact, message: InboundMessage) -> Intercepted | None:
    """`/pin` flows, and the PIN itself when one is required; slides a valid PIN session.

    The pipeline hands over a detached contact: changes are made on a fresh copy in our
    own transaction, committed before the pipeline reloads the contact for Rasa's metadata.
    """
    text = (message.text or "").strip()
    command = _command(text) if text else None
    if command is None and not contact.pin_hash and _get_flow(contact) is None:
        return None  # the common case: no PIN, nothing to write
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
        if fresh is None:
            return None
        return await _handle(services, fresh, text, command, utcnow())


async def _handle(
    services: Services, contact: Contact, text: str, command: tuple[str, str] | None, now: datetime
) -> Intercepted | None:
    if command is not None:
        return await _start(services, contact, command[1], now)
    flow = _get_flow(contact)
    if flow is not None:
        if text.lower() in _CANCEL_WORDS:
            _end_flow(contact)
            return _say(services, contact, "pin_cancelled")
        pin = parse_pin(text)
        if pin is not None:
            return await _continue(services, contact, flow, pin, now)
        if text and _has_digit(text):
            return _say(services, contact, "pin_format")
        _end_flow(contact)  # the learner moved on: let the message through
    if not contact.pin_hash:
        return None
    if not pin_required(contact, now, services.settings):
        contact.pin_verified_at = now  # the learner is active: the session slides
        return None
    pin = parse_pin(text)
    if pin is None:
        return None  # Rasa hears it with pin_required=True and withholds personal data
    refused = await verify_attempt(services, contact, pin, now)
    return refused if refused is not None else _say(services, contact, "pin_ok")


async def reset_pin(services: Services, contact_id: int, actor: str) -> None:
    """A mentor removes a learner's PIN (audited); the learner is told so through the outbox."""
    async with services.db.session() as session:
        contact = await session.get(Contact, contact_id)
        if contact is None:
            raise PinError(f"no contact #{contact_id}")
        had_pin = contact.pin_hash is not None
        contact.pin_hash = None
        contact.pin_failures = 0
        contact.pin_locked_until = None
        contact.pin_verified_at = None
        audit(
            session, services.settings, actor=actor, action="pin_reset", contact_key=contact.key,
            detail={"had_pin": had_pin},
        )
        if had_pin and not contact.stopped:
            rendered: Rendered = services.catalogue.render("pin_reset_by_mentor", contact.language or "en")
            await enqueue(session, contact, rendered, origin="system")
        contact.pin_flow = None
