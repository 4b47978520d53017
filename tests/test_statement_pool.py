"""The gateway's raw statement pool on a real PostgreSQL: limits, reuse, broken connections."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from bot.storage.db import StatementPool
from tests.conftest import PG_DSN


class Opener:
    """Opens real connections and remembers them."""

    def __init__(self) -> None:
        self.opened: list[Any] = []

    async def __call__(self) -> Any:
        conn = await asyncpg.connect(PG_DSN)
        self.opened.append(conn)
        return conn


async def test_statements_beyond_the_limit_wait_for_a_connection() -> None:
    opener = Opener()
    pool = StatementPool(opener, max_size=2)
    try:
        values = await asyncio.gather(*(pool.fetchval("SELECT $1::int FROM pg_sleep(0.05)", i) for i in range(6)))
        assert values == list(range(6))
        assert len(opener.opened) == 2 and pool.size == 2
    finally:
        await pool.close()


async def test_a_server_error_keeps_the_connection_and_the_next_statement_runs() -> None:
    opener = Opener()
    pool = StatementPool(opener, max_size=1)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await pool.execute("SELECT 1 / 0")
        assert await pool.fetchval("SELECT 41 + 1") == 42
        assert len(opener.opened) == 1
    finally:
        await pool.close()


async def test_a_cancelled_statement_closes_its_connection_and_frees_the_slot() -> None:
    opener = Opener()
    pool = StatementPool(opener, max_size=1)
    try:
        slow = asyncio.create_task(pool.execute("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        waiting = asyncio.create_task(pool.fetchval("SELECT 7"))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # the waiter gets a new connection, not the one left mid-statement
        assert await asyncio.wait_for(waiting, 5) == 7
        assert len(opener.opened) == 2
        assert opener.opened[0].is_closed()
        assert pool.size == 1
    finally:
        await pool.close()


async def test_a_cancelled_waiter_does_not_take_a_connection_with_it() -> None:
    opener = Opener()
    pool = StatementPool(opener, max_size=1)
    try:
        busy = asyncio.create_task(pool.execute("SELECT pg_sleep(0.2)"))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await busy
        assert await pool.fetchval("SELECT 2") == 2
        assert len(opener.opened) == 1
    finally:
        await pool.close()


async def test_a_connection_the_server_closed_is_replaced() -> None:
    opener = Opener()
    pool = StatementPool(opener, max_size=1)
    try:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        admin = await asyncpg.connect(PG_DSN)
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await admin.close()
        await asyncio.sleep(0.1)
        # the pool sees the connection closed before lending it again: the next statement runs on a new one
        assert await pool.fetchval("SELECT pg_backend_pid()") != pid
        assert len(opener.opened) == 2
    finally:
        await pool.close()


async def test_a_failed_connect_frees_its_slot() -> None:
    calls = 0

    async def flaky() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("connection refused")
        return await asyncpg.connect(PG_DSN)

    pool = StatementPool(flaky, max_size=1)
    try:
        with pytest.raises(OSError):
            await pool.fetchval("SELECT 1")
        assert pool.size == 0
        assert await pool.fetchval("SELECT 3") == 3
    finally:
        await pool.close()


async def test_closing_refuses_new_statements_and_fails_waiters() -> None:
    pool = StatementPool(Opener(), max_size=1)
    busy = asyncio.create_task(pool.execute("SELECT pg_sleep(0.2)"))
    await asyncio.sleep(0.05)
    waiter = asyncio.create_task(pool.fetchval("SELECT 1"))
    await asyncio.sleep(0.01)
    await pool.close()
    with pytest.raises(asyncpg.InterfaceError):
        await waiter
    await busy  # the running statement finishes; its connection is closed on release
    assert pool.size == 0
    with pytest.raises(asyncpg.InterfaceError):
        await pool.fetchval("SELECT 1")
