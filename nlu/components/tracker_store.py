"""Rasa's SQL tracker store with the same tables and the same answers, at a fraction of the CPU.

Profiled under bench/gateway_rasa.py (py-spy, PostgreSQL), Rasa's `SQLTrackerStore` took a third
of a turn's CPU, nearly all of it building ORM queries in SQLAlchemy: an ORM `count()` over a
subquery before every save (to know which events are new), ORM objects for every event read
and written. This subclass keeps the schema (`events`, which erasure, export and retention read
too) and the semantics (events of the latest session, ordered by id; only the events not yet
stored are written), with three precompiled statements instead. Endpoints name it
`type: components.tracker_store.SanadTrackerStore` (bot/runtime/rasa.py).

Rasa's store also runs its SQL on the event loop: while PostgreSQL answers or commits, the whole
server waits. Here the statements run in a worker thread (`asyncio.to_thread`), so other
conversations go on meanwhile; Rasa still awaits each call, and its lock keeps one turn per
conversation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator, Optional, Text

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.events import SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

# events of the latest session: from the latest session_started on, or all if there is none
_LATEST_SESSION = (
    "FROM events WHERE sender_id = :sender_id AND ("
    " timestamp >= (SELECT max(timestamp) FROM events WHERE sender_id = :sender_id AND type_name = :started)"
    " OR (SELECT max(timestamp) FROM events WHERE sender_id = :sender_id AND type_name = :started) IS NULL)"
)
_SELECT_DATA = sa.text(f"SELECT data {_LATEST_SESSION} ORDER BY id")
_COUNT = sa.text(f"SELECT count(*) {_LATEST_SESSION}")


class SanadTrackerStore(SQLTrackerStore):  # type: ignore[misc]
    """SQLTrackerStore with plain statements for the three queries of every turn."""

    @staticmethod
    def _params(sender_id: Text) -> dict[str, Any]:
        return {"sender_id": sender_id, "started": SessionStarted.type_name}

    async def _retrieve(
        self, sender_id: Text, fetch_events_from_all_sessions: bool
    ) -> Optional[DialogueStateTracker]:
        if fetch_events_from_all_sessions:
            return await super()._retrieve(sender_id, fetch_events_from_all_sessions)
        return await asyncio.to_thread(self._latest_session, sender_id)

    def _latest_session(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        with self.session_scope() as session:
            rows = session.execute(_SELECT_DATA, self._params(sender_id)).fetchall()
        events = [json.loads(row[0]) for row in rows]
        if self.domain and events:
            return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)
        return None

    def _additional_events(self, session: Any, tracker: DialogueStateTracker) -> Iterator:
        stored = int(session.execute(_COUNT, self._params(tracker.sender_id)).scalar() or 0)
        return iter(list(tracker.events)[stored:])

    async def save(self, tracker: DialogueStateTracker) -> None:
        await self.stream_events(tracker)
        await asyncio.to_thread(self._save_new_events, tracker)

    def _save_new_events(self, tracker: DialogueStateTracker) -> None:
        with self.session_scope() as session:
            rows = []
            for event in self._additional_events(session, tracker):
                data = event.as_dict()
                rows.append({
                    "sender_id": tracker.sender_id,
                    "type_name": event.type_name,
                    "timestamp": data.get("timestamp"),
                    "intent_name": data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
                    "action_name": data.get("name"),
                    "data": json.dumps(data),
                })
            if rows:
                session.execute(self.SQLEvent.__table__.insert(), rows)
            session.commit()
