"""Dialogue actions: fallback, safety, hand-off requests, language, settings, the recognition form.

These actions own no data. They render from the catalogue in the learner's
language and ask the gateway to change state with `gateway_command` (handoff,
set_language, reminders, erase); the gateway's handlers do the acting.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.conversation.language import language_from_name
from bot.i18n.catalogue import Button, Rendered, get_catalogue
from bot.runtime.settings import LANGUAGES
from flows.context import LearnerContext, gateway_command, learner_context, say, say_key

log = logging.getLogger(__name__)

HELP_CONTACTS_PATH = Path(__file__).resolve().parent / "help_contacts.json"

# intents a "did you mean" button may offer, in the order we prefer when NLU has no idea
TOPIC_INTENTS: tuple[str, ...] = (
    "ask_deadline",
    "ask_enrolment_status",
    "ask_recognition",
    "ask_certificate",
    "ask_enrolment_how",
    "report_technical_problem",
    "ask_extension",
    "ask_programme_info",
)
MAX_TOPIC_BUTTONS = 3
# a fallback with distress among its best real guesses, at least this sure, is treated as distress
DISTRESS_FALLBACK_CONFIDENCE = 0.2
DISTRESS_FALLBACK_RANK = 2
MAX_PLACE_CHARS = 80
UNIVERSITY_WORDS = ("univ", "uni ", "hochschule", "college", "institut", "جامعة", "جامعه", "دانشگاه", "پوهنتون")


# --- help contacts ------------------------------------------------------------

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


def _distress(dispatcher: CollectingDispatcher, ctx: LearnerContext) -> None:
    say_key(dispatcher, ctx, "dialogue_distress", contacts=contacts_text(ctx.country, ctx.language))
    gateway_command(dispatcher, "handoff", reason="distress", urgent=True)


# --- actions --------------------------------------------------------------------

class ActionDistress(Action):  # type: ignore[misc]
    """A calm safety message with local help contacts, and an urgent mentor request."""

    def name(self) -> str:
        return "action_distress"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        _distress(dispatcher, learner_context(tracker))
        return []


class ActionRequestHuman(Action):  # type: ignore[misc]
    """Ask the gateway to hand the conversation to a mentor."""

    def name(self) -> str:
        return "action_request_human"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        # the gateway's answer says how long the wait is and how to go back to the bot
        gateway_command(dispatcher, "handoff", reason="request_human", urgent=False)
        return []


class ActionExtensionHandoff(Action):  # type: ignore[misc]
    """Extensions are a mentor's decision: pass the request on (utter_extension explained it)."""

    def name(self) -> str:
        return "action_extension_handoff"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        gateway_command(dispatcher, "handoff", reason="extension")
        return []


def fallback_topics(ranking: list[dict[str, Any]]) -> list[str]:
    """The likeliest topic intents of an NLU ranking, padded with the usual questions."""
    topics = [item["name"] for item in ranking if item.get("name") in TOPIC_INTENTS]
    for intent in TOPIC_INTENTS:
        if intent not in topics:
            topics.append(intent)
    return topics[:MAX_TOPIC_BUTTONS]


class ActionFallbackTopics(Action):  # type: ignore[misc]
    """First fallback: say we did not understand and offer the likeliest topics as buttons."""

    def name(self) -> str:
        return "action_fallback_topics"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        ctx = learner_context(tracker)
        ranking = [item for item in (tracker.latest_message or {}).get("intent_ranking") or []
                   if item.get("name") != "nlu_fallback"]
        if any(item.get("name") == "express_distress"
               and float(item.get("confidence") or 0.0) >= DISTRESS_FALLBACK_CONFIDENCE
               for item in ranking[:DISTRESS_FALLBACK_RANK]):
            # never answer a possible crisis with "I didn't understand"
            _distress(dispatcher, ctx)
            return []
        cat = get_catalogue()
        buttons = [Button(cat.text(f"dialogue_topic_{intent}", ctx.language), f"/{intent}")
                   for intent in fallback_topics(ranking)]
        buttons.append(Button(cat.text("dialogue_topic_ask_capabilities", ctx.language), "/ask_capabilities"))
        say(dispatcher, Rendered(cat.text("dialogue_fallback_topics", ctx.language), tuple(buttons)))
        return []


class ActionChangeLanguage(Action):  # type: ignore[misc]
    """Switch the answer language and confirm in the new one; ask with buttons when none was named."""

    def name(self) -> str:
        return "action_change_language"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        ctx = learner_context(tracker)
        code = None
        for value in tracker.get_latest_entity_values("language"):
            code = value if value in LANGUAGES else language_from_name(str(value))
            if code:
                break
        if code is None:
            say_key(dispatcher, ctx, "dialogue_ask_language")
            return [SlotSet("language", None)]
        gateway_command(dispatcher, "set_language", language=code)
        say(dispatcher, get_catalogue().render("dialogue_language_changed", code))
        return [SlotSet("language", code)]


class ActionStopReminders(Action):  # type: ignore[misc]
    """Confirmed: ask the gateway to stop reminders."""

    def name(self) -> str:
        return "action_stop_reminders"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        # the gateway confirms once the preference is saved
        gateway_command(dispatcher, "reminders", enabled=False)
        return []


class ActionStartReminders(Action):  # type: ignore[misc]
    """Confirmed: ask the gateway to send reminders again."""

    def name(self) -> str:
        return "action_start_reminders"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        gateway_command(dispatcher, "reminders", enabled=True)
        return []


class ActionDeleteMyData(Action):  # type: ignore[misc]
    """Confirmed: ask the gateway to erase; it sends the final confirmation itself."""

    def name(self) -> str:
        return "action_delete_my_data"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        gateway_command(dispatcher, "erase")
        return []


# --- recognition form -------------------------------------------------------------

def _latest_entity(tracker: Tracker, entity: str) -> str | None:
    value = next(tracker.get_latest_entity_values(entity), None)
    return str(value) if value else None


class ActionResetRecognition(Action):  # type: ignore[misc]
    """A new recognition question starts from what this message says, not from an old answer."""

    def name(self) -> str:
        return "action_reset_recognition"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        return [
            SlotSet("country", _latest_entity(tracker, "country")),
            SlotSet("university", _latest_entity(tracker, "university")),
        ]


class ActionAskCountry(Action):  # type: ignore[misc]
    """The form's one question: a country or a university, either is enough."""

    def name(self) -> str:
        return "action_ask_country"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        say_key(dispatcher, learner_context(tracker), "dialogue_ask_country")
        return []


def looks_like_university(text: str) -> bool:
    lowered = f"{text.lower()} "
    return any(word in lowered for word in UNIVERSITY_WORDS)


class ValidateRecognitionForm(FormValidationAction):  # type: ignore[misc]
    """Country OR university: the form is done as soon as one of them is known."""

    def name(self) -> str:
        return "validate_recognition_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        if tracker.get_slot("country") or tracker.get_slot("university"):
            return []
        return ["country"]

    async def validate_country(
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        university = _latest_entity(tracker, "university")
        if university:
            return {"university": university, "country": _latest_entity(tracker, "country")}
        text = str(slot_value or "").strip()
        if not text or len(text) > MAX_PLACE_CHARS or text.startswith("/") or not any(ch.isalpha() for ch in text):
            say_key(dispatcher, learner_context(tracker), "dialogue_recognition_unclear")
            return {"country": None}
        if looks_like_university(text) and not _latest_entity(tracker, "country"):
            return {"university": text, "country": None}
        return {"country": text}
