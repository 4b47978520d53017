"""Named rate limits over the process's `limits` storage (`Services.rate_limits`).

With Redis configured every gateway shares the counters; without, they live in this process.
A throttle is one or more moving windows ("5/minute;20/hour"); a key is refused while any of
them is full, so several windows of growing length make growing delays. Identifiers that say
who someone is (addresses, e-mails) go in as keyed pseudonyms (`pseudonym`), never as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter


def pseudonym(secret: str, purpose: str, value: str) -> str:
    """A short keyed hash of `value`: the same value gives the same key, the key gives nothing back."""
    digest = hmac.new(secret.encode(), f"{purpose}:{value}".encode("utf-8", "replace"), hashlib.sha256)
    return digest.hexdigest()[:24]


@lru_cache(maxsize=64)
def _windows(spec: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(spec))


@dataclass(frozen=True)
class Throttle:
    """Windows counted under one name; `ids` (strings) tell the counters of one name apart."""

    name: str
    items: tuple[RateLimitItem, ...]

    @classmethod
    def of(cls, name: str, spec: str) -> Throttle:
        """`Throttle.of("login", "5/minute;20/hour")`."""
        return cls(name, _windows(spec))

    async def allowed(self, storage: Storage, *ids: str) -> bool:
        """Would one more hit pass every window (without counting it)?"""
        limiter = MovingWindowRateLimiter(storage)
        for item in self.items:
            if not await limiter.test(item, self.name, *ids):
                return False
        return True

    async def hit(self, storage: Storage, *ids: str) -> bool:
        """Count one hit in every window; False (and nothing counted) when a window is full."""
        if not await self.allowed(storage, *ids):
            return False
        limiter = MovingWindowRateLimiter(storage)
        passed = True
        for item in self.items:
            # two processes may pass `allowed` at once: the window that fills first refuses the other
            passed = await limiter.hit(item, self.name, *ids) and passed
        return passed

    async def retry_after_s(self, storage: Storage, *ids: str) -> float:
        """Seconds until every full window has room again (0 when none is full)."""
        limiter = MovingWindowRateLimiter(storage)
        now = time.time()
        wait_s = 0.0
        for item in self.items:
            stats = await limiter.get_window_stats(item, self.name, *ids)
            if stats.remaining <= 0:
                wait_s = max(wait_s, stats.reset_time - now)
        return max(0.0, wait_s)

    async def clear(self, storage: Storage, *ids: str) -> None:
        """Forget the counts of these ids (e.g. after a successful login)."""
        limiter = MovingWindowRateLimiter(storage)
        for item in self.items:
            await limiter.clear(item, self.name, *ids)
