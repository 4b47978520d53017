"""The outbox sender against a local Bot API double (real TelegramChannel) and PostgreSQL/Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.channels.base import OutboundMessage, SendError, SendErrorKind, SendResult
from bot.i18n.catalogue import Rendered
from bot.outbox.queue import enqueue
from bot.outbox.rates import SendRates
from bot.outbox.sender import OutboxSender, record_delivery_status
from bot.runtime.services import Services
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, Outbox, Reminder
from tests.bot_api_double import BotApiDouble
from tests.conftest import make_settings, release


@pytest.fixture
def double() -> Iterator[BotApiDouble]:
    server = BotApiDouble().start()
    yield server
    server.stop()


@pytest.fixture(params=["postgres", "sqlite"])
async def tg(request: pytest.FixtureRequest, tmp_path: Path, double: BotApiDouble) -> AsyncIterator[Services]:
    """Services with a Telegram channel on the double: on PostgreSQL + Redis, then on SQLite without Redis."""
    env: dict[str, Any] = dict(
        TELEGRAM_BOT_TOKEN="123:test", TELEGRAM_API_BASE_URL=double.base_url,
        TELEGRAM_RATE_PER_S="1000", TELEGRAM_CHAT_RATE_PER_S="100",
        WHATSAPP_TEMPLATE_REMINDER_AR="HXreminderar|1=title,2=when",
        WHATSAPP_TEMPLATE_BROADCAST_EN="HXbroadcasten",
    )
    schema = request.getfixturevalue("pg_schema") if request.param == "postgres" else None
    if schema is None:
        env.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'sanad.db'}", REDIS_URL=None)
    svc = Services.build(make_settings(tmp_path, **env), schema=schema)
    if schema is None:
        await svc.db.create_all()
    try:
        yield svc
    finally:
        await release(svc, schema)


async def add_contact(services: Services, address: str, channel: str = "telegram", **fields: Any) -> Contact:
    async with services.db.session() as session:
        contact = Contact(key=f"{channel}:{address}", channel=channel, address=address, **fields)
        session.add(contact)
        await session.flush()
        return contact


async def queue(services: Services, contact: Contact, text: str, **kw: Any) -> int:
    async with services.db.session() as session:
        row = await enqueue(session, contact, Rendered(text), **kw)
        return row.id


async def outbox_rows(services: Services) -> dict[int, Outbox]:
    async with services.db.session() as session:
        return {r.id: r for r in (await session.execute(select(Outbox))).scalars().all()}


async def test_sends_through_the_bot_api_and_records_provider_ids(tg: Services, double: BotApiDouble) -> None:
    contacts = [await add_contact(tg, str(1000 + i)) for i in range(5)]
    ids = [await queue(tg, c, f"hello {i}") for i, c in enumerate(contacts)]
    sender = OutboxSender(tg)
    assert await sender.run_once(100) == 5
    assert await sender.run_once(100) == 0
    rows = await outbox_rows(tg)
    assert all(rows[i].status == "sent" and rows[i].provider_id and rows[i].sent_at for i in ids)
    assert all(rows[i].delivery_status == "sent" and rows[i].attempts == 1 for i in ids)
    assert sorted(double.accepted) == sorted(c.address for c in contacts)


async def test_send_ids_sends_only_those_rows_and_keeps_chat_order(tg: Services, double: BotApiDouble) -> None:
    contact = await add_contact(tg, "2001")
    other = await add_contact(tg, "2002")
    first = await queue(tg, contact, "one")
    second = await queue(tg, contact, "two")
    untouched = await queue(tg, other, "later")
    assert await OutboxSender(tg).send_ids([first, second]) == 2
    assert double.texts["2001"] == ["one", "two"]
    assert (await outbox_rows(tg))[untouched].status == "queued"


async def test_blocked_contact_is_stopped_never_retried_and_loses_its_proactive_messages(
    tg: Services, double: BotApiDouble
) -> None:
    contact = await add_contact(tg, "3001", learner_id="L1")
    double.errors["3001"] = [(403, "Forbidden: bot was blocked by the user")]
    reply = await queue(tg, contact, "reply")
    later = await queue(tg, contact, "broadcast", origin="broadcast", not_before=utcnow() + timedelta(hours=1))
    async with tg.db.session() as session:
        session.add(Reminder(
            idempotency_key="reminder:L1:d1:24", learner_id="L1", contact_id=contact.id, deadline_id="d1",
            offset_h=24, due_at=utcnow() + timedelta(days=1), send_at=utcnow() + timedelta(hours=2),
        ))
    await OutboxSender(tg).run_once(10)
    rows = await outbox_rows(tg)
    assert rows[reply].status == "failed" and rows[reply].last_error == "contact_stopped"
    assert rows[later].status == "cancelled" and rows[later].last_error == "contact_stopped"
    async with tg.db.session() as session:
        assert (await session.get(Contact, contact.id)).stopped is True  # type: ignore[union-attr]
        assert (await session.execute(select(Reminder.status))).scalar_one() == "cancelled"
    assert double.accepted == []


async def test_transient_errors_back_off_then_fail_at_the_limit(tg: Services, double: BotApiDouble) -> None:
    contact = await add_contact(tg, "4001")
    double.errors["4001"] = [(500, "Internal Server Error")] * 10
    row_id = await queue(tg, contact, "hi")
    sender = OutboxSender(tg)
    await sender.run_once(10)
    row = (await outbox_rows(tg))[row_id]
    assert row.status == "queued" and row.attempts == 1 and row.last_error == "transient"
    assert as_utc(row.next_attempt_at) > utcnow() + timedelta(seconds=2)
    for _ in range(tg.settings.send_max_attempts):
        async with tg.db.session() as session:
            (await session.get(Outbox, row_id)).next_attempt_at = utcnow()  # type: ignore[union-attr]
        await sender.run_once(10)
    row = (await outbox_rows(tg))[row_id]
    assert row.status == "failed" and row.attempts == tg.settings.send_max_attempts


async def test_throttled_pauses_the_channel(tg: Services, double: BotApiDouble) -> None:
    contact = await add_contact(tg, "5001")
    double.errors["5001"] = [(429, "Too Many Requests: retry after 1")]
    row_id = await queue(tg, contact, "hi")
    await OutboxSender(tg).run_once(10)
    row = (await outbox_rows(tg))[row_id]
    assert row.status == "queued" and row.last_error == "throttled" and row.attempts == 0
    assert await SendRates(tg.settings, tg.rate_limits).paused_for("telegram") > 0


async def test_stale_claim_returns_to_the_queue(tg: Services, double: BotApiDouble) -> None:
    contact = await add_contact(tg, "6001")
    row_id = await queue(tg, contact, "hi")
    async with tg.db.session() as session:
        row = await session.get(Outbox, row_id)
        assert row is not None
        row.status = "sending"
        row.claimed_at = utcnow() - timedelta(seconds=tg.settings.outbox_claim_timeout_s + 5)
    fresh = await queue(tg, await add_contact(tg, "6002"), "fresh")
    async with tg.db.session() as session:
        row = await session.get(Outbox, fresh)
        assert row is not None
        row.status, row.claimed_at = "sending", utcnow()
    await OutboxSender(tg).run_once(10)
    rows = await outbox_rows(tg)
    assert rows[row_id].status == "sent"
    assert rows[fresh].status == "sending"  # a live worker's claim is left alone
    assert double.accepted == ["6001"]


async def test_two_senders_never_send_a_row_twice(tg: Services, double: BotApiDouble) -> None:
    contacts = [await add_contact(tg, str(7000 + i)) for i in range(60)]
    for c in contacts:
        await queue(tg, c, "once")
    a, b = OutboxSender(tg, batch_size=7), OutboxSender(tg, batch_size=5)
    counts = await asyncio.gather(a.run_once(1000), b.run_once(1000))
    assert sum(counts) == 60
    assert sorted(double.counts().values()) == [1] * 60


class FakeWhatsApp:
    """A WhatsApp channel object: free text outside the window fails with OUTSIDE_WINDOW like Twilio 63016."""

    name = "whatsapp"
    max_text_len = 1600
    numbered_buttons = True

    def __init__(self, window_open: set[str]) -> None:
        self.window_open = window_open
        self.sent: list[tuple[str, OutboundMessage]] = []

    async def send(self, address: str, message: OutboundMessage) -> SendResult:
        if message.template is None and address not in self.window_open:
            raise SendError(SendErrorKind.OUTSIDE_WINDOW, "63016")
        self.sent.append((address, message))
        return SendResult((f"SM{len(self.sent):04d}",))

    async def close(self) -> None:
        return None


async def test_whatsapp_outside_the_window_goes_out_as_the_template(tg: Services) -> None:
    wa = FakeWhatsApp(window_open={"+491"})
    tg.channels["whatsapp"] = wa  # type: ignore[assignment]
    old = utcnow() - timedelta(days=3)
    recent = await add_contact(tg, "+491", "whatsapp", language="ar", last_inbound_at=utcnow())
    silent = await add_contact(tg, "+492", "whatsapp", language="ar", last_inbound_at=old)
    mentor_side = await add_contact(tg, "+493", "whatsapp", language="en", last_inbound_at=old)
    params = {"template_params": {"title": "Essay", "when": "غدًا", "text": "x"}}
    in_window = await queue(tg, recent, "تذكير", origin="reminder", extra_payload=params)
    proactive = await queue(tg, silent, "تذكير", origin="reminder", extra_payload=params)
    reply = await queue(tg, mentor_side, "a broadcast", origin="broadcast")
    await OutboxSender(tg).run_once(10)
    by_address = {address: message for address, message in wa.sent}
    assert by_address["+491"].template is None and by_address["+491"].text == "تذكير"
    assert by_address["+492"].template is not None
    assert by_address["+492"].template.sid == "HXreminderar"
    assert by_address["+492"].template.variables == {"1": "Essay", "2": "غدًا"}
    assert by_address["+493"].template is not None and by_address["+493"].template.variables == {"1": "a broadcast"}
    rows = await outbox_rows(tg)
    assert {rows[i].status for i in (in_window, proactive, reply)} == {"sent"}


async def test_delivery_status_never_moves_backwards(tg: Services) -> None:
    wa = FakeWhatsApp(window_open={"+491"})
    tg.channels["whatsapp"] = wa  # type: ignore[assignment]
    contact = await add_contact(tg, "+491", "whatsapp", last_inbound_at=utcnow())
    row_id = await queue(tg, contact, "hello")
    await OutboxSender(tg).run_once(10)
    sid = (await outbox_rows(tg))[row_id].provider_id
    assert sid
    assert await record_delivery_status(tg, "whatsapp", sid, "delivered", None)
    assert await record_delivery_status(tg, "whatsapp", sid, "read", None)
    assert await record_delivery_status(tg, "whatsapp", sid, "delivered", None)
    assert await record_delivery_status(tg, "whatsapp", sid, "sent", None)
    assert (await outbox_rows(tg))[row_id].delivery_status == "read"
    assert await record_delivery_status(tg, "whatsapp", sid, "failed", "30008")
    assert (await outbox_rows(tg))[row_id].delivery_status == "read"
    assert not await record_delivery_status(tg, "whatsapp", "SMunknown", "delivered", None)


async def test_failed_delivery_callbacks(tg: Services) -> None:
    wa = FakeWhatsApp(window_open={"+491", "+492", "+493"})
    tg.channels["whatsapp"] = wa  # type: ignore[assignment]
    a = await add_contact(tg, "+491", "whatsapp", last_inbound_at=utcnow())
    b = await add_contact(tg, "+492", "whatsapp", language="en", last_inbound_at=utcnow())
    c = await add_contact(tg, "+493", "whatsapp", last_inbound_at=utcnow())
    undelivered = await queue(tg, a, "one")
    window = await queue(tg, b, "two", origin="broadcast")
    unsubscribed = await queue(tg, c, "three")
    await OutboxSender(tg).run_once(10)
    rows = await outbox_rows(tg)
    await record_delivery_status(tg, "whatsapp", rows[undelivered].provider_id or "", "undelivered", "30003")
    await record_delivery_status(tg, "whatsapp", rows[window].provider_id or "", "failed", "63016")
    await record_delivery_status(tg, "whatsapp", rows[unsubscribed].provider_id or "", "failed", "21610")
    rows = await outbox_rows(tg)
    assert rows[undelivered].delivery_status == "undelivered"
    # outside the window after all: queued again, to go out as the approved template
    assert rows[window].status == "queued" and (rows[window].payload or {}).get("force_template") is True
    assert rows[unsubscribed].last_error == "contact_stopped"
    async with tg.db.session() as session:
        assert (await session.get(Contact, c.id)).stopped is True  # type: ignore[union-attr]
    await OutboxSender(tg).run_once(10)
    assert wa.sent[-1][0] == "+492" and wa.sent[-1][1].template is not None
    assert wa.sent[-1][1].template.sid == "HXbroadcasten"


async def test_outcomes_of_sends_finishing_together_are_all_recorded(
    tg: Services, double: BotApiDouble
) -> None:
    contacts = [await add_contact(tg, str(3000 + i)) for i in range(12)]
    ids = [await queue(tg, c, f"hi {i}", origin="reminder" if i % 3 == 0 else "reply") for i, c in enumerate(contacts)]
    long_id = await queue(tg, contacts[1], "x. " * 2000)  # two Telegram messages: both ids are kept
    now = utcnow()
    async with tg.db.session() as session:
        for i, row_id in enumerate(ids):
            if i % 3 == 0:
                session.add(Reminder(idempotency_key=f"reminder:l{i}:d:24", learner_id=f"l{i}",
                                     contact_id=contacts[i].id, deadline_id="d", offset_h=24, due_at=now,
                                     send_at=now, status="queued", outbox_id=row_id))
    sender = OutboxSender(tg, concurrency=12)
    assert await sender.run_once(100) == 13
    rows = await outbox_rows(tg)
    assert all(rows[i].status == "sent" and rows[i].provider_id and rows[i].attempts == 1 for i in [*ids, long_id])
    assert len(rows[long_id].payload["provider_ids"]) == 2
    assert rows[ids[1]].payload is None  # nothing to add to a one-part reply
    async with tg.db.session() as session:
        reminders = (await session.execute(select(Reminder))).scalars().all()
    assert len(reminders) == 4 and all(r.status == "sent" for r in reminders)
