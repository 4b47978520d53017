"""Evaluate the trained model on the held-out files and write a markdown report.

    cd nlu && ../.venv-rasa/bin/python report.py [--model models/sanad.tar.gz]

Runs Rasa's own NLU evaluation (`rasa.nlu.test.run_evaluation`, what `rasa test
nlu` does) on tests/nlu_<lang>.yml, one language at a time with the model loaded
once, and writes results/report.md (accuracy per language, recall per intent and
language, confusion pairs with examples) and a copy in REPORT.md.
The last column counts right answers under the FallbackClassifier threshold (nlu_fallback at run time).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

NLU_DIR = Path(__file__).resolve().parent
LANGUAGES = ("en", "ar", "fa", "fr", "de")
CRITICAL = ("express_distress", "out_of_scope")


async def evaluate(model: Path) -> dict[str, list[dict]]:
    from rasa.core.agent import Agent
    from rasa.nlu.test import run_evaluation

    agent = Agent.load(model_path=str(model))
    out: dict[str, list[dict]] = {}
    for lang in LANGUAGES:
        data = NLU_DIR / "tests" / f"nlu_{lang}.yml"
        result = await run_evaluation(
            str(data), agent.processor, output_directory=str(NLU_DIR / "results" / lang),
            errors=True, disable_plotting=True, report_as_dict=True,
        )
        out[lang] = result["intent_evaluation"]["predictions"]
    return out


def pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:.1f}%" if den else "-"


def fallback_threshold() -> float:
    import yaml

    config = yaml.safe_load((NLU_DIR / "config.yml").read_text(encoding="utf-8"))
    for component in config.get("pipeline", []):
        if component.get("name") == "FallbackClassifier":
            return float(component.get("threshold", 0.3))
    return 0.0


def render(predictions: dict[str, list[dict]], model: Path) -> str:
    threshold = fallback_threshold()
    lines = [
        "# Sanad NLU: held-out evaluation",
        "",
        f"Model `{model.name}`, evaluated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on `nlu/tests/nlu_<lang>.yml` "
        "(examples never used in training), with Rasa's NLU evaluation.",
        "",
        "## Intent accuracy per language",
        "",
        "| language | examples | correct | accuracy | correct but under the fallback threshold |",
        "|---|---|---|---|---|",
    ]
    total = correct = 0
    per_intent: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    confusions: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for lang in LANGUAGES:
        preds = predictions.get(lang, [])
        ok = sum(1 for p in preds if p["intent"] == p["predicted"])
        # Rasa's evaluation reports the classifier's intent; at run time these would become nlu_fallback
        fallbacks = sum(1 for p in preds if p["intent"] == p["predicted"] and p["confidence"] < threshold)
        total += len(preds)
        correct += ok
        lines.append(f"| {lang} | {len(preds)} | {ok} | {pct(ok, len(preds))} | {fallbacks} |")
        for p in preds:
            cell = per_intent[p["intent"]][lang]
            cell[1] += 1
            if p["intent"] == p["predicted"]:
                cell[0] += 1
            else:
                pair = (p["intent"], p["predicted"])
                confusions[pair] += 1
                examples[pair].append(f"{lang}: {p['text']} ({p['confidence']:.2f})")
    lines.append(f"| **all** | {total} | {correct} | **{pct(correct, total)}** | |")
    lines += ["", "## Recall per intent and language", "",
              "| intent | " + " | ".join(LANGUAGES) + " | all |", "|---" * (len(LANGUAGES) + 2) + "|"]
    for intent in sorted(per_intent):
        cells = per_intent[intent]
        row_ok = sum(cells[lang][0] for lang in LANGUAGES)
        row_n = sum(cells[lang][1] for lang in LANGUAGES)
        name = f"**{intent}**" if intent in CRITICAL else intent
        lines.append(f"| {name} | " + " | ".join(
            f"{cells[lang][0]}/{cells[lang][1]}" for lang in LANGUAGES) + f" | {pct(row_ok, row_n)} |")
    lines += ["", "## Confusion pairs (true → predicted)", ""]
    if not confusions:
        lines.append("None.")
    for (true, pred), count in confusions.most_common():
        lines.append(f"- `{true}` → `{pred}`: {count}")
        for text in examples[(true, pred)][:6]:
            lines.append(f"  - {text}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(NLU_DIR / "models" / "sanad.tar.gz"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = Path(args.model)
    if not model.exists():
        print(f"no model at {model}: run `rasa train --fixed-model-name sanad --out models` in nlu/ first")
        return 1
    predictions = asyncio.run(evaluate(model))
    text = render(predictions, model)
    results = NLU_DIR / "results"
    results.mkdir(exist_ok=True)
    (results / "report.md").write_text(text, encoding="utf-8")
    shutil.copyfile(results / "report.md", NLU_DIR / "REPORT.md")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
