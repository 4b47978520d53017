"""Live events for open consoles, published only once the change they describe is committed;
and the same "after commit" for other follow-up work (posting into the mentor group).

Consoles re-read the page fragment an event names, so an event published before
its transaction commits would make them read the old state; events carry ids and
flags only, never message text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

CONSOLE_CHANNEL = "console"
_PENDING_KEY = "sanad_console_events"
_tasks: set[asyncio.Task[Any]] = set()


async def publish_now(services: Services, message: dict[str, Any]) -> None:
    """Publish to every open console; a broken pub/sub never breaks the conversation."""
    try:
        await services.coord.publish(CONSOLE_CHANNEL, message)
    except Exception:  # (live updates are best effort; the pages stay correct on reload)
        log.warning("console event not published: %s", message.get("type"), exc_info=True)


def publish_after_commit(services: Services, session: AsyncSession, message: dict[str, Any]) -> None:
    """Queue `message` on the session; it is published right after the transaction commits."""
    after_commit(session, lambda: publish_now(services, message))


def after_commit(session: AsyncSession, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `start()` as a task once the session's transaction commits (in the order given);
    nothing runs if it rolls back."""
    sync_session = session.sync_session
    pending: list[Callable[[], Coroutine[Any, Any, None]]] | None = sync_session.info.get(_PENDING_KEY)
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
                task = loop.create_task(item())
                _tasks.add(task)
                task.add_done_callback(_tasks.discard)

        def _rolled_back(sess: Session, _previous: Any) -> None:
            sess.info.pop(_PENDING_KEY, None)

        event.listen(sync_session, "after_commit", _committed, once=True)
        event.listen(sync_session, "after_soft_rollback", _rolled_back, once=True)
    pending.append(start)


def spawn(start: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine in the background now, kept until done (`drain` waits for it)."""
    task = asyncio.get_running_loop().create_task(start)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def drain() -> None:
    """Wait for the events and tasks scheduled so far, and those they schedule (tests and benches)."""
    while _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)
