"""The learner's record from the platform, shown beside a conversation in the console."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.storage.db import utcnow

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)
DEADLINE_WINDOW = timedelta(days=30)


@dataclass
class LearnerRecord:
    """Plain data for the template; `error` says why parts are missing."""

    learner_id: str | None
    learner: dict[str, Any] | None = None
    enrolments: list[dict[str, Any]] = field(default_factory=list)
    deadlines: list[dict[str, Any]] = field(default_factory=list)
    credits: list[dict[str, Any]] = field(default_factory=list)
    ects_earned: float = 0.0
    ects_in_progress: float = 0.0
    error: str | None = None


def _plain(item: Any) -> dict[str, Any]:
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        result = dump()
        return dict(result) if isinstance(result, dict) else {}
    return dict(item) if isinstance(item, dict) else {}


async def load_record(services: Services, learner_id: str | None) -> LearnerRecord:
    """Enrolments, the next deadlines and credits; a platform outage gives a record with `error` set."""
    record = LearnerRecord(learner_id=learner_id)
    if not learner_id:
        record.error = "This chat is not linked to a learner account."
        return record
    try:
        client = services.platform
        now = utcnow()
        record.learner = _plain(await client.learner(learner_id))
        record.enrolments = [_plain(e) for e in await client.enrolments(learner_id)]
        deadlines = [_plain(d) for d in await client.deadlines(learner_id, now, now + DEADLINE_WINDOW)]
        record.deadlines = sorted((d for d in deadlines if not d.get("submitted_at")),
                                  key=lambda d: str(d.get("due_at")))[:5]
        record.credits = [_plain(c) for c in await client.credits(learner_id)]
    except Exception:  # (any platform failure: the console still shows the conversation)
        log.warning("learner record unavailable", exc_info=True)
        record.error = "The learning platform is not reachable right now; the record cannot be shown."
        return record
    record.ects_earned = sum(float(c.get("ects") or 0) for c in record.credits if c.get("status") == "earned")
    record.ects_in_progress = sum(float(c.get("ects") or 0) for c in record.credits if c.get("status") != "earned")
    return record
