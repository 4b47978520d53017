"""Every catalogue entry exists in all five languages with the same placeholders and buttons."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.i18n.catalogue import LOCALES_DIR, Catalogue, placeholders
from bot.runtime.settings import LANGUAGES


def _load_all() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {lang: {} for lang in LANGUAGES}
    for lang in LANGUAGES:
        for path in sorted((LOCALES_DIR / lang).glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            assert isinstance(data, dict), path
            for key, value in data.items():
                assert key not in entries[lang], f"{key} defined twice in {lang}"
                entries[lang][key] = value
    return entries


ENTRIES = _load_all()
ALL_KEYS = sorted(set().union(*(set(e) for e in ENTRIES.values())))


def _texts(entry: Any) -> list[str]:
    if isinstance(entry, str):
        return [entry]
    return [entry.get("text", "")] + [b["title"] for b in entry.get("buttons", [])]


def _shape(entry: Any) -> tuple[str, ...]:
    """What must match across languages: placeholders, button payloads."""
    if isinstance(entry, str):
        return tuple(sorted(placeholders(entry)))
    names: set[str] = set()
    for text in _texts(entry):
        names |= placeholders(text)
    payloads = tuple(b["payload"] for b in entry.get("buttons", []))
    return (*sorted(names), "|", *payloads)


def test_catalogue_loads_and_has_keys() -> None:
    catalogue = Catalogue.load()
    assert catalogue.keys("en") == set(ENTRIES["en"])
    assert len(ALL_KEYS) > 20


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_key_in_every_language(key: str) -> None:
    missing = [lang for lang in LANGUAGES if key not in ENTRIES[lang]]
    assert not missing, f"{key} lacks {missing}"


@pytest.mark.parametrize("key", ALL_KEYS)
def test_same_placeholders_and_buttons(key: str) -> None:
    shapes = {lang: _shape(ENTRIES[lang][key]) for lang in LANGUAGES if key in ENTRIES[lang]}
    assert len(set(shapes.values())) == 1, f"{key}: {shapes}"


@pytest.mark.parametrize("key", ALL_KEYS)
def test_no_empty_text(key: str) -> None:
    for lang in LANGUAGES:
        if key in ENTRIES[lang]:
            for text in _texts(ENTRIES[lang][key]):
                assert text.strip(), f"{key} empty in {lang}"


def test_translations_are_not_english_copies() -> None:
    """A key whose text is long and identical to English was probably not translated."""
    copies = []
    for key, en in ENTRIES["en"].items():
        text = en if isinstance(en, str) else en.get("text", "")
        words = re.sub(r"\{[^}]*\}", "", text)
        if sum(ch.isalpha() for ch in words) < 25:
            continue  # a format line ("{title}: {when}") may well be the same everywhere
        for lang in ("ar", "fa", "fr", "de"):
            other = ENTRIES[lang].get(key)
            other_text = other if isinstance(other, str) else (other or {}).get("text", "")
            if other_text == text:
                copies.append((key, lang))
    assert not copies


def test_dialogue_catalogue_renders_in_every_language() -> None:
    catalogue = Catalogue.load()
    for lang in LANGUAGES:
        rendered = catalogue.render("utter_confirm_delete_my_data", lang)
        assert [b.payload for b in rendered.buttons] == ["/affirm", "/deny"]
        distress = catalogue.render("dialogue_distress", lang, contacts="• 112")
        assert "• 112" in distress.text and "{" not in distress.text


def test_locale_dirs_are_exactly_the_languages() -> None:
    dirs = {p.name for p in Path(LOCALES_DIR).iterdir() if p.is_dir()}
    assert dirs == set(LANGUAGES)
