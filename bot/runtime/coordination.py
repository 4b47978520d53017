"""Coordination between processes: locks, rate limits, counters, a short cache and pub/sub.

`RedisCoordinator` shares all of it between gateways and workers; `LocalCoordinator`
does the same inside one process for the embedded default (no Redis). Every key
carries the configured prefix so test runs and deployments do not collide.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import redis.asyncio as aioredis

from bot.runtime.batching import Batcher


class LockTimeout(Exception):
    """The lock could not be taken in time."""


class Coordinator(Protocol):
    """What Sanad needs from Redis, with an in-process twin."""

    prefix: str

    def lock(self, name: str, ttl_s: float = 30.0, wait_s: float = 30.0) -> Any: ...
    async def acquire_rate(self, key: str, rate_per_s: float, burst: float = 1.0) -> float: ...
    async def pause(self, key: str, seconds: float) -> None: ...
    async def admit_send(
        self, pause_key: str, chat_key: str | None, chat_rate_per_s: float, chat_burst: float,
        slot_key: str | None, slot_rate_per_s: float,
    ) -> tuple[str, float]: ...
    async def paused_for(self, key: str) -> float: ...
    async def hit(self, key: str, window_s: float) -> int: ...
    async def reset_hits(self, key: str) -> None: ...
    async def cache_get(self, key: str) -> str | None: ...
    async def cache_set(self, key: str, value: str, ttl_s: float) -> None: ...
    async def cache_delete(self, *keys: str) -> None: ...
    async def cache_delete_prefix(self, prefix: str) -> int: ...
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...
    def subscribe(self, channel: str) -> Any: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class LocalCoordinator:
    """Single-process coordination: asyncio locks, in-memory buckets and queues."""

    def __init__(self, prefix: str = "sanad:") -> None:
        self.prefix = prefix
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._pauses: dict[str, float] = {}
        self._slots: dict[str, float] = {}
        self._hits: dict[str, list[float]] = defaultdict(list)
        self._cache: dict[str, tuple[str, float]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    @asynccontextmanager
    async def lock(self, name: str, ttl_s: float = 30.0, wait_s: float = 30.0) -> AsyncIterator[None]:
        lk = self._locks[name]
        try:
            await asyncio.wait_for(lk.acquire(), timeout=wait_s)
        except TimeoutError as exc:
            raise LockTimeout(name) from exc
        try:
            yield
        finally:
            lk.release()

    async def acquire_rate(self, key: str, rate_per_s: float, burst: float = 1.0) -> float:
        """Take one token; returns 0 when granted, else the seconds to wait before asking again."""
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - stamp) * rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate_per_s

    async def pause(self, key: str, seconds: float) -> None:
        self._pauses[key] = max(self._pauses.get(key, 0.0), time.monotonic() + seconds)

    async def paused_for(self, key: str) -> float:
        return max(0.0, self._pauses.get(key, 0.0) - time.monotonic())

    async def admit_send(
        self, pause_key: str, chat_key: str | None, chat_rate_per_s: float, chat_burst: float,
        slot_key: str | None, slot_rate_per_s: float,
    ) -> tuple[str, float]:
        """The rate limits of one send, see `RedisCoordinator.admit_send`."""
        paused = await self.paused_for(pause_key)
        if paused > 0:
            return "paused", paused
        if chat_key is not None and chat_rate_per_s > 0:
            wait_s = await self.acquire_rate(chat_key, chat_rate_per_s, chat_burst)
            if wait_s > 0:
                return "chat", wait_s
        if slot_key is None or slot_rate_per_s <= 0:
            return "slot", 0.0
        now = time.monotonic()
        slot = max(now, self._slots.get(slot_key, 0.0))
        self._slots[slot_key] = slot + 1.0 / slot_rate_per_s
        return "slot", slot - now

    async def hit(self, key: str, window_s: float) -> int:
        now = time.monotonic()
        hits = [t for t in self._hits[key] if t > now - window_s]
        hits.append(now)
        self._hits[key] = hits
        return len(hits)

    async def reset_hits(self, key: str) -> None:
        self._hits.pop(key, None)

    async def cache_get(self, key: str) -> str | None:
        item = self._cache.get(key)
        if item is None:
            return None
        value, expires = item
        if expires < time.monotonic():
            self._cache.pop(key, None)
            return None
        return value

    async def cache_set(self, key: str, value: str, ttl_s: float) -> None:
        self._cache[key] = (value, time.monotonic() + ttl_s)

    async def cache_delete(self, *keys: str) -> None:
        for key in keys:
            self._cache.pop(key, None)

    async def cache_delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._cache if k.startswith(prefix)]
        for key in doomed:
            del self._cache[key]
        return len(doomed)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        for queue in list(self._subscribers[channel]):
            queue.put_nowait(message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Yields a queue that receives every message published on `channel`."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers[channel].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[channel].discard(queue)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# Token bucket kept in one hash; returns the wait in ms (0 = granted).
_BUCKET_LUA = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local data = redis.call('HMGET', key, 'tokens', 'stamp')
local tokens = tonumber(data[1])
local stamp = tonumber(data[2])
if tokens == nil then tokens = burst; stamp = now end
tokens = math.min(burst, tokens + (now - stamp) / 1000000 * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
return wait
"""

