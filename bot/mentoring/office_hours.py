"""When mentors answer: office hours per language (`MENTOR_OFFICE_HOURS[_<LANG>]`).

A specification is one or more ranges separated by `;`, each `[days] HH:MM-HH:MM [zone]`:
`mon-fri 09:00-17:00 Europe/Berlin; sat 10:00-13:00 Europe/Berlin`. Days are `mon`…`sun`,
single, listed with commas or as a span (`sun-thu`); without days a range holds every day.
The zone is an IANA name (UTC when left out). A range may cross midnight (`22:00-06:00`).
An empty specification means mentors may answer at any hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class OfficeHoursError(ValueError):
    """A specification that cannot be read (the message says which part)."""


@dataclass(frozen=True)
class Span:
    """One range: on these weekdays (0 = Monday), from `start` to `end` local time in `zone`."""

    days: frozenset[int]
    start: time
    end: time
    zone: ZoneInfo

    def open_at(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        clock = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= clock < self.end
        # across midnight: the evening part belongs to the day it starts on
        if clock >= self.start:
            return local.weekday() in self.days
        return clock < self.end and (local.weekday() - 1) % 7 in self.days

    def next_start(self, moment: datetime) -> datetime:
        """The first opening of this range after `moment`."""
        local = moment.astimezone(self.zone)
        for offset in range(8):
            day = (local + timedelta(days=offset)).date()
            if day.weekday() not in self.days:
                continue
            start = datetime.combine(day, self.start, tzinfo=self.zone)
            if start > moment:
                return start
        raise OfficeHoursError("a range without any day")  # unreachable: days is never empty


def _days(raw: str) -> frozenset[int]:
    found: set[int] = set()
    for part in raw.lower().split(","):
        first, _, last = part.strip().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise OfficeHoursError(f"unknown day in {raw!r}; use {', '.join(DAYS)}")
        start = DAYS.index(first)
        stop = DAYS.index(last) if last else start
        index = start
        while True:
            found.add(index)
            if index == stop:
                break
            index = (index + 1) % 7
    return frozenset(found)


def _clock(raw: str) -> time:
    try:
        hours, minutes = raw.split(":")
        return time(int(hours) % 24 if int(hours) == 24 else int(hours), int(minutes))
    except ValueError as exc:
        raise OfficeHoursError(f"{raw!r} is not a time like 09:30") from exc


@lru_cache(maxsize=64)
def parse(spec: str) -> tuple[Span, ...]:
    """The ranges of a specification (an empty one: no ranges, always open)."""
    spans: list[Span] = []
    for chunk in (part.strip() for part in spec.split(";")):
        if not chunk:
            continue
        words = chunk.split()
        days = frozenset(range(7))
        if words and not words[0][:1].isdigit():
            days = _days(words.pop(0))
        if not words or "-" not in words[0]:
            raise OfficeHoursError(f"{chunk!r}: give hours like 09:00-17:00")
        start_raw, _, end_raw = words.pop(0).partition("-")
        start, end = _clock(start_raw), _clock(end_raw)
        if start == end:
            raise OfficeHoursError(f"{chunk!r}: the range is empty")
        try:
            zone = ZoneInfo(words.pop(0)) if words else ZoneInfo("UTC")
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise OfficeHoursError(f"{chunk!r}: unknown time zone") from exc
        if words:
            raise OfficeHoursError(f"{chunk!r}: unexpected {' '.join(words)!r}")
        spans.append(Span(days, start, end, zone))
    return tuple(spans)


def is_open(spec: str, moment: datetime) -> bool:
    """Are mentors of these hours at work at `moment`?"""
    spans = parse(spec)
    return not spans or any(span.open_at(moment) for span in spans)


def next_opening(spec: str, moment: datetime) -> datetime | None:
    """When mentors are back: `moment` itself inside office hours, None without any hours set."""
    spans = parse(spec)
    if not spans:
        return None
    if is_open(spec, moment):
        return moment
    return min(span.next_start(moment) for span in spans)
