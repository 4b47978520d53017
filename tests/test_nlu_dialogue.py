"""Dialogue actions (flows/dialogue.py) on real rasa-sdk trackers: what they say, which gateway commands they send."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from bot.i18n.catalogue import get_catalogue
from flows.dialogue import (
    ActionChangeLanguage,
    ActionDeleteMyData,
    ActionDistress,
    ActionExtensionHandoff,
    ActionFallbackTopics,
    ActionRequestHuman,
    ActionStartReminders,
    ActionStopReminders,
    contacts_text,
    fallback_topics,
    help_contacts,
)

DOMAIN: dict[str, Any] = {"slots": {"language": {}, "language_offered": {}, "awaiting_place": {}, "course": {}}}


def tracker(text: str = "hi", intent: str = "greet", *, entities: list[dict[str, Any]] | None = None,
            ranking: list[dict[str, Any]] | None = None, slots: dict[str, Any] | None = None,
            language: str = "en", country: str | None = None) -> Tracker:
    meta = {"channel": "telegram", "language": language, "learner_id": "L1", "timezone": "Europe/Berlin",
            "country": country, "first_name": "Amal", "pin_required": False}
    latest = {"text": text, "intent": {"name": intent, "confidence": 0.9}, "entities": entities or [],
              "intent_ranking": ranking or [], "metadata": meta}
    all_slots = {"language": None, "language_offered": None, "awaiting_place": False, "course": None}
    all_slots.update(slots or {})
    return Tracker("telegram:42", all_slots, latest, [{"event": "user", "text": text, "metadata": meta}],
                   False, None, {}, "action_listen")


def commands(dispatcher: CollectingDispatcher) -> list[dict[str, Any]]:
    return [m["custom"]["sanad"] for m in dispatcher.messages if (m.get("custom") or {}).get("sanad")]


def texts(dispatcher: CollectingDispatcher) -> list[str]:
    return [m["text"] for m in dispatcher.messages if m.get("text")]


async def test_distress_sends_contacts_of_the_country_and_an_urgent_handoff() -> None:
    dispatcher = CollectingDispatcher()
    await ActionDistress().run(dispatcher, tracker("ich kann nicht mehr", "express_distress", language="de",
                                                   country="DE"), DOMAIN)
    assert commands(dispatcher) == [{"command": "handoff", "reason": "distress", "urgent": True}]
    [text] = texts(dispatcher)
    assert "0800 111 0 111" in text and "112" in text
    assert text.startswith(get_catalogue().text("dialogue_distress", "de", contacts="")[:20])


async def test_distress_without_a_known_country_uses_the_default_contacts() -> None:
    dispatcher = CollectingDispatcher()
    await ActionDistress().run(dispatcher, tracker("بدي موت", "express_distress", language="ar"), DOMAIN)
    [text] = texts(dispatcher)
    assert "findahelpline.com" in text
    assert help_contacts("zz") == help_contacts(None)
    assert "Notruf" in contacts_text("AT", "de")


async def test_fallback_offers_the_likeliest_topics() -> None:
    ranking = [{"name": "nlu_fallback", "confidence": 0.5}, {"name": "ask_certificate", "confidence": 0.3},
               {"name": "greet", "confidence": 0.2}, {"name": "ask_deadline", "confidence": 0.1}]
    dispatcher = CollectingDispatcher()
    await ActionFallbackTopics().run(dispatcher, tracker("blorp", "nlu_fallback", ranking=ranking, language="fr"),
                                     DOMAIN)
    [message] = dispatcher.messages
    payloads = [b["payload"] for b in message["buttons"]]
    assert payloads[:2] == ["/ask_certificate", "/ask_deadline"]
    assert payloads[-1] == "/ask_capabilities"
    assert message["text"] == get_catalogue().text("dialogue_fallback_topics", "fr")
    assert not commands(dispatcher)


async def test_a_fallback_that_looks_like_distress_is_treated_as_distress() -> None:
    ranking = [{"name": "nlu_fallback", "confidence": 0.5}, {"name": "ask_enrolment_how", "confidence": 0.44},
               {"name": "express_distress", "confidence": 0.3}]
    dispatcher = CollectingDispatcher()
    await ActionFallbackTopics().run(dispatcher, tracker("...", "nlu_fallback", ranking=ranking), DOMAIN)
    assert commands(dispatcher) == [{"command": "handoff", "reason": "distress", "urgent": True}]


def test_fallback_topics_pads_with_usual_questions() -> None:
    assert fallback_topics([]) == ["ask_deadline", "ask_enrolment_status", "ask_recognition"]


async def test_request_human_and_extension_hand_off() -> None:
    dispatcher = CollectingDispatcher()
    await ActionRequestHuman().run(dispatcher, tracker(), DOMAIN)
    assert commands(dispatcher) == [{"command": "handoff", "reason": "request_human", "urgent": False}]
    assert texts(dispatcher) == []  # the gateway's hand-off answer is the one confirmation
    dispatcher = CollectingDispatcher()
    await ActionExtensionHandoff().run(dispatcher, tracker(), DOMAIN)
    assert commands(dispatcher) == [{"command": "handoff", "reason": "extension"}]


@pytest.mark.parametrize(("value", "code"), [("ar", "ar"), ("Arabisch", "ar"), ("fa", "fa"), ("français", "fr")])
async def test_a_language_button_switches_and_confirms_in_the_new_language(value: str, code: str) -> None:
    dispatcher = CollectingDispatcher()
    payload = f'/change_language{{"language":"{value}"}}'
    events = await ActionChangeLanguage().run(
        dispatcher, tracker(payload, "change_language", entities=[{"entity": "language", "value": value}]), DOMAIN)
    assert commands(dispatcher) == [{"command": "set_language", "language": code}]
    assert texts(dispatcher) == [get_catalogue().text("dialogue_language_changed", code)]
    assert events == [SlotSet("language", code), SlotSet("language_offered", None)]


@pytest.mark.parametrize(("text", "language", "named", "code"), [
    ("kannst du Arabisch?", "de", "Arabisch", "ar"),
    ("do you speak french?", "en", "french", "fr"),
    ("بتحكي فارسي؟", "ar", "فارسي", "fa"),
])
async def test_a_typed_language_is_a_question_answered_with_two_buttons(text: str, language: str, named: str,
                                                                       code: str) -> None:
    cat = get_catalogue()
    dispatcher = CollectingDispatcher()
    events = await ActionChangeLanguage().run(dispatcher, tracker(
        text, "change_language", entities=[{"entity": "language", "value": named}], language=language), DOMAIN)
    assert not commands(dispatcher)  # nothing switched yet
    [message] = dispatcher.messages
    from flows.dialogue import language_name

    assert message["text"] == cat.text("dialogue_confirm_language", language, language=language_name(code, language))
    assert [b["payload"] for b in message["buttons"]] == [f'/change_language{{"language":"{code}"}}', "/deny"]
    assert [b["title"] for b in message["buttons"]] == [cat.text("dialogue_language_yes", code),
                                                        cat.text("dialogue_language_no", language)]
    assert events == [SlotSet("language_offered", code)]


async def test_a_typed_yes_to_the_language_question_switches() -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionChangeLanguage().run(
        dispatcher, tracker("ja", "affirm", language="de", slots={"language_offered": "ar"}), DOMAIN)
    assert commands(dispatcher) == [{"command": "set_language", "language": "ar"}]
    assert events == [SlotSet("language", "ar"), SlotSet("language_offered", None)]


async def test_the_current_language_is_not_offered_again() -> None:
    dispatcher = CollectingDispatcher()
    await ActionChangeLanguage().run(dispatcher, tracker(
        "sprichst du deutsch?", "change_language", entities=[{"entity": "language", "value": "de"}],
        language="de"), DOMAIN)
    assert not commands(dispatcher)
    assert texts(dispatcher) == [get_catalogue().text("dialogue_language_already", "de")]


async def test_change_language_without_a_language_asks_with_five_buttons() -> None:
    dispatcher = CollectingDispatcher()
    await ActionChangeLanguage().run(dispatcher, tracker("sprache", "change_language", language="de"), DOMAIN)
    assert not commands(dispatcher)
    [message] = dispatcher.messages
    assert message["text"] == get_catalogue().text("dialogue_ask_language", "de")
    assert [b["payload"] for b in message["buttons"]] == [
        f'/change_language{{"language":"{c}"}}' for c in ("en", "ar", "fa", "fr", "de")]


async def test_settings_actions_send_their_commands() -> None:
    for action, command in [
        (ActionStopReminders(), {"command": "reminders", "enabled": False}),
        (ActionStartReminders(), {"command": "reminders", "enabled": True}),
        (ActionDeleteMyData(), {"command": "erase"}),
    ]:
        dispatcher = CollectingDispatcher()
        await action.run(dispatcher, tracker(), DOMAIN)
        assert commands(dispatcher) == [command]
