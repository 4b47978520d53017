"""Gateway commands of the privacy area: `erase` (after the learner confirmed delete_my_data)
and `export` (the learner asks for a copy of their data; a mentor sends it)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.channels.base import OutboundMessage, SendError
from bot.commands import CommandResult, command
from bot.log_privacy import contact_ref
from bot.privacy.audit import record_audit, subject_ref
from bot.privacy.erasure import ErasureIncomplete, erase_contact

if TYPE_CHECKING:
    from bot.models import Contact
    from bot.services import Services

log = logging.getLogger(__name__)


@command("erase")
async def erase_command(services: Services, contact: Contact, args: dict[str, Any]) -> CommandResult:
    """Say goodbye through the channel first (no outbox row may outlive the erasure), then erase."""
    key = contact.key
    language = contact.language or "en"
    channel = services.channels.get(contact.channel)
    if channel is not None and not contact.stopped:
        rendered = services.catalogue.render("erasure_done", language)
        try:
            await channel.send(contact.address, OutboundMessage(text=rendered.text, language=language))
        except SendError as exc:
            # the learner asked for erasure: it happens even if the goodbye cannot be delivered
            log.warning("erasure goodbye to %s not delivered: %s", contact_ref(key), exc.kind.value)
    try:
        await erase_contact(services, key, actor="learner")
    except ErasureIncomplete as exc:
        log.error("erasure of %s incomplete: %s", contact_ref(key), "; ".join(exc.report.errors))
    return CommandResult(suppress_bot_replies=True)


@command("export")
async def export_command(services: Services, contact: Contact, args: dict[str, Any]) -> CommandResult:
    """Record the request and tell the mentors; the learner hears that a mentor will send it."""
    async with services.db.session() as session:
        entry = await record_audit(
            session, services.settings, actor="learner", action="export_requested", contact_key=contact.key,
            detail={"contact_id": contact.id},
        )
        entry_id = entry.id
    await services.coord.publish(
        "console",
        {
            "type": "export_requested",
            "contact_id": contact.id,
            "subject_ref": subject_ref(services.settings, contact.key),
            "language": contact.language or "en",
            "audit_id": entry_id,
        },
    )
    return CommandResult(replies=[services.catalogue.render("export_requested", contact.language or "en")])
