"""The reminders worker job: plan, dispatch due reminders, expand due broadcasts, send."""

from __future__ import annotations

import logging
import time
from datetime import datetime

from bot.reminders.broadcasts import expand_due_broadcasts, finish_broadcasts
from bot.reminders.dispatch import dispatch_due_reminders
from bot.reminders.planner import PLAN_LOCK, PlanStats, plan_reminders
from bot.runtime.coordination import LockTimeout
from bot.runtime.services import Services
from bot.storage.db import utcnow

log = logging.getLogger(__name__)

LAST_PLAN_KEY = "reminders:last_plan"
DEFAULT_PLAN_INTERVAL_S = 900.0
SEND_LIMIT = 500
PLAN_RETRY_S = 60.0


def plan_interval_s(services: Services) -> float:
    return services.settings.reminder_plan_interval_s or DEFAULT_PLAN_INTERVAL_S


async def plan_if_due(services: Services, now: datetime | None = None, force: bool = False) -> PlanStats | None:
    """Plan at most once per interval across all workers (a Redis lock and timestamp when configured)."""
    coord = services.coord
    if not force:
        last = await coord.cache_get(LAST_PLAN_KEY)
        if last is not None and time.time() - float(last) < plan_interval_s(services):
            return None
    try:
        async with coord.lock(PLAN_LOCK, ttl_s=600.0, wait_s=0.05):
            from integrations.platform import PlatformError

            try:
                stats = await plan_reminders(services, services.platform, now)
            except PlatformError as exc:
                # keep what is planned; try again in a minute rather than on every tick
                log.warning("reminder planning skipped: platform unavailable (%s)", type(exc).__name__)
                retry_at = time.time() - plan_interval_s(services) + PLAN_RETRY_S
                await coord.cache_set(LAST_PLAN_KEY, str(retry_at), ttl_s=86400.0)
                return None
            await coord.cache_set(LAST_PLAN_KEY, str(time.time()), ttl_s=86400.0)
            return stats
    except LockTimeout:
        return None  # another worker is planning


async def job(services: Services) -> None:
    """Plan due reminders, queue the due ones, expand due broadcasts and send a batch of the outbox."""
    from bot.outbox.sender import OutboxSender

    now = utcnow()
    await plan_if_due(services, now)
    await dispatch_due_reminders(services, now)
    await expand_due_broadcasts(services, now)
    if services.sender is None:
        services.sender = OutboxSender(services)
    await services.sender.run_once(SEND_LIMIT)
    await finish_broadcasts(services)
