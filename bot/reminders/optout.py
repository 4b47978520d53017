"""Opting out of and back into reminders and broadcasts: the `reminders` gateway command
(intents stop_reminders / start_reminders) and the bare STOP / START keywords."""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_object_session

from bot.conversation.commands import CommandResult, command
from bot.conversation.interceptors import Intercepted, interceptor
from bot.i18n.catalogue import Rendered
from bot.runtime.services import Services
from bot.storage.models import Contact, InboundMessage

log = logging.getLogger(__name__)

# Bare keywords only (the whole message), so "stop sending me reminders" still reaches Rasa's
# stop_reminders intent and "/start <token>" stays with linking. Localised words are listed only
# where they are unambiguous as a standalone message: Arabic/Farsi "توقف" (stop), Arabic "ايقاف"
# (stopping), German "stopp", French "arrête"/"arrêter"/"arret". STOP/START/UNSUBSCRIBE follow the
# carrier keywords WhatsApp users already know.
STOP_WORDS = frozenset(
    {"stop", "stopp", "stopall", "unsubscribe", "arrête", "arrete", "arrêter", "arreter", "arrêt",
     "توقف", "ايقاف", "إيقاف", "أوقف", "اوقف"}
)
START_WORDS = frozenset({"start", "unstop", "resume"})
_TRIM = re.compile(r"^[\s\"'«»“”.!؟?،,]+|[\s\"'«»“”.!؟?،,]+$")


def keyword_of(text: str | None) -> str | None:
    """"stop" / "start" when the whole message is one of the keywords, else None."""
    if not text:
        return None
    word = _TRIM.sub("", unicodedata.normalize("NFC", text)).casefold()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    return None


def _parse_enabled(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "start"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", "stop"):
        return False
    raise ValueError("enabled must be true or false")


async def set_reminders_enabled(services: Services, contact: Contact, enabled: bool) -> Rendered:
    """Switch reminders and broadcasts on or off for this contact; returns the confirmation to send.

    Runs inside the pipeline's session when the contact belongs to one (so the contact row is not
    written by two transactions at once), else in its own.
    """
    from bot.reminders.planner import cancel_contact_reminders

    contact.reminders_opt_out = not enabled
    if enabled:
        contact.stopped = False
    session = async_object_session(contact)
    if session is not None:
        await _apply(session, contact.id, enabled, cancel_contact_reminders)
    else:
        async with services.db.session() as own:
            values: dict[str, Any] = {"reminders_opt_out": not enabled}
            if enabled:
                # a learner who writes START has re-subscribed at the provider too (WhatsApp's START)
                values["stopped"] = False
            await own.execute(update(Contact).where(Contact.id == contact.id).values(**values))
            await _apply(own, contact.id, enabled, cancel_contact_reminders)
    log.info("contact=%s reminders %s", contact.id, "on" if enabled else "off")
    key = "reminders_started" if enabled else "reminders_stopped"
    return services.catalogue.render(key, contact.language or "en")


async def _apply(session: AsyncSession, contact_id: int, enabled: bool, cancel: Any) -> None:
    await session.flush()
    if not enabled:
        await cancel(session, contact_id, "opted_out")


@command("reminders")
async def reminders_command(services: Services, contact: Contact, args: dict[str, Any]) -> CommandResult:
    """`{"sanad": {"command": "reminders", "enabled": false}}` from stop_reminders / start_reminders."""
    try:
        enabled = _parse_enabled(args.get("enabled"))
    except ValueError:
        log.warning("reminders command with an invalid 'enabled' value")
        return CommandResult()
    reply = await set_reminders_enabled(services, contact, enabled)
    return CommandResult(replies=[reply])


@interceptor("optout", order=5)
async def optout_keywords(services: Services, contact: Contact, message: InboundMessage) -> Intercepted | None:
    """Bare STOP / START (and a few unambiguous localised words) switch reminders off / on."""
    if message.kind not in ("text", "button"):
        return None
    keyword = keyword_of(message.text)
    if keyword is None:
        return None
    reply = await set_reminders_enabled(services, contact, keyword == "start")
    return Intercepted(replies=[reply])
