"""What the reminder experiment adds to a planning pass (PostgreSQL must be running): drawing the
arm of N (learner, deadline) pairs, storing the draws, and loading them on the next pass.

    .venv/bin/python bench/holdout.py [--pairs 150000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from bot.analytics.holdout import INSERT_CHUNK, Assignments, load_assignments, record_assignments  # noqa: E402
from bot.storage.db import Base, Database, utcnow  # noqa: E402

PG_DSN = os.environ.get("SANAD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def main(pairs: int) -> None:
    schema = f"sanad_bench_holdout_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    db = Database(PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1), schema=schema)
    try:
        async with db.engine.begin() as c:
            await c.run_sync(Base.metadata.create_all)
        now = utcnow()
        draws = Assignments(holdout=0.1, known={})
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(pairs):
            draws.arm(f"L{i}", f"d{i}", now + timedelta(days=1), "ar")
        print(f"draw {pairs:,} pairs: {time.perf_counter() - wall:.2f} s ({time.process_time() - cpu:.2f} s CPU)")
        rows = draws.take_drawn()
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, len(rows), INSERT_CHUNK):
            async with db.session() as session:
                await record_assignments(session, rows[start : start + INSERT_CHUNK], True)
        print(f"store them: {time.perf_counter() - wall:.2f} s ({time.process_time() - cpu:.2f} s CPU)")
        wall = time.perf_counter()
        async with db.session() as session:
            loaded = await load_assignments(session, 0.1, now)
        print(f"load them for the next pass: {time.perf_counter() - wall:.2f} s ({len(loaded.known):,} pairs)")
    finally:
        await db.dispose()
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=150_000)
    asyncio.run(main(parser.parse_args().pairs))
