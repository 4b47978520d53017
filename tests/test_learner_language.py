"""One rule for the learner's language inside Rasa: the NLG endpoint and the custom actions agree."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk import Tracker

from bot.web.nlg import language_of
from flows.context import learner_context

CASES = [
    # (gateway metadata, language slot, expected)
    ({"language": "de"}, "fa", "de"),  # the gateway's (the contact's) language wins over a stale slot
    ({}, "fa", "fa"),  # no metadata: the slot fills in
    ({"language": "ar"}, None, "ar"),
    ({}, None, "en"),
    ({"language": "German"}, "fr", "fr"),  # not a code the catalogue has: the next source
]


@pytest.mark.parametrize(("metadata", "slot", "expected"), CASES)
def test_nlg_and_actions_choose_the_same_language(metadata: dict[str, Any], slot: str | None, expected: str) -> None:
    latest = {"text": "hi", "metadata": metadata}
    nlg_tracker = {"sender_id": "telegram:1", "slots": {"language": slot}, "latest_message": latest}
    action_tracker = Tracker("telegram:1", {"language": slot}, latest, [], False, None, {}, "action_listen")
    assert language_of(nlg_tracker) == expected
    assert learner_context(action_tracker).language == expected
