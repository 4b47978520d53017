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
