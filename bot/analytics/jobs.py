"""The analytics worker job: what messages were understood as (tracker store sweep), the outcomes of
the reminder experiment, and the daily roll-ups; one worker at a time."""

from __future__ import annotations

import logging
import time

from bot.analytics import holdout, rollup, understanding
from bot.runtime.coordination import LockTimeout
from bot.runtime.services import Services

log = logging.getLogger(__name__)

LOCK = "analytics"
REFRESHED_KEY = "analytics:refreshed"
# the last days are rolled up again at most this often (late replies, resolutions and receipts)
REFRESH_EVERY_S = 3600.0


async def job(services: Services) -> None:
    """Sweep, read due outcomes from the platform, roll up the days that need it."""
    try:
        async with services.coord.lock(LOCK, ttl_s=600.0, wait_s=0.05):
            await understanding.sweep_tracker_store(services)
            from integrations.platform import PlatformError

            try:
                await holdout.check_outcomes(services, services.platform())
            except PlatformError as exc:
                log.warning("reminder outcomes not read: platform unavailable (%s)", type(exc).__name__)
            last = await services.coord.cache_get(REFRESHED_KEY)
            refresh = last is None or time.time() - float(last) > REFRESH_EVERY_S
            await rollup.roll_up(services, refresh=refresh)
            if refresh:
                await services.coord.cache_set(REFRESHED_KEY, str(time.time()), ttl_s=2 * REFRESH_EVERY_S)
    except LockTimeout:
        return  # another worker is at it
