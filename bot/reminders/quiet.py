"""Quiet hours in the learner's local time: nothing proactive is sent between start and end."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from bot.catalogue import zone


@lru_cache(maxsize=1024)
def cached_zone(name: str | None) -> ZoneInfo:
    """`bot.catalogue.zone`, cached: planning converts hundreds of thousands of times."""
    return zone(name)


def in_quiet_hours(local_hour: int, start_h: int, end_h: int) -> bool:
    """Whether a local hour falls in [start, end), which may wrap past midnight (21 -> 8)."""
    if start_h == end_h:
        return False
    if start_h > end_h:
        return local_hour >= start_h or local_hour < end_h
    return start_h <= local_hour < end_h


def quiet_end(moment: datetime, tz: str | None, start_h: int, end_h: int) -> datetime | None:
    """The UTC instant the quiet hours around `moment` end, or None when `moment` is not quiet."""
    zone_info = cached_zone(tz)
    local = moment.astimezone(zone_info)
    if not in_quiet_hours(local.hour, start_h, end_h):
        return None
    day = local.date()
    if start_h > end_h and local.hour >= start_h:
        day = day + timedelta(days=1)
    end_local = datetime.combine(day, time(hour=end_h % 24), tzinfo=zone_info)
    return end_local.astimezone(UTC)


def quiet_start_before(moment: datetime, tz: str | None, start_h: int, end_h: int) -> datetime | None:
    """The UTC instant the quiet hours containing `moment` began (None when not quiet)."""
    zone_info = cached_zone(tz)
    local = moment.astimezone(zone_info)
    if not in_quiet_hours(local.hour, start_h, end_h):
        return None
    day = local.date()
    if start_h > end_h and local.hour < end_h:
        day = day - timedelta(days=1)
    start_local = datetime.combine(day, time(hour=start_h % 24), tzinfo=zone_info)
    return start_local.astimezone(UTC)


def shift_out_of_quiet(send_at: datetime, due_at: datetime, tz: str | None, start_h: int, end_h: int) -> datetime:
    """When a reminder falls in quiet hours it goes out at their end; if that would be after the
    deadline itself (short offsets), it goes out just before they began instead."""
    end = quiet_end(send_at, tz, start_h, end_h)
    if end is None:
        return send_at
    if end < due_at:
        return end
    begin = quiet_start_before(send_at, tz, start_h, end_h)
    return begin - timedelta(minutes=1) if begin is not None else send_at
