"""SanadTrackerStore writes the same rows and reads the same trackers as Rasa's SQLTrackerStore (run from nlu/)."""

import asyncio
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, ".")

from components.tracker_store import SanadTrackerStore
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker


def rows(store: Any) -> list[tuple[Any, ...]]:
    event = store.SQLEvent
    with store.session_scope() as session:
        return [(r.sender_id, r.type_name, r.timestamp, r.intent_name, r.action_name, r.data)
                for r in session.query(event).order_by(event.id)]


async def main() -> None:
    domain = Domain.load("domain.yml")
    folder = tempfile.mkdtemp()
    ours = SanadTrackerStore(domain=domain, dialect="sqlite", db=os.path.join(folder, "a.db"))
    theirs = SQLTrackerStore(domain=domain, dialect="sqlite", db=os.path.join(folder, "b.db"))
    now = time.time()
    turns = [
        [ActionExecuted("action_session_start", timestamp=now), SessionStarted(timestamp=now + 1),
         ActionExecuted("action_listen", timestamp=now + 2),
         UserUttered("hi", {"name": "greet", "confidence": 1.0}, timestamp=now + 3)],
        [ActionExecuted("utter_greet", timestamp=now + 4), SlotSet("awaiting_place", True, timestamp=now + 5)],
        [ActionExecuted("action_session_start", timestamp=now + 100), SessionStarted(timestamp=now + 101),
         UserUttered("bye", {"name": "goodbye", "confidence": 1.0}, timestamp=now + 102)],
    ]
    for store in (ours, theirs):
        tracker = DialogueStateTracker("s1", domain.slots)
        for turn in turns:
            for event in turn:
                tracker.update(event)
            await store.save(tracker)
    assert rows(ours) == rows(theirs), "rows differ"
    mine, rasas = await ours.retrieve("s1"), await theirs.retrieve("s1")
    assert [e.as_dict() for e in mine.events] == [e.as_dict() for e in rasas.events], "latest session differs"
    mine, rasas = await ours.retrieve_full_tracker("s1"), await theirs.retrieve_full_tracker("s1")
    assert [e.as_dict() for e in mine.events] == [e.as_dict() for e in rasas.events], "full tracker differs"
    assert await ours.retrieve("nobody") is None
    print("same rows and trackers as SQLTrackerStore:", len(rows(ours)), "rows")


asyncio.run(main())
