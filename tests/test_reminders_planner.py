"""Reminder planning and dispatch against PostgreSQL (and once on SQLite): state left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from bot.reminders.dispatch import dispatch_due_reminders
from bot.reminders.planner import plan_reminders, reminder_key
from bot.reminders.quiet import quiet_end, shift_out_of_quiet
from bot.runtime.services import Services
from bot.storage.models import Contact, Outbox, Reminder

# 10:00 UTC on a Wednesday; Kabul is UTC+4:30, Berlin UTC+1 in winter
NOW = datetime(2026, 1, 14, 10, 0, tzinfo=UTC)


class Feed:
    """A platform double: `all_deadlines(from_, to)` like integrations.platform.PlatformClient."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.windows: list[tuple[datetime, datetime]] = []

    async def all_deadlines(self, from_: datetime | None = None, to: datetime | None = None) -> Any:
        assert from_ is not None and to is not None
        self.windows.append((from_, to))
        for item in self.items:
            if from_ <= item["due_at"] <= to:
                yield item


def deadline(learner: str, did: str, due_at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "learner_id": learner, "id": did, "course_id": "c1", "course_title": "Data Science 101",
        "title": "Essay 2", "kind": "assignment", "due_at": due_at, "submitted_at": None, **extra,
    }


async def add_contact(services: Services, n: int, learner: str | None, **fields: Any) -> int:
    async with services.db.session() as session:
        contact = Contact(
            key=f"telegram:{n}", channel="telegram", address=str(n), learner_id=learner,
            language=fields.pop("language", "en"), timezone=fields.pop("timezone", "UTC"), **fields,
        )
        session.add(contact)
        await session.flush()
        return contact.id


async def reminders(services: Services) -> dict[str, Reminder]:
    async with services.db.session() as session:
        rows = (await session.execute(select(Reminder))).scalars().all()
        return {r.idempotency_key: r for r in rows}


async def test_plans_each_offset_once_for_linked_opted_in_contacts(services: Services) -> None:
    await add_contact(services, 1, "L1")
    await add_contact(services, 2, "L2", reminders_opt_out=True)
    await add_contact(services, 3, "L3", stopped=True)
    await add_contact(services, 4, None)
    due = NOW + timedelta(days=7, hours=2)  # 12:00 UTC, inside the 8-day window
    feed = Feed([deadline(learner, "d1", due) for learner in ("L1", "L2", "L3", "L4")])

    first = await plan_reminders(services, feed, NOW)
    second = await plan_reminders(services, feed, NOW + timedelta(minutes=15))

    rows = await reminders(services)
    assert set(rows) == {reminder_key("L1", "d1", 168), reminder_key("L1", "d1", 24)}
    assert rows[reminder_key("L1", "d1", 168)].send_at.astimezone(UTC) == due - timedelta(hours=168)
    assert rows[reminder_key("L1", "d1", 24)].send_at.astimezone(UTC) == due - timedelta(hours=24)
    assert all(r.status == "planned" for r in rows.values())
    assert first.upserted == 2 and second.upserted == 2
    # the window reaches past the farthest offset
    assert feed.windows[0][1] - feed.windows[0][0] >= timedelta(hours=168)


async def test_moved_deadline_moves_unsent_reminders_and_submitted_one_cancels(services: Services) -> None:
    await add_contact(services, 1, "L1")
    due = NOW + timedelta(days=7, hours=2)
    await plan_reminders(services, Feed([deadline("L1", "d1", due), deadline("L1", "d2", due)]), NOW)

    moved = due - timedelta(days=2)  # earlier: its 168 h reminder is now in the past
    await plan_reminders(
        services,
        Feed([deadline("L1", "d1", moved), deadline("L1", "d2", due, submitted_at=NOW)]),
        NOW + timedelta(hours=1),
    )
    rows = await reminders(services)
    assert rows[reminder_key("L1", "d1", 24)].due_at.astimezone(UTC) == moved
    assert rows[reminder_key("L1", "d1", 24)].send_at.astimezone(UTC) == moved - timedelta(hours=24)
    assert rows[reminder_key("L1", "d1", 24)].status == "planned"
    assert rows[reminder_key("L1", "d1", 168)].status == "cancelled"
    assert rows[reminder_key("L1", "d2", 24)].status == "cancelled"
    assert rows[reminder_key("L1", "d2", 168)].status == "cancelled"

    # the deadline disappears from the feed: its reminders are cancelled
    await plan_reminders(services, Feed([]), NOW + timedelta(hours=2))
    rows = await reminders(services)
    assert {r.status for r in rows.values()} == {"cancelled"}


