"""Send rate limits on the `limits` library: shared through Redis, in process without it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from bot.outbox.rates import PACER_BURST, SendRates
from bot.runtime.settings import Settings
from tests.conftest import REDIS_URL, make_settings


@pytest.fixture(params=["redis", "memory"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
        return
    prefix = f"sanadtest:rates:{uuid.uuid4().hex[:8]}"
    store = RedisStorage("async+" + REDIS_URL, implementation="redispy", key_prefix=prefix)
    try:
        yield store
    finally:
        await store.reset()


def settings(tmp_path: Path, **env: str) -> Settings:
    return make_settings(tmp_path, TWILIO_WHATSAPP_FROM="+14155238886", **env)


async def test_a_channels_sends_are_spaced_at_its_rate(storage: Storage, tmp_path: Path) -> None:
    rates = SendRates(settings(tmp_path, TELEGRAM_RATE_PER_S="20", TELEGRAM_CHAT_RATE_PER_S="1000"), storage)
    started = time.monotonic()
    admitted = [(await rates.admit("telegram", f"telegram:{i}")).admitted for i in range(10)]
    assert admitted == [True] * 10
    # at 20 a second, not in one burst (a burst is what Telegram answers with 429): past the pacer's
    # small catch-up burst, each send waits its turn
    assert time.monotonic() - started >= (10 - PACER_BURST) * 0.05 * 0.9


async def test_a_chat_takes_a_short_burst_then_waits(storage: Storage, tmp_path: Path) -> None:
    rates = SendRates(settings(tmp_path, TELEGRAM_RATE_PER_S="1000", TELEGRAM_CHAT_RATE_PER_S="1"), storage)
    answers = [await rates.admit("telegram", "telegram:1") for _ in range(4)]
    assert [a.admitted for a in answers] == [True, True, True, False]
    assert answers[3].reason == "chat" and 0 < answers[3].wait_s <= 3.0
    assert (await rates.admit("telegram", "telegram:2")).admitted  # another chat is not held up


async def test_a_paused_channel_takes_nothing(storage: Storage, tmp_path: Path) -> None:
    rates = SendRates(settings(tmp_path, TELEGRAM_RATE_PER_S="1000", TELEGRAM_CHAT_RATE_PER_S="1"), storage)
    await rates.pause("telegram", 30)
    answer = await rates.admit("telegram", "telegram:9")
    assert answer.reason == "paused" and 28 < answer.wait_s <= 30
    assert 28 < await rates.paused_for("telegram") <= 30
    await storage.clear("send-pause:telegram")
    # the chat's burst was not spent while the channel was paused
    assert [(await rates.admit("telegram", "telegram:9")).admitted for _ in range(3)] == [True] * 3


async def test_processes_share_a_channels_limit_through_the_storage(storage: Storage, tmp_path: Path) -> None:
    config = settings(tmp_path, WHATSAPP_RATE_PER_S="0.5")  # one send per 2 s
    first, second = SendRates(config, storage), SendRates(config, storage)
    assert (await first.admit("whatsapp", "whatsapp:+1")).admitted
    refused = await second.admit("whatsapp", "whatsapp:+9")
    assert refused.reason == "channel" and 0 < refused.wait_s <= 2.0


async def test_a_chat_refused_by_its_channel_keeps_its_burst(storage: Storage, tmp_path: Path) -> None:
    rates = SendRates(settings(tmp_path, TELEGRAM_RATE_PER_S="1", TELEGRAM_CHAT_RATE_PER_S="1"), storage)
    assert (await rates.admit("telegram", "telegram:1")).admitted
    refused = await rates.admit("telegram", "telegram:2")
    assert refused.reason == "channel"
    # the chat's place taken before the channel said no was given back: its whole burst is there
    await storage.clear("send-pause:telegram")
    second = SendRates(settings(tmp_path, TELEGRAM_RATE_PER_S="1000", TELEGRAM_CHAT_RATE_PER_S="1"), storage)
    assert [(await second.admit("telegram", "telegram:2")).admitted for _ in range(3)] == [True] * 3
