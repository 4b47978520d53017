"""The crisis phrases (nlu/crisis_phrases.yml) through nlu/components/crisis.py, loaded by its file path as the
gateway loads it: no Rasa, one list for both. Examples written for this test, not taken from the crisis sets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

NLU = Path(__file__).resolve().parent.parent / "nlu"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sanad_test_crisis", NLU / "components" / "crisis.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


crisis = _load()

CRISES = [
    "I want to kill myself", "i wanna die", "I've been thinking about suicide a lot", "I dont want to live anymore",
    "I can't stop thinking about killing myself", "I took an overdose", "i wish i was dead",
    "je veux mourir", "je vais me suicider", "j'ai plus envie de vivre", "je pense à me tuer",
    "Ich will nicht mehr leben", "ich bringe mich um", "ich denke daran, mich umzubringen", "Selbstmordgedanken",
    "Ich möchte sterben",
    "بدي موت", "أفكر في الانتحار", "بدي انتحر", "رح اقتل حالي", "ما بدي عيش", "badi mout", "bade ente7er",
    "میخوام بمیرم", "به خودکشی فکر میکنم", "mikham bemiram", "خودمو میکشم", "می‌خوام بمیرم",
]

ORDINARY = [
    # negated: the classifier decides, the override does not
    "I don't want to die", "I'm not going to kill myself", "i would never hurt myself", "I'm not suicidal",
    "je ne veux pas mourir", "ich will nicht sterben", "ما بدي موت", "مابدي موت", "ma badi mout",
    "nemikham bemiram", "نمیخوام بمیرم", "به خودکشی فکر نمیکنم", "هرگز خودکشی نمیکنم",
    # Arabizi and Finglish spellings of harmless words
    "ana mn souria w bade et3allam programming", "bade ader 2t3allam", "bade mout3a", "mikham bemoonam",
    # figures of speech and harmless contexts
    "this deadline is killing me", "I'm dying to start the course", "ce devoir va me tuer",
    "die Prüfung bringt mich um", "diese Deadline wird mich umbringen", "je veux en finir avec ce cours",
    "is there a course on suicide prevention?", "I'm killing myself studying for this exam", "I want to diet",
    "I'm dead tired",
]


@pytest.mark.parametrize("text", CRISES)
def test_crisis_phrases_are_caught(text: str) -> None:
    assert crisis.crisis_cue(text), text


@pytest.mark.parametrize("text", ORDINARY)
def test_negated_figurative_and_harmless_messages_are_not_overridden(text: str) -> None:
    assert not crisis.crisis_cue(text), crisis.crisis_match(text)


def test_every_language_has_a_list() -> None:
    assert {language.language for language in crisis.load_phrases()} == {"en", "ar", "fa", "fr", "de"}


def test_the_gateway_and_rasa_read_the_same_file() -> None:
    assert crisis.PHRASES_PATH == NLU / "crisis_phrases.yml"
    safety = (NLU / "components" / "safety.py").read_text(encoding="utf-8")
    assert "from components.crisis import crisis_cue" in safety
    assert "sanad_nlu_spelling" in sys.modules or "components.spelling" in sys.modules


def test_upper_case_escapes_are_refused() -> None:
    with pytest.raises(ValueError):
        crisis.compile_language("xx", {"phrases": [r"\Sfoo"]})
