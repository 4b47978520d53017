"""Personal answers through rasa-sdk's ActionExecutor, with real trackers, against the demo platform over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date
from rasa_sdk.executor import ActionExecutor

import flows.learner as learner_flows
from bot.i18n.catalogue import get_catalogue
from bot.runtime.coordination import LocalCoordinator
from integrations.demo_platform import BackgroundServer, demo_app
from integrations.platform import DEMO_PLATFORM_TOKEN, PlatformClient


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with BackgroundServer(demo_app()) as server:
        yield server.url


@pytest.fixture
async def platform(demo_url: str) -> AsyncIterator[PlatformClient]:
    client = PlatformClient(demo_url, DEMO_PLATFORM_TOKEN, LocalCoordinator())
    learner_flows.set_platform_client(client)
    yield client
    learner_flows.set_platform_client(None)
    await client.aclose()


@pytest.fixture(scope="module")
def executor() -> ActionExecutor:
    ex = ActionExecutor()
    ex.register_package("flows")
    return ex


def action_call(action: str, *, learner_id: str | None, language: str = "en", timezone: str | None = None,
                entities: list[dict[str, Any]] | None = None, slots: dict[str, Any] | None = None,
                pin_required: bool = False, intent: str = "ask_deadline", text: str = "hi") -> dict[str, Any]:
    """The JSON Rasa 3.6 posts to the action server."""
    metadata = {"channel": "telegram", "language": language, "learner_id": learner_id, "timezone": timezone,
                "country": None, "first_name": "X" if learner_id else None, "pin_required": pin_required}
    parse = {"text": text, "intent": {"name": intent, "confidence": 0.98}, "entities": entities or [],
             "metadata": metadata, "message_id": "m1"}
    return {
        "next_action": action,
        "sender_id": "telegram:777",
        "version": "3.6.21",
        "tracker": {
            "sender_id": "telegram:777",
            "slots": {"language": None, "course": None, "country": None, "university": None, **(slots or {})},
            "latest_message": parse,
            "events": [
                {"event": "action", "name": "action_listen", "timestamp": 1.0},
                {"event": "user", "text": text, "parse_data": parse, "metadata": metadata, "timestamp": 2.0},
            ],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
            "latest_event_time": 2.0,
        },
        "domain": {"version": "3.1", "slots": {}, "responses": {}, "actions": [action], "intents": [intent]},
    }


async def run(executor: ActionExecutor, call: dict[str, Any]) -> list[dict[str, Any]]:
    result = await executor.run(call)
    assert result is not None
    return result.responses


def texts(responses: list[dict[str, Any]]) -> str:
    return "\n".join(r.get("text") or "" for r in responses)


async def test_next_deadlines_in_local_time_and_language(executor: ActionExecutor, platform: PlatformClient) -> None:
    responses = await run(executor, action_call("action_deadlines", learner_id="L1003", timezone="Africa/Nairobi"))
    text = texts(responses)
    lines = [line for line in text.splitlines() if line.startswith("•")]
    assert len(lines) == 3
    assert "tomorrow" in lines[0] and "Module 2 peer review" in lines[0] and "Introduction to Data Science" in lines[0]
    assert "10:00 PM" in lines[0].replace("\u202f", " ")  # 22:00 in Nairobi
    week = datetime.now(UTC).astimezone(ZoneInfo("Africa/Nairobi")).date() + timedelta(days=7)
    assert format_date(week, format="long", locale="en") in lines[1] and "Module 3 lab" in lines[1]
    assert "Module 1 quiz" not in text  # submitted
    assert "Orientation survey" not in text  # past


async def test_deadlines_in_arabic_in_amman(executor: ActionExecutor, platform: PlatformClient) -> None:
    responses = await run(executor, action_call("action_deadlines", learner_id="L1001", language="ar",
                                                timezone="Asia/Amman"))
    text = texts(responses)
    assert get_catalogue().text("learner_deadlines_header", "ar") in text
    assert get_catalogue().text("date_tomorrow", "ar") in text
    assert "Assignment 3: Loops and iterations" in text
    assert "Quiz 4: Strings" not in text
    week = datetime.now(UTC).astimezone(ZoneInfo("Asia/Amman")).date() + timedelta(days=7)
    assert format_date(week, format="long", locale="ar") in text


async def test_deadlines_of_one_named_course_loosely_matched(executor: ActionExecutor,
                                                             platform: PlatformClient) -> None:
    entities = [{"entity": "course", "value": "python for everyone", "start": 0, "end": 5}]
    text = texts(await run(executor, action_call("action_deadlines", learner_id="L1001", timezone="Asia/Amman",
                                                 entities=entities)))
    assert "Python for Everybody" in text
    assert "Final exam" in text and "Course ends" in text  # beyond three, beyond 30 days
    assert "Enrolment confirmation" not in text  # other course
    unknown = texts(await run(executor, action_call("action_deadlines", learner_id="L1001",
                                                    slots={"course": "Astrophysics"})))
    assert '"Astrophysics"' in unknown and "Learning How to Learn" in unknown


async def test_farsi_timezone_from_the_platform_when_metadata_lacks_it(executor: ActionExecutor,
                                                                        platform: PlatformClient) -> None:
    text = texts(await run(executor, action_call("action_deadlines", learner_id="L1002", language="fa")))
    assert get_catalogue().text("date_tomorrow", "fa") in text
    assert "Week 5 writing task" in text and "Week 4 listening quiz" not in text


async def test_enrolment_status(executor: ActionExecutor, platform: PlatformClient) -> None:
    text = texts(await run(executor, action_call("action_enrolment_status", learner_id="L1001")))
    assert "Python for Everybody" in text and "in progress, 45% done" in text
    assert "Learning How to Learn" in text and "completed" in text
    assert "application pending" in text


async def test_credits(executor: ActionExecutor, platform: PlatformClient) -> None:
    text = texts(await run(executor, action_call("action_credits", learner_id="L1001", language="de")))
    assert "2 ECTS erworben, 6 ECTS sind in Arbeit" in text
    assert "Study Skills" in text and "Programming Fundamentals" in text


async def test_recognition_for_a_country_name(executor: ActionExecutor, platform: PlatformClient) -> None:
    entities = [{"entity": "country", "value": "Germany", "start": 0, "end": 7}]
    text = texts(await run(executor, action_call("action_recognition", learner_id="L1005", entities=entities)))
    assert "Rhein University of Applied Sciences" in text and "Hochschule Nord" in text
    assert "11 ECTS" in text  # programming 6 + English 5
    assert "https://example.org/recognition/u-de-rhein" in text
    assert "Lyon" not in text


def place(entity: str, value: str) -> list[dict[str, Any]]:
    return [{"entity": entity, "value": value, "start": 0, "end": len(value)}]


async def test_recognition_country_in_arabic_and_a_university(executor: ActionExecutor,
                                                              platform: PlatformClient) -> None:
    text = texts(await run(executor, action_call("action_recognition", learner_id="L1006", language="ar",
                                                 intent="ask_recognition", entities=place("country", "بالأردن"))))
    assert "Amman Applied University" in text and "Academic English B2" in text
    text = texts(await run(executor, action_call("action_recognition", learner_id="L1005", intent="ask_recognition",
                                                 entities=place("university", "Beirut"))))
    assert "Beirut Open University" in text and "9 ECTS" in text


async def test_recognition_without_a_place_gives_the_credits_and_asks_once(executor: ActionExecutor,
                                                                            platform: PlatformClient) -> None:
    cat = get_catalogue()
    result = await executor.run(action_call("action_recognition", learner_id="L1005", language="de",
                                            intent="ask_recognition", text="werden meine credits anerkannt?"))
    assert result is not None
    assert result.responses[-1]["text"] == cat.text("dialogue_ask_country", "de")
    assert "ECTS" in texts(result.responses)
    assert next(e for e in result.events if e.get("name") == "awaiting_place")["value"] is True

    # the answer: a dialect form of a country, without an entity
    result = await executor.run(action_call("action_recognition", learner_id="L1005", language="ar",
                                            intent="out_of_scope", text="بألمانيا", slots={"awaiting_place": True}))
    assert result is not None
    assert "Rhein University of Applied Sciences" in texts(result.responses)
    assert next(e for e in result.events if e.get("name") == "awaiting_place")["value"] is False


async def test_a_sentence_after_the_question_is_not_taken_as_a_place(executor: ActionExecutor,
                                                                     platform: PlatformClient) -> None:
    cat = get_catalogue()
    result = await executor.run(action_call(
        "action_recognition", learner_id="L1005", language="fr", intent="out_of_scope",
        text="au fait, quel temps fait-il a paris aujourd'hui et demain ?", slots={"awaiting_place": True}))
    assert result is not None
    assert [r["text"] for r in result.responses] == [cat.text("utter_out_of_scope", "fr"),
                                                     cat.text("dialogue_form_ask_again", "fr")]


async def test_a_possible_crisis_after_the_question_gets_the_safety_message(executor: ActionExecutor,
                                                                             platform: PlatformClient) -> None:
    call = action_call("action_recognition", learner_id="L1005", intent="nlu_fallback", text="i cant anymore",
                       slots={"awaiting_place": True})
    call["tracker"]["latest_message"]["intent_ranking"] = [
        {"name": "nlu_fallback", "confidence": 0.6}, {"name": "express_distress", "confidence": 0.24}]
    result = await executor.run(call)
    assert result is not None
    assert any((r.get("custom") or {}).get("sanad", {}).get("urgent") for r in result.responses)


@pytest.mark.parametrize(("raw", "code"), [
    ("Germany", "DE"), ("in Deutschland", "DE"), ("en France", "FR"), ("بألمانيا", "DE"), ("بفرنسا", "FR"),
    ("في ألمانيا", "DE"), ("fi almanya", "DE"), ("b faransa", "FR"), ("در آلمان", "DE"), ("آلمان", "DE"),
    ("بالأردن", "JO"), ("au Liban", "LB"), ("nach Österreich", "AT"), ("the Netherlands", "NL"),
])
def test_resolve_country_in_every_language_and_dialect_form(raw: str, code: str) -> None:
    assert learner_flows.resolve_country(raw) == code


async def test_recognition_nothing_matches_offers_a_mentor(executor: ActionExecutor,
                                                           platform: PlatformClient) -> None:
    responses = await run(executor, action_call("action_recognition", learner_id="L1001",
                                                intent="ask_recognition", entities=place("country", "TR")))
    assert "Türkiye" in texts(responses) or "Turkey" in texts(responses)
    assert responses[0]["buttons"] == [{"title": "Talk to a mentor", "payload": "/request_human"}]


async def test_certificate(executor: ActionExecutor, platform: PlatformClient) -> None:
    text = texts(await run(executor, action_call("action_certificate", learner_id="L1005", language="fr")))
    assert "Python for Everybody" in text and "Accomplishments" in text
    none = texts(await run(executor, action_call("action_certificate", learner_id="L1002")))
    assert none == get_catalogue().text("learner_certificate_none", "en")


async def test_not_linked_gets_how_to_link_and_no_platform_call(executor: ActionExecutor,
                                                                 platform: PlatformClient) -> None:
    for action in ("action_deadlines", "action_credits", "action_enrolment_status", "action_recognition",
                   "action_certificate"):
        responses = await run(executor, action_call(action, learner_id=None, language="fr"))
        assert texts(responses) == get_catalogue().text("learner_not_linked", "fr")


async def test_pin_required_stops_before_personal_data(executor: ActionExecutor, platform: PlatformClient) -> None:
    responses = await run(executor, action_call("action_credits", learner_id="L1001", pin_required=True))
    assert texts(responses) == get_catalogue().text("pin_required", "en")
    assert "ECTS" not in texts(responses)


async def test_unknown_learner_unlinks(executor: ActionExecutor, platform: PlatformClient) -> None:
    responses = await run(executor, action_call("action_enrolment_status", learner_id="L-GONE"))
    assert responses[0]["custom"] == {"sanad": {"command": "unlink"}}
    assert responses[1]["text"] == get_catalogue().text("learner_unknown", "en")


async def test_platform_outage_is_honest_and_offers_a_mentor(executor: ActionExecutor) -> None:
    dead = PlatformClient("http://127.0.0.1:9", DEMO_PLATFORM_TOKEN, max_attempts=1)
    learner_flows.set_platform_client(dead)
    try:
        responses = await run(executor, action_call("action_deadlines", learner_id="L1001", language="de"))
    finally:
        learner_flows.set_platform_client(None)
        await dead.aclose()
    assert len(responses) == 1
    assert responses[0]["text"] == get_catalogue().text("learner_platform_down", "de")
    assert responses[0]["buttons"][0]["payload"] == "/request_human"


def test_course_and_country_matching() -> None:
    courses = [("C-PY4E", "Python for Everybody"), ("C-DS101", "Introduction to Data Science")]
    assert learner_flows.match_course("python", courses) == "C-PY4E"
    assert learner_flows.match_course("data science", courses) == "C-DS101"
    assert learner_flows.match_course("c-ds101", courses) == "C-DS101"
    assert learner_flows.match_course("cooking", courses) is None
    assert learner_flows.resolve_country("Allemagne") == "DE"
    assert learner_flows.resolve_country("deutschland") == "DE"
    assert learner_flows.resolve_country("آلمان") == "DE"
    assert learner_flows.resolve_country("lb") == "LB"
    assert learner_flows.resolve_country("Atlantis") is None