async def test_quiet_hours_move_a_night_reminder_to_the_morning(services: Services) -> None:
    await add_contact(services, 1, "L1", timezone="Asia/Kabul")
    # due 18:30 UTC = 23:00 Kabul; the 24 h reminder would be at 23:00 Kabul -> 08:00 Kabul next day
    due = datetime(2026, 1, 20, 18, 30, tzinfo=UTC)
    await plan_reminders(services, Feed([deadline("L1", "d1", due)]), NOW)
    rows = await reminders(services)
    assert rows[reminder_key("L1", "d1", 24)].send_at.astimezone(UTC) == datetime(2026, 1, 20, 3, 30, tzinfo=UTC)


def test_quiet_hour_arithmetic() -> None:
    berlin_night = datetime(2026, 1, 14, 22, 30, tzinfo=UTC)  # 23:30 Berlin
    assert quiet_end(berlin_night, "Europe/Berlin", 21, 8) == datetime(2026, 1, 15, 7, 0, tzinfo=UTC)
    assert quiet_end(datetime(2026, 1, 14, 12, 0, tzinfo=UTC), "Europe/Berlin", 21, 8) is None
    early = datetime(2026, 1, 15, 5, 0, tzinfo=UTC)  # 06:00 Berlin, same morning
    assert quiet_end(early, "Europe/Berlin", 21, 8) == datetime(2026, 1, 15, 7, 0, tzinfo=UTC)
    # an unknown zone falls back to UTC rather than failing
    assert quiet_end(datetime(2026, 1, 14, 23, 0, tzinfo=UTC), "Mars/Olympus", 21, 8) == datetime(
        2026, 1, 15, 8, 0, tzinfo=UTC
    )
    # the end of quiet hours is after the deadline itself: go out just before they began instead
    due = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)
    shifted = shift_out_of_quiet(due - timedelta(hours=1), due, "UTC", 21, 8)
    assert shifted == datetime(2026, 1, 14, 20, 59, tzinfo=UTC)


async def test_dispatch_renders_in_language_and_zone_once_within_grace(services: Services) -> None:
    contact_id = await add_contact(services, 1, "L1", language="ar", timezone="Asia/Damascus")
    await add_contact(services, 2, "L2", language="de", timezone="Europe/Berlin")
    due = datetime(2026, 1, 15, 14, 0, tzinfo=UTC)  # 17:00 Damascus, tomorrow
    due2 = datetime(2026, 1, 22, 14, 0, tzinfo=UTC)
    feed = Feed([deadline("L1", "d1", due), deadline("L2", "d9", due2, kind="exam", title="Final")])
    plan_at = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)
    await plan_reminders(services, feed, plan_at)

    # the 24 h reminder was due at 14:00 yesterday... no: due - 24 h = 14 Jan 14:00 UTC; dispatch at 15:00
    at = datetime(2026, 1, 14, 15, 0, tzinfo=UTC)
    first = await dispatch_due_reminders(services, at)
    again = await dispatch_due_reminders(services, at + timedelta(minutes=1))
    assert first.queued == 1 and again.queued == 0

    async with services.db.session() as session:
        rows = (await session.execute(select(Outbox))).scalars().all()
        assert len(rows) == 1
        row = rows[0]
        assert row.contact_id == contact_id and row.origin == "reminder"
        assert row.idempotency_key == reminder_key("L1", "d1", 24)
        assert "Data Science 101" in (row.text or "") and "تذكير" in (row.text or "")
        assert "غدًا" in (row.text or "") or "غدا" in (row.text or "")  # "tomorrow" in Arabic
        assert "STOP" in (row.text or "")
        reminder = (
            await session.execute(select(Reminder).where(Reminder.idempotency_key == row.idempotency_key))
        ).scalar_one()
        assert reminder.status == "queued" and reminder.outbox_id == row.id