# The rate limits of sends, in one round trip for every send asking at the same moment (bot/runtime/batching.py).
# Each send, in order, with its keys KEYS[3i+1..3i+3] and ARGV[3i+1..3i+3]: the channel's pause (PTTL),
# the chat's token bucket (as _BUCKET_LUA) and the channel's next evenly spaced slot
# (slot = max(now, next_free); next_free = slot + interval). Each step that says "wait" ends that
# send's turn before the next step takes anything. Returns {kind, wait in microseconds} per send:
# 1 paused, 2 chat bucket empty, 3 slot reserved.
_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local pause_key, chat_key, slot_key = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local rate = tonumber(ARGV[3 * i + 1])
  local burst = tonumber(ARGV[3 * i + 2])
  local interval = tonumber(ARGV[3 * i + 3])
  local kind, wait = 3, 0
  local pttl = redis.call('PTTL', pause_key)
  if pttl > 0 then
    kind, wait = 1, pttl * 1000
  else
    if rate > 0 then
      local data = redis.call('HMGET', chat_key, 'tokens', 'stamp')
      local tokens = tonumber(data[1])
      local stamp = tonumber(data[2])
      if tokens == nil then tokens = burst; stamp = now end
      tokens = math.min(burst, tokens + (now - stamp) / 1000000 * rate)
      if tokens >= 1 then
        tokens = tokens - 1
      else
        kind, wait = 2, math.ceil((1 - tokens) / rate * 1000) * 1000
      end
      redis.call('HSET', chat_key, 'tokens', tostring(tokens), 'stamp', tostring(now))
      redis.call('PEXPIRE', chat_key, math.ceil(burst / rate * 1000) + 1000)
    end
    if kind == 3 and interval > 0 then
      local slot = tonumber(redis.call('GET', slot_key) or '0')
      if slot < now then slot = now end
      redis.call('SET', slot_key, string.format('%d', slot + interval), 'PX', math.ceil(interval / 1000) + 60000)
      wait = slot - now
    end
  end
  out[2 * i + 1] = kind
  out[2 * i + 2] = wait
