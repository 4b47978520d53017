"""The safety message: local help contacts and an urgent hand-off, and when a fallback may hide a crisis.

Used by the dialogue actions and by the personal answers (a reply to "which country?" may be a crisis).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from rasa_sdk.executor import CollectingDispatcher

from bot.i18n.catalogue import get_catalogue
from flows.context import LearnerContext, gateway_command, say_key

HELP_CONTACTS_PATH = Path(__file__).resolve().parent / "help_contacts.json"
# a fallback with distress among its best real guesses, at least this sure, is treated as distress
DISTRESS_FALLBACK_CONFIDENCE = 0.2
DISTRESS_FALLBACK_RANK = 2


@lru_cache(maxsize=1)
def _help_contacts() -> dict[str, list[dict[str, str]]]:
    data = json.loads(HELP_CONTACTS_PATH.read_text(encoding="utf-8"))
    return {key: value for key, value in data.items() if not key.startswith("_")}


def help_contacts(country: str | None) -> list[dict[str, str]]:
    """The crisis contacts for an ISO country code, or the default list."""
    table = _help_contacts()
    code = (country or "").strip().upper()
    return table.get(code) or table["default"]


def contacts_text(country: str | None, language: str) -> str:
    """The contact lines of the distress message, in the learner's language."""
    cat = get_catalogue()
    lines = []
    for contact in help_contacts(country):
        name = cat.text(contact["label"], language) if "label" in contact else contact.get("name", "")
        lines.append(cat.text("dialogue_contact_line", language, name=name, phone=contact["phone"]))
    return "\n".join(lines)


def send_distress(dispatcher: CollectingDispatcher, ctx: LearnerContext) -> None:
    """The calm safety message with the contacts of the learner's country, and an urgent hand-off."""
    say_key(dispatcher, ctx, "dialogue_distress", contacts=contacts_text(ctx.country, ctx.language))
    gateway_command(dispatcher, "handoff", reason="distress", urgent=True)


def may_be_distress(latest: dict[str, Any]) -> bool:
    """express_distress, or a fallback with express_distress among its best real guesses."""
    if (latest.get("intent") or {}).get("name") == "express_distress":
        return True
    ranking = [r for r in latest.get("intent_ranking") or [] if r.get("name") != "nlu_fallback"]
    return any(r.get("name") == "express_distress" and float(r.get("confidence") or 0.0) >= DISTRESS_FALLBACK_CONFIDENCE
               for r in ranking[:DISTRESS_FALLBACK_RANK])
