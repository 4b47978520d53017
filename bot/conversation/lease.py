"""Who works on a contact's conversation now: a lease on the contact row.

A conversation is handled in order, by one worker at a time, across every gateway: the
conversation scheduler, the end of a hand-off and an erasure each hold the contact's lease
while they work. The lease is a token and an expiry on `contacts` (`lease_token`,
`lease_until`); taking it is one UPDATE that succeeds when the lease is free, expired or
already ours, and that UPDATE's row lock decides between two gateways that try at once.

The scheduler's token is its process's (`Services.instance_token`, derived from a stable
instance id), its leases short (`CONVERSATION_LEASE_TTL_S`) and renewed by a heartbeat: a
restarted process takes its own leases back at once, and the leases of a process that died
for good expire after one heartbeat timeout. Other holders take a random token each.

It lives in the database rather than in Redis: a conversation's order does not depend on
Redis being up. See docs/architecture.md ("Per-contact order"). The statements are built once,
with bound parameters (SQLAlchemy caches their compiled form; building one costs more than
running it).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, InboundMessage

if TYPE_CHECKING:
    from bot.runtime.services import Services

CONTACTS = cast(Table, Contact.__table__)
MESSAGES = cast(Table, InboundMessage.__table__)

LeaseState = Literal["held", "busy", "missing"]
# the contact, its oldest waiting message, and whether that message was taken before (a crash, Rasa)
Taken = tuple[Contact, InboundMessage, bool]

# take the lease (:key, :token, :until) when it is free, expired (before :now) or already ours
TAKE_LEASE = (
    update(CONTACTS)
    .where(
        CONTACTS.c.key == bindparam("b_key"),
        or_(CONTACTS.c.lease_token.is_(None), CONTACTS.c.lease_token == bindparam("token"),
            CONTACTS.c.lease_until < bindparam("now")),
    )
    .values(lease_token=bindparam("token"), lease_until=bindparam("until"))
)
TAKE_LEASE_AND_CONTACT = TAKE_LEASE.returning(*CONTACTS.c)
# the contact's oldest waiting message: count the attempt; `taken_at` keeps the first take's time, so a
# value other than this take's :now means it was taken before
TAKE_MESSAGE = (
    update(MESSAGES)
    .where(MESSAGES.c.id == (
        select(MESSAGES.c.id)
        .where(MESSAGES.c.contact_id == bindparam("b_contact_id"), MESSAGES.c.status == "received")
        .order_by(MESSAGES.c.id)
        .limit(1)
        .scalar_subquery()
    ))
    .values(attempts=MESSAGES.c.attempts + 1, taken_at=func.coalesce(MESSAGES.c.taken_at, bindparam("now")))
    .returning(*MESSAGES.c)
)
RELEASE = (
    update(CONTACTS)
    .where(CONTACTS.c.key == bindparam("b_key"), CONTACTS.c.lease_token == bindparam("token"))
    .values(lease_token=None, lease_until=None)
)
CONTACT_EXISTS = select(CONTACTS.c.id).where(CONTACTS.c.key == bindparam("b_key"))


class ContactBusy(Exception):
    """Another worker kept the contact's lease longer than we could wait."""


def process_token(instance_id: str) -> str:
    """The lease token of a process: the same after a restart with the same instance id."""
    return hashlib.sha256(instance_id.encode()).hexdigest()[:32]


def _lease_params(key: str, token: str, ttl_s: float) -> dict[str, object]:
    now = utcnow()
    return {"b_key": key, "token": token, "now": now, "until": now + timedelta(seconds=ttl_s)}


async def try_acquire(conn: AsyncConnection, key: str, token: str, ttl_s: float) -> LeaseState:
    """Take the lease in the caller's transaction: "held", "busy" (someone else has it) or "missing"."""
    taken = (await conn.execute(TAKE_LEASE.returning(CONTACTS.c.id), _lease_params(key, token, ttl_s))).first()
    if taken is not None:
        return "held"
    return await exists_state(conn, key)


async def exists_state(conn: AsyncConnection, key: str) -> LeaseState:
    """After a failed take: "busy" when the contact exists, else "missing"."""
    found = (await conn.execute(CONTACT_EXISTS, {"b_key": key})).first()
    return "busy" if found is not None else "missing"


async def take_next(services: Services, key: str, token: str, ttl_s: float) -> Taken | LeaseState:
    """Take the contact's lease, then its oldest received message, counting the attempt; "held" when
    the lease is ours but no message waits, else "busy" or "missing".

    Two statements that commit one by one: the message is only touched while the lease is held, and
    a lease taken for nothing is given back by the caller (or expires)."""
    params = _lease_params(key, token, ttl_s)
    async with services.db.autocommit() as conn:
        crow = (await conn.execute(TAKE_LEASE_AND_CONTACT, params)).mappings().first()
        if crow is None:
            return await exists_state(conn, key)
        mrow = (await conn.execute(
            TAKE_MESSAGE, {"b_contact_id": crow["id"], "now": params["now"]}
        )).mappings().first()
    if mrow is None:
        return "held"
    # detached objects: areas read them, and write through their own sessions
    message = InboundMessage(**mrow)
    return Contact(**crow), message, as_utc(mrow["taken_at"]) != params["now"]


async def renew(services: Services, keys: list[str], token: str, ttl_s: float) -> None:
    """The heartbeat: extend the leases this token holds on these contacts."""
    if not keys:
        return
    async with services.db.autocommit() as conn:
        await conn.execute(
            update(CONTACTS)
            .where(CONTACTS.c.key.in_(keys), CONTACTS.c.lease_token == token)
            .values(lease_until=utcnow() + timedelta(seconds=ttl_s))
        )


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
        async with services.db.transaction() as conn:
            state = await try_acquire(conn, key, token, ttl_s)
        if state != "busy":
            return state == "held"
        if not await backoff.wait():
            raise ContactBusy(key)


async def release(services: Services, key: str, token: str) -> None:
    """Give the lease back (a no-op when it expired and someone else took it)."""
    async with services.db.autocommit() as conn:
        await conn.execute(RELEASE, {"b_key": key, "token": token})


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
