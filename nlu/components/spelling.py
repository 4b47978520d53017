"""One spelling for what learners type: the normalisation shared by the tokenizer and the crisis phrases.

Pure Python, no Rasa import: the gateway loads this module (through `crisis.py`) by its file path.
Learners type on phones with whatever keyboard they have: with or without diacritics and
accents, with tatweel, with Arabic or Persian forms of ya and kaf, with Arabic-Indic or
Persian digits, with or without the zero-width non-joiner, with curly apostrophes.
"""

from __future__ import annotations

import re
import unicodedata

_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640\u200c\u200d\u200f\u200e]")
_REPEATS = re.compile(r"(.)\1{2,}")
_TABLE = str.maketrans(
    {
        "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا",
        "ى": "ی", "ي": "ی", "ئ": "ی",
        "ك": "ک",
        "ة": "ه", "ۀ": "ه",
        "ؤ": "و",
        "٠": "0", "١": "1", "٢": "2", "٣": "3", "٤": "4",
        "٥": "5", "٦": "6", "٧": "7", "٨": "8", "٩": "9",
        "۰": "0", "۱": "1", "۲": "2", "۳": "3", "۴": "4",
        "۵": "5", "۶": "6", "۷": "7", "۸": "8", "۹": "9",
        "’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'",
        "ß": "ss", "œ": "oe", "æ": "ae",
    }
)
_LATIN_END = 0x0250  # Latin letters with accents all lie below this code point


def _fold_latin(text: str) -> str:
    """é -> e, ü -> u, ç -> c; other scripts untouched."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        if ord(ch) < _LATIN_END and not ch.isascii():
            ch = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append(ch)
    return "".join(out)


def normalise(text: str) -> str:
    """One spelling for the variants people type; lowercase; no Latin accents; 'pleeease' -> 'pleease'."""
    text = _DIACRITICS.sub("", text).translate(_TABLE).lower()
    return _REPEATS.sub(r"\1\1", _fold_latin(text))
