"""Evaluate the trained model on the held-out files and write a markdown report.

    .venv-rasa/bin/python nlu/report.py [--model nlu/models/sanad.tar.gz] [--prefix nlu]
    .venv-rasa/bin/python nlu/report.py --sets nlu,dev,fresh,blind,crisis [--check-floors]

`--prefix fresh` evaluates tests/fresh_<lang>.yml instead (same counting) and writes
only results/fresh_report.md and results/fresh_predictions.json (REPORT.md untouched).

`--sets` prints one summary line per set (no per-message detail, so the blind sets can be
scored without being read): accuracy overall and per language, out_of_scope recall,
express_distress recall, and false crisis alarms. The sets: `nlu` (the project's held-out
files), `dev` (the development set, tuned on), `fresh` and `blind` (the two blind sets,
never tuned on), `crisis` (tests/crisis/distress.yml and ordinary.yml). A learner gets the
safety message when the run-time intent is express_distress or when the fallback's two best
guesses hold express_distress at >= 0.2 (flows/safety.py): that is what "alarm" counts, for
the distress recall and for the false alarms alike. `--check-floors` exits 1 when the held-out
files (`nlu`) fall under FLOORS (CI runs it: a regression fails the build).

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
# mirrors flows/safety.py (a fallback with distress among its best guesses gets the safety message)
DISTRESS_FALLBACK_CONFIDENCE = 0.2
DISTRESS_FALLBACK_RANK = 2


# minimum run-time accuracy on the held-out files (tests/nlu_<lang>.yml), checked by --check-floors;
# set a little under the measured figures (REPORT.md) so that a real regression fails CI
FLOORS = {"all": 0.93, "en": 0.93, "ar": 0.90, "fa": 0.90, "fr": 0.90, "de": 0.90}
RECALL_FLOORS = {"express_distress": 0.95, "out_of_scope": 0.90}
SET_PREFIXES = ("nlu", "dev", "fresh", "blind")


def crisis_lines(kind: str) -> list[tuple[str, str]]:
    """(language, text) of tests/crisis/<kind>.yml (a list of messages per language)."""
    data = yaml.safe_load((NLU_DIR / "tests" / "crisis" / f"{kind}.yml").read_text(encoding="utf-8"))
    return [(lang, str(text)) for lang in LANGUAGES for text in data.get(lang) or []]


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


async def parse_rows(agent: Any, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Parse (intent, text) pairs as live messages."""
    rows = []
    for intent, text in items:
        result = await agent.parse_message(text)
        runtime = result["intent"]["name"]
        ranking = [r for r in result.get("intent_ranking", []) if r["name"] != FALLBACK]
        top = ranking[0] if ranking else {"name": runtime, "confidence": result["intent"]["confidence"]}
        rows.append({
            "text": text, "intent": intent, "runtime": runtime,
            "classifier": top["name"], "confidence": float(top["confidence"]),
            "ranking": [(r["name"], round(float(r["confidence"]), 4)) for r in ranking[:3]],
        })
    return rows


def load_agent(model: Path) -> Any:
    from rasa.core.agent import Agent

    return Agent.load(model_path=str(model))


async def evaluate(model: Path, prefix: str = "nlu", agent: Any = None) -> dict[str, list[dict[str, Any]]]:
    agent = agent or load_agent(model)
    return {lang: await parse_rows(agent, held_out(lang, prefix)) for lang in LANGUAGES}


async def evaluate_crisis(agent: Any) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The crisis sets: distress messages (intent express_distress) and ordinary ones (intent unknown: "")."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind, intent in (("distress", "express_distress"), ("ordinary", "")):
        lines = crisis_lines(kind)
        out[kind] = {lang: await parse_rows(agent, [(intent, text) for lg, text in lines if lg == lang])
                     for lang in LANGUAGES}
    return out


def alarm(row: dict[str, Any]) -> bool:
    """Whether the learner gets the safety message for this message."""
    return row["runtime"] == "express_distress" or distress_net(row)


