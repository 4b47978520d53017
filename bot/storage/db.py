"""Database engine and session factory (SQLAlchemy 2 async, PostgreSQL or SQLite)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class

from integrations.pooling import ConnectionPool, PoolClosed

# connections of the raw pool per process (the SQLAlchemy pool is separate)
RAW_POOL_SIZE = 12


class Base(DeclarativeBase):
    """Declarative base of every Sanad table."""


_Row = TypeVar("_Row", bound=Base)


def utcnow() -> datetime:
    """Timezone-aware now; every stored time is UTC."""
    return datetime.now(UTC)


def snapshot(cls: type[_Row], values: Mapping[str, Any]) -> _Row:
    """A detached object of a mapped class holding a row's column values as loaded.

    The mapped constructor fires an attribute event per column (~15 µs for a contact); this
    fills the instance dict the way SQLAlchemy's own loader does, so reading is the same and a
    later assignment is tracked as a change from these values."""
    manager = manager_of_class(cls)
    if not manager.mapper.configured:
        configure_mappers()  # attribute access needs the mappers set up, which a constructor would do
    obj: _Row = manager.new_instance()
    obj.__dict__.update(values)
    return obj


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: read them as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(url: str, schema: str | None = None, echo: bool = False) -> AsyncEngine:
    """Build the engine; `schema` pins PostgreSQL's search_path (one schema per test run)."""
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        # a connection costs ~35 ms to open: keep enough for the webhook, processing and sending
        kwargs["pool_size"] = 20
        kwargs["max_overflow"] = 20
        kwargs["pool_pre_ping"] = False
        if schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the worker read while the gateway writes; foreign keys for cascades.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    return engine


class Database:
    """Owns the engine and hands out sessions."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self.engine = make_engine(url, schema)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._raw_pool: StatementPool | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that commits on success and rolls back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    def raw_pool(self) -> StatementPool:
        """Plain asyncpg connections (PostgreSQL only) for the gateway's hot path: one statement per
        round trip in autocommit, without SQLAlchemy's per-statement cost (~4x less CPU)."""
        if self.is_sqlite:
            raise RuntimeError("the raw pool exists on PostgreSQL only")
        if self._raw_pool is None:
            dsn = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
            # every execution planned for its own arguments and the tables' current size: a batch's
            # arrays differ in length each time, and a generic plan cached while the tables were small
            # (a fresh deployment) keeps scanning them whole as they grow, until the next ANALYZE
            server_settings = {"plan_cache_mode": "force_custom_plan"}
            if self.schema:
                server_settings["search_path"] = self.schema

            async def connect() -> asyncpg.Connection:
                conn = await asyncpg.connect(dsn, server_settings=server_settings)
                await _init_raw_connection(conn)
                return conn

            self._raw_pool = StatementPool(connect, max_size=RAW_POOL_SIZE)
        return self._raw_pool

    async def create_all(self) -> None:
        """Create every table (tests, and a fresh embedded database before migrations exist)."""
        import bot.storage.models  # noqa: F401  (registers the tables)

        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        if self._raw_pool is not None:
            pool, self._raw_pool = self._raw_pool, None
            await pool.close()
        await self.engine.dispose()


class StatementPool:
    """Up to `max_size` asyncpg connections that each run one autocommit statement at a time.

    asyncpg's own pool spends ~55 µs of CPU on every acquire and release (timeouts, a shielded
    release, the reset): more than the statement itself. Single autocommit statements leave no
    session state behind, so a connection can go straight back to the idle list. A connection
    that may be mid-protocol (a cancelled or failed call other than a server error) is closed,
    never reused.
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], max_size: int) -> None:
        self._pool: ConnectionPool[Any] = ConnectionPool(
            connect, max_size, is_usable=lambda conn: not conn.is_closed(), close_connection=_terminate
        )

    @property
    def size(self) -> int:
        """Connections open now (idle or running a statement)."""
        return self._pool.open

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._run("fetch", sql, args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchrow", sql, args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchval", sql, args)

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._run("execute", sql, args)  # type: ignore[no-any-return]

    async def _run(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        try:
            conn = await self._pool.acquire()
        except PoolClosed as exc:
            raise asyncpg.InterfaceError("the statement pool is closed") from exc
        reusable = False
        try:
            result = await getattr(conn, method)(sql, *args)
            reusable = True
            return result
        except asyncpg.PostgresError:
            reusable = True  # the server refused this statement; the connection is in sync
            raise
        finally:
            self._pool.release(conn, reusable)

    async def close(self) -> None:
        """Close the idle connections; those running a statement close when it ends."""
        for conn in self._pool.close():
            try:
                await conn.close(timeout=5)
            except (OSError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()


def _terminate(conn: Any) -> None:
    if not conn.is_closed():
        conn.terminate()


async def _init_raw_connection(conn: asyncpg.Connection) -> None:
    # the JSON columns (sa.JSON is `json` on PostgreSQL) as Python values, like SQLAlchemy
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
