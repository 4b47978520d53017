"""Shared fixtures: a PostgreSQL schema and a Redis key prefix of this test run, services built on them."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.config import Settings
from bot.db import Base
from bot.services import Services

PG_DSN = os.environ.get("SANAD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SANAD_TEST_REDIS", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]
SCHEMA = f"sanad_t_{RUN_ID}"
DATA_DIR = Path(__file__).parent / "data"
SHARED_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def pg_async_url() -> str:
    return PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """One PostgreSQL schema for the whole run, with every table, dropped at the end."""

    async def setup() -> None:
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'CREATE SCHEMA "{SCHEMA}"')
        await conn.close()
        from bot.db import Database
        import bot.models  # noqa: F401

        db = Database(pg_async_url(), schema=SCHEMA)
        async with db.engine.begin() as c:
            await c.run_sync(Base.metadata.create_all)
        await db.dispose()

    async def teardown() -> None:
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        await conn.close()

    asyncio.run(setup())
    yield SCHEMA
    asyncio.run(teardown())


async def truncate_all(schema: str) -> None:
    import bot.models  # noqa: F401

    names = ", ".join(f'"{schema}"."{t.name}"' for t in Base.metadata.sorted_tables)
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    await conn.close()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of a test: PostgreSQL schema + Redis prefix unless overridden."""
    env = {
        "DATABASE_URL": pg_async_url(),
        "REDIS_URL": REDIS_URL,
        "SANAD_REDIS_PREFIX": f"sanadtest:{RUN_ID}:{uuid.uuid4().hex[:8]}:",
        "SANAD_SECRET_KEY": "test-secret-key-please-change-0123456789",
        "SANAD_VAR_DIR": str(tmp_path),
        "RASA_URL": "http://127.0.0.1:9",
        "PUBLIC_BASE_URL": "https://sanad.example.org",
    }
    env.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
    return Settings.from_env(env, dotenv=tmp_path / "none.env")


@pytest.fixture
async def services(pg_schema: str, tmp_path: Path) -> AsyncIterator[Services]:
    """Services on the run's PostgreSQL schema and a fresh Redis prefix; tables emptied after."""
    svc = Services.build(make_settings(tmp_path), schema=pg_schema)
    try:
        yield svc
    finally:
        redis = getattr(svc.coord, "redis", None)
        if redis is not None:
            async for key in redis.scan_iter(match=svc.coord.prefix + "*"):
                await redis.delete(key)
        await svc.close()
        await truncate_all(pg_schema)


@pytest.fixture
async def sqlite_services(tmp_path: Path) -> AsyncIterator[Services]:
    """Services on the embedded default: SQLite file, no Redis."""
    settings = make_settings(tmp_path, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'sanad.db'}", REDIS_URL=None)
    svc = Services.build(settings)
    await svc.db.create_all()
    try:
        yield svc
    finally:
        await svc.close()
