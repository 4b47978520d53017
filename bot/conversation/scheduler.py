"""Step 2 of a message's path: per-contact scheduling inside one process.

`ConversationScheduler` (one per process, owned by `Services.conversations`) runs one task per
contact with messages waiting. The task holds the contact's lease (bot/conversation/lease.py)
and takes the contact's received messages oldest first, each handled as a turn
(bot/conversation/turn.py), so one conversation is handled in order across every gateway.

- `schedule(keys)`: the webhook accepted new messages (a key once per message);
- `redeliver()`: messages left waiting (Rasa was down, a gateway died) are picked up again;
- `recover()`: at start-up, this process's own leases and send claims from before a crash are
  taken back at once, and the waiting messages are handled;
- a heartbeat renews the leases of the contacts this process works on.

See docs/architecture.md ("Per-contact order" and "After a crash").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, select

from bot.conversation import lease
from bot.conversation.lease import Backoff
from bot.privacy.logs import contact_ref
from bot.storage.db import utcnow
from bot.storage.models import Contact, InboundMessage

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

CONTACTS = cast(Table, Contact.__table__)
MESSAGES = cast(Table, InboundMessage.__table__)
# how long a task waits for another gateway to give a busy contact back before leaving it to redelivery
BUSY_WAIT_S = 10.0
_UNTIL_EMPTY = 1_000_000


class ConversationScheduler:
    """This process's conversation tasks: at most one per contact, at most
    `SANAD_PROCESS_CONCURRENCY` working at once."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.token = services.instance_token
        self.lease_ttl_s = services.settings.conversation_lease_ttl_s
        self.slots = asyncio.Semaphore(services.settings.process_concurrency)
        # messages accepted (or found by redelivery) that a contact's task still has to take: it takes
        # exactly that many, so no message costs an extra empty look
        self._pending: dict[str, int] = {}
        self._active: dict[str, asyncio.Task[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    # -- scheduling ----------------------------------------------------------------

    def schedule(self, keys: list[str], until_empty: bool = False) -> None:
        """Process these contacts in the background (the webhook has already answered); `keys` holds a
        contact's key once per new message, or once with `until_empty` (redelivery)."""
        for key in keys:
            self._pending[key] = min(_UNTIL_EMPTY, self._pending.get(key, 0) + (_UNTIL_EMPTY if until_empty else 1))
            if key in self._active:
                continue  # the running task looks at `_pending` again before it ends
            self._active[key] = asyncio.create_task(self._run_contact(key))
        if self._active and (self._heartbeat is None or self._heartbeat.done()):
            self._heartbeat = asyncio.create_task(self._renew_leases())

    async def drain(self) -> None:
        """Wait until every scheduled contact is done (tests, shutdown)."""
        while self._active:
            await asyncio.gather(*list(self._active.values()), return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def _run_contact(self, key: str) -> None:
        try:
            async with self.slots:
                while self._pending.get(key, 0) > 0:
                    await self._process_contact(key)
                # no await between this check and the exit: a message scheduled meanwhile is seen above
        finally:
            self._active.pop(key, None)
            self._pending.pop(key, None)

    async def _renew_leases(self) -> None:
        while self._active:
            await asyncio.sleep(self.lease_ttl_s / 3)
            try:
                await lease.renew(self.services, list(self._active), self.token, self.lease_ttl_s)
            except Exception:
                log.exception("lease heartbeat failed")

    # -- one contact ------------------------------------------------------------------

    async def _process_contact(self, key: str) -> None:
        """Handle as many of the contact's received messages, oldest first, as were counted for it,
        holding its lease meanwhile."""
        from bot.conversation.turn import Turn, handle_turn

        holding = False
        backoff: Backoff | None = None
        try:
            while self._pending.get(key, 0) > 0:
                started = time.perf_counter()
                taken = await lease.take_next(self.services, key, self.token, self.lease_ttl_s)
                if taken == "busy":
                    # another gateway works on this contact; if it stays busy, redelivery comes back to it
                    backoff = backoff or Backoff(BUSY_WAIT_S)
                    if await backoff.wait():
                        continue
                    log.info("contact busy, left for redelivery contact=%s", contact_ref(key))
                    self._pending.pop(key, None)
                    break
                backoff = None
                holding = holding or taken != "missing"
                if isinstance(taken, str):
                    self._pending.pop(key, None)  # none left (or the contact is gone): nothing more to do
                    break
                contact, message, taken_before = taken
                self._pending[key] -= 1
                # the last message counted: its finishing transaction gives the lease back too (one
                # statement less); a message scheduled meanwhile takes the lease again
                turn = Turn(contact, message, taken_before=taken_before, started=started,
                            release_lease=self._pending[key] <= 0)
                outcome = await handle_turn(self.services, turn)
                holding = holding and not turn.lease_released
                if outcome == "rasa_down":
                    self._pending.pop(key, None)  # redelivery takes over from here
                    break
                if outcome == "again":
                    self._pending[key] += 1
        except Exception:
            # never let a background task die silently; the message stays received and is retried
            log.exception("processing failed contact=%s", contact_ref(key))
            self._pending.pop(key, None)
        finally:
            if holding:
                try:
                    await lease.release(self.services, key, self.token)
                except Exception:
                    log.exception("lease not released (it expires) contact=%s", contact_ref(key))

    # -- messages left waiting --------------------------------------------------------

    async def redeliver(self, older_than_s: float = 5.0, limit: int = 200) -> int:
        """Process contacts whose messages wait (Rasa was down, a gateway died mid-way); returns how
        many contacts were scheduled, after their tasks finished."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        services = self.services
        async with services.db.autocommit() as conn:
            keys = list((await conn.execute(
                select(CONTACTS.c.key)
                .join(MESSAGES, MESSAGES.c.contact_id == CONTACTS.c.id)
                .where(MESSAGES.c.status == "received", MESSAGES.c.created_at <= cutoff)
                .group_by(CONTACTS.c.key)
                .limit(limit)
            )).scalars())
            if keys and services.rasa is not None and not await services.rasa.ping():
                # only contacts in mentor mode can progress without Rasa
                keys = list((await conn.execute(
                    select(CONTACTS.c.key).where(CONTACTS.c.key.in_(keys), CONTACTS.c.mode != "bot")
                )).scalars())
        self.schedule(keys, until_empty=True)
        tasks: list[Any] = [task for key in keys if (task := self._active.get(key)) is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(keys)

    async def recover(self) -> int:
        """At start-up: send what this process had claimed before it stopped and handle the messages
        that wait (this process's leases are its own again at once)."""
        if self.services.sender is not None:
            await self.services.sender.reclaim_own()
        return await self.redeliver(older_than_s=0)
