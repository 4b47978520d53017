"""Evaluate the trained model on the held-out files and write a markdown report.

    .venv-rasa/bin/python nlu/report.py [--model nlu/models/sanad.tar.gz] [--prefix nlu]

`--prefix fresh` evaluates tests/fresh_<lang>.yml instead (same counting) and writes
only results/fresh_report.md and results/fresh_predictions.json (REPORT.md untouched).

Every example of tests/nlu_<lang>.yml goes through the model exactly as a live
message does (`Agent.parse_message`, the same processor `rasa test nlu` uses),
FallbackClassifier included. How it counts, on purpose stricter than `rasa test
nlu` (which undoes the fallback and scores the classifier's first guess):

- the *run-time* intent is what the dialogue sees: `nlu_fallback` whenever the
  top confidence is under the threshold or the top two are closer than the
  ambiguity threshold;
- an example is right only if the run-time intent is its intent, with one
  exception: `nlu_fallback` on an `out_of_scope` example counts as right (both
  end in "I can't help with that, here are the topics I know");
- `nlu_fallback` on any other example is wrong (also for `express_distress`);
- the classifier's own accuracy (fallback ignored) is shown next to it, for comparison.

Writes results/report.md (accuracy per language, recall per intent and
language, precision per intent, fallback counts, confusion pairs with examples)
and a copy in REPORT.md, keeping the hand-written notes under "## Notes" of REPORT.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

NLU_DIR = Path(__file__).resolve().parent
LANGUAGES = ("en", "ar", "fa", "fr", "de")
CRITICAL = ("express_distress", "out_of_scope")
FALLBACK = "nlu_fallback"
ANNOTATION = re.compile(r"\[([^\]]*)\]\([^)]*\)")
NOTES_HEADING = "## Notes"
# mirrors flows/dialogue.py (a fallback with distress among its best guesses gets the safety message)
DISTRESS_FALLBACK_CONFIDENCE = 0.2
DISTRESS_FALLBACK_RANK = 2


def held_out(lang: str, prefix: str = "nlu") -> list[tuple[str, str]]:
    """(intent, text) of one language's held-out file, entity annotations removed."""
    data = yaml.safe_load((NLU_DIR / "tests" / f"{prefix}_{lang}.yml").read_text(encoding="utf-8"))
    out = []
    for block in data.get("nlu") or []:
        if "intent" not in block:
            continue
        for line in block["examples"].splitlines():
            if line.strip().startswith("- "):
                out.append((block["intent"], ANNOTATION.sub(r"\1", line.strip()[2:]).strip()))
    return out


async def evaluate(model: Path, prefix: str = "nlu") -> dict[str, list[dict[str, Any]]]:
    from rasa.core.agent import Agent

    agent = Agent.load(model_path=str(model))
    out: dict[str, list[dict[str, Any]]] = {}
    for lang in LANGUAGES:
        rows = []
        for intent, text in held_out(lang, prefix):
            result = await agent.parse_message(text)
            runtime = result["intent"]["name"]
            ranking = [r for r in result.get("intent_ranking", []) if r["name"] != FALLBACK]
            top = ranking[0] if ranking else {"name": runtime, "confidence": result["intent"]["confidence"]}
            rows.append({
                "text": text, "intent": intent, "runtime": runtime,
                "classifier": top["name"], "confidence": float(top["confidence"]),
                "ranking": [(r["name"], round(float(r["confidence"]), 4)) for r in ranking[:3]],
            })
        out[lang] = rows
    return out


def is_right(row: dict[str, Any]) -> bool:
    return row["runtime"] == row["intent"] or (row["runtime"] == FALLBACK and row["intent"] == "out_of_scope")


def distress_net(row: dict[str, Any]) -> bool:
    """Whether action_fallback_topics answers this fallback with the safety message (flows/dialogue.py)."""
    if row["runtime"] != FALLBACK:
        return False
    from_flows = (DISTRESS_FALLBACK_CONFIDENCE, DISTRESS_FALLBACK_RANK)
    return any(name == "express_distress" and confidence >= from_flows[0]
               for name, confidence in row["ranking"][:from_flows[1]])


def pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:.1f}%" if den else "-"


def fallback_config() -> tuple[float, float]:
    config = yaml.safe_load((NLU_DIR / "config.yml").read_text(encoding="utf-8"))
    for component in config.get("pipeline", []):
        if component.get("name") == "FallbackClassifier":
            return float(component.get("threshold", 0.3)), float(component.get("ambiguity_threshold", 0.1))
    return 0.0, 0.0


