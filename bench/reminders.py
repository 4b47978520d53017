"""Benchmarks of reminders and sending (PostgreSQL + Redis must be running).

(a) plan reminders for N learners (default 100,000) from a platform double served over HTTP
    and read through the real platform client (`GET /v1/deadlines`, pages of 1,000);
(b) send M messages (default 5,000) to a Bot API double (its own process) that enforces a token
    bucket of R msg/s and answers 429 with retry_after above it: achieved rate, 429s, CPU ms/message.

    .venv/bin/python bench/reminders.py [--learners 100000] [--messages 5000] [--rate 200] [--burst 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402

from bot.runtime.settings import Settings  # noqa: E402
from bot.storage.db import Base, Database  # noqa: E402

PG_DSN = os.environ.get("SANAD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SANAD_BENCH_REDIS", "redis://127.0.0.1:6379/0")
ZONES = ["Asia/Damascus", "Asia/Kabul", "Europe/Berlin", "Africa/Cairo", "Asia/Amman", "Europe/Paris", "UTC"]
LANGS = ["ar", "fa", "en", "fr", "de"]
PAGE = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(schema: str, **env: str) -> Settings:
    base = {
        "DATABASE_URL": PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1),
        "REDIS_URL": REDIS_URL,
        "SANAD_REDIS_PREFIX": f"sanadbench:{schema}:",
        "SANAD_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijkl",
        "SANAD_VAR_DIR": str(REPO / "var" / "bench"),
        "RASA_URL": "http://127.0.0.1:9",
        **env,
    }
    return Settings.from_env(base, dotenv=REPO / "var" / "bench" / "none.env")


async def create_schema() -> str:
    import bot.storage.models  # noqa: F401

    schema = f"sanad_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    db = Database(PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1), schema=schema)
    async with db.engine.begin() as c:
        await c.run_sync(Base.metadata.create_all)
    await db.dispose()
    return schema


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()


async def copy_contacts(schema: str, count: int, linked: bool) -> None:
    now = datetime.now(UTC)
    records = [
        (f"telegram:{100_000_000 + i}", "telegram", str(100_000_000 + i), f"L{i}" if linked else None,
         LANGS[i % len(LANGS)], ZONES[i % len(ZONES)], "bot", False, False, 0, now, now if linked else None)
        for i in range(count)
    ]
    conn = await asyncpg.connect(PG_DSN)
    await conn.copy_records_to_table(
        "contacts", schema_name=schema, records=records,
        columns=["key", "channel", "address", "learner_id", "language", "timezone", "mode",
                 "reminders_opt_out", "stopped", "pin_failures", "created_at", "linked_at"],
    )
    await conn.close()


# --- (a) planning ------------------------------------------------------------------

def deadline_pages(learners: int, now: datetime) -> list[bytes]:
    """Two deadlines per learner in the window: one in ~3 days (its 24 h reminder), one in ~7.5
    days (168 h and 24 h reminders) -> 3 reminders per learner."""
    items: list[dict[str, Any]] = []
    for i in range(learners):
        for n, due in enumerate((now + timedelta(days=3, minutes=i % 1440),
                                 now + timedelta(days=7, hours=12, minutes=i % 720))):
            items.append({
                "learner_id": f"L{i}", "id": f"d{i}-{n}", "course_id": f"c{i % 40}",
                "course_title": f"Course {i % 40}", "title": f"Assignment {n + 1}",
                "kind": "assignment" if n else "exam", "due_at": due.isoformat(), "submitted_at": None,
            })
    pages = []
    for start in range(0, len(items), PAGE):
        more = start + PAGE < len(items)
        pages.append(json.dumps({"items": items[start:start + PAGE],
                                 "next_cursor": str(start // PAGE + 1) if more else None}).encode())
    return pages


async def platform_double(pages: list[bytes]) -> tuple[web.AppRunner, str]:
    async def deadlines(request: web.Request) -> web.Response:
        index = int(request.query.get("cursor") or 0)
        return web.Response(body=pages[index], content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/deadlines", deadlines)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def bench_planning(learners: int) -> None:
    from bot.reminders.planner import plan_reminders
    from bot.runtime.services import Services
    from integrations.platform import PlatformClient

    schema = await create_schema()
    try:
        await copy_contacts(schema, learners, linked=True)
        now = datetime.now(UTC).replace(microsecond=0)
        pages = deadline_pages(learners, now)
        runner, url = await platform_double(pages)
        services = Services.build(settings_for(schema), schema=schema)
        client = PlatformClient(url, "bench", None, read_timeout_s=30.0)
        try:
            first = await plan_reminders(services, client, now)
            second = await plan_reminders(services, client, now + timedelta(minutes=15))
        finally:
            await client.aclose()
            await services.close()
            await runner.cleanup()
        print(f"(a) planning, {learners:,} learners, {first.deadlines_seen:,} deadlines (HTTP pages of {PAGE}):")
        print(f"    first pass : {first.seconds:6.2f} s  ({first.upserted:,} reminders inserted)")
        print(f"    second pass: {second.seconds:6.2f} s  ({second.upserted:,} checked; unchanged ones not rewritten)")
        print(f"    goal < 10 s: {'met' if max(first.seconds, second.seconds) < 10 else 'NOT met'}")
    finally:
        await drop_schema(schema)


# --- (b) sending -------------------------------------------------------------------

async def bench_sending(messages: int, rate: float, burst: float, concurrency: int) -> None:
    from sqlalchemy import func, select

    from bot.outbox.sender import OutboxSender
    from bot.runtime.services import Services
    from bot.storage.models import Outbox

    port = free_port()
    double = subprocess.Popen(
        [sys.executable, "-c", f"from tests.bot_api_double import serve; serve({port}, {rate}, {burst})"],
        cwd=REPO,
    )
    schema = await create_schema()
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        await copy_contacts(schema, messages, linked=False)
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(
            f'INSERT INTO "{schema}".outbox (contact_id, channel, origin, text, status, attempts, next_attempt_at,'
            f" created_at) SELECT id, 'telegram', 'broadcast', 'Exams start on Monday. Good luck!', 'queued', 0,"
            f' now(), now() FROM "{schema}".contacts'
        )
        await conn.close()
        settings = settings_for(
            schema, TELEGRAM_BOT_TOKEN="1:bench", TELEGRAM_API_BASE_URL=f"http://127.0.0.1:{port}",
            TELEGRAM_RATE_PER_S=str(rate), SANAD_SEND_CONCURRENCY=str(concurrency),
        )
        services = Services.build(settings, schema=schema)
        sender = OutboxSender(services)
        try:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            while True:
                await sender.run_once(messages)
                async with services.db.session() as session:
                    left = (await session.execute(
                        select(func.count()).select_from(Outbox).where(Outbox.status.in_(("queued", "sending")))
                    )).scalar_one()
                if not left:
                    break
                await asyncio.sleep(0.05)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        finally:
            await services.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
            stats = json.loads(resp.read())
        deviation = abs(stats["rate_per_s"] - rate) / rate * 100
        print(f"(b) sending {messages:,} messages, Bot API double limit R={rate:g} msg/s (burst {burst:g}),"
              f" {concurrency} send tasks, shared limiter in Redis:")
        print(f"    achieved rate : {stats['rate_per_s']:.1f} msg/s ({deviation:.2f}% from R; goal within 2%)")
        print(f"    429 answers   : {stats['too_many']} (goal 0); duplicates {stats['duplicates']}")
        print(f"    wall time     : {wall:.1f} s; CPU {cpu * 1000 / messages:.2f} ms/message"
              " (this process: sender, DB and Redis clients; not the servers)")
        print(f"    sender stats  : {sender.stats}")
    finally:
        double.terminate()
        double.wait()
        await drop_schema(schema)


async def reference() -> None:
    """The machine's state beside the results, so that runs on different machines compare: the load
    average, and the time of one `SELECT 1` round trip to PostgreSQL (median of 2,000)."""
    conn = await asyncpg.connect(PG_DSN)
    times = []
    for _ in range(2000):
        started = time.perf_counter()
        await conn.fetchval("SELECT 1")
        times.append(time.perf_counter() - started)
    await conn.close()
    times.sort()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"machine: load average {load}; {os.cpu_count()} cores; one SELECT 1 round trip "
          f"p50 {times[len(times) // 2] * 1e6:.0f} µs, p90 {times[int(len(times) * 0.9)] * 1e6:.0f} µs")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=200.0, help="R, the double's limit and ours (msg/s)")
    parser.add_argument("--burst", type=float, default=5.0, help="the double's bucket size (jitter tolerance)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--only", choices=("plan", "send"))
    args = parser.parse_args()
    await reference()
    if args.only != "send":
        await bench_planning(args.learners)
    if args.only != "plan":
        await bench_sending(args.messages, args.rate, args.burst, args.concurrency)
    await reference()  # again after the runs: the load they met


if __name__ == "__main__":
    asyncio.run(main())
