"""The analytics report of a date range (and optionally one language): the JSON of
`GET /api/analytics`, the daily series of its CSV and of the page's charts.

Days already rolled up are read from `analytics_daily`; the others (today, and days the worker
has not reached yet) are computed from the raw tables the same way. Counts only, nothing
personal. A figure with nothing to compute it from is None (null in JSON).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from bot.analytics.effect import Effect, estimate
from bot.analytics.rollup import COUNT_FIELDS, DayCounts, aggregate, day_bounds
from bot.runtime.settings import LANGUAGES
from bot.storage.db import utcnow
from bot.storage.models import AnalyticsDay, AnalyticsRollup, ReminderAssignment

if TYPE_CHECKING:
    from bot.runtime.services import Services

MAX_RANGE_DAYS = 731
TOP_INTENTS = 12
CSV_FIELDS = ("day", *COUNT_FIELDS, "contained")


class RangeError(ValueError):
    """A date range or language the report cannot be asked for."""


def parse_range(from_: str | None, to: str | None, language: str | None, today: date) -> tuple[date, date, str | None]:
    """`from`/`to` as YYYY-MM-DD (default: the last 30 days up to today) and an optional language."""
    try:
        end = date.fromisoformat(to) if to else today
        start = date.fromisoformat(from_) if from_ else end - timedelta(days=29)
    except ValueError as exc:
        raise RangeError("from and to must be dates written YYYY-MM-DD") from exc
    if start > end:
        raise RangeError("from must not be after to")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise RangeError(f"a range may span at most {MAX_RANGE_DAYS} days")
    if language in ("", None):
        language = None
    elif language not in LANGUAGES:
        raise RangeError(f"language must be one of {', '.join(LANGUAGES)}")
    return start, end, language


def percentile(values: list[int], q: float) -> int | None:
    """Linear interpolation between closest ranks (as numpy's default); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class Report:
    """One range's figures: per day (all languages merged), per language, and the effect."""

    start: date
    end: date
    language: str | None
    days: dict[date, DayCounts]
    by_language: dict[str, DayCounts]
    effect: Effect
    effect_by_language: dict[str, Effect] = field(default_factory=dict)

    @property
    def total(self) -> DayCounts:
        merged = DayCounts()
        for counts in self.days.values():
            merged.add(counts)
        return merged

    def as_json(self) -> dict[str, Any]:
        t = self.total
        contained = t.conversations - t.handed_off
        answers = sum(t.satisfaction.values())
        score_sum = sum(int(score) * n for score, n in t.satisfaction.items())
        top = sorted(t.intents.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "conversations": {"total": t.conversations, "contained": contained, "handed_off": t.handed_off,
                              "containment_rate": _rate(contained, t.conversations)},
            "messages": {"inbound": t.inbound, "fallback": t.fallback, "fallback_rate": _rate(t.fallback, t.inbound),
                         "by_language": {lang: {"inbound": c.inbound, "fallback": c.fallback}
                                         for lang, c in sorted(self.by_language.items()) if c.inbound}},
            "intents": dict(top),
            "handoffs": {
                "total": t.handoffs, "urgent": t.urgent,
                "first_response_s": {"p50": percentile(t.first_response_s, 0.5),
                                     "p90": percentile(t.first_response_s, 0.9)},
                "resolution_s": {"p50": percentile(t.resolution_s, 0.5), "p90": percentile(t.resolution_s, 0.9)},
                "sla_met_rate": _rate(t.sla_met, t.sla_eligible),
                "satisfaction": {"answers": answers, "mean": round(score_sum / answers, 2) if answers else None},
            },
            "reminders": {"planned": t.reminders_planned, "sent": t.reminders_sent,
                          "delivered": t.reminders_delivered, "read": t.reminders_read,
                          "failed": t.reminders_failed, "held_out": t.reminders_held_out},
            "effect": self.effect.as_dict(),
        }

    def daily_rows(self) -> list[dict[str, Any]]:
        """One row per day of the range (days without activity as zeros)."""
        rows = []
        day = self.start
        while day <= self.end:
            c = self.days.get(day, DayCounts())
            rows.append({"day": day.isoformat(), **{name: getattr(c, name) for name in COUNT_FIELDS},
                         "contained": c.conversations - c.handed_off})
            day += timedelta(days=1)
        return rows

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.daily_rows())
        return out.getvalue()


async def effects(services: Services, start: date, end: date, language: str | None) -> tuple[Effect, dict[str, Effect]]:
    """The effect over the deadlines due in the range with a known outcome: overall and per language."""
    first, _ = day_bounds(start)
    _, last = day_bounds(end)
    query = (
        select(ReminderAssignment.language, ReminderAssignment.arm, ReminderAssignment.on_time, func.count())
        .where(ReminderAssignment.due_at >= first, ReminderAssignment.due_at < last,
               ReminderAssignment.on_time.is_not(None))
        .group_by(ReminderAssignment.language, ReminderAssignment.arm, ReminderAssignment.on_time)
    )
    if language:
        query = query.where(ReminderAssignment.language == language)
    async with services.db.session() as session:
        rows = (await session.execute(query)).all()
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"reminded": [0, 0], "held_out": [0, 0]})
    for lang, arm, on_time, n in rows:
        for key in (lang, "*"):
            cell = counts[key].get(arm)
            if cell is not None:
                cell[0] += int(n)
                cell[1] += int(n) if on_time else 0

    def of(key: str) -> Effect:
        c = counts[key]
        return estimate(c["reminded"][0], c["reminded"][1], c["held_out"][0], c["held_out"][1])

    return of("*"), {lang: of(lang) for lang in sorted(counts) if lang != "*"}


async def build_report(services: Services, start: date, end: date, language: str | None = None,
                       now: datetime | None = None) -> Report:
    """The report of `start`..`end` (inclusive, UTC days), all languages or one."""
    now = now or utcnow()
    last = min(end, now.date())
    async with services.db.session() as session:
        rolled = set((await session.execute(
            select(AnalyticsRollup.day).where(AnalyticsRollup.day >= start.isoformat(),
                                              AnalyticsRollup.day <= last.isoformat())
        )).scalars())
        query = select(AnalyticsDay).where(AnalyticsDay.day >= start.isoformat(), AnalyticsDay.day <= last.isoformat())
        if language:
            query = query.where(AnalyticsDay.language == language)
        stored = (await session.execute(query)).scalars().all()
    per_day_language: dict[tuple[date, str], DayCounts] = {
        (date.fromisoformat(row.day), row.language): DayCounts.from_row(row) for row in stored
    }
    missing = [start + timedelta(days=i) for i in range((last - start).days + 1)
               if (start + timedelta(days=i)).isoformat() not in rolled]
    if missing:
        # today, and any day the worker has not rolled up yet: from the raw tables, in one pass
        for (day, lang), counts in (await aggregate(services, missing[0], missing[-1], now)).items():
            if day.isoformat() not in rolled and (language is None or lang == language):
                per_day_language[(day, lang)] = counts
    days: dict[date, DayCounts] = defaultdict(DayCounts)
    by_language: dict[str, DayCounts] = defaultdict(DayCounts)
    for (d, lang), counts in per_day_language.items():
        days[d].add(counts)
        by_language[lang].add(counts)
    overall, per_language = await effects(services, start, end, language)
    return Report(start, end, language, dict(days), dict(by_language), overall, per_language)
