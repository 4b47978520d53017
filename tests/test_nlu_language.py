"""Language detection and the choice of answer language, on real-looking learner messages."""

from __future__ import annotations

import pytest

from bot.conversation.language import choose_language, detect_language, language_from_name

MESSAGES = {
    "en": [
        "when is my next deadline?",
        "I can't log in to my account, it says wrong password",
        "can I talk to a real person please",
        "where can I download my certificate for the python course",
        "will a university in Germany accept my credits",
        "please stop sending me reminders",
        "I missed the exam because I was sick, what should I do",
    ],
    "fr": [
        "bonjour, quand est ma prochaine date limite ?",
        "je n'arrive pas a me connecter a mon compte",
        "je voudrais parler a un mentor s'il vous plait",
        "ou est mon certificat du cours de python",
        "est-ce que les universites allemandes acceptent mes credits",
        "arretez de m'envoyer des rappels",
    ],
    "de": [
        "wann ist meine naechste frist?",
        "ich kann mich nicht einloggen, das passwort geht nicht",
        "ich moechte mit einem menschen sprechen",
        "wo finde ich mein zertifikat fuer den kurs",
        "werden meine credits an einer deutschen uni anerkannt",
        "bitte keine erinnerungen mehr schicken",
    ],
    "ar": [
        "متى الموعد النهائي القادم؟",
        "ما عم اقدر اعمل تسجيل دخول على حسابي",
        "بدي احكي مع انسان لو سمحت",
        "وين ال certificate تبعي",
        "هل ستقبل الجامعات في ألمانيا ساعاتي المعتمدة",
        "السلام عليكم",
        "mata el deadline",
        "bade a7ki ma3 shakhs",
        "shu el courses taba3i?",
        "kifak, 3andi so2al 3an el shahade",
    ],
    "fa": [
        "مهلت بعدی من کیه؟",
        "نمیتونم وارد حسابم بشم",
        "میخوام با یه آدم واقعی حرف بزنم",
        "سرتیفیکت من کجاست",
        "دانشگاه های آلمان واحدهای منو قبول میکنن؟",
        "سلام، چطوری؟",
        "salam chetori",
        "mikham ba mentor harf bezanam lotfan",
        "deadline man kei hast? mersi",
        "nemitoonam login konam",
    ],
}
CASES = [(lang, text) for lang, texts in MESSAGES.items() for text in texts]


@pytest.mark.parametrize(("expected", "text"), CASES)
def test_detects_learner_messages(expected: str, text: str) -> None:
    code, confidence = detect_language(text)
    assert code == expected, (text, code, confidence)
    assert 0.0 < confidence <= 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("کجا", "fa"),  # Persian kaf
        ("چی شده", "fa"),
        ("كيف", "ar"),  # Arabic kaf
        ("مدرسة", "ar"),  # ta marbuta
    ],
)
def test_script_cues_separate_arabic_and_persian(text: str, expected: str) -> None:
    assert detect_language(text)[0] == expected


def test_hint_decides_short_messages() -> None:
    assert detect_language("ok", "de")[0] == "de"
    assert detect_language("ok", "fr-FR")[0] == "fr"
    assert detect_language("👍", "fa")[0] == "fa"
    assert detect_language("👍") == (None, 0.0)
    assert detect_language("", "ar")[0] == "ar"


def test_an_unknown_hint_is_ignored() -> None:
    assert detect_language("👍", "ru") == (None, 0.0)


def test_long_text_beats_the_hint() -> None:
    code, confidence = detect_language("je voudrais savoir quand se termine mon cours de data science", "de")
    assert code == "fr" and confidence >= 0.8


def test_explicit_and_platform_preferences_are_kept() -> None:
    assert choose_language("ar", "explicit", "en", 0.99, "en") == ("ar", "explicit")
    assert choose_language("fa", "platform", "de", 0.99, "de") == ("fa", "platform")


def test_a_confident_detection_switches_a_detected_language() -> None:
    assert choose_language("en", "detected", "fr", 0.95, None) == ("fr", "detected")
    assert choose_language("en", "detected", "fr", 0.4, None) == ("en", "detected")
    assert choose_language("ar", "hint", "de", 0.9, "ar") == ("de", "detected")


def test_new_contacts_take_detection_then_hint_then_english() -> None:
    assert choose_language(None, None, "fa", 0.9, "de") == ("fa", "detected")
    assert choose_language(None, None, None, 0.0, "ar-SY") == ("ar", "hint")
    assert choose_language(None, None, "de", 0.3, "fr") == ("fr", "hint")
    assert choose_language(None, None, None, 0.0, None) == ("en", "default")
    assert choose_language(None, None, None, 0.0, "ru") == ("en", "default")


@pytest.mark.parametrize(
    ("name", "code"),
    [("Arabic", "ar"), ("عربي", "ar"), ("بالعربي", "ar"), ("arabisch", "ar"), ("Farsi", "fa"), ("دری", "fa"),
     ("français", "fr"), ("Deutsch", "de"), ("english", "en"), ("klingon", None), (None, None)],
)
def test_language_names(name: str | None, code: str | None) -> None:
    assert language_from_name(name) == code


# reported: ordinary English taken for Finglish ("to" = you, "man" = I, "are" = yes, "key" = when)
@pytest.mark.parametrize("hint", [None, "fa", "en"])
@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a human",
        "can I speak to a person",
        "I would like to talk to a mentor please",
        "are you a robot or a real person?",
        "are there any courses in data science",
        "I have a key question about my course",
        "in my country the man at the office said no",
        "to be honest I have no idea where to start",
    ],
)
def test_english_words_are_not_finglish_or_arabizi(text: str, hint: str | None) -> None:
    assert detect_language(text, hint)[0] == "en", text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("na gut, dann halt morgen", "de"),
        ("du hast mir nicht geantwortet", "de"),
        ("eh bien, je ne sais pas quoi faire", "fr"),
        ("il y a un probleme avec mon compte", "fr"),
    ],
)
def test_french_and_german_words_are_not_finglish_or_arabizi(text: str, expected: str) -> None:
    assert detect_language(text)[0] == expected, text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("are mikham", "fa"),  # a homograph next to a real Finglish word still counts
        ("key mohlat tamoom mishe", "fa"),
        ("na mersi", "fa"),
        ("ana badi a7ki ma3 mentor", "ar"),
        ("hala2 shu", "ar"),
    ],
)
def test_homographs_count_next_to_real_dialect_words(text: str, expected: str) -> None:
    assert detect_language(text)[0] == expected, text
