"""Alembic migrations create exactly the schema of bot/storage/models.py, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import bot.storage.models
from bot.runtime.cli import db_upgrade
from bot.storage.db import Base, make_engine
from tests.conftest import PG_DSN, make_settings, pg_async_url


def _diff(url: str, schema: str | None = None) -> list[Any]:
    async def run() -> list[Any]:
        engine = make_engine(url, schema=schema)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        await engine.dispose()
        return list(diff)

    return asyncio.run(run())


def test_sqlite_upgrade_matches_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    db_upgrade(make_settings(tmp_path, DATABASE_URL=url, REDIS_URL=None))
    db_upgrade(make_settings(tmp_path, DATABASE_URL=url, REDIS_URL=None))  # idempotent
    assert _diff(url) == []


@pytest.mark.services
def test_postgres_upgrade_matches_models(tmp_path: Path) -> None:
    schema = f"sanad_mig_{uuid.uuid4().hex[:8]}"

    async def create(sql: str) -> None:
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(sql)
        await conn.close()

    asyncio.run(create(f'CREATE SCHEMA "{schema}"'))
    try:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(bot.storage.models.__file__).parent / "migrations"))
        cfg.attributes["database_url"] = pg_async_url()
        cfg.attributes["schema"] = schema
        command.upgrade(cfg, "head")
        assert _diff(pg_async_url(), schema) == []
    finally:
        asyncio.run(create(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
