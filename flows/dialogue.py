"""Dialogue actions: fallback, safety, hand-off requests, language, settings, the recognition form.

These actions own no data. They render from the catalogue in the learner's
language and ask the gateway to change state with `gateway_command` (handoff,
set_language, reminders, erase); the gateway's handlers do the acting.
"""

from __future__ import annotations

import logging
from typing import Any

from babel import Locale
from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.conversation.language import language_from_name
from bot.i18n.catalogue import Button, Rendered, get_catalogue
from bot.runtime.settings import LANGUAGES
from flows.context import gateway_command, learner_context, say, say_key
from flows.safety import contacts_text, help_contacts, may_be_distress, send_distress

__all__ = ["contacts_text", "help_contacts"]  # re-exported: the safety message's contacts

log = logging.getLogger(__name__)

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


# --- actions --------------------------------------------------------------------

class ActionDistress(Action):  # type: ignore[misc]
    """A calm safety message with local help contacts, and an urgent mentor request."""

    def name(self) -> str:
        return "action_distress"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        send_distress(dispatcher, learner_context(tracker))
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
        if may_be_distress(tracker.latest_message or {}):
            # never answer a possible crisis with "I didn't understand"
            send_distress(dispatcher, ctx)
            return []
        cat = get_catalogue()
        buttons = [Button(cat.text(f"dialogue_topic_{intent}", ctx.language), f"/{intent}")
                   for intent in fallback_topics(ranking)]
        buttons.append(Button(cat.text("dialogue_topic_ask_capabilities", ctx.language), "/ask_capabilities"))
        say(dispatcher, Rendered(cat.text("dialogue_fallback_topics", ctx.language), tuple(buttons)))
        return []


LANGUAGE_OFFERED = "language_offered"


def language_name(code: str, in_language: str) -> str:
    """"Arabisch" for ar in German (Babel/CLDR)."""
    try:
        return str(Locale.parse(in_language).languages.get(code, code))
    except (ValueError, TypeError):
        return code


class ActionChangeLanguage(Action):  # type: ignore[misc]
    """Switch the answer language, but only on a clear choice.

    A typed message that names a language ("can you speak Arabic?", "auf Arabisch bitte") is
    often a question, not a request: Sanad asks to confirm with two buttons, in the learner's
    current language, and switches on "yes" (the button, or a typed yes). A button payload
    (`/change_language{"language": "ar"}`, from this question or from the language menu) switches
    at once. No language named: the menu of five.
    """

    def name(self) -> str:
        return "action_change_language"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        ctx = learner_context(tracker)
        latest = tracker.latest_message or {}
        intent = (latest.get("intent") or {}).get("name")
        offered = tracker.slots.get(LANGUAGE_OFFERED) if tracker.slots else None
        if intent == "affirm":
            # a typed yes to our question
            if offered not in LANGUAGES:
                say_key(dispatcher, ctx, "utter_anything_else")
                return []
            return self.switch(dispatcher, str(offered))
        code = None
        for value in tracker.get_latest_entity_values("language"):
            code = value if value in LANGUAGES else language_from_name(str(value))
            if code:
                break
        if code is None:
            say_key(dispatcher, ctx, "dialogue_ask_language")
            return [SlotSet(LANGUAGE_OFFERED, None)]
        if code == ctx.language:
            say_key(dispatcher, ctx, "dialogue_language_already")
            return [SlotSet(LANGUAGE_OFFERED, None)]
        if str(latest.get("text") or "").startswith("/"):
            return self.switch(dispatcher, code)
        cat = get_catalogue()
        question = cat.text("dialogue_confirm_language", ctx.language, language=language_name(code, ctx.language))
        buttons = (Button(cat.text("dialogue_language_yes", code), f'/change_language{{"language":"{code}"}}'),
                   Button(cat.text("dialogue_language_no", ctx.language), "/deny"))
        say(dispatcher, Rendered(question, buttons))
        return [SlotSet(LANGUAGE_OFFERED, code)]

    @staticmethod
    def switch(dispatcher: CollectingDispatcher, code: str) -> list[EventType]:
        gateway_command(dispatcher, "set_language", language=code)
        say(dispatcher, get_catalogue().render("dialogue_language_changed", code))
        return [SlotSet("language", code), SlotSet(LANGUAGE_OFFERED, None)]


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
