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

from bot.runtime.services import Services
from bot.runtime.settings import Settings
from bot.storage.db import Base

PG_DSN = os.environ.get("SANAD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SANAD_TEST_REDIS", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]
SCHEMA = f"sanad_t_{RUN_ID}"
DATA_DIR = Path(__file__).parent / "data"
SHARED_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `services` every test that needs PostgreSQL or Redis: `make test-fast` leaves them out."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_schema" in getattr(item, "fixturenames", ()) or {"postgres", "redis"} & set(map(str, params.values())):
            item.add_marker(pytest.mark.services)


def pg_async_url() -> str:
    return PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """One PostgreSQL schema for the whole run, with every table, dropped at the end."""

    async def setup() -> None:
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'CREATE SCHEMA "{SCHEMA}"')
        await conn.close()
        import bot.storage.models  # noqa: F401
        from bot.storage.db import Database

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
    import bot.storage.models  # noqa: F401

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


async def release(svc: Services, schema: str | None) -> None:
    """Drop a test's Redis keys, close its services and (with a schema) empty its tables."""
    redis = getattr(svc.coord, "redis", None)
    if redis is not None:
        async for key in redis.scan_iter(match=svc.coord.prefix + "*"):
            await redis.delete(key)
    await svc.close()
    if schema is not None:
        await truncate_all(schema)


@pytest.fixture
async def pg_services(pg_schema: str, tmp_path: Path) -> AsyncIterator[Services]:
    """Services on the run's PostgreSQL schema and a fresh Redis prefix; tables emptied after."""
    svc = Services.build(make_settings(tmp_path), schema=pg_schema)
    try:
        yield svc
    finally:
        await release(svc, pg_schema)


@pytest.fixture
def services(pg_services: Services) -> Services:
    """Services on PostgreSQL + Redis (a module may override `services` with `any_services`)."""
    return pg_services


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


@pytest.fixture(params=["postgres", "sqlite"])
def any_services(request: pytest.FixtureRequest) -> Services:
    """Services on PostgreSQL + Redis, then on the embedded default (SQLite, no Redis)."""
    svc: Services = request.getfixturevalue("pg_services" if request.param == "postgres" else "sqlite_services")
    return svc


# --- the gateway with local doubles of Telegram, Twilio and Rasa ---------------------

TELEGRAM_TOKEN = "123456:TEST-token"
TELEGRAM_SECRET = "telegram-webhook-secret"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-auth-token"
TWILIO_FROM = "whatsapp:+14155238886"


class Gateway:
    """A running gateway app (in-process ASGI) and the doubles it talks to."""

    def __init__(self, services: Services, app: Any, client: Any, bot_api: Any, twilio: Any, rasa: Any) -> None:
        self.services, self.app, self.client = services, app, client
        self.bot_api, self.twilio, self.rasa = bot_api, twilio, rasa

    async def telegram(self, update: dict[str, Any] | bytes, secret: str | None = TELEGRAM_SECRET) -> Any:
        body = update if isinstance(update, bytes) else __import__("json").dumps(update).encode()
        headers = {"content-type": "application/json"}
        if secret is not None:
            headers["x-telegram-bot-api-secret-token"] = secret
        return await self.client.post("/webhooks/telegram", content=body, headers=headers)

    async def whatsapp(self, form: dict[str, str], path: str = "/webhooks/whatsapp", sign: bool = True,
                       signature: str | None = None) -> Any:
        from twilio.request_validator import RequestValidator

        headers = {"content-type": "application/x-www-form-urlencoded"}
        if signature is not None:
            headers["x-twilio-signature"] = signature
        elif sign:
            url = self.services.settings.public_base_url + path
            headers["x-twilio-signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
        return await self.client.post(path, data=form, headers=headers)

    async def settle(self) -> None:
        """Wait for the conversations and what they started after their commits (deliveries, the mentor group)."""
        from bot.mentoring import events

        await self.services.conversations.drain()
        await events.drain()
        await self.services.conversations.drain()


def gateway_env(bot_api_url: str, twilio_url: str, rasa_url: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "TELEGRAM_API_BASE_URL": bot_api_url,
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_WHATSAPP_FROM": TWILIO_FROM,
        "TWILIO_API_BASE_URL": twilio_url,
        "RASA_URL": rasa_url,
        "RASA_TIMEOUT_S": "3",
    }


async def _gateway(services_factory: Any) -> AsyncIterator[Gateway]:
    import httpx

    from bot.web.app import create_app
    from tests.doubles import BotApiDouble, RasaDouble, TwilioDouble

    async with BotApiDouble() as bot_api, TwilioDouble() as twilio, RasaDouble() as rasa:
        services = await services_factory(gateway_env(bot_api.url, twilio.url, rasa.url))
        app = create_app(services, run_worker=False, redelivery_interval_s=0)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Gateway(services, app, client, bot_api, twilio, rasa)


@pytest.fixture
async def pg_gateway(pg_schema: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway on PostgreSQL + Redis with Telegram, WhatsApp and Rasa doubles."""
    built: list[Services] = []

    async def factory(env: dict[str, str]) -> Services:
        svc = Services.build(make_settings(tmp_path, **env), schema=pg_schema)
        built.append(svc)
        return svc

    try:
        async for gw in _gateway(factory):
            yield gw
    finally:
        for svc in built:
            await release(svc, None)
        await truncate_all(pg_schema)


@pytest.fixture
def gateway(pg_gateway: Gateway) -> Gateway:
    """The gateway on PostgreSQL + Redis (a module may override `gateway` with `any_gateway`)."""
    return pg_gateway


@pytest.fixture(params=["postgres", "sqlite"])
def any_gateway(request: pytest.FixtureRequest) -> Gateway:
    """The gateway on PostgreSQL + Redis, then on the embedded default (SQLite, no Redis)."""
    gateway: Gateway = request.getfixturevalue("pg_gateway" if request.param == "postgres" else "sqlite_gateway")
    return gateway


@pytest.fixture
async def sqlite_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway on the embedded default (SQLite, no Redis) with the same doubles."""
    built: list[Services] = []

    async def factory(env: dict[str, str]) -> Services:
        env = dict(env, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'sanad.db'}")
        settings = make_settings(tmp_path, REDIS_URL=None, **env)
        svc = Services.build(settings)
        await svc.db.create_all()
        built.append(svc)
        return svc

    try:
        async for gw in _gateway(factory):
            yield gw
    finally:
        for svc in built:
            await svc.close()