def set_summary(name: str, predictions: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Accuracy per language and overall, out_of_scope and distress recall, false alarms, for one intent set."""
    rows = [r for lang in LANGUAGES for r in predictions.get(lang, [])]
    per_lang = {lang: (sum(1 for r in predictions.get(lang, []) if is_right(r)), len(predictions.get(lang, [])))
                for lang in LANGUAGES}
    oos = [r for r in rows if r["intent"] == "out_of_scope"]
    distress = [r for r in rows if r["intent"] == "express_distress"]
    others = [r for r in rows if r["intent"] != "express_distress"]
    return {
        "set": name,
        "n": len(rows),
        "accuracy": (sum(1 for r in rows if is_right(r)), len(rows)),
        "per_language": per_lang,
        "out_of_scope_recall": (sum(1 for r in oos if is_right(r)), len(oos)),
        "distress_recall": (sum(1 for r in distress if alarm(r)), len(distress)),
        "false_alarms": (sum(1 for r in others if alarm(r)), len(others)),
    }


def crisis_summary(crisis: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    distress = crisis["distress"]
    ordinary = crisis["ordinary"]
    return {
        "distress_recall": {lang: (sum(1 for r in distress[lang] if alarm(r)), len(distress[lang]))
                            for lang in LANGUAGES},
        "false_alarms": {lang: (sum(1 for r in ordinary[lang] if alarm(r)), len(ordinary[lang]))
                         for lang in LANGUAGES},
    }


def _cell(pair: tuple[int, int]) -> str:
    return f"{pct(*pair)} ({pair[0]}/{pair[1]})"


def render_summaries(summaries: list[dict[str, Any]], crisis: dict[str, Any] | None) -> str:
    lines = ["## Every set", "",
             "Run-time intent as the dialogue sees it (fallback on out_of_scope counts as right). Distress recall and "
             "false alarms count the safety message (express_distress, or the fallback's distress net).", "",
             "| set | messages | accuracy | " + " | ".join(LANGUAGES)
             + " | out_of_scope recall | distress recall | false crisis alarms |",
             "|---" * (len(LANGUAGES) + 6) + "|"]
    for s in summaries:
        lines.append(f"| {s['set']} | {s['n']} | **{pct(*s['accuracy'])}** | "
                     + " | ".join(pct(*s["per_language"][lang]) for lang in LANGUAGES)
                     + f" | {_cell(s['out_of_scope_recall'])} | {_cell(s['distress_recall'])} | "
                     f"{_cell(s['false_alarms'])} |")
    if crisis is not None:
        recall = crisis["distress_recall"]
        alarms = crisis["false_alarms"]
        total_recall = (sum(v[0] for v in recall.values()), sum(v[1] for v in recall.values()))
        total_alarms = (sum(v[0] for v in alarms.values()), sum(v[1] for v in alarms.values()))
        lines += ["", "Crisis sets (`tests/crisis/`): distress messages that get the safety message, and ordinary "
                  "messages that wrongly get it.", "",
                  "| crisis set | " + " | ".join(LANGUAGES) + " | all |", "|---" * (len(LANGUAGES) + 2) + "|",
                  "| distress recall | " + " | ".join(_cell(recall[lang]) for lang in LANGUAGES)
                  + f" | **{_cell(total_recall)}** |",
                  "| false crisis alarms | " + " | ".join(_cell(alarms[lang]) for lang in LANGUAGES)
                  + f" | **{_cell(total_alarms)}** |"]
    return "\n".join(lines) + "\n"


def floor_failures(predictions: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What falls under FLOORS / RECALL_FLOORS on the held-out files."""
    summary = set_summary("nlu", predictions)
    failures = []
    measured = {"all": summary["accuracy"], **summary["per_language"]}
    for key, floor in FLOORS.items():
        right, n = measured[key]
        if n and right / n < floor:
            failures.append(f"accuracy {key}: {pct(right, n)} < {floor:.0%}")
    for intent, floor in RECALL_FLOORS.items():
        right, n = summary["distress_recall" if intent == "express_distress" else "out_of_scope_recall"]
        if n and right / n < floor:
            failures.append(f"{intent} recall: {pct(right, n)} < {floor:.0%}")
    return failures


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
    parser.add_argument("--sets", default="",
                        help="comma-separated: nlu,dev,fresh,blind,crisis: print a summary line per set "
                        "(results/sets.md); no per-message detail")
    parser.add_argument("--check-floors", action="store_true",
                        help="exit 1 when the held-out files fall under FLOORS / RECALL_FLOORS")
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
    if args.sets or args.check_floors:
        return run_sets(model, [s for s in args.sets.split(",") if s] or ["nlu"], args.check_floors)
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


def run_sets(model: Path, sets: list[str], check_floors: bool) -> int:
    unknown = [s for s in sets if s not in (*SET_PREFIXES, "crisis")]
    if unknown:
        print(f"unknown sets: {unknown}; choose from {', '.join((*SET_PREFIXES, 'crisis'))}")
        return 1
    if check_floors and "nlu" not in sets:
        sets = ["nlu", *sets]
    agent = load_agent(model)
    summaries = []
    held: dict[str, list[dict[str, Any]]] = {}
    for name in sets:
        if name == "crisis":
            continue
        predictions = asyncio.run(evaluate(model, name, agent))
        if name == "nlu":
            held = predictions
        summaries.append(set_summary(name, predictions))
        results = NLU_DIR / "results"
        results.mkdir(exist_ok=True)
        (results / f"{name}_predictions.json").write_text(
            json.dumps(predictions, ensure_ascii=False, indent=1), encoding="utf-8")
    crisis = None
    if "crisis" in sets:
        crisis_predictions = asyncio.run(evaluate_crisis(agent))
        crisis = crisis_summary(crisis_predictions)
        (NLU_DIR / "results" / "crisis_predictions.json").write_text(
            json.dumps(crisis_predictions, ensure_ascii=False, indent=1), encoding="utf-8")
    text = f"Model `{model.name}`\n\n" + render_summaries(summaries, crisis)
    (NLU_DIR / "results").mkdir(exist_ok=True)
    (NLU_DIR / "results" / "sets.md").write_text(text, encoding="utf-8")
    print(text)
    if check_floors:
        failures = floor_failures(held)
        if failures:
            print("held-out floors not met:\n  " + "\n  ".join(failures))
            return 1
        print("held-out floors met: " + ", ".join(f"{k} >= {v:.0%}" for k, v in FLOORS.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
