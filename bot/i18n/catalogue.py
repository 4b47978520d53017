"""The message catalogue: every learner-facing string, one set of JSON files per language.

Files live in `bot/i18n/locales/<lang>/<area>.json`; each key maps to a string or to
`{"text": ..., "buttons": [{"title": ..., "payload": ...}]}`. Placeholders use
`{name}` and must be the same in every language (a test checks it). Dates and
numbers are formatted with Babel in the learner's language and time zone.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_time
from babel.numbers import format_decimal

from bot.runtime.settings import DEFAULT_LANGUAGE, LANGUAGES

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Button:
    """A suggested reply: what the learner sees and what it sends back."""

    title: str
    payload: str


@dataclass(frozen=True)
class Rendered:
    """A response rendered in one language."""

    text: str
    buttons: tuple[Button, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "buttons": [{"title": b.title, "payload": b.payload} for b in self.buttons]}


class _SafeDict(dict[str, Any]):
    """Leaves an unknown placeholder visible instead of raising inside a conversation."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def placeholders(text: str) -> set[str]:
    """Names of the `{placeholders}` in a template."""
    return {name for _, name, _, _ in _FORMATTER.parse(text) if name}


def supported_language(code: str | None) -> str | None:
    """`ar-SY`, `prs`, `fa_AF`, `de-DE`… as one of the five catalogue languages; None for any other."""
    if not code:
        return None
    base = code.replace("_", "-").split("-", 1)[0].lower()
    if base in ("prs", "pes", "per"):
        base = "fa"
    return base if base in LANGUAGES else None


def normalise_language(code: str | None) -> str:
    """Map `ar-SY`, `prs`, `fa_AF`, `de-DE`… onto one of the five catalogue languages (else the default)."""
    return supported_language(code) or DEFAULT_LANGUAGE


def learner_language(metadata_language: Any, slot_language: Any) -> str:
    """The language to answer a learner in, inside Rasa (NLG endpoint and custom actions alike).

    The gateway's metadata wins: it is the contact's language, which an explicit switch sets
    (the `set_language` command, the `/language` command, a mentor). Rasa's `language` slot only
    fills in for a tracker without metadata: it is also filled from any message that merely names
    a language ("do you have courses in German?"), and it goes stale when the gateway changes it."""
    for candidate in (metadata_language, slot_language):
        if isinstance(candidate, str) and supported_language(candidate):
            return normalise_language(candidate)
    return DEFAULT_LANGUAGE


class Catalogue:
    """All entries of all languages, loaded once."""

    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self.entries = entries  # language -> key -> entry

    @classmethod
    def load(cls, directory: Path = LOCALES_DIR) -> Catalogue:
        entries: dict[str, dict[str, Any]] = {lang: {} for lang in LANGUAGES}
        for lang in LANGUAGES:
            for path in sorted((directory / lang).glob("*.json")):
                data = json.loads(path.read_text(encoding="utf-8"))
                for key, value in data.items():
                    if key in entries[lang]:
                        raise ValueError(f"duplicate catalogue key {key!r} in {path}")
                    entries[lang][key] = value
        return cls(entries)

    def keys(self, language: str = DEFAULT_LANGUAGE) -> set[str]:
        return set(self.entries[language])

    def has(self, key: str) -> bool:
        return key in self.entries[DEFAULT_LANGUAGE]

    def entry(self, key: str, language: str) -> Any:
        lang = normalise_language(language)
        if key in self.entries[lang]:
            return self.entries[lang][key]
        if key in self.entries[DEFAULT_LANGUAGE]:
            return self.entries[DEFAULT_LANGUAGE][key]
        raise KeyError(key)

    def text(self, key: str, language: str, /, **params: Any) -> str:
        """Just the text of an entry, formatted."""
        return self.render(key, language, **params).text

    def render(self, key: str, language: str, /, **params: Any) -> Rendered:
        """Render `key` in `language` (falls back to English for an unknown language)."""
        raw = self.entry(key, language)
        values = _SafeDict(params)
        if isinstance(raw, str):
            return Rendered(raw.format_map(values))
        text = str(raw.get("text", "")).format_map(values)
        buttons = tuple(
            Button(title=str(b["title"]).format_map(values), payload=str(b["payload"]).format_map(values))
            for b in raw.get("buttons", [])
        )
        return Rendered(text, buttons)


@lru_cache(maxsize=1)
def get_catalogue() -> Catalogue:
    """The process-wide catalogue."""
    return Catalogue.load()


# --- dates and numbers ------------------------------------------------------

def zone(name: str | None) -> ZoneInfo:
    """The learner's time zone; an unknown or missing name falls back to UTC."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def babel_locale(language: str) -> str:
    return normalise_language(language)


def local_date(moment: datetime, tz: str | None, language: str) -> str:
    """`moment` as a long date in the learner's zone and language (e.g. "3 December 2026")."""
    return format_date(moment.astimezone(zone(tz)).date(), format="long", locale=babel_locale(language))


def local_time(moment: datetime, tz: str | None, language: str) -> str:
    return format_time(moment.astimezone(zone(tz)), format="short", locale=babel_locale(language))


def number(value: float | int, language: str) -> str:
    return format_decimal(value, locale=babel_locale(language))


def day_phrase(moment: datetime, now: datetime, tz: str | None, language: str) -> str:
    """"today" / "tomorrow" where apt, else the long local date, in the learner's language."""
    tzinfo = zone(tz)
    day: date = moment.astimezone(tzinfo).date()
    today = now.astimezone(tzinfo).date()
    cat = get_catalogue()
    if day == today:
        return cat.text("date_today", language)
    if day == today + timedelta(days=1):
        return cat.text("date_tomorrow", language)
    return local_date(moment, tz, language)
