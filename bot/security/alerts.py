"""Security alerts for the mentors' leads: a warning in the log, an audit entry, a live console event.

The console's queue page shows the leads the alerts of the last `ALERT_SHOWN_S` (read back from
the audit log, so a lead who opens the console later still sees them), and an open console gets
the event at once. One alert per kind per `ALERT_EVERY`: a spike that lasts an hour is one alert
every quarter of an hour, not thousands.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bot.mentoring.audit import audit
from bot.mentoring.events import publish_now
from bot.security.throttle import Throttle
from bot.storage.db import utcnow
from bot.storage.models import AuditEntry

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

ALERT_ACTION_PREFIX = "security."
ALERT_EVERY = Throttle.of("security-alert", "1/15 minutes")
ALERT_SHOWN_S = 24 * 3600.0
# kinds of alert -> the console's catalogue key that explains it to a lead
ALERT_KINDS: dict[str, str] = {
    "link_guessing": "console_alert_link_guessing",
}


async def raise_alert(services: Services, kind: str, detail: dict[str, Any] | None = None) -> bool:
    """Alert the leads about `kind` (one of ALERT_KINDS) unless it was alerted recently; True if alerted.

    `detail` holds counts and flags only, never an address or a text."""
    if kind not in ALERT_KINDS:
        raise ValueError(f"unknown security alert {kind!r}")
    if not await ALERT_EVERY.hit(services.rate_limits, kind):
        return False
    log.warning("security alert %s: %s", kind, detail or {})
    async with services.db.session() as session:
        audit(session, services.settings, actor="system", action=ALERT_ACTION_PREFIX + kind, contact_key=None,
              detail=detail)
    await publish_now(services, {"type": "security_alert", "kind": kind, "leads_only": True})
    return True


async def recent_alerts(services: Services) -> list[tuple[str, Any]]:
    """(kind, when) of the alerts of the last day, newest first, for the leads' console."""
    since = utcnow() - timedelta(seconds=ALERT_SHOWN_S)
    actions = [ALERT_ACTION_PREFIX + kind for kind in ALERT_KINDS]
    async with services.db.session() as session:
        rows = (await session.execute(
            select(AuditEntry.action, AuditEntry.at)
            .where(AuditEntry.action.in_(actions), AuditEntry.at >= since)
            .order_by(AuditEntry.at.desc()).limit(20)
        )).all()
    return [(action.removeprefix(ALERT_ACTION_PREFIX), at) for action, at in rows]
