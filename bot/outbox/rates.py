"""The rate limits of sending: each channel's overall rate, Telegram's per-chat rate, and pauses.

The counters live in `Services.rate_limits` (the `limits` library: Redis when configured, so
every gateway and worker shares them; in-process otherwise):
- a channel's overall rate (`TELEGRAM_RATE_PER_S`, `WHATSAPP_RATE_PER_S` per sender number)
  and Telegram's per-chat rate (`TELEGRAM_CHAT_RATE_PER_S`, a short burst allowed) are moving
  windows of `limits` (exact: a sliding-window counter only estimates, and refused sends at the
  edge of the limit, which kept the rate ~18 % under it);
- a pause after a provider's 429 is a counter that expires after `retry_after`.

`limits` counts in windows of whole seconds, so on its own it would let a second's sends go
out in one burst, which Telegram answers with 429. Each process therefore also spaces its own
sends at the channel's rate with `aiolimiter`, a leaky bucket of `PACER_BURST`: small enough that
a provider sees no burst, large enough that a send task woken late by a busy event loop catches
up instead of losing its place (with a bucket of one the rate fell 14 % short under load).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter

from bot.runtime.settings import Settings

# a chat may take this many messages at once, then TELEGRAM_CHAT_RATE_PER_S on average
CHAT_BURST = 3
# sends a process may let go at once to catch up with its channel's rate
PACER_BURST = 3


def per_second(rate_per_s: float, burst: int = 1) -> RateLimitItem:
    """`rate_per_s` as a `limits` item: N per second, or 1 per N seconds for slow rates; a burst
    of `burst` widens the window so that many may go at once (same average)."""
    if rate_per_s >= 1:
        seconds = max(1, burst)
        return RateLimitItemPerSecond(max(1, round(rate_per_s * seconds)), seconds, namespace="send")
    return RateLimitItemPerSecond(max(1, burst), max(1, round(burst / rate_per_s)), namespace="send")


@dataclass(frozen=True)
class Admission:
    """Whether a send may go now; otherwise how long to wait and why."""

    wait_s: float = 0.0
    reason: str = ""  # "", "paused", "chat" or "channel"

    @property
    def admitted(self) -> bool:
        return self.wait_s <= 0


@dataclass
class SendRates:
    """The send limits of one process, over the shared `limits` storage."""

    settings: Settings
    storage: Storage
    _limiter: MovingWindowRateLimiter = field(init=False)
    _pacers: dict[str, AsyncLimiter] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(self.storage)

    def _channel(self, channel: str) -> tuple[str, float] | None:
        """(key, rate) of a channel's overall limit."""
        if channel == "telegram":
            return "telegram", self.settings.telegram_rate_per_s
        if channel == "whatsapp":
            return f"whatsapp:{self.settings.twilio_whatsapp_from}", self.settings.whatsapp_rate_per_s
        return None

    @staticmethod
    def _pause_key(channel: str) -> str:
        return f"send-pause:{channel}"

    async def admit(
        self, channel: str, contact_key: str, chat_rate_per_s: float | None = None, chat_burst: int = CHAT_BURST
    ) -> Admission:
        """Take this send's place in the channel's limits, or say how long to wait (nothing taken).
        `chat_rate_per_s` replaces Telegram's per-chat rate for one kind of chat (the mentor group)."""
        # the expiry of a key that does not exist is now: one round trip tells whether we are paused
        paused_s = await self.storage.get_expiry(self._pause_key(channel)) - time.time()
        if paused_s > 0.001:
            return Admission(paused_s, "paused")
        limits: list[tuple[str, RateLimitItem, str]] = []
        if channel == "telegram":
            # keyed by the contact key, as everything else about the contact (erasure finds it)
            chat_rate = self.settings.telegram_chat_rate_per_s if chat_rate_per_s is None else chat_rate_per_s
            limits.append(("chat", per_second(chat_rate, chat_burst), contact_key))
        overall = self._channel(channel)
        if overall is not None:
            limits.append(("channel", per_second(overall[1]), overall[0]))
        for index, (reason, item, key) in enumerate(limits):
            if not await self._limiter.hit(item, key):
                stats = await self._limiter.get_window_stats(item, key)
                for _, earlier_item, earlier_key in limits[:index]:
                    await self._give_back(earlier_item, earlier_key)
                return Admission(max(0.01, stats.reset_time - time.time()), reason)
        if overall is not None:
            await self._pacer(channel, overall[1]).acquire()
        return Admission()

    async def _give_back(self, item: RateLimitItem, key: str) -> None:
        # a chat's place taken for a send the channel then refused: a moving window cannot return one
        # entry, so the chat's window is cleared (it only ever holds this chat's sends)
        await self._limiter.clear(item, key)

    def _pacer(self, channel: str, rate_per_s: float) -> AsyncLimiter:
        pacer = self._pacers.get(channel)
        if pacer is None:
            burst = PACER_BURST if rate_per_s >= PACER_BURST else 1
            pacer = self._pacers[channel] = AsyncLimiter(burst, burst / rate_per_s)
        return pacer

    async def pause(self, channel: str, seconds: float) -> None:
        """The provider asked us to wait (429): every process holds the channel's sends that long."""
        key = self._pause_key(channel)
        await self.storage.clear(key)
        await self.storage.incr(key, max(1, math.ceil(seconds)))

    async def paused_for(self, channel: str) -> float:
        return max(0.0, await self.storage.get_expiry(self._pause_key(channel)) - time.time())

    async def forget_contact(self, contact_key: str) -> None:
        """Erasure: drop the per-chat counters of a contact."""
        await self._limiter.clear(per_second(self.settings.telegram_chat_rate_per_s, CHAT_BURST), contact_key)
