"""Crash safety: SIGKILL a worker in the middle of a broadcast to 1,000 contacts, start it again.

The bound on duplicates. The sender commits each row's outcome right after the provider call
returns, and rows it claimed but has not handed to the provider were never sent. So the only
messages that can go out twice are those whose `sendMessage` had been made (or was being made)
when the process died and whose `sent` had not been committed: they are still `sending` at the
kill, and at most one per send task is in that window. Hence
    duplicates <= rows `sending` at the kill that the double had accepted <= SANAD_SEND_CONCURRENCY.
The test measures the rows left `sending` after the kill and checks both inequalities.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.reminders.broadcasts import create_broadcast, progress
from bot.runtime.services import Services
from bot.storage.models import Contact, Outbox
from tests.bot_api_double import BotApiDouble
from tests.conftest import pg_async_url

pytestmark = pytest.mark.services

CONTACTS = 1000
CONCURRENCY = 8
REPO = Path(__file__).resolve().parents[1]

WORKER = """
import asyncio, os
from bot.runtime.settings import Settings
from bot.runtime.services import Services
from bot.reminders.broadcasts import progress
from bot.reminders.jobs import job

async def main():
    services = Services.build(Settings.from_env(), schema=os.environ["SANAD_TEST_SCHEMA"])
    broadcast_id = int(os.environ["SANAD_TEST_BROADCAST"])
    try:
        while (await progress(services, broadcast_id))["status"] != "done":
            await job(services)
            await asyncio.sleep(0.05)
    finally:
        await services.close()

asyncio.run(main())
"""


@pytest.fixture
def double() -> Iterator[BotApiDouble]:
    server = BotApiDouble(delay_s=0.004).start()
    yield server
    server.stop()


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def test_sigkill_mid_broadcast_loses_nothing_and_duplicates_only_in_flight_sends(
    services: Services, double: BotApiDouble, pg_schema: str, tmp_path: Path
) -> None:
    async with services.db.session() as session:
        session.add_all(
            Contact(key=f"telegram:{10_000 + i}", channel="telegram", address=str(10_000 + i),
                    learner_id=f"L{i}", language="en")
            for i in range(CONTACTS)
        )
    broadcast = await create_broadcast(services, texts={"en": "Exams start on Monday"}, segment={})
    # planning is not under test here: mark it done so the worker does not ask a platform
    await services.coord.cache_set("reminders:last_plan", str(time.time()), ttl_s=600)
    env = {
        **os.environ,
        "DATABASE_URL": pg_async_url(),
        "SANAD_TEST_SCHEMA": pg_schema,
        "SANAD_TEST_BROADCAST": str(broadcast.id),
        "REDIS_URL": services.settings.redis_url or "",
        "SANAD_REDIS_PREFIX": services.coord.prefix,
        "SANAD_SECRET_KEY": "test-secret-key-please-change-0123456789",
        "SANAD_VAR_DIR": str(tmp_path),
        "TELEGRAM_BOT_TOKEN": "123:crash",
        "TELEGRAM_API_BASE_URL": double.base_url,
        "TELEGRAM_RATE_PER_S": "400",
        "SANAD_SEND_CONCURRENCY": str(CONCURRENCY),
        "OUTBOX_CLAIM_TIMEOUT_S": "3",
        "PLATFORM_API_URL": "http://127.0.0.1:9",
        "RASA_URL": "http://127.0.0.1:9",
    }
    first = start_worker(env)
    deadline = time.monotonic() + 60
    while len(double.accepted) < 300:
        if first.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"worker ended early: {first.stderr.read().decode()[-2000:] if first.stderr else ''}")
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    accepted_at_kill = len(double.accepted)
    async with services.db.session() as session:
        in_flight = (
            await session.execute(select(func.count()).select_from(Outbox).where(Outbox.status == "sending"))
        ).scalar_one()
    assert accepted_at_kill < CONTACTS, "the kill came too late to test anything"

    second = start_worker(env)
    try:
        second.wait(timeout=90)
    except subprocess.TimeoutExpired:
        second.kill()
        pytest.fail("the restarted worker did not finish the broadcast")
    assert second.returncode == 0, second.stderr.read().decode()[-2000:] if second.stderr else ""

    counts = double.counts()
    duplicates = sum(n - 1 for n in counts.values())
    assert set(counts) == {str(10_000 + i) for i in range(CONTACTS)}  # everyone got it
    assert duplicates <= in_flight
    assert duplicates <= CONCURRENCY
    report = await progress(services, broadcast.id)
    assert report is not None and report["status"] == "done" and report["sent"] == CONTACTS
    print(f"killed after {accepted_at_kill} sends; {in_flight} rows were sending; duplicates={duplicates}")
