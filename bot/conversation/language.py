"""Which language a learner writes in, and which one Sanad should answer in.

`detect_language` combines the packaged lingua detector (built once, for our five
languages) with what lingua cannot know: Arabic and Persian written in Latin
letters (Arabizi: "mata el deadline", Finglish: "salam chetori"), the letters
only Persian uses (پ چ ژ گ ک ی), and Telegram's `language_code` as a prior
when a message is too short to tell. `choose_language` decides whether a
detection may change the language we answer in.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from bot.i18n.catalogue import normalise_language
from bot.runtime.settings import LANGUAGES

# sources of a contact's language, strongest first
SOURCE_EXPLICIT = "explicit"  # the learner asked (change_language)
SOURCE_PLATFORM = "platform"  # preferred_language of the learner record
SOURCE_DETECTED = "detected"
SOURCE_HINT = "hint"  # Telegram language_code and the like
SOURCE_DEFAULT = "default"
STICKY_SOURCES = frozenset({SOURCE_EXPLICIT, SOURCE_PLATFORM})

# a detection must be at least this sure to switch an existing contact's language
SWITCH_CONFIDENCE = 0.8
# below this many letters a message says little about its language
SHORT_TEXT_LETTERS = 12

_ARABIC_SCRIPT = re.compile(r"[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]")
_PERSIAN_ONLY = re.compile(r"[پچژگکی]")  # letters (or forms) Arabic does not use
_ARABIC_ONLY = re.compile(r"[ةيكىؤإأ]")  # forms Persian keyboards rarely produce
_WORD = re.compile(r"[\w']+", re.UNICODE)
_ARABIZI_DIGIT = re.compile(r"[a-z][2-9]|[2-9][a-z]|\b[23579]\w")

# common words of Latin-letter Arabic (Levantine, Egyptian, Gulf) and Persian
_ARABIZI_WORDS = frozenset(
    """
    mata emta imta shu shou sho esh eish ween ma3 ana enta inta enti inti badi bade bidi baddi
    3am 3ndi 3andi kif keef kifak kifik kifek shukran shokran mashkour yalla yallah habibi habibti inshallah
    mashallah wallah la2 la2a aywa aiwa eh ee akid akeed tayeb tamam khalas hala marhaba ahlan salam3 ya3ni
    lesh leh lazem lazim mumken mumkin momken kteer ktir kter 7ada hada hayda hek heik hala2 halla2 hal2
    taba3i tab3i ta3i shi shee ma3lesh ma3leish bukra bokra ba3den ba3dein ems7 ms7 bsajjel sajjel 2adem
    wa2t wa2et shahade shahada jam3a jame3a e7ki a7ki 7aki tnejjeh ra7 ba3ref ba3rif kifak kifik
    """.split()
)
_FINGLISH_WORDS = frozenset(
    """
    salam chetori chetorin khubi khoobi khobi mersi merci30 mamnoon mamnun mamnunam lotfan lotfn mikham mikhay
    mikhaam mikhastam nemikham nemikhay mitoonam mitunam nemitoonam nemitunam mitoni mitooni chi chie chiye
    koja kojast kojas key kei chera chon chejoori chetor chetori bale baleh are areh na nakheir kheili khaily
    khaili kheyli dorood doroud khodahafez khodafez khodanegahdar bashe baashe hatman daram
    shoma anha hastam hasti nist nistam dige digeh hamin konam bokon
    bedam bede begoo begu bebinam befrest yadavari vaght vakht daneshgah madrak madrakam tahvil mohlat
    sabtenam ghabool ghabul shodam shode mishe nemishe komak komakam harf bezanam
    etelaat etelaatam hazf faramoosh zaban avaz tamdid emtehan doreh kojast
    """.split()
)
# words that are the same in Arabizi and Finglish say nothing on their own
_SHARED_LATIN = _ARABIZI_WORDS & _FINGLISH_WORDS
# dialect words that are also ordinary English, French or German words ("are" = yes in Finglish, "key" =
# when, "na" = no, "ana" = I): they only count next to an unambiguous dialect word or a digit-letter,
# so "are you a bot?" or "na gut" stay with lingua
_EUROPEAN_HOMOGRAPHS = frozenset(
    """
    are key na chi chie chon bale bade hala ana eh ee shi shee leh hek sho esh bas
    ma man to in un kar pak dars dore fi fee el il al wen wein kon ta tab hast nam sabt
    """.split()
)

_LINGUA_CODES = {"ENGLISH": "en", "ARABIC": "ar", "PERSIAN": "fa", "FRENCH": "fr", "GERMAN": "de"}


@lru_cache(maxsize=1)
def _detector() -> Any:
    """The lingua detector for our five languages, built once per process (it loads models lazily)."""
    from lingua import Language, LanguageDetectorBuilder

    languages = [Language.ENGLISH, Language.ARABIC, Language.PERSIAN, Language.FRENCH, Language.GERMAN]
    return LanguageDetectorBuilder.from_languages(*languages).build()


def _lingua(text: str) -> tuple[str | None, float]:
    values = _detector().compute_language_confidence_values(text)
    if not values:
        return None, 0.0
    best = values[0]
    return _LINGUA_CODES.get(best.language.name), float(best.value)


def _latin_arabic_or_persian(words: list[str]) -> tuple[str | None, float]:
    """Arabizi or Finglish from word lists and digit-letters; (None, 0) when neither shows."""
    def count(vocabulary: frozenset[str]) -> tuple[int, int]:
        hits = [w for w in words if w in vocabulary and w not in _SHARED_LATIN]
        weak = sum(1 for w in hits if w in _EUROPEAN_HOMOGRAPHS)
        return len(hits) - weak, weak

    arabizi_strong, arabizi_weak = count(_ARABIZI_WORDS)
    # "a7ki", "ma3", "2adem": digits standing for letters are the surest sign of Arabizi
    arabizi_strong += 2 * sum(1 for w in words if _ARABIZI_DIGIT.search(w) and not w.isdigit())
    finglish_strong, finglish_weak = count(_FINGLISH_WORDS)
    # homographs of European words only add to a dialect that already shows itself
    arabizi = arabizi_strong + (arabizi_weak if arabizi_strong else 0)
    finglish = finglish_strong + (finglish_weak if finglish_strong else 0)
    if arabizi == finglish == 0:
        return None, 0.0
    share = max(arabizi, finglish) / max(len(words), 1)
    confidence = min(0.95, 0.55 + share)
    if arabizi > finglish:
        return "ar", confidence
    if finglish > arabizi:
        return "fa", confidence
    return None, 0.0


def _arabic_script(text: str, hint: str | None) -> tuple[str, float]:
    persian = len(_PERSIAN_ONLY.findall(text))
    arabic = len(_ARABIC_ONLY.findall(text))
    if persian and not arabic:
        return "fa", 0.95
    if arabic and not persian:
        return "ar", 0.95
    code, confidence = _lingua(text)
    if code not in ("ar", "fa"):
        code, confidence = ("fa" if hint == "fa" else "ar"), 0.6
    if persian and arabic:
        # mixed keyboards: trust the letters that are in the majority, less sure
        code = "fa" if persian > arabic else "ar"
        confidence = min(confidence, 0.75)
    return code, confidence


def detect_language(text: str, hint: str | None = None) -> tuple[str | None, float]:
    """Guess the language of `text`: (code, confidence in 0..1), or (None, 0.0) when it can't tell.

    `hint` is the platform's language code (Telegram `language_code`, e.g. "fa-IR");
    it decides short or ambiguous messages ("ok", "👍") and breaks Arabic/Persian ties.
    """
    hint_code = normalise_language(hint) if hint else None
    if hint_code is not None and hint and hint.replace("_", "-").split("-")[0].lower() not in (
        *LANGUAGES,
        "prs",
        "pes",
        "per",
    ):
        hint_code = None
    stripped = (text or "").strip()
    letters = sum(1 for ch in stripped if ch.isalpha())
    if letters == 0:
        return (hint_code, 0.3) if hint_code else (None, 0.0)

    words = [w.lower() for w in _WORD.findall(stripped)]
    if _ARABIC_SCRIPT.search(stripped):
        arabic_words = sum(1 for w in words if _ARABIC_SCRIPT.search(w))
        if arabic_words * 2 >= len(words):  # "وين ال certificate تبعي" is Arabic
            return _arabic_script(stripped, hint_code)

    latin_code, latin_confidence = _latin_arabic_or_persian(words)
    if latin_code is not None and (latin_confidence >= 0.75 or len(words) < 5):
        return latin_code, latin_confidence  # sure enough that lingua could not overrule it
    code, confidence = _lingua(stripped)
    if latin_code is not None:
        # one dialect-looking word in a long sentence lingua is sure of is a coincidence
        if not (len(words) >= 5 and confidence >= 0.7):
            return latin_code, latin_confidence
    if letters < SHORT_TEXT_LETTERS:
        # "ok", "merci", "hallo": lingua is unsure and the platform usually knows better
        if hint_code is not None and (code == hint_code or confidence < 0.9):
            return hint_code, max(0.5, confidence if code == hint_code else 0.5)
        confidence = min(confidence, 0.6)
    return code, confidence


def choose_language(
    current: str | None,
    source: str | None,
    detected: str | None,
    confidence: float,
    hint: str | None,
) -> tuple[str, str]:
    """The language to answer in and where it came from: (code, source).

    A preference the learner stated (`explicit`) or the platform holds (`platform`)
    is kept: only change_language changes it. Otherwise a confident detection wins;
    a new contact takes the detection, else the platform hint, else English.
    """
    current_code = normalise_language(current) if current else None
    detected_code = detected if detected in LANGUAGES else None
    hint_code = normalise_language(hint) if hint else None
    if hint_code is not None and hint and normalise_language(hint) == "en" and not hint.lower().startswith("en"):
        hint_code = None  # an unknown hint ("ru") is not a vote for English

    if current_code is not None and source in STICKY_SOURCES:
        return current_code, source or SOURCE_EXPLICIT
    if current_code is not None:
        if detected_code is not None and detected_code != current_code and confidence >= SWITCH_CONFIDENCE:
            return detected_code, SOURCE_DETECTED
        return current_code, source or SOURCE_DETECTED
    if detected_code is not None and confidence >= 0.5:
        return detected_code, SOURCE_DETECTED
    if hint_code is not None:
        return hint_code, SOURCE_HINT
    if detected_code is not None:
        return detected_code, SOURCE_DETECTED
    return "en", SOURCE_DEFAULT


# names learners use for a language, in any of our five languages -> code
LANGUAGE_NAMES: dict[str, str] = {
    **dict.fromkeys(["en", "english", "anglais", "englisch", "انكليزي", "انجليزي", "إنجليزي", "الإنجليزية",
                     "الانجليزية", "انگلیسی", "inglizi"], "en"),
    **dict.fromkeys(["ar", "arabic", "arabe", "arabisch", "عربي", "العربي", "العربية", "بالعربي", "عربی",
                     "3arabi", "arabi"], "ar"),
    **dict.fromkeys(["fa", "prs", "farsi", "persian", "persan", "persisch", "dari", "فارسی", "فارسي", "دری",
                     "دري", "پارسی", "الفارسية"], "fa"),
    **dict.fromkeys(["fr", "french", "français", "francais", "französisch", "franzoesisch", "فرنسي",
                     "الفرنسية", "فرانسوی"], "fr"),
    **dict.fromkeys(["de", "german", "allemand", "deutsch", "ألماني", "الماني", "الألمانية", "آلمانی",
                     "almani"], "de"),
}


def language_from_name(value: str | None) -> str | None:
    """A language code from an entity value or a name ("Arabisch", "فارسی"); None if unknown."""
    if not value:
        return None
    key = value.strip().lower()
    if key in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[key]
    for prefix in ("بال", "ال", "به ", "l'"):
        if key.startswith(prefix) and key[len(prefix):] in LANGUAGE_NAMES:
            return LANGUAGE_NAMES[key[len(prefix):]]
    return None
