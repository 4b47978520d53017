"""Gateway commands that change a learner's preferences kept by the gateway."""

from __future__ import annotations

from typing import Any

from bot.conversation.commands import CommandResult, command
from bot.i18n.catalogue import normalise_language
from bot.runtime.services import Services
from bot.runtime.settings import LANGUAGES
from bot.storage.models import Contact


@command("set_language")
async def set_language(services: Services, contact: Contact, args: dict[str, Any]) -> CommandResult | None:
    """The learner asked for another language: keep it, explicitly, until they ask again."""
    code = str(args.get("language") or "").strip()
    if normalise_language(code) != code.lower() or code.lower() not in LANGUAGES:
        return None
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
        if fresh is not None:
            fresh.language, fresh.language_source = code.lower(), "explicit"
    return None
