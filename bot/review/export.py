"""`sanad nlu export-reviewed`: labelled review items become Rasa training examples, masked.

Each language's examples go to `nlu/data/<lang>/reviewed.yml` (merged with what the file holds),
so the next `sanad train` learns from them. Before a text is written: e-mail addresses become
`someone@example.org`, every digit becomes `0` (phone numbers, learner ids, dates), the
contact's own name and a name given after "my name is" (and its forms in the other languages)
become `Sam`, and brackets are made round (Rasa would read `[x](y)` as an entity). A text that is
word for word a line of a held-out, blind or crisis test set is left out, so the evaluations stay
honest. Items labelled "not an intent" are never exported.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import select, update

from bot.review.inbox import NOT_AN_INTENT
from bot.runtime.settings import PROJECT_ROOT
from bot.storage.db import utcnow
from bot.storage.models import Contact, InboundMessage, ReviewItem

if TYPE_CHECKING:
    from bot.runtime.services import Services

NLU_DATA = PROJECT_ROOT / "nlu" / "data"
NLU_TESTS = PROJECT_ROOT / "nlu" / "tests"
FILE_NAME = "reviewed.yml"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
DIGIT = re.compile(r"\d")  # every Unicode decimal digit: Latin, Arabic-Indic and Persian alike
NAME_PLACEHOLDER = "Sam"
# a name the learner gives about themselves
SELF_NAMED = re.compile(
    r"(?i)(my name is|my name's|je m'appelle|je m’appelle|mon nom est|ich heiße|ich heisse|mein name ist"
    r"|اسمي|اسمم|اسم من|نام من)\s+(\w+)"
)


@dataclass
class ExportReport:
    """What one export wrote."""

    written: dict[str, int] = field(default_factory=dict)  # language -> new examples
    skipped_test_lines: int = 0
    duplicates: int = 0
    files: list[str] = field(default_factory=list)


def mask(text: str, names: list[str]) -> str:
    """The text with e-mails, digits and names replaced (see the module docstring)."""
    masked = EMAIL.sub("someone@example.org", " ".join(text.split()))
    masked = SELF_NAMED.sub(lambda m: f"{m.group(1)} {NAME_PLACEHOLDER}", masked)
    for name in sorted({n for n in names if len(n) >= 2}, key=len, reverse=True):
        masked = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", NAME_PLACEHOLDER, masked, flags=re.IGNORECASE)
    masked = DIGIT.sub("0", masked)
    return masked.replace("[", "(").replace("]", ")").strip()


def _name_parts(display_name: str | None) -> list[str]:
    if not display_name:
        return []
    return [display_name, *display_name.split()]


def _plain(text: str) -> str:
    return " ".join(text.casefold().split())


def test_set_lines(tests_dir: Path = NLU_TESTS) -> set[str]:
    """Every example of the held-out, blind and crisis sets, normalised."""
    lines: set[str] = set()
    for path in sorted(tests_dir.rglob("*.yml")) if tests_dir.is_dir() else []:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        lines.update(_plain(text) for text in _all_examples(data))
    return lines


def _all_examples(data: Any) -> list[str]:
    """Examples of a Rasa NLU file, or of a {lang: [lines]} file."""
    found: list[str] = []
    if isinstance(data, dict) and isinstance(data.get("nlu"), list):
        for block in data["nlu"]:
            if isinstance(block, dict) and isinstance(block.get("examples"), str):
                found += [line[2:].strip() for line in block["examples"].splitlines() if line.startswith("- ")]
    elif isinstance(data, dict):
        for value in data.values():
            if isinstance(value, list):
                found += [str(v) for v in value]
    return found


def read_examples(path: Path) -> dict[str, list[str]]:
    """intent -> examples of a Rasa NLU file (empty when the file does not exist)."""
    if not path.is_file():
        return {}
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    examples: dict[str, list[str]] = defaultdict(list)
    for block in data.get("nlu") or []:
        if isinstance(block, dict) and isinstance(block.get("intent"), str) and isinstance(block.get("examples"), str):
            examples[block["intent"]] += [
                line[2:].strip() for line in block["examples"].splitlines() if line.startswith("- ")
            ]
    return dict(examples)


def write_examples(path: Path, examples: dict[str, list[str]], language: str) -> None:
    """A Rasa 3 NLU file with one block per intent (sorted), each example on its own line."""
    lines = [
        'version: "3.1"',
        f"# {language}: learner messages labelled in the review inbox (sanad nlu export-reviewed);",
        "# numbers, e-mail addresses and names are masked. Edit freely; the export only adds lines.",
        "nlu:",
    ]
    for intent in sorted(examples):
        lines += [f"- intent: {intent}", "  examples: |"]
        lines += [f"    - {text}" for text in examples[intent]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def export_reviewed(services: Services, data_dir: Path = NLU_DATA, tests_dir: Path = NLU_TESTS) -> ExportReport:
    """Write every labelled, not yet exported item to `<data_dir>/<lang>/reviewed.yml`; mark them exported."""
    report = ExportReport()
    async with services.db.session() as session:
        rows = (await session.execute(
            select(ReviewItem.id, ReviewItem.label, ReviewItem.language, InboundMessage.text, Contact.display_name)
            .join(InboundMessage, InboundMessage.id == ReviewItem.inbound_id)
            .join(Contact, Contact.id == ReviewItem.contact_id)
            .where(ReviewItem.label.is_not(None), ReviewItem.label != NOT_AN_INTENT,
                   ReviewItem.exported_at.is_(None))
            .order_by(ReviewItem.id)
        )).all()
    if not rows:
        return report
    held_out = test_set_lines(tests_dir)
    by_language: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for _id, label, language, text, display_name in rows:
        masked = mask(text or "", _name_parts(display_name))
        if not masked:
            continue
        if _plain(masked) in held_out:
            report.skipped_test_lines += 1
            continue
        by_language[language].append((str(label), masked))
    for language, new in sorted(by_language.items()):
        path = data_dir / language / FILE_NAME
        examples = read_examples(path)
        known = {_plain(t) for texts in examples.values() for t in texts}
        added = 0
        for intent, text in new:
            if _plain(text) in known:
                report.duplicates += 1
                continue
            known.add(_plain(text))
            examples.setdefault(intent, []).append(text)
            added += 1
        if added:
            write_examples(path, examples, language)
            report.files.append(str(path))
        report.written[language] = added
    async with services.db.session() as session:
        await session.execute(
            update(ReviewItem).where(ReviewItem.id.in_([row[0] for row in rows])).values(exported_at=utcnow())
        )
    return report
