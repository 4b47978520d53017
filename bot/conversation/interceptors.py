"""Messages the gateway answers itself, before Rasa sees them.

Linking (`/start <token>`, `LINK <code>`, `unlink`), the shared-phone PIN,
`STOP`/`START` keywords: each area registers an interceptor. The pipeline calls
them in registration order for every inbound message of a contact in bot mode;
the first that returns a result handles the message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.i18n.catalogue import Rendered
    from bot.runtime.services import Services
    from bot.storage.models import Contact, InboundMessage


@dataclass
class Intercepted:
    """The message was handled: send these replies, do not pass it to Rasa."""

    replies: list[Rendered] = field(default_factory=list)


# interceptor(services, contact, message) -> Intercepted | None ; runs while the pipeline holds the contact's lease
Interceptor = Callable[["Services", "Contact", "InboundMessage"], Awaitable[Intercepted | None]]

_INTERCEPTORS: list[tuple[int, str, Interceptor]] = []


def interceptor(name: str, order: int = 100) -> Callable[[Interceptor], Interceptor]:
    """Register an interceptor; lower `order` runs first."""

    def register(func: Interceptor) -> Interceptor:
        _INTERCEPTORS[:] = [item for item in _INTERCEPTORS if item[1] != name]
        _INTERCEPTORS.append((order, name, func))
        _INTERCEPTORS.sort(key=lambda item: (item[0], item[1]))
        return func

    return register


def interceptors() -> list[Interceptor]:
    return [func for _, _, func in _INTERCEPTORS]
