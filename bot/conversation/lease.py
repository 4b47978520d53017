"""Who works on a contact's conversation now: a lease on the contact row.

A conversation is handled in order, by one worker at a time, across every gateway: the
pipeline, the end of a hand-off and an erasure each hold the contact's lease while they
work. The lease is a random token and an expiry on `contacts` (`lease_token`,
`lease_until`). Taking it is one UPDATE that succeeds when the lease is free, expired or
already ours; the row lock of that UPDATE decides between two gateways that try at once.
On PostgreSQL the pipeline takes the lease in the statement that loads the contact and its
next message (bot/conversation/pipeline.py), so holding it costs one round trip: the release.

It lives in the database rather than in Redis: a conversation's order does not depend on
Redis being up, and the lease of a process that died expires on its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Literal, cast

from sqlalchemy import Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.runtime import batching
from bot.runtime.batching import Batcher
from bot.runtime.services import Services
from bot.storage.db import StatementPool, utcnow
from bot.storage.models import Contact

CONTACTS = cast(Table, Contact.__table__)
# the pipeline of this process: it runs one task per contact (bot/conversation/pipeline.py `_active`), so the
# token can be the process's; every other holder takes a token of its own
PIPELINE_TOKEN = uuid.uuid4().hex
PIPELINE_TTL_S = 120.0
PIPELINE_WAIT_S = 10.0
# every lease given back at once by the conversations that finish together (bot/runtime/batching.py)
RELEASE_SQL = (
    "UPDATE contacts AS c SET lease_token = NULL, lease_until = NULL "
    "FROM unnest($1::text[], $2::text[]) AS v(key, token) WHERE c.key = v.key AND c.lease_token = v.token"
)

LeaseState = Literal["held", "busy", "missing"]


class ContactBusy(Exception):
    """Another worker kept the contact's lease longer than we could wait."""


async def try_acquire(conn: AsyncConnection, key: str, token: str, ttl_s: float) -> LeaseState:
    """Take the lease in the caller's transaction: "held", "busy" (someone else has it) or "missing"."""
    now = utcnow()
    taken = (
        await conn.execute(
            update(CONTACTS)
            .where(
                CONTACTS.c.key == key,
                or_(CONTACTS.c.lease_token.is_(None), CONTACTS.c.lease_token == token, CONTACTS.c.lease_until < now),
            )
            .values(lease_token=token, lease_until=now + timedelta(seconds=ttl_s))
            .returning(CONTACTS.c.id)
        )
    ).first()
    if taken is not None:
        return "held"
    return await exists_state(conn, key)


async def exists_state(conn: AsyncConnection, key: str) -> LeaseState:
    """After a failed take: "busy" when the contact exists, else "missing"."""
    found = (await conn.execute(select(CONTACTS.c.id).where(CONTACTS.c.key == key))).first()
    return "busy" if found is not None else "missing"


class Backoff:
    """Waits between tries for a busy lease: 5 ms doubling to 100 ms, up to `wait_s` in all."""

    def __init__(self, wait_s: float) -> None:
        self.deadline = time.monotonic() + wait_s
        self.delay_s = 0.005

    async def wait(self) -> bool:
        """Sleep before the next try; False when the time is up."""
        if time.monotonic() >= self.deadline:
            return False
        await asyncio.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * 2, 0.1)
        return True


async def acquire(services: Services, key: str, token: str, ttl_s: float, wait_s: float) -> bool:
    """Take the lease, waiting up to `wait_s` for its holder; False when there is no such contact."""
    backoff = Backoff(wait_s)
    while True:
        async with services.db.engine.begin() as conn:
            state = await try_acquire(conn, key, token, ttl_s)
        if state != "busy":
            return state == "held"
        if not await backoff.wait():
            raise ContactBusy(key)


async def release(services: Services, key: str, token: str) -> None:
    """Give the lease back (a no-op when it expired and someone else took it)."""
    if not services.db.is_sqlite:
        await batching.shared(services.extras, "lease_releaser", partial(_releaser, services.db.raw_pool()))(
            (key, token))
        return
    async with services.db.engine.begin() as conn:
        await conn.execute(
            update(CONTACTS)
            .where(CONTACTS.c.key == key, CONTACTS.c.lease_token == token)
            .values(lease_token=None, lease_until=None)
        )


def _releaser(pool: StatementPool) -> Batcher[tuple[str, str], None]:
    async def run(items: list[tuple[str, str]]) -> list[None]:
        await pool.execute(RELEASE_SQL, [key for key, _ in items], [token for _, token in items])
        return [None] * len(items)

    return Batcher(run)


@asynccontextmanager
async def hold(services: Services, key: str, ttl_s: float = 30.0, wait_s: float = 30.0) -> AsyncIterator[bool]:
    """Hold the contact's lease for the block; yields False (holding nothing) when there is no such contact."""
    token = uuid.uuid4().hex
    held = await acquire(services, key, token, ttl_s, wait_s)
    try:
        yield held
    finally:
        if held:
            await release(services, key, token)