end
return out
"""

_ADMIT_KINDS = {1: "paused", 2: "chat", 3: "slot"}

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisCoordinator:
    """Coordination shared by every process through Redis."""

    def __init__(self, url: str, prefix: str = "sanad:") -> None:
        self.prefix = prefix
        self.redis: aioredis.Redis = aioredis.from_url(url, decode_responses=True)
        self._bucket = self.redis.register_script(_BUCKET_LUA)
        self._release = self.redis.register_script(_RELEASE_LUA)
        self._admit = self.redis.register_script(_ADMIT_LUA)
        self._admit_batcher: Batcher[tuple[list[str], list[float]], tuple[str, float]] = Batcher(
            self._admit_many, max_batch=100
        )

    def _k(self, key: str) -> str:
        return self.prefix + key

    @asynccontextmanager
    async def lock(self, name: str, ttl_s: float = 30.0, wait_s: float = 30.0) -> AsyncIterator[None]:
        key = self._k("lock:" + name)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while not await self.redis.set(key, token, nx=True, px=int(ttl_s * 1000)):
            if time.monotonic() > deadline:
                raise LockTimeout(name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            await self._release(keys=[key], args=[token])

    async def acquire_rate(self, key: str, rate_per_s: float, burst: float = 1.0) -> float:
        wait_ms = await self._bucket(keys=[self._k("rate:" + key)], args=[rate_per_s, burst])
        return float(wait_ms) / 1000.0

    async def pause(self, key: str, seconds: float) -> None:
        await self.redis.set(self._k("pause:" + key), "1", px=max(1, int(seconds * 1000)))

    async def admit_send(
        self, pause_key: str, chat_key: str | None, chat_rate_per_s: float, chat_burst: float,
        slot_key: str | None, slot_rate_per_s: float,
    ) -> tuple[str, float]:
        """The rate limits of one send, in one round trip shared with the sends asking at the same moment
        (the keys are those of `pause`, `acquire_rate` and the sender's slots): ("paused", s) when the
        channel is paused, ("chat", s) when the chat's bucket is empty (nothing taken), else ("slot", s)
        to wait for the slot reserved."""
        chat_on = chat_key is not None and chat_rate_per_s > 0
        slot_on = slot_key is not None and slot_rate_per_s > 0
        keys = [
            self._k("pause:" + pause_key),
            self._k("rate:" + (chat_key or "-")),
            self._k("slot:" + (slot_key or "-")),
        ]
        args = [chat_rate_per_s if chat_on else 0, chat_burst, int(1_000_000 / slot_rate_per_s) if slot_on else 0]
        return await self._admit_batcher((keys, args))

    async def _admit_many(self, requests: list[tuple[list[str], list[float]]]) -> list[tuple[str, float]]:
        keys = [key for request_keys, _ in requests for key in request_keys]
        args = [arg for _, request_args in requests for arg in request_args]
        flat = await self._admit(keys=keys, args=args)
        return [
            (_ADMIT_KINDS[int(flat[2 * i])], max(0.0, float(flat[2 * i + 1]) / 1_000_000))
            for i in range(len(requests))
        ]

    async def paused_for(self, key: str) -> float:
        ttl_ms = await self.redis.pttl(self._k("pause:" + key))
        return max(0.0, ttl_ms / 1000.0) if ttl_ms and ttl_ms > 0 else 0.0

    async def hit(self, key: str, window_s: float) -> int:
        k = self._k("hits:" + key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(k)
            pipe.pexpire(k, int(window_s * 1000), nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def reset_hits(self, key: str) -> None:
        await self.redis.delete(self._k("hits:" + key))

    async def cache_get(self, key: str) -> str | None:
        value = await self.redis.get(self._k("cache:" + key))
        return None if value is None else str(value)

    async def cache_set(self, key: str, value: str, ttl_s: float) -> None:
        await self.redis.set(self._k("cache:" + key), value, px=max(1, int(ttl_s * 1000)))

    async def cache_delete(self, *keys: str) -> None:
        if keys:
            await self.redis.delete(*(self._k("cache:" + k) for k in keys))

    async def cache_delete_prefix(self, prefix: str) -> int:
        deleted = 0
        async for key in self.redis.scan_iter(match=self._k("cache:" + prefix) + "*", count=500):
            deleted += int(await self.redis.delete(key))
        return deleted

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self.redis.publish(self._k("pub:" + channel), json.dumps(message))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self._k("pub:" + channel))

        async def pump() -> None:
            async for item in pubsub.listen():
                if item.get("type") == "message":
                    queue.put_nowait(json.loads(item["data"]))

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            await pubsub.unsubscribe()
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:  # noqa: BLE001  (health check reports, never raises)
            return False

    async def close(self) -> None:
        await self.redis.aclose()


def make_coordinator(redis_url: str | None, prefix: str = "sanad:") -> Coordinator:
    """Redis when configured, in-process otherwise."""
    if redis_url:
        return RedisCoordinator(redis_url, prefix)
    return LocalCoordinator(prefix)