async def test_grace_period_sends_late_reminders_but_never_too_late(services: Services) -> None:
    await add_contact(services, 1, "L1")
    await add_contact(services, 2, "L2", timezone="Asia/Tokyo")  # 03:00 UTC is midday there
    plan_at = datetime(2026, 1, 8, 10, 0, tzinfo=UTC)
    # L1: 24 h reminder at 14 Jan 09:00 (worker finds it 1 h late); L2: at 14 Jan 03:00 (7 h late)
    feed = Feed([
        deadline("L1", "d1", datetime(2026, 1, 15, 9, 0, tzinfo=UTC)),
        deadline("L2", "d2", datetime(2026, 1, 15, 3, 0, tzinfo=UTC)),
    ])
    await plan_reminders(services, feed, plan_at)
    stats = await dispatch_due_reminders(services, NOW)
    rows = await reminders(services)
    assert rows[reminder_key("L1", "d1", 24)].status == "queued"
    assert rows[reminder_key("L2", "d2", 24)].status == "expired"
    assert stats.queued == 1 and stats.expired >= 1
    async with services.db.session() as session:
        assert (await session.execute(select(func.count()).select_from(Outbox))).scalar_one() == 1


async def test_reminder_found_at_night_waits_for_morning(services: Services) -> None:
    await add_contact(services, 1, "L1", timezone="UTC")
    due = datetime(2026, 1, 15, 20, 30, tzinfo=UTC)  # 24 h reminder at 14 Jan 20:30 (not quiet)
    await plan_reminders(services, Feed([deadline("L1", "d1", due)]), datetime(2026, 1, 8, tzinfo=UTC))
    late = datetime(2026, 1, 14, 23, 0, tzinfo=UTC)  # worker was down; now it is night
    # quiet hours end at 08:00, which is 11.5 h after the reminder's time: beyond the 6 h grace
    stats = await dispatch_due_reminders(services, late)
    assert stats.queued == 0
    rows = await reminders(services)
    assert rows[reminder_key("L1", "d1", 24)].status == "expired"


async def test_reminder_found_at_night_within_a_long_grace_goes_out_at_the_end_of_quiet_hours(
    services: Services,
) -> None:
    services.settings = services.settings.replace(reminder_grace_s=12 * 3600.0)
    await add_contact(services, 1, "L1", timezone="UTC")
    due = datetime(2026, 1, 15, 20, 30, tzinfo=UTC)
    await plan_reminders(services, Feed([deadline("L1", "d1", due)]), datetime(2026, 1, 8, tzinfo=UTC))
    stats = await dispatch_due_reminders(services, datetime(2026, 1, 14, 23, 0, tzinfo=UTC))
    assert stats.queued == 1 and stats.deferred_quiet == 1
    async with services.db.session() as session:
        row = (await session.execute(select(Outbox))).scalar_one()
    assert row.next_attempt_at.astimezone(UTC) == datetime(2026, 1, 15, 8, 0, tzinfo=UTC)


async def test_opted_out_after_planning_is_cancelled_at_dispatch(services: Services) -> None:
    contact_id = await add_contact(services, 1, "L1")
    due = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    await plan_reminders(services, Feed([deadline("L1", "d1", due)]), datetime(2026, 1, 8, tzinfo=UTC))
    async with services.db.session() as session:
        (await session.get(Contact, contact_id)).reminders_opt_out = True  # type: ignore[union-attr]
    await dispatch_due_reminders(services, NOW)
    rows = await reminders(services)
    assert rows[reminder_key("L1", "d1", 24)].status == "cancelled"


async def test_planning_on_sqlite(sqlite_services: Services) -> None:
    await add_contact(sqlite_services, 1, "L1", language="fr")
    due = NOW + timedelta(days=3)
    feed = Feed([deadline("L1", "d1", due)])
    await plan_reminders(sqlite_services, feed, NOW)
    await plan_reminders(sqlite_services, feed, NOW)
    rows = await reminders(sqlite_services)
    assert list(rows) == [reminder_key("L1", "d1", 24)]  # the 168 h one would be in the past
    stats = await dispatch_due_reminders(sqlite_services, due - timedelta(hours=23))
    assert stats.queued == 1
    async with sqlite_services.db.session() as session:
        text = (await session.execute(select(Outbox.text))).scalar_one()
    assert "Rappel" in (text or "")
