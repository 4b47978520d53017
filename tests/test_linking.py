"""Linking chats to learners: tokens, codes, reuse, expiry, rate limiting, unlink, two channels, admin API, CLI."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from starlette.applications import Starlette

from bot.conversation.commands import handler_for
from bot.conversation.interceptors import interceptors
from bot.learners import linking
from bot.runtime.services import Services
from bot.storage.db import utcnow
from bot.storage.models import AuditEntry, Contact, InboundMessage, LinkToken
from integrations.demo_platform import BackgroundServer, demo_app
from integrations.platform import DEMO_PLATFORM_TOKEN, PlatformClient
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with BackgroundServer(demo_app()) as server:
        yield server.url


@pytest.fixture
async def svc(services: Services, demo_url: str) -> AsyncIterator[Services]:
    services.platform_client = PlatformClient(demo_url, DEMO_PLATFORM_TOKEN, services.coord)
    yield services


async def make_contact(services: Services, key: str, **fields: Any) -> Contact:
    channel, address = key.split(":", 1)
    async with services.db.session() as session:
        contact = Contact(key=key, channel=channel, address=address, mode="bot", reminders_opt_out=False,
                          stopped=False, pin_failures=0, language=fields.pop("language", "en"),
                          language_source=fields.pop("language_source", "detected"), **fields)
        session.add(contact)
    return contact


_seq = iter(range(1, 10_000))


async def send(services: Services, contact: Contact, text: str, kind: str = "text",
               payload: dict[str, Any] | None = None) -> list[str] | None:
    """Persist an inbound message and run the interceptors as the pipeline does; returns reply texts."""
    async with services.db.session() as session:
        message = InboundMessage(contact_id=contact.id, channel=contact.channel, dedup_key=f"t:{next(_seq)}",
                                 provider_id="p", kind=kind, text=text, payload=payload, status="received",
                                 attempts=1)
        session.add(message)
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
    assert fresh is not None
    for intercept in interceptors():
        result = await intercept(services, fresh, message)
        if result is not None:
            return [r.text for r in result.replies]
    return None


def start(token: str) -> dict[str, Any]:
    return {"text": f"/start {token}", "kind": "command", "payload": {"command": "start", "args": token}}


async def reload(services: Services, contact: Contact) -> Contact:
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
    assert fresh is not None
    return fresh


async def test_token_shape_and_only_hashes_stored(svc: Services) -> None:
    issued = await linking.issue_link_token(svc, "L1001")
    token = issued["token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token)
    assert issued["telegram_url"] == f"https://t.me/{svc.settings.telegram_bot_username}?start={token}"
    code = issued["whatsapp_text"].removeprefix("LINK ")
    assert re.fullmatch(f"[{linking.CODE_ALPHABET}]{{8}}", code)
    async with svc.db.session() as session:
        row = (await session.execute(select(LinkToken))).scalar_one()
    assert row.learner_id == "L1001" and row.used_at is None
    assert token not in (row.token_hash, row.short_code) and code not in (row.token_hash, row.short_code)
    assert timedelta(days=6, hours=23) < row.expires_at - utcnow() <= timedelta(days=7)


async def test_telegram_start_links_and_greets_in_platform_language(svc: Services) -> None:
    contact = await make_contact(svc, "telegram:1001")
    issued = await linking.issue_link_token(svc, "L1001")
    replies = await send(svc, contact, **start(issued["token"]))
    assert replies == [svc.catalogue.text("link_success", "ar", first_name="Amina")]
    fresh = await reload(svc, contact)
    assert (fresh.learner_id, fresh.language, fresh.language_source) == ("L1001", "ar", "platform")
    assert (fresh.timezone, fresh.country, fresh.display_name) == ("Asia/Amman", "JO", "Amina")
    assert fresh.linked_at is not None
    async with svc.db.session() as session:
        row = (await session.execute(select(LinkToken))).scalar_one()
        audit = (await session.execute(select(AuditEntry).where(AuditEntry.action == "link"))).scalar_one()
    assert row.used_by_contact_id == contact.id and row.used_at is not None
    assert audit.subject_ref and "1001" not in audit.subject_ref

    # the same chat sending the same link again is told it is linked already
    again = await send(svc, contact, **start(issued["token"]))
    assert again == [svc.catalogue.text("link_already_linked", "ar")]


async def test_reused_token_is_refused(svc: Services) -> None:
    first = await make_contact(svc, "telegram:1")
    second = await make_contact(svc, "telegram:2", language="fr")
    issued = await linking.issue_link_token(svc, "L1003")
    await send(svc, first, **start(issued["token"]))
    replies = await send(svc, second, **start(issued["token"]))
    assert replies == [svc.catalogue.text("link_used", "fr")]
    assert (await reload(svc, second)).learner_id is None


async def test_expired_token_is_refused(svc: Services) -> None:
    contact = await make_contact(svc, "telegram:3", language="de")
    issued = await linking.issue_link_token(svc, "L1003")
    async with svc.db.session() as session:
        await session.execute(update(LinkToken).values(expires_at=utcnow() - timedelta(minutes=1)))
    replies = await send(svc, contact, **start(issued["token"]))
    assert replies == [svc.catalogue.text("link_expired", "de")]
    assert (await reload(svc, contact)).learner_id is None


async def test_forged_token_is_refused(svc: Services) -> None:
    contact = await make_contact(svc, "telegram:4")
    issued = await linking.issue_link_token(svc, "L1003")
    forged = issued["token"][:-1] + ("A" if issued["token"][-1] != "A" else "B")
    assert await send(svc, contact, **start(forged)) == [svc.catalogue.text("link_invalid_token", "en")]
    assert await send(svc, contact, "/start hello-there") == [svc.catalogue.text("link_invalid_token", "en")]


async def test_whatsapp_code_is_case_and_space_tolerant_and_both_channels_link(svc: Services) -> None:
    telegram = await make_contact(svc, "telegram:55")
    whatsapp = await make_contact(svc, "whatsapp:+4915112345678")
    await send(svc, telegram, **start((await linking.issue_link_token(svc, "L1002"))["token"]))
    code = (await linking.issue_link_token(svc, "L1002"))["whatsapp_text"].removeprefix("LINK ")
    typed = f"  link {code[:4].lower()} {code[4:]} "
    replies = await send(svc, whatsapp, typed)
    assert replies == [svc.catalogue.text("link_success", "fa", first_name="Farid")]
    assert (await reload(svc, telegram)).learner_id == "L1002"
    assert (await reload(svc, whatsapp)).learner_id == "L1002"


async def test_explicit_language_is_kept(svc: Services) -> None:
    contact = await make_contact(svc, "whatsapp:+111", language="en", language_source="explicit")
    code = (await linking.issue_link_token(svc, "L1005"))["whatsapp_text"]
    assert await send(svc, contact, code) == [svc.catalogue.text("link_success", "en", first_name="Yusuf")]
    fresh = await reload(svc, contact)
    assert (fresh.language, fresh.language_source, fresh.timezone) == ("en", "explicit", "Europe/Berlin")


async def test_relinking_replaces_the_learner(svc: Services) -> None:
    contact = await make_contact(svc, "telegram:77")
    await send(svc, contact, **start((await linking.issue_link_token(svc, "L1001"))["token"]))
    await send(svc, contact, (await linking.issue_link_token(svc, "L1003"))["whatsapp_text"])
    fresh = await reload(svc, contact)
    assert (fresh.learner_id, fresh.display_name, fresh.language) == ("L1003", "Grace", "en")


async def test_wrong_codes_are_rate_limited(svc: Services) -> None:
    contact = await make_contact(svc, "whatsapp:+222")
    good = (await linking.issue_link_token(svc, "L1003"))["whatsapp_text"]
    wrong = svc.catalogue.text("link_invalid_code", "en")
    for _ in range(linking.MAX_FAILURES):
        assert await send(svc, contact, "LINK ZZZZ2222") == [wrong]
    replies = await send(svc, contact, good)
    assert replies is not None and replies[0] == svc.catalogue.text("link_rate_limited", "en", minutes=15)
    assert (await reload(svc, contact)).learner_id is None
    async with svc.db.session() as session:
        assert (await session.execute(select(LinkToken.used_at))).scalar_one() is None
    # another chat is not affected
    other = await make_contact(svc, "whatsapp:+333")
    assert await send(svc, other, good) == [svc.catalogue.text("link_success", "en", first_name="Grace")]


async def test_unlink(svc: Services) -> None:
    contact = await make_contact(svc, "telegram:88")
    await send(svc, contact, **start((await linking.issue_link_token(svc, "L1004"))["token"]))
    assert (await reload(svc, contact)).language == "fr"
    assert await send(svc, contact, "Unlink") == [svc.catalogue.text("link_unlinked", "fr")]
    fresh = await reload(svc, contact)
    assert fresh.learner_id is None and fresh.linked_at is None and fresh.display_name is None
    assert await send(svc, contact, "/unlink", kind="command", payload={"command": "unlink", "args": ""}) == [
        svc.catalogue.text("link_not_linked", "fr")]


async def test_unlink_command_from_an_action(svc: Services) -> None:
    contact = await make_contact(svc, "telegram:99")
    await send(svc, contact, **start((await linking.issue_link_token(svc, "L1003"))["token"]))
    handler = handler_for("unlink")
    assert handler is not None
    await handler(svc, await reload(svc, contact), {})
    assert (await reload(svc, contact)).learner_id is None


async def test_token_of_a_learner_the_platform_does_not_know(svc: Services) -> None:
    contact = await make_contact(svc, "telegram:5")
    issued = await linking.issue_link_token(svc, "L-DELETED")
    assert await send(svc, contact, **start(issued["token"])) == [svc.catalogue.text("link_invalid_token", "en")]
    async with svc.db.session() as session:
        assert (await session.execute(select(LinkToken.used_at))).scalar_one() is None


async def test_not_ours(svc: Services) -> None:
    contact = await make_contact(svc, "telegram:6")
    assert await send(svc, contact, "/start", kind="command", payload={"command": "start", "args": ""}) is None
    assert await send(svc, contact, "link my account please") is None
    assert await send(svc, contact, "when is my next deadline?") is None


async def test_admin_route(svc: Services, tmp_path: Path) -> None:
    app = Starlette(routes=linking.routes())
    app.state.services = svc

    async def post(body: Any, token: str | None = "admin-secret", raw: bytes | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            if raw is not None:
                return await client.post("/api/link-tokens", content=raw, headers=headers)
            return await client.post("/api/link-tokens", json=body, headers=headers)

    assert (await post({"learner_id": "L1001"})).status_code == 404  # ADMIN_API_TOKEN unset: off
    svc.settings = make_settings(tmp_path, ADMIN_API_TOKEN="admin-secret")
    assert (await post({"learner_id": "L1001"}, token=None)).status_code == 401
    assert (await post({"learner_id": "L1001"}, token="wrong")).status_code == 401
    assert (await post(None, raw=b"{not json")).status_code == 400
    assert (await post({"learner": "L1001"})).status_code == 400
    assert (await post({"learner_id": ""})).status_code == 400
    unknown = await post({"learner_id": "L9999"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_learner"
    ok = await post({"learner_id": "L1001"})
    assert ok.status_code == 200
    assert set(ok.json()) == {"token", "telegram_url", "whatsapp_text", "expires_at"}
    async with svc.db.session() as session:
        rows = (await session.execute(select(LinkToken.learner_id))).scalars().all()
    assert rows == ["L1001"]


def test_cli_prints_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("SANAD_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("SANAD_SECRET_KEY", "cli-secret")
    for name in ("REDIS_URL", "PLATFORM_API_URL", "SANAD_DEMO_PLATFORM_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser(prog="sanad")
    linking.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["link-token", "L1002"])
    assert args.func(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["whatsapp_text"].startswith("LINK ") and "?start=" in document["telegram_url"]
    unknown = parser.parse_args(["link-token", "L9999"])
    assert unknown.func(unknown) == 2
    assert "unknown_learner" in capsys.readouterr().err
