"""Issue 11, item 15 (and the broadcast inputs of item 12): broadcast texts are checked like inbound
text, times must stay on the calendar, and a broadcast that cannot expand is marked failed with its
reason (admin API, `sanad broadcast status`) while the others go out."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.reminders.broadcasts import expand_due_broadcasts, progress
from bot.reminders.cli import register_cli
from bot.runtime.services import Services
from bot.storage.models import Broadcast, Contact, Outbox
from tests.test_broadcast_admin import AUTH, api, seed  # noqa: F401  (fixture)


@pytest.mark.parametrize("body", [
    {"texts": {"en": "Exams start\u0000 on Monday"}},
    {"texts": {"en": "Hello", "ar": "مرحبا\u0000"}},
    {"texts": {"en": "Hello"}, "segment": {"country": "SY\u0000"}},
    {"texts": {"en": "Hello"}, "segment": {"course": ["c1", {"x": 1}]}},
    {"texts": {"en": "Hello"}, "created_by": "staff\u0000"},
    {"texts": {"en": "Hello"}, "send_at": "0001-01-01T00:00:00+01:00"},
    {"texts": {"en": "Hello"}, "send_at": "9999-12-31T23:59:59-01:00"},
    {"texts": {"en": "Hello"}, "send_at": "9999-12-31T23:59:59"},
    {"texts": {"en": "Hello"}, "send_at": "2026-02-30T09:00:00+00:00"},
    {"texts": {"en": "Hello"}, "send_at": 1767225600},
])
async def test_broadcast_input_that_can_never_be_sent_is_a_400(api: httpx.AsyncClient,  # noqa: F811
                                                              body: dict[str, object]) -> None:
    response = await api.post("/api/broadcasts", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


async def test_lone_surrogates_are_a_400_and_bidi_overrides_are_stripped(services: Services,
                                                                        api: httpx.AsyncClient) -> None:  # noqa: F811
    raw = b'{"texts": {"en": "Exams \\ud800 start"}}'
    assert (await api.post("/api/broadcasts", content=raw, headers=AUTH)).status_code == 400
    raw = b'{"texts": {"en": "Hi"}, "segment": {"language": "\\udfff"}}'
    assert (await api.post("/api/broadcasts", content=raw, headers=AUTH)).status_code == 400
    ok = await api.post("/api/broadcasts", json={"texts": {"en": "Exams \u202estart\u202c Monday"},
                                                  "send_at": "9999-12-31T22:00:00+00:00"}, headers=AUTH)
    assert ok.status_code == 201
    async with services.db.session() as s:
        row = await s.get(Broadcast, ok.json()["id"])
    assert row is not None and row.texts == {"en": "Exams start Monday"}


async def test_a_broadcast_that_cannot_expand_fails_with_its_reason_and_the_others_go_out(
    services: Services, api: httpx.AsyncClient  # noqa: F811
) -> None:
    await seed(services)
    async with services.db.session() as s:
        # as stored before texts were checked: PostgreSQL refuses the NUL when the outbox rows are written
        s.add(Broadcast(texts={"en": "Exams\u0000 start"}, segment={}, status="scheduled", recipients=0))
        # a catalogue key that no longer exists (the catalogue changed after the broadcast was made)
        s.add(Broadcast(catalogue_key="reminder_that_was_removed", segment={}, status="scheduled", recipients=0))
        s.add(Broadcast(texts={"en": "Exams start on Monday"}, segment={}, status="scheduled", recipients=0))
    assert await expand_due_broadcasts(services) == 1
    assert await expand_due_broadcasts(services) == 0  # the failed ones are not tried again every round
    async with services.db.session() as s:
        rows = {b.id: b for b in (await s.execute(select(Broadcast))).scalars()}
        sent = (await s.execute(select(func.count()).select_from(Outbox).where(Outbox.broadcast_id == 3))
                ).scalar_one()
    assert [rows[i].status for i in (1, 2, 3)] == ["failed", "failed", "sending"]
    assert sent == 4
    assert rows[1].failure_reason and "could not expand" in rows[1].failure_reason
    assert rows[2].failure_reason and "KeyError" in rows[2].failure_reason
    shown = await api.get("/api/broadcasts/1", headers=AUTH)
    assert shown.json()["status"] == "failed" and shown.json()["failure_reason"] == rows[1].failure_reason
    listed = (await api.get("/api/broadcasts", headers=AUTH)).json()["items"]
    assert {item["id"]: item["status"] for item in listed} == {1: "failed", 2: "failed", 3: "sending"}
    assert (await progress(services, 2) or {})["failure_reason"] == rows[2].failure_reason


async def test_sanad_broadcast_status_shows_why_it_failed(sqlite_services: Services, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    async with sqlite_services.db.session() as s:
        s.add(Contact(key="telegram:1", channel="telegram", address="1", learner_id="L1", language="en"))
        s.add(Broadcast(catalogue_key="reminder_that_was_removed", segment={}, status="scheduled", recipients=0))
    await expand_due_broadcasts(sqlite_services)
    monkeypatch.setenv("DATABASE_URL", sqlite_services.settings.database_url)
    monkeypatch.setenv("SANAD_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("SANAD_SECRET_KEY", "cli-secret")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser(prog="sanad")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["broadcast", "status", "1"])
    assert await asyncio.to_thread(args.func, args) == 0  # the command runs its own event loop
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "failed" and "KeyError" in shown["failure_reason"]
