"""The database: one SQLAlchemy async engine and pool per process, on PostgreSQL or SQLite.

Every statement of Sanad goes through this engine (Core on the conversation's hot path,
the ORM elsewhere); there is no second path for either database. See docs/architecture.md
("One database path").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of every Sanad table."""


def utcnow() -> datetime:
    """Timezone-aware now; every stored time is UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: read them as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(
    url: str, schema: str | None = None, *, pool_size: int = 10, max_overflow: int = 10, echo: bool = False
) -> AsyncEngine:
    """The process's engine; `schema` pins PostgreSQL's search_path (one schema per test run).

    `hide_parameters`: a failed statement's message never carries its bound values (a
    learner's text, a phone number) into the logs."""
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    sqlite = url.startswith("sqlite")
    if sqlite:
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = max_overflow
        if schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    engine = create_async_engine(url, **kwargs)
    if sqlite:
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
    """Owns the engine and hands out connections and sessions."""

    def __init__(
        self, url: str, schema: str | None = None, *, pool_size: int = 10, max_overflow: int = 10
    ) -> None:
        self.url = url
        self.schema = schema
        self.engine = make_engine(url, schema, pool_size=pool_size, max_overflow=max_overflow)
        # single statements that need no transaction of their own (a lease given back, a send's outcome)
        self.autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that commits on success and rolls back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a transaction that commits on success."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection whose statements commit one by one."""
        async with self.autocommit_engine.connect() as conn:
            yield conn

    async def create_all(self) -> None:
        """Create every table (tests, and a fresh embedded database before migrations exist)."""
        import bot.storage.models  # noqa: F401  (registers the tables)

        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        await self.engine.dispose()
