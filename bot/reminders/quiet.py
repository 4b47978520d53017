"""Quiet hours in the learner's local time: nothing proactive is sent between start and end."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from bot.i18n.catalogue import zone


@lru_cache(maxsize=1024)
def cached_zone(name: str | None) -> ZoneInfo:
    """`bot.i18n.catalogue.zone`, cached: planning converts hundreds of thousands of times."""
    return zone(name)


def in_quiet_hours(local_hour: int, start_h: int, end_h: int) -> bool:
    """Whether a local hour falls in [start, end), which may wrap past midnight (21 -> 8)."""
    if start_h == end_h:
        return False
    if start_h > end_h:
        return local_hour >= start_h or local_hour < end_h
    return start_h <= local_hour < end_h


@lru_cache(maxsize=65536)
def _utc_offset(tz: str | None, utc_hour: datetime) -> timedelta:
    """The zone's offset during one UTC hour (zones change offset on whole UTC hours or half hours;
    the cache key is the hour, and `_local` rechecks the rare half-hour case)."""
    offset = utc_hour.astimezone(cached_zone(tz)).utcoffset()
    return offset if offset is not None else timedelta(0)


def _local(moment: datetime, tz: str | None) -> datetime:
    """Naive local wall time of `moment`; planning calls this hundreds of thousands of times."""
    utc = moment.astimezone(UTC)
    hour = utc.replace(minute=0, second=0, microsecond=0)
    offset = _utc_offset(tz, hour)
    if offset != _utc_offset(tz, hour + timedelta(hours=1)):
        offset = utc.astimezone(cached_zone(tz)).utcoffset() or timedelta(0)  # a transition this hour
    return (utc + offset).replace(tzinfo=None)


@lru_cache(maxsize=65536)
def _instant(tz: str | None, day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour=hour % 24), tzinfo=cached_zone(tz)).astimezone(UTC)


def quiet_end(moment: datetime, tz: str | None, start_h: int, end_h: int) -> datetime | None:
    """The UTC instant the quiet hours around `moment` end, or None when `moment` is not quiet."""
    local = _local(moment, tz)
    if not in_quiet_hours(local.hour, start_h, end_h):
        return None
    day = local.date()
    if start_h > end_h and local.hour >= start_h:
        day = day + timedelta(days=1)
    return _instant(tz, day, end_h)


def quiet_start_before(moment: datetime, tz: str | None, start_h: int, end_h: int) -> datetime | None:
    """The UTC instant the quiet hours containing `moment` began (None when not quiet)."""
    local = _local(moment, tz)
    if not in_quiet_hours(local.hour, start_h, end_h):
        return None
    day = local.date()
    if start_h > end_h and local.hour < end_h:
        day = day - timedelta(days=1)
    return _instant(tz, day, start_h)


@lru_cache(maxsize=131072)
def shift_out_of_quiet(send_at: datetime, due_at: datetime, tz: str | None, start_h: int, end_h: int) -> datetime:
    """When a reminder falls in quiet hours it goes out at their end; if that would be after the
    deadline itself (short offsets), it goes out just before they began instead. Cached: a course's
    deadline is the same instant for all its learners, so planning meets few distinct arguments."""
    end = quiet_end(send_at, tz, start_h, end_h)
    if end is None:
        return send_at
    if end < due_at:
        return end
    begin = quiet_start_before(send_at, tz, start_h, end_h)
    return begin - timedelta(minutes=1) if begin is not None else send_at
