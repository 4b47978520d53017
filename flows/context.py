"""What a custom action knows about the learner, and how it talks back to the gateway.

The gateway sends every message to Rasa with metadata (see `bot/conversation/rasa_turn.py`):
`channel`, `language`, `learner_id` (None when the chat is not linked),
`timezone`, `country`, `first_name`, `pin_required`. Actions read it here,
render text from the shared catalogue, and ask the gateway to change state with
`gateway_command` (handled by `bot/conversation/commands.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from bot.i18n.catalogue import Rendered, get_catalogue, learner_language


@dataclass(frozen=True)
class LearnerContext:
    """The learner behind a tracker, as the gateway described it."""

    contact_key: str
    channel: str
    language: str
    learner_id: str | None
    timezone: str | None
    country: str | None
    first_name: str | None
    pin_required: bool

    @property
    def linked(self) -> bool:
        return self.learner_id is not None


def _metadata(tracker: Tracker) -> dict[str, Any]:
    latest = tracker.latest_message or {}
    meta = latest.get("metadata") or {}
    if meta:
        return dict(meta)
    # a form or follow-up action may run after a message without metadata: look back
    for event in reversed(tracker.events):
        if event.get("event") == "user" and event.get("metadata"):
            return dict(event["metadata"])
    return {}


def learner_context(tracker: Tracker) -> LearnerContext:
    """Read the gateway's metadata; the language is chosen as for the NLG endpoint (`learner_language`)."""
    meta = _metadata(tracker)
    slot_language = tracker.get_slot("language") if "language" in (tracker.slots or {}) else None
    language = learner_language(meta.get("language"), slot_language)
    return LearnerContext(
        contact_key=tracker.sender_id,
        channel=str(meta.get("channel") or tracker.sender_id.split(":", 1)[0]),
        language=language,
        learner_id=meta.get("learner_id") or None,
        timezone=meta.get("timezone") or None,
        country=meta.get("country") or None,
        first_name=meta.get("first_name") or None,
        pin_required=bool(meta.get("pin_required")),
    )


def say(dispatcher: CollectingDispatcher, rendered: Rendered) -> None:
    """Send a rendered catalogue entry (text and buttons) through Rasa."""
    buttons = [{"title": b.title, "payload": b.payload} for b in rendered.buttons]
    dispatcher.utter_message(text=rendered.text, buttons=buttons or None)


def say_key(dispatcher: CollectingDispatcher, ctx: LearnerContext, key: str, **params: Any) -> None:
    """Render `key` in the learner's language and send it."""
    say(dispatcher, get_catalogue().render(key, ctx.language, **params))


def gateway_command(dispatcher: CollectingDispatcher, name: str, **args: Any) -> None:
    """Ask the gateway to carry out a state change (see bot/conversation/commands.py)."""
    dispatcher.utter_message(json_message={"sanad": {"command": name, **args}})