def render(predictions: dict[str, list[dict[str, Any]]], model: Path, prefix: str = "nlu") -> str:
    threshold, ambiguity = fallback_config()
    lines = [
        "# Sanad NLU: held-out evaluation",
        "",
        f"Model `{model.name}`, evaluated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"`nlu/tests/{prefix}_<lang>.yml` (examples never used in training), each parsed as a live message.",
        "",
        f"**How it counts.** FallbackClassifier threshold {threshold}, ambiguity threshold {ambiguity}. "
        f"An example is right when the run-time intent (after the fallback) is its intent; `{FALLBACK}` counts "
        "as right only for `out_of_scope` examples (the answer is the same: the topics Sanad knows) and as wrong "
        "for every other intent, `express_distress` included. \"Classifier\" is the first guess with the "
        "fallback ignored (what `rasa test nlu` scores), for comparison only.",
        "",
        "## Intent accuracy per language",
        "",
        "| language | examples | right at run time | accuracy | classifier accuracy | fallbacks (of which on out_of_scope) |",
        "|---|---|---|---|---|---|",
    ]
    total = right_all = clf_all = 0
    recall: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    predicted: Counter[str] = Counter()
    predicted_right: Counter[str] = Counter()
    confusions: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for lang in LANGUAGES:
        rows = predictions.get(lang, [])
        right = sum(1 for r in rows if is_right(r))
        clf = sum(1 for r in rows if r["classifier"] == r["intent"])
        fallbacks = [r for r in rows if r["runtime"] == FALLBACK]
        oos = sum(1 for r in fallbacks if r["intent"] == "out_of_scope")
        total += len(rows)
        right_all += right
        clf_all += clf
        lines.append(f"| {lang} | {len(rows)} | {right} | {pct(right, len(rows))} | {pct(clf, len(rows))} | "
                     f"{len(fallbacks)} ({oos}) |")
        for r in rows:
            cell = recall[r["intent"]][lang]
            cell[1] += 1
            shown = "out_of_scope" if r["runtime"] == FALLBACK and r["intent"] == "out_of_scope" else r["runtime"]
            predicted[shown] += 1
            if is_right(r):
                cell[0] += 1
                predicted_right[shown] += 1
            else:
                pair = (r["intent"], r["runtime"])
                confusions[pair] += 1
                note = f"{r['confidence']:.2f}"
                if r["runtime"] == FALLBACK:
                    note = f"classifier {r['classifier']} {note}"
                examples[pair].append(f"{lang}: {r['text']} ({note})")
    lines.append(f"| **all** | {total} | {right_all} | **{pct(right_all, total)}** | {pct(clf_all, total)} | |")
    lines += ["", "## Recall and precision per intent", "",
              "Recall per language (right / examples); precision over all languages (right / run-time predictions "
              "of that intent; fallbacks on out_of_scope examples count as out_of_scope predictions).", "",
              "| intent | " + " | ".join(LANGUAGES) + " | recall | precision |", "|---" * (len(LANGUAGES) + 3) + "|"]
    for intent in sorted(recall):
        cells = recall[intent]
        row_ok = sum(cells[lang][0] for lang in LANGUAGES)
        row_n = sum(cells[lang][1] for lang in LANGUAGES)
        name = f"**{intent}**" if intent in CRITICAL else intent
        lines.append(f"| {name} | " + " | ".join(f"{cells[lang][0]}/{cells[lang][1]}" for lang in LANGUAGES)
                     + f" | {pct(row_ok, row_n)} | {pct(predicted_right[intent], predicted[intent])} "
                     f"({predicted_right[intent]}/{predicted[intent]}) |")
    if predicted[FALLBACK]:
        lines.append(f"| {FALLBACK} (not an intent) | " + " | ".join("" for _ in LANGUAGES)
                     + f" | | {predicted[FALLBACK]} wrong fallbacks |")
    rows_all = [r for lang in LANGUAGES for r in predictions.get(lang, [])]
    net = [r for r in rows_all if distress_net(r)]
    net_true = sum(1 for r in net if r["intent"] == "express_distress")
    distress_n = sum(1 for r in rows_all if r["intent"] == "express_distress")
    distress_seen = sum(1 for r in rows_all if r["intent"] == "express_distress"
                        and (r["runtime"] == "express_distress" or distress_net(r)))
    lines += ["", "## The distress safety net", "",
              "Not counted in the accuracy above: a fallback whose two best guesses include `express_distress` "
              f"at >= {DISTRESS_FALLBACK_CONFIDENCE} is answered with the safety message by `action_fallback_topics`. "
              f"On the held-out files it fires {len(net)} times ({net_true} on real distress, {len(net) - net_true} "
              f"on other messages); with it, {distress_seen}/{distress_n} distress examples "
              f"({pct(distress_seen, distress_n)}) get the safety message."]
    lines += ["", "## Confusion pairs (true → run-time prediction)", ""]
    if not confusions:
        lines.append("None.")
    for (true, pred), count in confusions.most_common():
        lines.append(f"- `{true}` → `{pred}`: {count}")
        for text in examples[(true, pred)][:8]:
            lines.append(f"  - {text}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default=str(NLU_DIR / "models" / "sanad.tar.gz"))
    parser.add_argument("--prefix", default="nlu",
                        help="evaluate tests/<prefix>_<lang>.yml; other than 'nlu' writes only "
                        "results/<prefix>_report.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import structlog

    # Rasa logs every parsed text at debug level through structlog: keep the console to the report
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    model = Path(args.model)
    if not model.exists():
        print(f"no model at {model}: run `rasa train --fixed-model-name sanad --out models` in nlu/ first")
        return 1
    prefix = args.prefix
    if not re.fullmatch(r"[a-z0-9_]+", prefix):
        print(f"bad --prefix {prefix!r}: use lowercase letters, digits and _")
        return 1
    missing = [lang for lang in LANGUAGES if not (NLU_DIR / "tests" / f"{prefix}_{lang}.yml").exists()]
    if missing:
        print(f"no tests/{prefix}_<lang>.yml for: {', '.join(missing)}")
        return 1
    predictions = asyncio.run(evaluate(model, prefix))
    text = render(predictions, model, prefix)
    results = NLU_DIR / "results"
    results.mkdir(exist_ok=True)
    if prefix != "nlu":
        (results / f"{prefix}_report.md").write_text(text, encoding="utf-8")
        (results / f"{prefix}_predictions.json").write_text(
            json.dumps(predictions, ensure_ascii=False, indent=1), encoding="utf-8")
        print(text)
        return 0
    (results / "report.md").write_text(text, encoding="utf-8")
    (results / "predictions.json").write_text(json.dumps(predictions, ensure_ascii=False, indent=1), encoding="utf-8")
    report = NLU_DIR / "REPORT.md"
    notes = ""
    if report.exists():
        old = report.read_text(encoding="utf-8")
        if NOTES_HEADING in old:
            notes = "\n" + old[old.index(NOTES_HEADING):]
    report.write_text(text + notes, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
