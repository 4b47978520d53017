"""The NLU data: the held-out files share nothing with training, and every intent has every language."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

NLU = Path(__file__).resolve().parent.parent / "nlu"
LANGS = ("en", "ar", "fa", "fr", "de")
ANNOTATION = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def _examples(paths: list[Path]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        for block in yaml.safe_load(path.read_text(encoding="utf-8")).get("nlu") or []:
            if "intent" not in block:
                continue
            for line in block["examples"].splitlines():
                if line.strip().startswith("- "):
                    text = ANNOTATION.sub(r"\1", line.strip()[2:]).strip().lower()
                    found.setdefault(block["intent"], set()).add(text)
    return found


def _domain_intents() -> set[str]:
    return set(yaml.safe_load((NLU / "domain.yml").read_text(encoding="utf-8"))["intents"])


def test_held_out_examples_are_not_in_training() -> None:
    train = set().union(*_examples(sorted((NLU / "data").glob("*.yml"))).values())
    test = set().union(*_examples(sorted((NLU / "tests").glob("nlu_*.yml"))).values())
    assert not train & test


def test_every_intent_is_trained_in_every_language() -> None:
    intents = _domain_intents()
    for lang in LANGS:
        trained = _examples(sorted((NLU / "data").glob(f"*_{lang}.yml")))
        missing = intents - set(trained)
        assert not missing, (lang, missing)
        thin = {intent: len(texts) for intent, texts in trained.items() if len(texts) < 8}
        assert not thin, (lang, thin)


def test_every_intent_is_tested_in_every_language() -> None:
    intents = _domain_intents()
    for lang in LANGS:
        tested = _examples([NLU / "tests" / f"nlu_{lang}.yml"])
        assert set(tested) == intents, lang
        assert min(len(texts) for texts in tested.values()) >= 6, lang


_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_ARABIC_FORMS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ى": "ی", "ي": "ی", "ك": "ک", "ة": "ه"})
_MARKS = re.compile("[\u064b-\u065f\u0670\u0640\u200c\u200d]")


def _canonical(text: str) -> str:
    """Case, punctuation, diacritics, Arabic/Persian letter forms and spacing removed."""
    text = _MARKS.sub("", text.lower()).translate(_ARABIC_FORMS)
    return " ".join(_PUNCT.sub(" ", text).split())


def test_held_out_examples_have_no_near_copies_in_training() -> None:
    """Stricter than exact copies: no held-out example up to case, punctuation, diacritics and letter forms,
    and none of the same intent with >= 90% of the same characters ("efface mes donnees" vs "effacer ...")."""
    from difflib import SequenceMatcher

    for lang in LANGS:
        train = {intent: {_canonical(t) for t in texts}
                 for intent, texts in _examples(sorted((NLU / "data").glob(f"*_{lang}.yml"))).items()}
        test = {intent: {_canonical(t) for t in texts}
                for intent, texts in _examples([NLU / "tests" / f"nlu_{lang}.yml"]).items()}
        seen_all = set().union(*train.values())
        copies = sorted(seen_all & set().union(*test.values()))
        assert not copies, (lang, copies)
        near = []
        for intent, held_texts in test.items():
            for held in held_texts:
                matcher = SequenceMatcher(None, held, autojunk=False)
                for seen in train.get(intent, ()):
                    matcher.set_seq1(seen)
                    if matcher.real_quick_ratio() >= 0.9 and matcher.quick_ratio() >= 0.9 and matcher.ratio() >= 0.9:
                        near.append((held, seen))
        assert not near, (lang, near)


def test_pipeline_blends_diet_before_the_crisis_override_and_the_fallback() -> None:
    """The logistic regression blend runs after DIET; the crisis override and the fallback see its ranking."""
    config = yaml.safe_load((NLU / "config.yml").read_text(encoding="utf-8"))
    names = [component["name"] for component in config["pipeline"]]
    blend = names.index("components.blend.BlendedLogisticRegression")
    assert names.index("DIETClassifier") < blend < names.index("components.safety.CrisisOverride")
    assert blend < names.index("FallbackClassifier")
    settings = config["pipeline"][blend]
    assert 0.0 <= float(settings["diet_weight"]) <= 1.0
    assert settings.get("expose_parts", False) is False
