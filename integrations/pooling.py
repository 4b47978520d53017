"""A bounded pool of connections, each lent to one user at a time.

Used by the gateway's raw PostgreSQL statements (bot/storage/db.py) and its keep-alive HTTP client
(integrations/http11.py): up to `limit` connections are opened on demand; a caller finds an
idle one, opens a new one, or waits, the oldest waiter first. A connection given back as not
reusable (it may be mid-protocol) is closed and frees its slot for a waiter to open another.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Conn = TypeVar("Conn")


class PoolClosed(Exception):
    """The pool was closed: no connection is lent any more."""


class ConnectionPool(Generic[Conn]):
    """Connections opened by `open_connection`, checked by `is_usable` before they are lent again."""

    def __init__(
        self,
        open_connection: Callable[[], Awaitable[Conn]],
        limit: int,
        is_usable: Callable[[Conn], bool],
        close_connection: Callable[[Conn], None],
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._open_connection = open_connection
        self._limit = limit
        self._is_usable = is_usable
        self._close_connection = close_connection
        self._idle: list[Conn] = []
        self._waiters: deque[asyncio.Future[Conn | None]] = deque()
        self.open = 0
        self.closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> Conn:
        while True:
            if self.closed:
                raise PoolClosed
            while self._idle:
                conn = self._idle.pop()
                if self._is_usable(conn):
                    return conn
                self.discard(conn)
            if self.open < self._limit:
                self.open += 1
                try:
                    return await self._open_connection()
                except BaseException:
                    self.open -= 1
                    self._hand_over(None)  # a waiter may try to open one in our place
                    raise
            waiter: asyncio.Future[Conn | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._hand_over(waiter.result())  # handed to us just as we were cancelled
                raise
            if handed is not None:
                return handed
            # None: a connection closed and freed its slot; go round and open one

    def release(self, conn: Conn, reusable: bool = True) -> None:
        """Give a connection back; one that is not reusable (or no longer usable) is closed."""
        if reusable and not self.closed and self._is_usable(conn):
            self._hand_over(conn)
        else:
            self.discard(conn)

    def discard(self, conn: Conn) -> None:
        self.open -= 1
        self._close_connection(conn)
        self._hand_over(None)

    def _hand_over(self, conn: Conn | None) -> None:
        """Give `conn` (or a free slot, None) to the oldest waiter still waiting, else keep it idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    def close(self) -> list[Conn]:
        """Lend nothing more: waiters fail, and the idle connections are returned for the caller to
        close; those lent out are closed when they come back."""
        self.closed = True
        idle, self._idle = self._idle, []
        self.open -= len(idle)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed())
        return idle
