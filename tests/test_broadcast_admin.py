"""Broadcasts: admin API, preview, idempotent expansion, progress, cancel, CLI."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette

from bot.outbox.sender import OutboxSender, record_delivery_status
from bot.reminders import admin
from bot.reminders.broadcasts import (
    BroadcastError,
    expand_broadcast,
    expand_due_broadcasts,
    finish_broadcasts,
    parse_segment,
)
from bot.reminders.cli import register_cli
from bot.runtime.services import Services
from bot.storage.models import Broadcast, Contact, Outbox

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def api(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    services.settings = services.settings.replace(admin_api_token=TOKEN)
    app = Starlette(routes=admin.routes())
    app.state.services = services
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def seed(services: Services) -> None:
    async with services.db.session() as session:
        rows = [
            ("telegram", "1", "ar", "SY", "L1", False, False),
            ("telegram", "2", "en", "DE", "L2", False, False),
            ("web", "aaaaaaaaaaaaaaaa", "ar", "SY", "L3", False, False),
            ("telegram", "4", "ar", "SY", "L4", True, False),  # opted out
            ("telegram", "5", "ar", "SY", "L5", False, True),  # blocked us
            ("telegram", "6", "ar", "SY", None, False, False),  # not linked
            ("telegram", "7", None, "JO", "L7", False, False),  # language unknown: English
        ]
        for channel, address, lang, country, learner, opted_out, stopped in rows:
            session.add(Contact(key=f"{channel}:{address}", channel=channel, address=address, language=lang,
                                country=country, learner_id=learner, reminders_opt_out=opted_out, stopped=stopped))


async def test_admin_api_is_off_without_token_and_needs_the_bearer(services: Services) -> None:
    app = Starlette(routes=admin.routes())
    app.state.services = services
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.post("/api/broadcasts", json={})).status_code == 404
    services.settings = services.settings.replace(admin_api_token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.post("/api/broadcasts", json={})).status_code == 401
        wrong = await client.get("/api/broadcasts/1", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


async def test_preview_counts_the_segment(services: Services, api: httpx.AsyncClient) -> None:
    await seed(services)
    everyone = (await api.post("/api/broadcasts/preview", json={}, headers=AUTH)).json()
    assert everyone["recipients"] == 4
    assert everyone["by_language"] == {"ar": 2, "en": 2}
    arabic_tg = await api.post(
        "/api/broadcasts/preview", json={"segment": {"language": "ar", "channel": "telegram"}}, headers=AUTH
    )
    assert arabic_tg.json()["recipients"] == 1
    anyone = await api.post("/api/broadcasts/preview", json={"segment": "linked=any,country=sy"}, headers=AUTH)
    assert anyone.json()["recipients"] == 3
    bad = await api.post("/api/broadcasts/preview", json={"segment": {"planet": "mars"}}, headers=AUTH)
    assert bad.status_code == 400 and "planet" in bad.json()["error"]


async def test_create_expand_send_and_report_progress(services: Services, api: httpx.AsyncClient) -> None:
    await seed(services)
    created = await api.post(
        "/api/broadcasts",
        json={"texts": {"en": "Exams open Monday", "ar": "تبدأ الامتحانات يوم الاثنين"},
              "segment": {"channel": ["telegram", "web"]}},
        headers=AUTH,
    )
    assert created.status_code == 201, created.text
    broadcast_id = created.json()["id"]
    assert await expand_due_broadcasts(services) == 1
    # expansion after a crash (status back to scheduled) writes no second row
    async with services.db.session() as session:
        (await session.get(Broadcast, broadcast_id)).status = "scheduled"  # type: ignore[union-attr]
    assert await expand_broadcast(services, broadcast_id) == 4
    async with services.db.session() as session:
        rows = (await session.execute(select(Outbox).where(Outbox.broadcast_id == broadcast_id))).scalars().all()
        texts = {r.contact_id: r.text for r in rows}
        arabic = (await session.execute(select(Contact.id).where(Contact.address == "1"))).scalar_one()
    assert len(rows) == 4 and texts[arabic] == "تبدأ الامتحانات يوم الاثنين"
    assert sorted(set(texts.values())) == ["Exams open Monday", "تبدأ الامتحانات يوم الاثنين"]

    progress = (await api.get(f"/api/broadcasts/{broadcast_id}", headers=AUTH)).json()
    assert progress["queued"] == 4 and progress["sent"] == 0

    class Recorder:
        name = "telegram"

        def __init__(self) -> None:
            self.n = 0

        async def send(self, address: str, message: Any) -> Any:
            from bot.channels.base import SendError, SendErrorKind, SendResult

            if address == "2":
                raise SendError(SendErrorKind.CONTACT_STOPPED, "403")
            self.n += 1
            return SendResult((f"tg{self.n}",))

        async def close(self) -> None:
            return None

    services.channels["telegram"] = Recorder()  # type: ignore[assignment]
    await OutboxSender(services).run_once(100)
    await record_delivery_status(services, "telegram", "tg1", "read", None)
    assert await finish_broadcasts(services) == 1
    progress = (await api.get(f"/api/broadcasts/{broadcast_id}", headers=AUTH)).json()
    assert progress["status"] == "done"
    assert (progress["queued"], progress["sent"], progress["read"], progress["stopped"]) == (0, 3, 1, 1)
    listed = (await api.get("/api/broadcasts", headers=AUTH)).json()["items"]
    assert [b["id"] for b in listed] == [broadcast_id]


async def test_scheduled_broadcast_waits_and_cancel_stops_it(services: Services, api: httpx.AsyncClient) -> None:
    await seed(services)
    future = await api.post(
        "/api/broadcasts",
        json={"texts": {"en": "Later"}, "send_at": "2099-01-01T09:00:00+00:00"}, headers=AUTH,
    )
    assert future.status_code == 201
    assert await expand_due_broadcasts(services) == 0
    now = await api.post("/api/broadcasts", json={"catalogue_key": "reminders_started"}, headers=AUTH)
    assert await expand_due_broadcasts(services) == 1
    cancelled = (await api.post(f"/api/broadcasts/{now.json()['id']}/cancel", headers=AUTH)).json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled"] == 4 and cancelled["queued"] == 0
    async with services.db.session() as session:
        left = await session.execute(select(func.count()).select_from(Outbox).where(Outbox.status == "queued"))
    assert left.scalar_one() == 0
    for body in (
        {"texts": {"xx": "hi"}},
        {"texts": {"en": ""}},
        {"catalogue_key": "no_such_key"},
        {"texts": {"en": "hi"}, "send_at": "tomorrow"},
        {"texts": {"en": "hi"}, "send_at": "2030-01-01T09:00:00"},
    ):
        answer = await api.post("/api/broadcasts", json=body, headers=AUTH)
        assert answer.status_code == 400, body
    assert (await api.post("/api/broadcasts", content=b"{not json", headers=AUTH)).status_code == 400
    assert (await api.get("/api/broadcasts/999", headers=AUTH)).status_code == 404


def test_segment_parsing_and_cli_arguments() -> None:
    assert parse_segment("language=ar|fa,channel=telegram") == {"language": ["ar", "fa"], "channel": ["telegram"]}
    with pytest.raises(BroadcastError):
        parse_segment("language")
    with pytest.raises(BroadcastError):
        parse_segment({"enrolment_status": "sleeping"})
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["broadcast", "create", "--text-en", "Hi", "--text-ar", "مرحبا", "--segment", "language=ar", "--at",
         "2030-01-01T09:00:00+00:00"]
    )
    assert args.func.__name__ == "cmd_broadcast" and args.text_ar == "مرحبا" and args.broadcast_command == "create"
    assert parser.parse_args(["broadcast", "status", "7"]).id == 7
