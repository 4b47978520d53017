"""Whether a message holds a crisis phrase: the one matcher that Rasa's CrisisOverride and the gateway share.

Pure Python (PyYAML and the standard library): the gateway loads this file by its path,
without Rasa. The phrases live in `nlu/crisis_phrases.yml` (one list per language, no
second copy); see that file for how they are written. Precision matters as much as
recall: a false alarm sends a learner the crisis text and an urgent hand-off. So phrases
match whole words only, a negation right before a phrase ("I don't want to die", "je ne
vais pas me tuer") or right after it in Persian leaves the decision to the classifier,
and harmless contexts ("suicide prevention") do not count.

    crisis_cue("I want to kill myself")        -> True
    crisis_cue("I'm not going to kill myself") -> False  (the classifier still reads it)
    crisis_cue("bade et3allam programming")    -> False
"""

from __future__ import annotations

import importlib.util
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

PHRASES_PATH = Path(__file__).resolve().parent.parent / "crisis_phrases.yml"
# words (and spaces) allowed between a negation and its phrase are listed in the negation itself
_BEFORE_WINDOW = 60
_AFTER_WINDOW = 40


def _load_normalise() -> Callable[[str], str]:
    """components/spelling.py's normalise, whether this module was imported as a package member or by path."""
    try:
        from components.spelling import normalise

        return normalise
    except ImportError:
        name = "sanad_nlu_spelling"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("spelling.py"))
            if spec is None or spec.loader is None:
                raise
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        found: Callable[[str], str] = module.normalise
        return found


normalise = _load_normalise()


class LanguagePhrases:
    """One language's compiled lists (a plain class: this module may be loaded by path, outside sys.modules)."""

    __slots__ = ("harmless", "language", "negated_after", "negated_before", "phrases")

    def __init__(self, language: str, phrases: re.Pattern[str], negated_before: re.Pattern[str] | None,
                 negated_after: re.Pattern[str] | None, harmless: re.Pattern[str] | None) -> None:
        self.language = language
        self.phrases = phrases
        self.negated_before = negated_before
        self.negated_after = negated_after
        self.harmless = harmless

    def first_cue(self, text: str, harmless: list[tuple[int, int]]) -> str | None:
        """The first phrase in `text` (normalised) that is neither negated nor inside a harmless span."""
        for match in self.phrases.finditer(text):
            start, end = match.span()
            if any(h_start <= start and end <= h_end for h_start, h_end in harmless):
                continue
            before = text[max(0, start - _BEFORE_WINDOW):start]
            if self.negated_before is not None and self.negated_before.search(before):
                continue
            after = text[end:end + _AFTER_WINDOW]
            if self.negated_after is not None and self.negated_after.match(after):
                continue
            return match.group(0)
        return None


def _alternation(patterns: list[str]) -> str:
    return "|".join(f"(?:{normalise(p)})" for p in patterns)


def _words(patterns: list[str], prefixes: str = "") -> re.Pattern[str]:
    """Whole-word matching; Python's \\w covers Arabic and Persian letters too."""
    glued = f"(?:{prefixes})?" if prefixes else ""
    return re.compile(rf"(?<![\w']){glued}(?:{_alternation(patterns)})(?![\w])")


_UPPER_ESCAPE = re.compile(r"\\[A-Z]")


def compile_language(language: str, spec: dict[str, Any]) -> LanguagePhrases:
    """Compile one language's lists; patterns are normalised like the text, so \\S or \\W would turn lower case."""
    phrases = [str(p) for p in spec.get("phrases") or []]
    if not phrases:
        raise ValueError(f"crisis phrases: no phrases for {language}")
    negations = [str(p) for p in spec.get("negations") or []]
    after = [str(p) for p in spec.get("negations_after") or []]
    harmless = [str(p) for p in spec.get("harmless") or []]
    for pattern in (*phrases, *negations, *after, *harmless, str(spec.get("prefixes") or "")):
        if _UPPER_ESCAPE.search(pattern):
            raise ValueError(f"crisis phrases ({language}): no upper-case escapes, they are lower-cased: {pattern}")
    return LanguagePhrases(
        language=language,
        phrases=_words(phrases, str(spec.get("prefixes") or "")),
        # the negation ends the text before the phrase: only the listed auxiliaries may stand between
        negated_before=re.compile(rf"(?:{_alternation(negations)})\s*$") if negations else None,
        negated_after=re.compile(rf"^\s*(?:\S+\s+){{0,2}}(?:{_alternation(after)})(?![\w])") if after else None,
        harmless=_words(harmless) if harmless else None,
    )


def load_phrases(path: Path = PHRASES_PATH) -> tuple[LanguagePhrases, ...]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected one mapping per language")
    return tuple(compile_language(str(language), spec or {}) for language, spec in data.items())


@lru_cache(maxsize=1)
def _phrases() -> tuple[LanguagePhrases, ...]:
    return load_phrases()


def crisis_match(text: str) -> tuple[str, str] | None:
    """(language of the list, matched words) of the first crisis phrase in `text`; every list is tried,
    since learners mix languages and scripts."""
    normalised = " ".join(normalise(text).split())
    if not normalised:
        return None
    languages = _phrases()
    # harmless contexts count in every language's list ("suicide prevention" holds the French "suicide")
    harmless = [m.span() for language in languages if language.harmless for m in language.harmless.finditer(normalised)]
    for language in languages:
        cue = language.first_cue(normalised, harmless)
        if cue is not None:
            return language.language, cue
    return None


def crisis_cue(text: str) -> bool:
    """Whether `text` holds a crisis phrase that is neither negated nor harmless."""
    return crisis_match(text) is not None
