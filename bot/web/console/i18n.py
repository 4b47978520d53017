"""The console's own language: each mentor reads it in theirs (en, ar, fa, fr, de).

Every console string is a `console_…` key of the message catalogue
(`bot/i18n/locales/<lang>/console.json`); waiting times, dates and numbers are formatted
with Babel in the UI language. The UI language of a request is, in this order: the
`console_lang` cookie set by the header's language switcher, the first language of
the signed-in mentor's `languages`, the browser's Accept-Language (login page only),
English. Learner content is never translated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from babel import Locale
from babel.dates import format_date, format_skeleton, format_time, format_timedelta, get_timezone_name
from babel.lists import format_list
from babel.numbers import format_decimal, format_percent
from starlette.requests import Request

from bot.i18n.catalogue import get_catalogue, supported_language, zone
from bot.runtime.settings import DEFAULT_LANGUAGE, LANGUAGES, RTL_LANGUAGES
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Mentor

LANG_COOKIE = "console_lang"
LANG_COOKIE_MAX_AGE_S = 365 * 24 * 3600


def supported(code: str | None) -> str | None:
    """`ar`, `ar-SY`, `fa_AF`, `prs`… as one of the five console languages; None for anything else."""
    return supported_language(code.strip()) if code else None


def mentor_default(mentor: Mentor) -> str:
    """The first of the mentor's languages when the console has it, else English."""
    first = (mentor.languages or "").split(",", 1)[0]
    return supported(first) or DEFAULT_LANGUAGE


def from_accept_language(header: str | None) -> str | None:
    """The supported language the browser prefers most (q-values respected, ties in header order)."""
    choices: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        language = supported(tag)
        if language and weight > 0:
            choices.append((-weight, position, language))
    return min(choices)[2] if choices else None


def chosen_language(request: Request) -> str | None:
    """The switcher's cookie, when it holds one of the five codes."""
    value = request.cookies.get(LANG_COOKIE)
    return value if value is not None and value in LANGUAGES else None


def ui_language(request: Request, mentor: Mentor | None = None) -> str:
    chosen = chosen_language(request)
    if chosen:
        return chosen
    if mentor is not None:
        return mentor_default(mentor)
    return from_accept_language(request.headers.get("accept-language")) or DEFAULT_LANGUAGE


@lru_cache(maxsize=len(LANGUAGES))
def _locale(language: str) -> Locale:
    return Locale.parse(language)


def text(key: str, language: str, /, **params: Any) -> str:
    return get_catalogue().text(key, language, **params)


# strings console.js shows (passed to the page as JSON)
JS_KEYS: dict[str, str] = {
    "urgent": "console_js_urgent",
    "waiting": "console_js_waiting",
    "message": "console_js_message",
    "offer": "console_js_offer",
    "transferred": "console_js_transferred",
    "lead": "console_js_lead",
    "lead_urgent_unclaimed": "console_js_lead_urgent_unclaimed",
    "lead_promise_broken": "console_js_lead_promise_broken",
    "lead_nobody_on_duty": "console_js_lead_nobody_on_duty",
    "security_alert": "console_js_security_alert",
}


@dataclass(frozen=True)
class UI:
    """The console's strings and formats in one language, for templates and handlers."""

    lang: str

    @property
    def dir(self) -> str:
        return "rtl" if self.lang in RTL_LANGUAGES else "ltr"

    @property
    def languages(self) -> tuple[str, ...]:
        return LANGUAGES

    def t(self, key: str, /, **params: Any) -> str:
        return text(key, self.lang, **params)

    @staticmethod
    def isolate(value: Any) -> str:
        """Learner or platform text put into a translated sentence keeps its own direction (FSI … PDI)."""
        return f"\u2068{value}\u2069" if value not in (None, "") else ""

    def name_of(self, code: str) -> str:
        """A language's own name ("العربية"), for the switcher."""
        return text("console_language_name", code)

    def label(self, kind: str, value: str | None) -> str:
        """A translated enum value (state, reason, outcome, channel, …); an unknown one shows as it is."""
        raw = str(value or "")
        key = f"console_{kind}_{raw}"
        return self.t(key) if raw and get_catalogue().has(key) else raw

    # --- times --------------------------------------------------------------

    def _elapsed(self, moment: datetime, now: datetime | None) -> timedelta:
        seconds = ((now or utcnow()) - as_utc(moment)).total_seconds()
        return timedelta(seconds=max(60.0, seconds))  # "1 minute" at least: the queue counts in minutes

    def duration(self, moment: datetime | None, now: datetime | None = None) -> str:
        """How long since `moment`: "3 minutes", "3 ساعات"…"""
        if moment is None:
            return ""
        return format_timedelta(self._elapsed(moment, now), granularity="minute", threshold=1, locale=self.lang)

    def ago(self, moment: datetime | None, now: datetime | None = None) -> str:
        """"3 minutes ago", "vor 3 Minuten", "قبل 3 دقائق"…"""
        if moment is None:
            return ""
        return format_timedelta(-self._elapsed(moment, now), granularity="minute", threshold=1,
                                add_direction=True, locale=self.lang)

    def _date_time(self, moment: datetime, date_text: str) -> str:
        pattern = str(_locale(self.lang).datetime_formats["medium"])
        time_text = format_time(moment, format="short", locale=self.lang)
        return pattern.replace("'", "").replace("{1}", date_text).replace("{0}", time_text)

    def deadline(self, moment: Any, tz: str | None) -> str:
        """A deadline in the learner's zone, with the zone named: "Dec 3, 2026, 9:30 PM (Afghanistan Time)"."""
        if not isinstance(moment, datetime):
            return str(moment or "")
        local = as_utc(moment).astimezone(zone(tz))
        when = self._date_time(local, format_date(local.date(), format="medium", locale=self.lang))
        return f"{when} ({get_timezone_name(local, width='long', locale=self.lang)})"

    def stamp(self, moment: datetime) -> str:
        """A transcript time in UTC ("Dec 3, 5:00 PM UTC"); console.js shows it in the browser's zone."""
        utc = as_utc(moment)
        return f"{self._date_time(utc, format_skeleton('MMMd', utc, locale=self.lang))} UTC"

    # --- numbers and names -----------------------------------------------------

    def num(self, value: float | int | None, digits: int = 1) -> str:
        return format_decimal(round(float(value or 0), digits), locale=self.lang)

    def percent(self, value: float | int | None) -> str:
        return format_percent(round(float(value or 0)) / 100, locale=self.lang)

    def language(self, code: str | None) -> str:
        """A language code as a name in the UI language ("ar" -> "Arabic" / "Arabisch")."""
        raw = (code or "").strip()
        return str(_locale(self.lang).languages.get(raw.lower(), raw)) if raw else ""

    def language_list(self, codes: str | None) -> str:
        names = [self.language(c) for c in (codes or "").split(",") if c.strip()]
        return format_list(names, locale=self.lang) if names else ""

    def country(self, code: str | None) -> str:
        raw = (code or "").strip()
        return str(_locale(self.lang).territories.get(raw.upper(), raw)) if raw else ""

    def js_strings(self) -> dict[str, str]:
        return {name: self.t(key) for name, key in JS_KEYS.items()}
