"""Coordination between processes: locks, pauses, counters, a short cache and pub/sub.

`RedisCoordinator` shares all of it between gateways and workers; `LocalCoordinator`
does the same inside one process for the embedded default (no Redis). Every key
carries the configured prefix so test runs and deployments do not collide. Send rate
limits are not here: they use the `limits` library (`Services.rate_limits`,
bot/outbox/rates.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import LockError


class LockTimeout(Exception):
    """The lock could not be taken in time."""


class Coordinator(Protocol):
    """What Sanad needs from Redis, with an in-process twin."""

    prefix: str

    def lock(self, name: str, ttl_s: float = 30.0, wait_s: float = 30.0) -> Any: ...
    async def pause(self, key: str, seconds: float) -> None: ...
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
        self._pauses: dict[str, float] = {}
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

    async def pause(self, key: str, seconds: float) -> None:
        self._pauses[key] = max(self._pauses.get(key, 0.0), time.monotonic() + seconds)

    async def paused_for(self, key: str) -> float:
        return max(0.0, self._pauses.get(key, 0.0) - time.monotonic())

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


class RedisCoordinator:
    """Coordination shared by every process through Redis."""

    def __init__(self, url: str, prefix: str = "sanad:") -> None:
        self.prefix = prefix
        self.redis: aioredis.Redis = aioredis.from_url(url, decode_responses=True)

    def _k(self, key: str) -> str:
        return self.prefix + key

    @asynccontextmanager
    async def lock(self, name: str, ttl_s: float = 30.0, wait_s: float = 30.0) -> AsyncIterator[None]:
        """redis-py's lock (a token, an expiry, released only by its holder)."""
        lock = self.redis.lock(self._k("lock:" + name), timeout=ttl_s, blocking_timeout=wait_s, sleep=0.01)
        if not await lock.acquire():
            raise LockTimeout(name)
        try:
            yield
        finally:
            try:
                await lock.release()
            except LockError:
                pass  # it expired while held; someone else may hold it now

    async def pause(self, key: str, seconds: float) -> None:
        await self.redis.set(self._k("pause:" + key), "1", px=max(1, int(seconds * 1000)))

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
