"""Urgent hand-offs: the one way to say "this learner needs a person now", and never letting go.

`escalate` is what the Rasa distress action (through the `handoff` gateway command) and any
detector in the gateway call: it opens the contact's hand-off or makes the open one urgent,
and alerts at once every on-duty mentor of the learner's language and every lead — on the
consoles' event streams (browser notification and sound) and in the Telegram mentor group
(the topic marked, its card pinned, those mentors mentioned). It does not send the safety
message: the caller does, once per episode.

Afterwards (worker, `realert_urgent`): an urgent hand-off nobody claimed is never closed as
idle; after `HANDOFF_OFFER_TIMEOUT_S` it is escalated to the leads, and alerted again every
`HANDOFF_OFFER_TIMEOUT_S` until someone claims it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n.catalogue import Rendered
from bot.mentoring.events import publish_after_commit
from bot.privacy.audit import audit
from bot.storage.db import utcnow
from bot.storage.models import Contact, Handoff, Mentor

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Escalation:
    """The urgent hand-off (None when none could be opened: the web chat's cap), whether this call made it
    urgent, and what to tell the learner."""

    handoff: Handoff | None
    newly_urgent: bool
    replies: list[Rendered]


async def escalate(
    services: Services, session: AsyncSession, contact: Contact, *, reason: str = "distress", source: str = "rasa"
) -> Escalation:
    """Make the contact's hand-off urgent now (opening one if needed) and alert mentors and leads,
    in the caller's transaction (alerts go out after its commit). Idempotent: a hand-off that is
    urgent already is left as it is and nobody is alerted twice."""
    from bot.mentoring.handoff import open_or_upgrade

    result = await open_or_upgrade(services, session, contact, reason, urgent=True, actor=source)
    return Escalation(result.handoff, result.newly_urgent, result.replies)


async def alert_urgent(services: Services, session: AsyncSession, handoff: Handoff, *, again: bool = False,
                       upgraded: bool = False) -> None:
    """Tell every on-duty mentor of the language and every lead (consoles and the mentor group);
    `upgraded`: an open hand-off just became urgent (its topic is renamed and its card pinned),
    `again`: a re-alert of one nobody claimed."""
    from bot.mentoring.group.posts import card_changed, notice
    from bot.mentoring.handoff import console_event
    from bot.mentoring.promise import mentors_on_duty

    on_duty = await mentors_on_duty(session, handoff.language)
    leads = await active_leads(session)
    people = list({m.id: m for m in [*on_duty, *leads]}.values())
    kind = "alert" if again else "handoff_urgent"
    publish_after_commit(services, session, console_event(kind, handoff, everyone=True,
                                                          alert_count=handoff.alert_count))
    if upgraded:
        await card_changed(services, session, handoff, renamed=True)
    await notice(services, session, handoff, "group_urgent_again" if again else "group_urgent",
                 mention=people, silent=False)


async def active_leads(session: AsyncSession) -> list[Mentor]:
    return list((await session.execute(
        select(Mentor).where(Mentor.role == "lead", Mentor.active.is_(True)).order_by(Mentor.id))).scalars().all())


async def alert_leads(services: Services, session: AsyncSession, handoff: Handoff, why: str) -> None:
    """Something the leads must see (`why`: urgent_unclaimed, promise_broken, nobody_on_duty)."""
    from bot.mentoring.group.posts import notice
    from bot.mentoring.handoff import console_event

    publish_after_commit(services, session, console_event("lead_alert", handoff, why=why))
    await notice(services, session, handoff, f"group_lead_{why}", mention=await active_leads(session),
                 silent=False)
    audit(session, services.settings, actor="system", action="handoff.lead_alert", contact_key=None,
          detail={"handoff_id": handoff.id, "why": why})


async def realert_urgent(services: Services) -> int:
    """Urgent hand-offs still unclaimed: escalate to the leads, then alert again every period."""
    from bot.mentoring.sla import realert

    async def alert(session: AsyncSession, handoff: Handoff) -> None:
        if handoff.escalated_at is None:
            handoff.escalated_at = utcnow()
            await alert_leads(services, session, handoff, "urgent_unclaimed")
        await alert_urgent(services, session, handoff, again=True)

    return await realert(services, urgent=True, period_s=services.settings.handoff_offer_timeout_s, alert=alert)
