"""What Rasa understood each learner message as: intent, confidence and whether it fell back.

Rasa's REST answer carries only the bot's messages. Two places see the NLU result of a message
without an extra call to Rasa, and both end in `record_understanding`:

- the NLG endpoint (`bot/web/nlg.py`): Rasa POSTs the tracker, whose `latest_message` holds the
  intent, its confidence and the gateway's metadata (`inbound_id`), for every *response* it renders
  (`from_nlg_request`);
- Rasa's SQL tracker store: custom actions send their own text, so Rasa never calls the NLG for a
  turn answered only by an action (deadlines, enrolment status, the first fallback, distress…). The
  worker reads the new `user` events there (`sweep_tracker_store`).

Fallback: the intent is `nlu_fallback` or `out_of_scope`, or the out-of-scope answer was rendered.
Writes never overwrite an intent already stored, and a fallback once seen stays. A message
that fell back or was understood with low confidence becomes a review item (bot/review/inbox.py).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.privacy import tracker_store
from bot.storage.db import utcnow
from bot.storage.models import AnalyticsCursor, Contact, InboundMessage, ReviewItem

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

FALLBACK_INTENTS = frozenset({"nlu_fallback", "out_of_scope"})
FALLBACK_RESPONSES = frozenset({"utter_out_of_scope"})
# below this confidence a message goes to the review inbox even when it did not fall back
LOW_CONFIDENCE = 0.6
SWEEP_CURSOR = "rasa_user_events"
SWEEP_BATCH = 2000
SWEEP_MAX_BATCHES = 20
# events younger than this are left for the next sweep: several Rasa servers may commit out of id order
SWEEP_SETTLE_S = 30.0


@dataclass(frozen=True)
class Understanding:
    """The NLU result of one inbound message, as Rasa reported it."""

    inbound_id: int
    sender_id: str
    intent: str | None
    confidence: float | None
    fallback: bool
    # the likeliest real intent (not nlu_fallback) and its confidence: what a reviewer starts from
    best_intent: str | None
    best_confidence: float | None

    @property
    def needs_review(self) -> bool:
        return self.fallback or (self.confidence is not None and self.confidence < LOW_CONFIDENCE)


def from_parse_data(
    inbound_id: Any, sender_id: Any, parse_data: Any, response: str | None = None
) -> Understanding | None:
    """An Understanding from a message's `parse_data` (or a tracker's `latest_message`); None if unusable."""
    if not isinstance(parse_data, dict) or not isinstance(sender_id, str) or not sender_id:
        return None
    if isinstance(inbound_id, bool) or not isinstance(inbound_id, int | str) or not str(inbound_id).isdigit():
        return None
    intent_doc = parse_data.get("intent")
    intent = intent_doc.get("name") if isinstance(intent_doc, dict) else None
    confidence = _number(intent_doc.get("confidence")) if isinstance(intent_doc, dict) else None
    if not isinstance(intent, str) or not intent:
        return None
    best_intent: str | None = intent
    best_confidence = confidence
    if intent == "nlu_fallback":
        best_intent, best_confidence = None, None
        for item in parse_data.get("intent_ranking") or []:
            if isinstance(item, dict) and item.get("name") not in (None, "nlu_fallback"):
                best_intent, best_confidence = str(item["name"]), _number(item.get("confidence"))
                break
    fallback = intent in FALLBACK_INTENTS or (response or "") in FALLBACK_RESPONSES
    return Understanding(int(inbound_id), sender_id, intent[:64], confidence, fallback,
                         best_intent[:64] if best_intent else None, best_confidence)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def from_nlg_request(body: dict[str, Any]) -> Understanding | None:
    """The understanding carried by one NLG request of Rasa (tracker, latest message, response name)."""
    tracker = body.get("tracker")
    if not isinstance(tracker, dict):
        return None
    latest = tracker.get("latest_message")
    if not isinstance(latest, dict):
        return None
    metadata = latest.get("metadata")
    inbound_id = metadata.get("inbound_id") if isinstance(metadata, dict) else None
    response = body.get("response")
    return from_parse_data(inbound_id, tracker.get("sender_id"), latest,
                           response if isinstance(response, str) else None)


async def record_understanding(services: Services, items: list[Understanding]) -> int:
    """Store each message's intent, confidence and fallback; queue the doubtful ones for review.

    A message is only touched when it belongs to the contact the tracker is about (the sender id
    is the contact key), so a stray request cannot label someone else's message. Returns how
    many messages were updated."""
    if not items:
        return 0
    insert = sqlite_insert if services.db.is_sqlite else pg_insert
    updated = 0
    now = utcnow()
    async with services.db.session() as session:
        for item in items:
            owner = select(Contact.id).where(Contact.key == item.sender_id).scalar_subquery()
            result = await session.execute(
                update(InboundMessage)
                .where(InboundMessage.id == item.inbound_id, InboundMessage.contact_id == owner)
                .values(
                    intent=func.coalesce(InboundMessage.intent, item.intent),
                    intent_confidence=func.coalesce(InboundMessage.intent_confidence, item.confidence),
                    fallback=sa.or_(func.coalesce(InboundMessage.fallback, sa.false()), sa.literal(item.fallback)),
                )
                .execution_options(synchronize_session=False)
            )
            touched = int(getattr(result, "rowcount", 0) or 0)
            updated += touched
            if touched and item.needs_review:
                source = (
                    select(
                        InboundMessage.id, InboundMessage.contact_id,
                        func.coalesce(InboundMessage.language, Contact.language, "en"),
                        sa.literal(item.best_intent, sa.String()), sa.literal(item.best_confidence, sa.Float()),
                        sa.literal(item.fallback), sa.literal(now, sa.DateTime(timezone=True)),
                    )
                    .join(Contact, Contact.id == InboundMessage.contact_id)
                    .where(InboundMessage.id == item.inbound_id, InboundMessage.kind == "text",
                           sa.not_(func.coalesce(InboundMessage.text, "").startswith("/")),
                           # judged on what is stored: the first intent of the message wins
                           sa.or_(InboundMessage.fallback.is_(True),
                                  InboundMessage.intent_confidence < LOW_CONFIDENCE))
                )
                await session.execute(
                    insert(ReviewItem)
                    .from_select(["inbound_id", "contact_id", "language", "predicted_intent", "confidence",
                                  "fallback", "created_at"], source)
                    .on_conflict_do_nothing(index_elements=[ReviewItem.inbound_id])
                )
    return updated


async def record_from_nlg(services: Services, body: dict[str, Any]) -> None:
    """The NLG endpoint's hook: never lets a storage problem get in the way of the learner's answer."""
    item = from_nlg_request(body)
    if item is None:
        return
    try:
        await record_understanding(services, [item])
    except Exception as exc:  # noqa: BLE001  (the tracker store sweep records it later)
        log.warning("could not record what message %s was understood as: %s", item.inbound_id, type(exc).__name__)


# --- the tracker store sweep -----------------------------------------------------------

def _user_event(sender_id: str, data: str | None) -> Understanding | None:
    try:
        event = json.loads(data or "")
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    metadata = event.get("metadata")
    inbound_id = metadata.get("inbound_id") if isinstance(metadata, dict) else None
    return from_parse_data(inbound_id, sender_id, event.get("parse_data"))


async def sweep_tracker_store(services: Services, now_ts: float | None = None) -> int:
    """Record the understanding of the learner messages Rasa stored since the last sweep; returns how many."""
    events = tracker_store.EVENTS
    settle_before = (now_ts if now_ts is not None else time.time()) - SWEEP_SETTLE_S
    async with services.db.session() as session:
        cursor = await session.get(AnalyticsCursor, SWEEP_CURSOR)
        position = cursor.position if cursor is not None else 0
    recorded = 0
    for _ in range(SWEEP_MAX_BATCHES):
        async with tracker_store.tracker_connection(services.settings) as conn:
            if conn is None:
                return recorded
            rows = (await conn.execute(
                select(events.c.id, events.c.sender_id, events.c.data)
                .where(events.c.id > position, events.c.type_name == "user", events.c.timestamp < settle_before)
                .order_by(events.c.id).limit(SWEEP_BATCH)
            )).all()
        if not rows:
            break
        items = [item for _, sender, data in rows if (item := _user_event(str(sender), data)) is not None]
        recorded += await record_understanding(services, items)
        position = int(rows[-1][0])
        async with services.db.session() as session:
            row = await session.get(AnalyticsCursor, SWEEP_CURSOR)
            if row is None:
                session.add(AnalyticsCursor(name=SWEEP_CURSOR, position=position))
            else:
                row.position = position
        if len(rows) < SWEEP_BATCH:
            break
    return recorded


async def job(services: Services) -> None:
    """Worker job: the tracker store sweep."""
    await sweep_tracker_store(services)
