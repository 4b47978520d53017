"""Commands that custom actions ask the gateway to carry out.

Actions run in the action server and own no data; when a conversation must change
state (hand a learner to a mentor, switch language, stop reminders, erase data)
the action sends `{"sanad": {"command": NAME, ...args}}` as a custom message.
Rasa's REST channel hands it back to the gateway, which runs the handler
registered here for NAME, inside the learner's ordered processing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.i18n.catalogue import Rendered
    from bot.runtime.services import Services
    from bot.storage.models import Contact


@dataclass
class CommandResult:
    """What a command adds to the conversation: extra replies and whether to stop relaying Rasa's."""

    replies: list[Rendered] = field(default_factory=list)
    suppress_bot_replies: bool = False


# handler(services, contact, args) -> CommandResult | None ; it runs while the pipeline holds the contact's lease
CommandHandler = Callable[["Services", "Contact", dict[str, Any]], Awaitable[CommandResult | None]]

_HANDLERS: dict[str, CommandHandler] = {}


def command(name: str) -> Callable[[CommandHandler], CommandHandler]:
    """Register the gateway's handler of a command."""

    def register(handler: CommandHandler) -> CommandHandler:
        _HANDLERS[name] = handler
        return handler

    return register


def handler_for(name: str) -> CommandHandler | None:
    return _HANDLERS.get(name)

