"""Fair assignment, urgent escalation, promises from the facts and the transfer notice (PostgreSQL + Redis)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.mentoring import office_hours, sla
from bot.mentoring.assignment import move_stale_offers
from bot.mentoring.events import drain
from bot.mentoring.handoff import claim, transfer
from bot.mentoring.promise import follow_up_broken_promises
from bot.mentoring.urgent import escalate as escalate_urgent
from bot.mentoring.urgent import realert_urgent
from bot.runtime.services import Services
from bot.storage.db import utcnow
from bot.storage.models import Contact, Handoff, Mentor, Outbox
from tests.test_mentoring_handoff import escalate, handoffs, make_contact, make_mentor


async def set_mentor(services: Services, mentor_id: int, **fields: Any) -> None:
    async with services.db.session() as s:
        row = await s.get(Mentor, mentor_id)
        assert row is not None
        for name, value in fields.items():
            setattr(row, name, value)


async def outbox_texts(services: Services, contact_id: int) -> list[str]:
    async with services.db.session() as s:
        rows = (await s.execute(select(Outbox.text).where(Outbox.contact_id == contact_id).order_by(Outbox.id))).all()
    return [r[0] or "" for r in rows]


# --- fair assignment -------------------------------------------------------------------

async def test_thirty_handoffs_at_once_spread_evenly_over_three_mentors(services: Services) -> None:
    mentors = [await make_mentor(services, f"m{i}@example.org", "en") for i in range(3)]
    for m in mentors:
        await set_mentor(services, m.id, capacity=10)
    contacts = [await make_contact(services, f"telegram:{5000 + i}", "en") for i in range(30)]
    await asyncio.gather(*(escalate(services, cid) for cid in contacts))
    offered = Counter(h.offered_mentor_id for h in await handoffs(services))
    assert set(offered) == {m.id for m in mentors}
    assert max(offered.values()) - min(offered.values()) <= 1


async def test_capacity_caps_offers_and_the_rest_waits_for_room(services: Services) -> None:
    mentors = [await make_mentor(services, f"c{i}@example.org", "ar") for i in range(2)]  # capacity 5 each
    contacts = [await make_contact(services, f"telegram:{6000 + i}", "ar") for i in range(12)]
    for cid in contacts:
        await escalate(services, cid)
    rows = await handoffs(services)
    offered = Counter(h.offered_mentor_id for h in rows)
    assert offered[mentors[0].id] == 5 and offered[mentors[1].id] == 5 and offered[None] == 2
    # a mentor claims (and so holds) one offered to the other: still five open each, nothing new to offer
    async with services.db.session() as s:
        taken = next(h for h in rows if h.offered_mentor_id == mentors[1].id)
        assert await claim(services, s, taken.id, mentors[0]) is not None
    # one of the two that waited goes to mentor 1, who has room again; mentor 0 is over capacity now
    assert await move_stale_offers(services) == 1
    rows = await handoffs(services)
    waiting_unoffered = [h for h in rows if h.state == "waiting" and h.offered_mentor_id is None]
    # mentor 1 lost an offered conversation to mentor 0: room for one of the two that waited
    assert len(waiting_unoffered) == 1
    assert Counter(h.offered_mentor_id for h in rows if h.state == "waiting")[mentors[1].id] == 5


async def test_round_robin_on_ties_and_only_on_duty_mentors_of_the_language(services: Services) -> None:
    a = await make_mentor(services, "a@example.org", "fr")
    b = await make_mentor(services, "b@example.org", "fr,de")
    off = await make_mentor(services, "off@example.org", "fr")
    await make_mentor(services, "de@example.org", "de")
    await set_mentor(services, off.id, on_duty=False)
    order = []
    for i in range(4):
        cid = await make_contact(services, f"telegram:{7000 + i}", "fr")
        await escalate(services, cid)
        order.append((await handoffs(services))[-1].offered_mentor_id)
        # each one claimed at once: loads stay equal, so the tie-break decides
        async with services.db.session() as s:
            mentor = await s.get(Mentor, order[-1])
            assert mentor is not None
            await claim(services, s, (await handoffs(services))[-1].id, mentor)
    assert order == [a.id, b.id, a.id, b.id]


async def test_an_offer_moves_on_after_the_timeout_and_manual_claim_still_works(services: Services) -> None:
    services.settings = services.settings.replace(handoff_offer_timeout_s=60.0)
    a = await make_mentor(services, "a@example.org", "en")
    b = await make_mentor(services, "b@example.org", "en")
    cid = await make_contact(services, "telegram:8001", "en")
    await escalate(services, cid)
    (h,) = await handoffs(services)
    assert h.offered_mentor_id == a.id
    assert await move_stale_offers(services) == 0  # not yet
    async with services.db.session() as s:
        row = await s.get(Handoff, h.id)
        assert row is not None
        row.offered_at = utcnow() - timedelta(minutes=2)
    async with services.coord.subscribe("console") as queue:
        assert await move_stale_offers(services) == 1
        await drain()
        event = await asyncio.wait_for(queue.get(), 5)
    (h,) = await handoffs(services)
    assert h.offered_mentor_id == b.id and h.offered_ids == [a.id, b.id]
    assert event["type"] == "offer" and event["offered_to"] == b.id
    # a wants it after all: claiming from the queue works whatever the offer says
    async with services.db.session() as s:
        assert await claim(services, s, h.id, a) is not None
    (h,) = await handoffs(services)
    assert h.state == "with_mentor" and h.mentor_id == a.id and h.offered_mentor_id is None


# --- urgent ----------------------------------------------------------------------------

async def test_escalate_makes_the_open_handoff_urgent_once_and_alerts_everyone(services: Services) -> None:
    mentor = await make_mentor(services, "fa@example.org", "fa")
    lead = await make_mentor(services, "lead@example.org", "en", "lead")
    cid = await make_contact(services, "telegram:9001", "fa")
    await escalate(services, cid)  # an ordinary request first: offered to the mentor
    (h,) = await handoffs(services)
    assert h.offered_mentor_id == mentor.id and not h.urgent
    async with services.coord.subscribe("console") as queue:
        async with services.db.session() as s:
            contact = await s.get(Contact, cid)
            assert contact is not None
            first = await escalate_urgent(services, s, contact, reason="distress", source="gateway")
        async with services.db.session() as s:
            contact = await s.get(Contact, cid)
            assert contact is not None
            second = await escalate_urgent(services, s, contact, reason="distress", source="gateway")
        await drain()
        events = []
        while not queue.empty():
            events.append(queue.get_nowait())
    assert first.newly_urgent and not second.newly_urgent
    assert first.handoff.id == second.handoff.id == h.id
    (h,) = await handoffs(services)
    assert h.urgent and h.reason == "distress" and h.offered_mentor_id is None  # urgent: everyone, not one
    urgent_events = [e for e in events if e["type"] == "handoff_urgent"]
    assert len(urgent_events) == 1 and urgent_events[0]["everyone"] is True
    assert lead.role == "lead"


async def test_urgent_unclaimed_is_never_closed_and_keeps_escalating(services: Services) -> None:
    services.settings = services.settings.replace(handoff_idle_timeout_s=60.0, handoff_offer_timeout_s=60.0)
    calm = await make_contact(services, "telegram:9101", "en")
    urgent = await make_contact(services, "telegram:9102", "en")
    await escalate(services, calm)
    await escalate(services, urgent, "distress", urgent=True)
    async with services.db.session() as s:
        for h in (await s.execute(select(Handoff))).scalars():
            h.created_at = h.last_activity_at = utcnow() - timedelta(hours=2)
    assert await sla.close_idle(services) == 1
    rows = {h.contact_id: h for h in await handoffs(services)}
    assert rows[calm].state == "resolved" and rows[urgent].state == "waiting"
    assert "quiet" not in " ".join(await outbox_texts(services, urgent))
    # re-alerted every period until claimed; the leads hear of it the first time
    assert await realert_urgent(services) == 1
    async with services.db.session() as s:
        row = await s.get(Handoff, rows[urgent].id)
        assert row is not None and row.escalated_at is not None and row.alert_count == 1
        row.last_alert_at = utcnow() - timedelta(minutes=5)
    assert await realert_urgent(services) == 1
    assert (await handoffs(services))[1].alert_count == 2
    assert await sla.close_idle(services) == 0


# --- promises ------------------------------------------------------------------------------

def test_office_hours_are_read_and_answered() -> None:
    spec = "sun-thu 09:00-17:00 Asia/Amman; fri 10:00-12:00 Asia/Amman"
    amman = office_hours.parse(spec)
    assert len(amman) == 2 and amman[0].days == frozenset({6, 0, 1, 2, 3})
    monday_noon_amman = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # 13:00 in Amman
    assert office_hours.is_open(spec, monday_noon_amman)
    saturday = datetime(2026, 12, 12, 10, 0, tzinfo=UTC)
    assert not office_hours.is_open(spec, saturday)
    back = office_hours.next_opening(spec, saturday)
    assert back is not None and back.astimezone(UTC) == datetime(2026, 12, 13, 6, 0, tzinfo=UTC)  # Sunday 09:00
    night = "22:00-06:00 Europe/Berlin"
    assert office_hours.is_open(night, datetime(2026, 12, 7, 23, 30, tzinfo=UTC))
    assert office_hours.is_open("", saturday) and office_hours.next_opening("", saturday) is None
    for bad in ("mon-fri", "someday 09:00-10:00", "09:00-09:00", "09:00-17:00 Mars/Base", "9-17"):
        with pytest.raises(office_hours.OfficeHoursError):
            office_hours.parse(bad)


async def test_out_of_office_hours_the_learner_hears_when_mentors_are_back(services: Services) -> None:
    now = utcnow()
    opening = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    closing = opening + timedelta(hours=2)
    spec = f"{opening:%H:%M}-{closing:%H:%M} UTC"
    services.settings = services.settings.replace(mentor_office_hours_by_language={"de": spec})
    await make_mentor(services, "de@example.org", "de")
    cid = await make_contact(services, "telegram:9201", "de", timezone="Europe/Berlin")
    replies = await escalate(services, cid)
    local = opening.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert f"{local:%H:%M}" in replies[0].text and "112" in replies[0].text  # when, in the learner's zone
    (h,) = await handoffs(services)
    assert h.promised_by is not None and h.promised_by >= opening


async def test_nobody_on_duty_promises_no_time_and_alerts_the_leads(services: Services) -> None:
    await make_mentor(services, "lead@example.org", "en", "lead")
    cid = await make_contact(services, "telegram:9301", "ar")
    async with services.coord.subscribe("console") as queue:
        replies = await escalate(services, cid)
        await drain()
        events = []
        while not queue.empty():
            events.append(queue.get_nowait())
    assert "لا يوجد مرشد مناوب" in replies[0].text and "دقائق" not in replies[0].text
    (h,) = await handoffs(services)
    assert h.promised_by is None
    assert any(e["type"] == "lead_alert" and e.get("why") == "nobody_on_duty" for e in events)


async def test_a_broken_promise_is_followed_up_once(services: Services) -> None:
    await make_mentor(services, "en@example.org", "en")
    cid = await make_contact(services, "telegram:9401", "en")
    first = await escalate(services, cid)
    assert "number 1 in the queue" in first[0].text
    promised = utcnow() - timedelta(seconds=1)
    async with services.db.session() as s:
        (h,) = (await s.execute(select(Handoff))).scalars().all()
        h.promised_by = promised
    async with services.coord.subscribe("console") as queue:
        assert await follow_up_broken_promises(services) == 1
        assert await follow_up_broken_promises(services) == 0
        await drain()
        events = []
        while not queue.empty():
            events.append(queue.get_nowait())
    texts = await outbox_texts(services, cid)
    assert sum("taking longer than I said" in t for t in texts) == 1
    assert any(e["type"] == "lead_alert" and e.get("why") == "promise_broken" for e in events)
    # asking again does not move the promise later than what was said, nor follow up twice
    await escalate(services, cid)
    (h,) = await handoffs(services)
    assert h.promised_by == promised and h.promise_followed_up_at is not None
    assert await follow_up_broken_promises(services) == 0


# --- transfer back to the queue ----------------------------------------------------------------

@pytest.mark.parametrize(("language", "words"), [
    ("en", "another mentor will take over"), ("ar", "مرشد آخر"), ("fa", "راهنمای دیگری"),
    ("fr", "un autre mentor"), ("de", "übernimmt hier jemand anderes"),
])
async def test_transfer_to_the_queue_tells_the_learner_and_offers_it_to_someone_else(
        services: Services, language: str, words: str) -> None:
    a = await make_mentor(services, "a@example.org", language)
    b = await make_mentor(services, "b@example.org", language)
    cid = await make_contact(services, "telegram:9501", language)
    await escalate(services, cid)
    (h,) = await handoffs(services)
    async with services.db.session() as s:
        await claim(services, s, h.id, a)
    async with services.db.session() as s:
        row = await s.get(Handoff, h.id)
        assert row is not None
        await transfer(services, s, row, a, None)
    assert words in (await outbox_texts(services, cid))[-1]
    (h,) = await handoffs(services)
    assert h.state == "waiting" and h.offered_mentor_id == b.id


def test_office_hours_settings_per_language_are_checked_at_start(tmp_path: Any) -> None:
    from pydantic import ValidationError

    from tests.conftest import make_settings

    settings = make_settings(tmp_path, MENTOR_OFFICE_HOURS="mon-fri 08:00-18:00 Europe/Berlin",
                             MENTOR_OFFICE_HOURS_AR="sun-thu 09:00-17:00 Asia/Amman")
    assert settings.office_hours_for("ar") == "sun-thu 09:00-17:00 Asia/Amman"
    assert settings.office_hours_for("fa") == "mon-fri 08:00-18:00 Europe/Berlin"
    with pytest.raises(ValidationError, match="not a time"):
        make_settings(tmp_path, MENTOR_OFFICE_HOURS_FA="sat 9-17")
    with pytest.raises(ValueError, match="not one of"):
        make_settings(tmp_path, MENTOR_OFFICE_HOURS_XX="09:00-17:00")


def test_sanad_mentor_add_with_telegram_account_and_capacity(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}", "SANAD_VAR_DIR": str(tmp_path)}
    env.pop("REDIS_URL", None)
    sanad = str(Path(sys.executable).with_name("sanad"))
    base = [sanad, "mentor", "add", "amal@example.org", "--languages", "ar,en", "--password", "correct horse battery"]
    done = subprocess.run([*base, "--telegram-user-id", "5550001", "--capacity", "7"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "capacity 7" in done.stdout and "telegram 5550001" in done.stdout
    bad = subprocess.run([*base, "--telegram-user-id", "-100123"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "positive number" in bad.stderr
