"""The contact lease: one worker per conversation across gateways, kept in the database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.conversation import lease as contact_lease
from bot.conversation import scheduler
from bot.privacy.erasure import erase_contact
from bot.storage.db import utcnow
from bot.storage.models import Contact, InboundMessage
from tests.conftest import Gateway
from tests.test_gateway_telegram import private_message


@pytest.fixture
def gateway(any_gateway: Gateway) -> Gateway:
    """Every test of this module runs on PostgreSQL + Redis and on SQLite without Redis."""
    return any_gateway

KEY = "telegram:555001"
OTHER_GATEWAY = "f" * 32


async def lease_of(gw: Gateway) -> tuple[str | None, object]:
    async with gw.services.db.session() as s:
        row = (await s.execute(select(Contact.lease_token, Contact.lease_until).where(Contact.key == KEY))).one()
    return row[0], row[1]


async def set_lease(gw: Gateway, token: str | None, seconds: float) -> None:
    async with gw.services.db.session() as s:
        await s.execute(
            update(Contact).where(Contact.key == KEY)
            .values(lease_token=token, lease_until=None if token is None else utcnow() + timedelta(seconds=seconds))
        )


@pytest.fixture
def gw(any_gateway: Gateway) -> Gateway:
    return any_gateway


async def statuses(gw: Gateway) -> list[str]:
    async with gw.services.db.session() as s:
        return list((await s.execute(select(InboundMessage.status).order_by(InboundMessage.id))).scalars())


async def test_the_lease_is_given_back_after_each_conversation_turn(gw: Gateway) -> None:
    await gw.telegram(private_message(100, text="hello"))
    await gw.settle()
    assert await statuses(gw) == ["done"]
    assert await lease_of(gw) == (None, None)


async def test_a_contact_another_gateway_holds_waits_then_is_answered(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    await gw.telegram(private_message(100, text="first"))
    await gw.settle()
    await set_lease(gw, OTHER_GATEWAY, 60)
    monkeypatch.setattr(scheduler, "BUSY_WAIT_S", 0.3)
    await gw.telegram(private_message(101, text="second"))
    await gw.settle()
    # the other gateway still works on the conversation: nothing overtakes it
    assert await statuses(gw) == ["done", "received"]
    assert [m["message"] for m in gw.rasa.messages] == ["first"]
    assert (await lease_of(gw))[0] == OTHER_GATEWAY

    await set_lease(gw, None, 0)
    await gw.services.conversations.redeliver(older_than_s=0)
    assert await statuses(gw) == ["done", "done"]
    assert [m["message"] for m in gw.rasa.messages] == ["first", "second"]
    assert await lease_of(gw) == (None, None)


async def test_a_lease_given_back_while_waiting_is_taken_at_once(gw: Gateway) -> None:
    await gw.telegram(private_message(100, text="first"))
    await gw.settle()
    await set_lease(gw, OTHER_GATEWAY, 60)
    await gw.telegram(private_message(101, text="second"))

    async def other_gateway_finishes() -> None:
        await asyncio.sleep(0.2)
        await set_lease(gw, None, 0)

    await asyncio.gather(other_gateway_finishes(), gw.settle())
    assert await statuses(gw) == ["done", "done"]


async def test_the_lease_of_a_gateway_that_died_expires(gw: Gateway) -> None:
    await gw.telegram(private_message(100, text="first"))
    await gw.settle()
    await set_lease(gw, OTHER_GATEWAY, -1)  # its holder stopped renewing a second ago
    await gw.telegram(private_message(101, text="second"))
    await gw.settle()
    assert await statuses(gw) == ["done", "done"]
    assert await lease_of(gw) == (None, None)


async def test_erasure_waits_for_the_conversation_then_erases(gw: Gateway) -> None:
    await gw.telegram(private_message(100, text="hello"))
    await gw.settle()
    held = asyncio.Event()
    finish = asyncio.Event()

    async def worker() -> None:
        async with contact_lease.hold(gw.services, KEY) as found:
            assert found
            held.set()
            await finish.wait()

    task = asyncio.create_task(worker())
    await held.wait()
    erasure = asyncio.create_task(erase_contact(gw.services, KEY))
    await asyncio.sleep(0.3)
    assert not erasure.done()  # the conversation is mid-way: erasure waits for it
    finish.set()
    await task
    report = await asyncio.wait_for(erasure, 10)
    assert report.found and report.contacts == 1
    async with gw.services.db.session() as s:
        assert (await s.execute(select(Contact))).first() is None


async def test_waiting_too_long_for_a_lease_is_an_error_not_a_takeover(gw: Gateway) -> None:
    await gw.telegram(private_message(100, text="hello"))
    await gw.settle()
    await set_lease(gw, OTHER_GATEWAY, 60)
    with pytest.raises(contact_lease.ContactBusy):
        async with contact_lease.hold(gw.services, KEY, wait_s=0.2):
            pass
    assert (await lease_of(gw))[0] == OTHER_GATEWAY


async def test_holding_an_unknown_contact_holds_nothing(gw: Gateway) -> None:
    async with contact_lease.hold(gw.services, "telegram:404") as found:
        assert found is False


async def test_many_conversations_at_once_each_stay_in_order_and_give_their_lease_back(gw: Gateway) -> None:
    chats = [556000 + i for i in range(20)]
    updates = [private_message(1000 + 100 * n + i, chat_id=chat, text=f"c{chat} m{n}")
               for n in range(3) for i, chat in enumerate(chats)]
    results = await asyncio.gather(*(gw.telegram(u) for u in updates))
    assert all(r.status_code == 200 for r in results)
    await gw.settle()
    assert await statuses(gw) == ["done"] * 60
    async with gw.services.db.session() as s:
        stored = (await s.execute(
            select(Contact.key, InboundMessage.text).join(Contact, Contact.id == InboundMessage.contact_id)
            .order_by(InboundMessage.id)
        )).all()
    for chat in chats:
        # posted at once, they are stored in whatever order they arrive; each is handled in that order
        arrived = [text for key, text in stored if key == f"telegram:{chat}"]
        seen = [m["message"] for m in gw.rasa.messages if m["sender"] == f"telegram:{chat}"]
        assert sorted(arrived) == [f"c{chat} m{n}" for n in range(3)]
        assert seen == arrived
    async with gw.services.db.session() as s:
        assert (await s.execute(select(Contact).where(Contact.lease_token.is_not(None)))).first() is None
