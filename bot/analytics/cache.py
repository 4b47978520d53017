"""A short-lived cache of built reports, one per process (kept on `Services`).

The analytics page is one HTML request and eight chart requests for the same range, arriving
together: they share one build (single flight) instead of building the report nine times."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

REPORT_TTL_S = 60.0
MAX_ENTRIES = 64


class ReportCache:
    """key -> the report being built or built less than `ttl_s` ago."""

    def __init__(self, ttl_s: float = REPORT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}

    async def get(self, key: Hashable, build: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or entry[0] < now:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            entry = (now + self.ttl_s, asyncio.ensure_future(build()))
            self._entries[key] = entry
        try:
            return await asyncio.shield(entry[1])
        except Exception:
            if self._entries.get(key) is entry:
                del self._entries[key]  # a failed build is not kept
            raise
