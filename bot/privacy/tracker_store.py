"""Direct access to Rasa's SQL tracker store, for erasure, export and retention.

Checked in the Rasa 3.6.21 source (`rasa/core/tracker_store.py`, `rasa/server.py`):
`PUT /conversations/{id}/tracker/events` builds a tracker from the given events
and calls `tracker_store.save()`, and `SQLTrackerStore.save()` only *appends* the
events beyond the number already stored for the latest session
(`_additional_events`); it never deletes a row. Replacing the events through the
API therefore leaves every old event, with the learner's words, in the `events`
table. So Sanad deletes the rows itself (table `events`, column `sender_id`, as
in `SQLTrackerStore.SQLEvent`). `SQLTrackerStore._retrieve` reads the table on
every request: Rasa keeps no tracker in memory that would bring them back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

if TYPE_CHECKING:
    from bot.runtime.settings import Settings

_metadata = sa.MetaData()

# The same columns as rasa.core.tracker_store.SQLTrackerStore.SQLEvent (Rasa 3.6).
EVENTS = sa.Table(
    "events",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sender_id", sa.String(255), nullable=False, index=True),
    sa.Column("type_name", sa.String(255), nullable=False),
    sa.Column("timestamp", sa.Float),
    sa.Column("intent_name", sa.String(255)),
    sa.Column("action_name", sa.String(255)),
    sa.Column("data", sa.Text),
)


def tracker_store_url(settings: Settings) -> str:
    """The tracker store's URL as Rasa is configured with it (sync driver form)."""
    return settings.rasa_tracker_store_url or f"sqlite:///{settings.var_dir / 'rasa_tracker.db'}"


def async_url(url: str) -> str:
    """Map Rasa's (sync) SQLAlchemy URL onto an async driver: aiosqlite or asyncpg."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("the tracker store URL must look like dialect://...")
    base = scheme.split("+", 1)[0].lower()
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"unsupported tracker store dialect {base!r} (SQLite or PostgreSQL)")


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path)


@asynccontextmanager
async def tracker_connection(settings: Settings) -> AsyncIterator[AsyncConnection | None]:
    """A transaction on the tracker store, or None when it does not exist yet (Rasa never ran)."""
    url = tracker_store_url(settings)
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.is_file():
        yield None
        return
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            has_table = await conn.run_sync(lambda sync: sa.inspect(sync).has_table("events"))
            yield conn if has_table else None
    finally:
        await engine.dispose()


async def delete_conversations(settings: Settings, sender_ids: list[str]) -> int:
    """Delete every stored event of these conversations; returns the number of rows."""
    if not sender_ids:
        return 0
    async with tracker_connection(settings) as conn:
        if conn is None:
            return 0
        result = await conn.execute(sa.delete(EVENTS).where(EVENTS.c.sender_id.in_(sender_ids)))
        return int(result.rowcount or 0)


async def conversation_events(settings: Settings, sender_id: str) -> list[dict[str, Any]]:
    """Every stored event of a conversation (all sessions), oldest first."""
    async with tracker_connection(settings) as conn:
        if conn is None:
            return []
        rows = await conn.execute(
            sa.select(EVENTS.c.data).where(EVENTS.c.sender_id == sender_id).order_by(EVENTS.c.id)
        )
        events: list[dict[str, Any]] = []
        for (data,) in rows:
            try:
                events.append(json.loads(data))
            except (TypeError, ValueError):
                events.append({"unreadable": True})
        return events


async def delete_events_before(settings: Settings, cutoff_ts: float) -> int:
    """Retention: delete events older than `cutoff_ts` (epoch seconds) that belong to a finished session.

    Only events before the conversation's latest `session_started` go: Rasa counts the
    stored events of the current session to know which ones to append, so removing
    some of those would make it store them twice.
    """
    inner = EVENTS.alias("session_starts")
    session_start = (
        sa.select(sa.func.max(inner.c.timestamp))
        .where(inner.c.sender_id == EVENTS.c.sender_id, inner.c.type_name == "session_started")
        .scalar_subquery()
    )
    async with tracker_connection(settings) as conn:
        if conn is None:
            return 0
        result = await conn.execute(
            sa.delete(EVENTS).where(EVENTS.c.timestamp < cutoff_ts, EVENTS.c.timestamp < session_start)
        )
        return int(result.rowcount or 0)
