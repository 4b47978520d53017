"""Send admission (pause, chat bucket, evenly spaced slots) on Redis and in process alike."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.runtime.coordination import LocalCoordinator, RedisCoordinator
from tests.conftest import REDIS_URL


@pytest.fixture(params=["redis", "local"])
async def coord(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    prefix = f"sanadtest:coord:{uuid.uuid4().hex[:8]}:"
    c: Any = RedisCoordinator(REDIS_URL, prefix) if request.param == "redis" else LocalCoordinator(prefix)
    try:
        yield c
    finally:
        redis = getattr(c, "redis", None)
        if redis is not None:
            async for key in redis.scan_iter(match=prefix + "*"):
                await redis.delete(key)
        await c.close()


async def test_sends_asking_at_once_get_evenly_spaced_slots(coord: Any) -> None:
    answers = await asyncio.gather(*(
        coord.admit_send("channel:telegram", None, 0, 1, "telegram:global", 20.0) for _ in range(10)
    ))
    assert all(kind == "slot" for kind, _ in answers)
    waits = sorted(wait for _, wait in answers)
    assert waits[0] < 0.02
    gaps = [b - a for a, b in itertools.pairwise(waits)]
    assert all(abs(gap - 0.05) < 0.01 for gap in gaps), gaps  # 1 / 20 s apart
    if isinstance(coord, RedisCoordinator):
        assert coord._admit_batcher.calls == 10 and coord._admit_batcher.batches < 10


async def test_a_chat_bucket_lets_a_burst_through_then_says_wait(coord: Any) -> None:
    kinds = [(await coord.admit_send("channel:telegram", "chat:1", 1.0, 3.0, None, 0))[0] for _ in range(4)]
    assert kinds == ["slot", "slot", "slot", "chat"]
    kind, wait_s = await coord.admit_send("channel:telegram", "chat:1", 1.0, 3.0, None, 0)
    assert kind == "chat" and 0.5 < wait_s <= 1.0
    # another chat is not held up
    assert (await coord.admit_send("channel:telegram", "chat:2", 1.0, 3.0, None, 0))[0] == "slot"


async def test_a_paused_channel_takes_nothing(coord: Any) -> None:
    await coord.pause("channel:whatsapp", 0.3)
    kind, wait_s = await coord.admit_send("channel:whatsapp", "chat:9", 1.0, 1.0, "wa:sender", 10.0)
    assert kind == "paused" and 0.2 < wait_s <= 0.3
    await asyncio.sleep(0.35)
    # the chat's single token was not taken while paused
    assert (await coord.admit_send("channel:whatsapp", "chat:9", 1.0, 1.0, "wa:sender", 10.0))[0] == "slot"
