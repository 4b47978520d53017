"""Benchmark of the analytics on a year of data (PostgreSQL must be running).

Seeds a schema of its own with set-based SQL (generate_series): 1,000,000 inbound messages,
100,000 hand-offs (each with a mentor reply), 300,000 reminders (each with its outbox row) and
150,000 pairs of the reminder experiment, spread over the last 365 days. Then it measures:

(a) `GET /api/analytics` for the last 90 days with no roll-up yet (every day from the raw tables);
(b) the worker's roll-up of the whole year (one-off), and of one day;
(c) `GET /api/analytics` for 90 days once rolled up;
(d) the analytics page: its HTML and its 8 chart SVGs (as a browser loads them), and pygal alone.

    .venv/bin/python bench/analytics.py [--messages 1000000] [--handoffs 100000] [--reminders 300000] [--repeat 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from bot.runtime.services import Services  # noqa: E402
from bot.runtime.settings import Settings  # noqa: E402
from bot.storage.db import Base, Database, utcnow  # noqa: E402

PG_DSN = os.environ.get("SANAD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN = "bench-admin-token-0123456789"
CONTACTS = 20_000
INTENTS = ("greet", "goodbye", "thank", "affirm", "deny", "ask_capabilities", "ask_programme_info",
           "ask_enrolment_how", "ask_enrolment_status", "ask_deadline", "ask_extension", "ask_recognition",
           "ask_certificate", "report_technical_problem", "request_human", "express_distress", "out_of_scope",
           "nlu_fallback")


def settings_for(schema: str) -> Settings:
    return Settings.from_env({
        "DATABASE_URL": PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1),
        "SANAD_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijkl",
        "SANAD_VAR_DIR": str(REPO / "var" / "bench"),
        "RASA_URL": "http://127.0.0.1:9",
        "ADMIN_API_TOKEN": ADMIN,
        "SANAD_REDIS_PREFIX": f"sanadbench:{schema}:",
    }, dotenv=REPO / "var" / "bench" / "none.env")


def seed_sql(messages: int, handoffs: int, reminders: int) -> list[str]:
    langs = "ARRAY['en','ar','fa','fr','de']"
    intents = "ARRAY[" + ",".join(f"'{i}'" for i in INTENTS) + "]"
    return [
        f"""INSERT INTO contacts (key, channel, address, language, learner_id, mode, reminders_opt_out, stopped,
                                  pin_failures, created_at)
            SELECT 'telegram:' || g, 'telegram', g::text, ({langs})[1 + g % 5], 'L' || g, 'bot', false, false, 0,
                   now() - interval '400 days'
            FROM generate_series(1, {CONTACTS}) g""",
        f"""INSERT INTO inbound_messages (contact_id, channel, dedup_key, kind, text, language, status, routed_to,
                                          attempts, created_at, intent, intent_confidence, fallback)
            SELECT 1 + g % {CONTACTS}, 'telegram', 'bench:' || g, 'text', 'message ' || g,
                   CASE WHEN random() < 0.8 THEN ({langs})[1 + g % 5] END, 'done', 'bot', 1,
                   now() - random() * interval '365 days',
                   ({intents})[1 + floor(random() * {len(INTENTS)})::int], random(), random() < 0.12
            FROM generate_series(1, {messages}) g""",
        f"""INSERT INTO handoffs (contact_id, state, reason, urgent, language, created_at, resolved_at,
                                  last_activity_at, alert_count, outcome, satisfaction)
            SELECT 1 + g % {CONTACTS}, 'resolved', 'request_human', random() < 0.1, ({langs})[1 + g % 5], t,
                   t + (5 + random() * 600) * interval '1 minute', t, 0, 'resolved',
                   CASE WHEN random() < 0.3 THEN 1 + floor(random() * 5)::int END
            FROM (SELECT g, now() - random() * interval '365 days' AS t FROM generate_series(1, {handoffs}) g) s""",
        """INSERT INTO outbox (contact_id, channel, origin, text, status, attempts, next_attempt_at, created_at,
                               sent_at)
            SELECT contact_id, 'telegram', 'mentor', 'reply', 'sent', 1, r, r, r
            FROM (SELECT contact_id, created_at + random() * 0.9 * (resolved_at - created_at) AS r FROM handoffs) s""",
        f"""WITH o AS (
              INSERT INTO outbox (contact_id, channel, origin, text, idempotency_key, status, delivery_status,
                                  attempts, next_attempt_at, created_at, sent_at)
              SELECT 1 + g % {CONTACTS}, 'telegram', 'reminder', 'reminder', 'reminder:b:' || g,
                     CASE WHEN random() < 0.97 THEN 'sent' ELSE 'failed' END,
                     (ARRAY['delivered', 'read', 'read', NULL])[1 + floor(random() * 4)::int], 1, t, t, t
              FROM (SELECT g, now() - random() * interval '365 days' AS t FROM generate_series(1, {reminders}) g) s
              RETURNING id, contact_id, idempotency_key, created_at)
            INSERT INTO reminders (idempotency_key, learner_id, contact_id, deadline_id, offset_h, due_at, send_at,
                                   status, outbox_id, created_at, updated_at)
            SELECT idempotency_key, 'L' || contact_id, contact_id, 'd' || id, 24, created_at + interval '24 hours',
                   created_at, 'sent', id, created_at, created_at FROM o""",
        f"""INSERT INTO reminder_assignments (learner_id, deadline_id, arm, language, due_at, assigned_at, on_time,
                                              checked_at)
            SELECT 'L' || (1 + g % {CONTACTS}), 'd' || g, arm, ({langs})[1 + g % 5], t, t - interval '2 days',
                   random() < CASE WHEN arm = 'held_out' THEN 0.48 ELSE 0.61 END, t + interval '6 hours'
            FROM (SELECT g, now() - random() * interval '365 days' AS t,
                         CASE WHEN random() < 0.1 THEN 'held_out' ELSE 'reminded' END AS arm
                  FROM generate_series(1, {reminders // 2}) g) s""",
        "ANALYZE",
    ]


async def timed(label: str, work: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        times.append(time.perf_counter() - started)
    print(f"{label}: p50 {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms ({repeat} runs)")
    return times


async def main(args: argparse.Namespace) -> None:
    from bot.analytics import charts
    from bot.analytics.cache import ReportCache
    from bot.analytics.report import build_report
    from bot.analytics.rollup import aggregate_day, roll_up, store_day
    from bot.mentoring.accounts import add_mentor
    from bot.web.app import create_app
    from bot.web.console.auth import COOKIE_NAME, _serializer, new_session

    schema = f"sanad_bench_an_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    settings = settings_for(schema)
    db = Database(settings.database_url, schema=schema)
    async with db.engine.begin() as c:
        await c.run_sync(Base.metadata.create_all)
    await db.dispose()
    try:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
        started = time.perf_counter()
        for sql in seed_sql(args.messages, args.handoffs, args.reminders):
            await conn.execute(sql)
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                  for t in ("inbound_messages", "handoffs", "reminders", "outbox", "reminder_assignments")}
        await conn.close()
        print(f"seeded {counts} in {time.perf_counter() - started:.1f} s")

        services = Services.build(settings, schema=schema)
        async with services.db.session() as session:
            lead = await add_mentor(session, "lead@example.org", "bench password 123", "en", "lead")
        app = create_app(services, run_worker=False, redelivery_interval_s=0)
        cookie = _serializer(settings).dumps(new_session(lead.id))
        today = utcnow().date()
        start = today - timedelta(days=89)
        query = f"from={start.isoformat()}&to={today.isoformat()}"
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=600,
                                         headers={"authorization": f"Bearer {ADMIN}"},
                                         cookies={COOKIE_NAME: cookie}) as client:

                async def api() -> None:
                    response = await client.get(f"/api/analytics?{query}")
                    response.raise_for_status()

                await timed("(a) GET /api/analytics, 90 days, nothing rolled up (raw tables)", api, 1)

                started = time.perf_counter()
                days = await roll_up(services, max_days=1000)
                print(f"(b) roll-up of the year: {days} days in {time.perf_counter() - started:.1f} s")
                one = today - timedelta(days=10)

                async def one_day() -> None:
                    await store_day(services, one, await aggregate_day(services, one))

                await timed("(b) roll-up of one day", one_day, 5)
                await timed("(c) GET /api/analytics, 90 days, rolled up", api, args.repeat)
                await timed("(c) GET /api/analytics, 365 days, rolled up", lambda: client.get(
                    f"/api/analytics?from={(today - timedelta(days=364)).isoformat()}&to={today.isoformat()}"), 3)
                await timed("(c) GET /api/analytics.csv, 90 days", lambda: client.get(f"/api/analytics.csv?{query}"), 3)
                print(f"    answer: {(await client.get(f'/api/analytics?{query}')).json()}")

                async def html() -> None:
                    services.analytics_reports = ReportCache()  # cold: nothing built in the last minute
                    (await client.get(f"/console/analytics?{query}")).raise_for_status()

                async def page_and_charts(cold: bool = True) -> None:
                    if cold:
                        services.analytics_reports = ReportCache()
                    (await client.get(f"/console/analytics?{query}")).raise_for_status()
                    answers = await asyncio.gather(*(client.get(f"/console/analytics/chart/{name}.svg?{query}")
                                                     for name in charts.CHARTS))
                    for answer in answers:
                        answer.raise_for_status()

                await timed("(d) analytics page HTML, 90 days, cold", html, args.repeat)
                await timed("(d) page + its 8 charts, 90 days, cold (charts fetched together, as a browser does)",
                            page_and_charts, args.repeat)
                await timed("(d) the same within the minute (report shared)", lambda: page_and_charts(False),
                            args.repeat)
                report = await build_report(services, start, today)
                for name in charts.CHARTS:

                    async def render_one(chart: str = name) -> None:
                        charts.render(chart, report, "en")

                    await timed(f"    pygal alone: {name}", render_one, 5)
        await services.close()
    finally:
        if not args.keep:
            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--handoffs", type=int, default=100_000)
    parser.add_argument("--reminders", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the schema (for a second look)")
    asyncio.run(main(parser.parse_args()))
