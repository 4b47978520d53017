"""The NLU data: nothing held out is trained on, every intent has every language, data is laid out by topic."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import yaml

NLU = Path(__file__).resolve().parent.parent / "nlu"
LANGS = ("en", "ar", "fa", "fr", "de")
ANNOTATION = re.compile(r"\[([^\]]*)\]\([^)]*\)")
# every set of messages kept out of training: the project's held-out files, the two blind sets, the crisis sets
HELD_OUT_PREFIXES = ("nlu", "dev", "fresh", "blind")
TOPICS = {"social", "programme", "enrolment", "deadlines", "recognition", "certificates", "technical", "mentoring",
          "safety", "settings", "privacy", "account", "out_of_scope"}


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


def _training_files(lang: str | None = None) -> list[Path]:
    return sorted((NLU / "data").glob(f"{lang or '*'}/*.yml"))


def _domain_intents() -> set[str]:
    return set(yaml.safe_load((NLU / "domain.yml").read_text(encoding="utf-8"))["intents"])


_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_ARABIC_FORMS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ى": "ی", "ي": "ی", "ك": "ک", "ة": "ه"})
_MARKS = re.compile("[\u064b-\u065f\u0670\u0640\u200c\u200d]")


def _canonical(text: str) -> str:
    """Case, punctuation, diacritics, Arabic/Persian letter forms and spacing removed."""
    text = _MARKS.sub("", text.lower()).translate(_ARABIC_FORMS)
    return " ".join(_PUNCT.sub(" ", text).split())


def held_out_texts() -> set[str]:
    """Every held-out line (held-out files, blind sets, crisis sets), in canonical form."""
    texts: set[str] = set()
    for prefix in HELD_OUT_PREFIXES:
        for found in _examples(sorted((NLU / "tests").glob(f"{prefix}_*.yml"))).values():
            texts |= {_canonical(t) for t in found}
    for path in sorted((NLU / "tests" / "crisis").glob("*.yml")):
        for lines in yaml.safe_load(path.read_text(encoding="utf-8")).values():
            texts |= {_canonical(str(t)) for t in lines}
    return texts


def test_no_held_out_or_blind_line_is_in_training() -> None:
    """Up to case, punctuation and letter forms. The message names files and counts, never the lines:
    the blind sets must stay unread while the data is written."""
    held = held_out_texts()
    copies: Counter[str] = Counter()
    for path in _training_files():
        for texts in _examples([path]).values():
            copies[str(path.relative_to(NLU))] += sum(1 for t in texts if _canonical(t) in held)
    assert not +copies, f"training examples that copy a held-out line, per file: {dict(+copies)}"


def test_training_data_is_laid_out_by_language_and_topic() -> None:
    for path in (NLU / "data").rglob("*.yml"):
        relative = path.relative_to(NLU / "data")
        if len(relative.parts) == 1:
            assert relative.name in {"rules.yml", "stories.yml", "synonyms.yml", "regex.yml", "lookups.yml"}
            continue
        assert relative.parts[0] in LANGS and relative.stem in TOPICS, relative
        for block in yaml.safe_load(path.read_text(encoding="utf-8")).get("nlu") or []:
            assert "intent" in block, relative


def test_every_intent_is_trained_in_every_language() -> None:
    intents = _domain_intents()
    for lang in LANGS:
        trained = _examples(_training_files(lang))
        missing = intents - set(trained)
        assert not missing, (lang, missing)
        thin = {intent: len(texts) for intent, texts in trained.items() if len(texts) < 8}
        assert not thin, (lang, thin)


def test_no_example_is_trained_under_two_intents() -> None:
    owners: dict[str, set[str]] = {}
    for intent, texts in _examples(_training_files()).items():
        for text in texts:
            owners.setdefault(_canonical(text), set()).add(intent)
    assert not {t: i for t, i in owners.items() if len(i) > 1}


def test_every_intent_is_tested_in_every_language() -> None:
    intents = _domain_intents()
    for lang in LANGS:
        tested = _examples([NLU / "tests" / f"nlu_{lang}.yml"])
        assert set(tested) == intents, lang
        assert min(len(texts) for texts in tested.values()) >= 6, lang


def test_held_out_examples_have_no_near_copies_in_training() -> None:
    """Stricter than exact copies on the project's own held-out files: none of the same intent with >= 90% of
    the same characters ("efface mes donnees" vs "effacer ...")."""
    from difflib import SequenceMatcher

    for lang in LANGS:
        train = {intent: {_canonical(t) for t in texts} for intent, texts in _examples(_training_files(lang)).items()}
        test = {intent: {_canonical(t) for t in texts}
                for intent, texts in _examples([NLU / "tests" / f"nlu_{lang}.yml"]).items()}
        near = []
        for intent, held_texts in test.items():
            for held in held_texts:
                matcher = SequenceMatcher(None, held, autojunk=False)
                for seen in train.get(intent, ()):
                    matcher.set_seq1(seen)
                    if matcher.real_quick_ratio() >= 0.9 and matcher.quick_ratio() >= 0.9 and matcher.ratio() >= 0.9:
                        near.append((held, seen))
        assert not near, (lang, near)


def test_pipeline_classifies_before_the_crisis_override_and_the_fallback() -> None:
    """The crisis override and the fallback see the classifier's ranking; no TEDPolicy (rules and one slot)."""
    config = yaml.safe_load((NLU / "config.yml").read_text(encoding="utf-8"))
    names = [component["name"] for component in config["pipeline"]]
    classifier = names.index("components.meaning.MeaningClassifier")
    assert classifier < names.index("components.safety.CrisisOverride") < names.index("FallbackClassifier")
    settings = config["pipeline"][classifier]
    assert 0.0 <= float(settings["sure"]) <= 1.0
    assert "TEDPolicy" not in [policy["name"] for policy in config["policies"]]
