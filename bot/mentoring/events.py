"""Live events for open consoles, published only once the change they describe is committed.

Consoles re-read the page fragment an event names, so an event published before
its transaction commits would make them read the old state; events carry ids and
flags only, never message text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

CONSOLE_CHANNEL = "console"
_PENDING_KEY = "sanad_console_events"
_tasks: set[asyncio.Task[None]] = set()


async def publish_now(services: Services, message: dict[str, Any]) -> None:
    """Publish to every open console; a broken pub/sub never breaks the conversation."""
    try:
        await services.coord.publish(CONSOLE_CHANNEL, message)
    except Exception:  # (live updates are best effort; the pages stay correct on reload)
        log.warning("console event not published: %s", message.get("type"), exc_info=True)


def publish_after_commit(services: Services, session: AsyncSession, message: dict[str, Any]) -> None:
    """Queue `message` on the session; it is published right after the transaction commits."""
    sync_session = session.sync_session
    pending: list[dict[str, Any]] | None = sync_session.info.get(_PENDING_KEY)
    if pending is None:
        pending = []
        sync_session.info[_PENDING_KEY] = pending

        def _committed(sess: Session) -> None:
            items = sess.info.pop(_PENDING_KEY, [])
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            for item in items:
                task = loop.create_task(publish_now(services, item))
                _tasks.add(task)
                task.add_done_callback(_tasks.discard)

        def _rolled_back(sess: Session) -> None:
            sess.info.pop(_PENDING_KEY, None)

        event.listen(sync_session, "after_commit", _committed, once=True)
        event.listen(sync_session, "after_soft_rollback", _rolled_back, once=True)
    pending.append(message)


async def drain() -> None:
    """Wait for the events scheduled so far (tests and benches)."""
    if _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)
