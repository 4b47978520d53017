"""End-to-end harness: one real stack (gateway, action server, Rasa with the trained model) per session.

Skipped, with the reason, when no Rasa environment exists. Select or deselect with `-m e2e` /
`-m "not e2e"`. Every test talks to the stack over HTTP with its own chat ids, so tests do not
see each other's messages.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bot.runtime.services import Services
from tests.e2e.stack import METRICS_TOKEN, TELEGRAM_SECRET, TWILIO_TOKEN, Stack

_update_ids = itertools.count(1)
_chat_ids = itertools.count(700_001)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from bot.runtime.rasa import RasaNotInstalled, rasa_executable

    try:
        rasa_executable()
    except RasaNotInstalled as exc:
        pytest.skip(f"end-to-end tests need Rasa: {exc}")
    with Stack(tmp_path_factory.mktemp("e2e"), db="postgres") as running:
        yield running


class E2E:
    """What a test needs: post to the gateway's webhooks, wait for replies at the doubles, read the database."""

    def __init__(self, stack: Stack, services: Services, http: httpx.AsyncClient) -> None:
        self.stack, self.services, self.http = stack, services, http

    @staticmethod
    def new_chat() -> int:
        return next(_chat_ids)

    @staticmethod
    def update(chat_id: int, text: str, language_code: str = "en", first_name: str = "Amal") -> dict[str, Any]:
        uid = next(_update_ids)
        message: dict[str, Any] = {
            "message_id": uid, "date": int(time.time()), "text": text,
            "chat": {"id": chat_id, "type": "private", "first_name": first_name},
            "from": {"id": chat_id, "is_bot": False, "first_name": first_name, "language_code": language_code},
        }
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return {"update_id": uid, "message": message}

    async def telegram(self, chat_id: int, text: str, language_code: str = "en") -> httpx.Response:
        body = json.dumps(self.update(chat_id, text, language_code)).encode()
        return await self.http.post("/webhooks/telegram", content=body, headers={
            "content-type": "application/json", "x-telegram-bot-api-secret-token": TELEGRAM_SECRET})

    async def whatsapp(self, form: dict[str, str], path: str = "/webhooks/whatsapp") -> httpx.Response:
        from twilio.request_validator import RequestValidator

        url = self.stack.gateway_url + path
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
        return await self.http.post(path, data=form, headers={"x-twilio-signature": signature})

    async def telegram_replies(self, chat_id: int, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """The Bot API double's messages to this chat, once there are `count` of them (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            sent = [m for m in list(self.stack.bot_api.sent) if m["chat_id"] == str(chat_id)]
            if len(sent) >= count or time.monotonic() > deadline:
                return sent
            await asyncio.sleep(0.05)

    async def whatsapp_replies(self, to: str, count: int, timeout_s: float = 30.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout_s
        while True:
            sent = [m for m in list(self.stack.twilio.sent) if m.get("To") == to]
            if len(sent) >= count or time.monotonic() > deadline:
                return sent
            await asyncio.sleep(0.05)

    async def rasa_errors(self) -> float:
        """The gateway's count of failed Rasa calls (Prometheus)."""
        text = (await self.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).text
        for line in text.splitlines():
            if line.startswith("sanad_rasa_errors_total "):
                return float(line.split()[1])
        return 0.0


@pytest.fixture
async def e2e(stack: Stack) -> AsyncIterator[E2E]:
    """The running stack, plus services of this test's own on the same database (reads, redelivery)."""
    from bot.outbox.sender import OutboxSender
    from bot.web.app import load_components

    services = Services.build(stack.settings())
    load_components()
    services.extras["sender"] = OutboxSender(services)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        try:
            yield E2E(stack, services, http)
        finally:
            await services.close()
