"""Analytics: what messages were understood as (NLG and tracker store), daily roll-ups that survive
retention, the report's figures against hand-counted seeds, and `GET /api/analytics` (+ .csv)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import select

from bot.analytics.report import build_report, percentile
from bot.analytics.rollup import roll_up
from bot.analytics.understanding import sweep_tracker_store
from bot.privacy import tracker_store
from bot.privacy.retention import run_retention
from bot.runtime.services import Services
from bot.storage.models import (
    AnalyticsRollup,
    Contact,
    Handoff,
    InboundMessage,
    Outbox,
    Reminder,
    ReminderAssignment,
    ReviewItem,
)
from tests.conftest import Gateway
from tests.test_console_web import tg_update

DAY = date(2026, 3, 10)
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)
ADMIN = "admin-token-0123456789"


def nlg_body(sender: str, inbound_id: int, intent: str, confidence: float, response: str = "utter_greet",
             ranking: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What Rasa 3.6 POSTs to the NLG endpoint (trimmed to what matters here)."""
    return {"response": response, "arguments": {}, "channel": {"name": "rest"}, "tracker": {
        "sender_id": sender, "slots": {}, "latest_message": {
            "text": "…", "intent": {"name": intent, "confidence": confidence},
            "intent_ranking": ranking or [{"name": intent, "confidence": confidence}],
            "metadata": {"inbound_id": inbound_id, "language": "en"}}}}


async def messages_of(services: Services) -> list[InboundMessage]:
    async with services.db.session() as s:
        return list((await s.execute(select(InboundMessage).order_by(InboundMessage.id))).scalars())


# --- what a message was understood as -------------------------------------------------------

async def test_nlg_records_intent_confidence_and_fallback_of_the_inbound_message(gateway: Gateway) -> None:
    await gateway.telegram(tg_update(1, "when is my essay due"))
    await gateway.telegram(tg_update(2, "qwzx blorp", chat_id=777))
    await gateway.settle()
    first, second = await messages_of(gateway.services)
    assert first.intent is None
    ok = await gateway.client.post("/nlg", json=nlg_body("telegram:424242", first.id, "ask_deadline", 0.93))
    assert ok.status_code == 200 and ok.json()["text"]
    ranking = [{"name": "nlu_fallback", "confidence": 0.25}, {"name": "ask_certificate", "confidence": 0.21}]
    await gateway.client.post("/nlg", json=nlg_body("telegram:777", second.id, "nlu_fallback", 0.25,
                                                    "utter_offer_mentor", ranking))
    # a stray request naming someone else's message changes nothing
    await gateway.client.post("/nlg", json=nlg_body("telegram:777", first.id, "nlu_fallback", 0.1))
    # a second response of the same turn keeps the first intent
    await gateway.client.post("/nlg", json=nlg_body("telegram:424242", first.id, "greet", 0.5))
    first, second = await messages_of(gateway.services)
    assert (first.intent, first.intent_confidence, first.fallback) == ("ask_deadline", 0.93, False)
    assert (second.intent, second.fallback) == ("nlu_fallback", True)
    async with gateway.services.db.session() as s:
        items = (await s.execute(select(ReviewItem))).scalars().all()
    assert [(i.inbound_id, i.predicted_intent, i.confidence, i.fallback) for i in items] == [
        (second.id, "ask_certificate", 0.21, True)]


async def test_out_of_scope_answer_counts_as_fallback_and_low_confidence_goes_to_review(gateway: Gateway) -> None:
    await gateway.telegram(tg_update(1, "what is the weather"))
    await gateway.telegram(tg_update(2, "can i get my paper thing", chat_id=778))
    await gateway.settle()
    weather, paper = await messages_of(gateway.services)
    await gateway.client.post("/nlg", json=nlg_body("telegram:424242", weather.id, "ask_capabilities", 0.7,
                                                    "utter_out_of_scope"))
    await gateway.client.post("/nlg", json=nlg_body("telegram:778", paper.id, "ask_certificate", 0.41,
                                                    "utter_anything_else"))
    weather, paper = await messages_of(gateway.services)
    assert weather.fallback is True and paper.fallback is False
    async with gateway.services.db.session() as s:
        items = {i.inbound_id: i for i in (await s.execute(select(ReviewItem))).scalars()}
    assert set(items) == {weather.id, paper.id} and not items[paper.id].fallback


async def test_tracker_store_sweep_records_turns_answered_by_custom_actions(gateway: Gateway) -> None:
    """Rasa renders a custom action's text itself (no NLG call): the sweep reads the stored user event."""
    await gateway.telegram(tg_update(1, "am I enrolled"))
    await gateway.telegram(tg_update(2, "asdf", chat_id=779))
    await gateway.settle()
    enrolled, gibberish = await messages_of(gateway.services)
    settings = gateway.services.settings
    engine = sa.create_engine(tracker_store.tracker_store_url(settings))
    tracker_store.EVENTS.metadata.create_all(engine)
    old = 1_700_000_000.0

    def user(sender: str, inbound: int, intent: str, confidence: float) -> dict[str, Any]:
        data = {"event": "user", "timestamp": old, "text": "x", "metadata": {"inbound_id": inbound},
                "parse_data": {"intent": {"name": intent, "confidence": confidence},
                               "intent_ranking": [{"name": intent, "confidence": confidence},
                                                  {"name": "ask_deadline", "confidence": 0.2}]}}
        return {"sender_id": sender, "type_name": "user", "timestamp": old, "intent_name": intent,
                "action_name": None, "data": json.dumps(data)}

    with engine.begin() as conn:
        conn.execute(sa.insert(tracker_store.EVENTS), [
            user("telegram:424242", enrolled.id, "ask_enrolment_status", 0.97),
            {"sender_id": "telegram:424242", "type_name": "action", "timestamp": old, "intent_name": None,
             "action_name": "x", "data": "{}"},
            user("telegram:779", gibberish.id, "nlu_fallback", 0.25),
            user("telegram:779", 999_999, "greet", 1.0),  # no such message
        ])
    engine.dispose()
    assert await sweep_tracker_store(gateway.services) == 2
    assert await sweep_tracker_store(gateway.services) == 0  # the cursor moved on
    enrolled, gibberish = await messages_of(gateway.services)
    assert (enrolled.intent, gibberish.intent, gibberish.fallback) == ("ask_enrolment_status", "nlu_fallback", True)
    async with gateway.services.db.session() as s:
        item = (await s.execute(select(ReviewItem))).scalar_one()
    assert (item.inbound_id, item.predicted_intent) == (gibberish.id, "ask_deadline")


# --- seeds with counts known by hand ---------------------------------------------------------

async def seed(services: Services) -> None:
    """Day DAY: 3 contacts (en, ar, fa); 4 conversations, one handed off; 2 hand-offs; 3 reminders."""
    at = T0
    async with services.db.session() as s:
        en = Contact(key="telegram:1", channel="telegram", address="1", language="en", learner_id="L1")
        ar = Contact(key="telegram:2", channel="telegram", address="2", language="ar", learner_id="L2")
        fa = Contact(key="whatsapp:+3", channel="whatsapp", address="+3", language="fa")
        s.add_all([en, ar, fa])
        await s.flush()

        def msg(contact: Contact, minutes: float, intent: str | None = None, fallback: bool = False,
                language: str | None = None) -> InboundMessage:
            n = len(s.new) + 1000 + int(minutes * 10)
            return InboundMessage(contact_id=contact.id, channel=contact.channel, dedup_key=f"k{contact.id}:{n}",
                                  text="t", created_at=at + timedelta(minutes=minutes), status="done",
                                  intent=intent, intent_confidence=0.9 if intent else None, fallback=fallback,
                                  language=language)

        s.add_all([
            # en: two conversations (gap of 40 min), the second handed off
            msg(en, 0, "greet"), msg(en, 10, "ask_deadline"), msg(en, 50, "nlu_fallback", True),
            msg(en, 55, "request_human"),
            # ar: one conversation, detected language of its first message is ar
            msg(ar, 5, "ask_deadline", language="ar"), msg(ar, 20, "ask_deadline", language="ar"),
            # fa: one conversation of a message without intent (a voice note), and a fallback later
            msg(fa, 30), msg(fa, 45, "out_of_scope", True),
            # the day before (its own day) and a message just before midnight continuing after
            msg(ar, -24 * 60),
        ])
        handed = Handoff(contact_id=en.id, reason="request_human", language="en", state="resolved",
                         created_at=at + timedelta(minutes=56), resolved_at=at + timedelta(minutes=56 + 60),
                         satisfaction=4)
        unanswered = Handoff(contact_id=fa.id, reason="fallback", language="fa", urgent=True, state="resolved",
                             created_at=at + timedelta(hours=10), resolved_at=at + timedelta(hours=12),
                             satisfaction=2)
        s.add_all([handed, unanswered])
        await s.flush()
        # the mentor answered the first hand-off after 5 minutes (within the 15-minute target)
        s.add(Outbox(contact_id=en.id, channel="telegram", origin="mentor", text="hi", status="sent",
                     created_at=at + timedelta(minutes=61)))
        sent = Outbox(contact_id=en.id, channel="telegram", origin="reminder", text="r", status="sent",
                      delivery_status="read", created_at=at)
        failed = Outbox(contact_id=ar.id, channel="telegram", origin="reminder", text="r", status="failed",
                        created_at=at)
        s.add_all([sent, failed])
        await s.flush()
        for key, contact, outbox, status in (("a", en, sent, "sent"), ("b", ar, failed, "sent"),
                                             ("c", ar, None, "cancelled"), ("d", en, None, "expired")):
            s.add(Reminder(idempotency_key=f"reminder:{key}", learner_id="L", contact_id=contact.id,
                           deadline_id=key, offset_h=24, due_at=at + timedelta(days=1), send_at=at,
                           status=status, outbox_id=outbox.id if outbox else None))
        s.add(ReminderAssignment(learner_id="L9", deadline_id="d9", arm="held_out", language="ar",
                                 due_at=at + timedelta(hours=3)))


EXPECTED = {
    "conversations": {"total": 4, "contained": 3, "handed_off": 1, "containment_rate": 0.75},
    "messages": {"inbound": 8, "fallback": 2, "fallback_rate": 0.25,
                 "by_language": {"ar": {"inbound": 2, "fallback": 0}, "en": {"inbound": 4, "fallback": 1},
                                 "fa": {"inbound": 2, "fallback": 1}}},
    "intents": {"ask_deadline": 3, "greet": 1, "nlu_fallback": 1, "out_of_scope": 1, "request_human": 1},
    "handoffs": {"total": 2, "urgent": 1, "first_response_s": {"p50": 300, "p90": 300},
                 "resolution_s": {"p50": 5400, "p90": 6840}, "sla_met_rate": 0.5,
                 "satisfaction": {"answers": 2, "mean": 3.0}},
    "reminders": {"planned": 3, "sent": 1, "delivered": 1, "read": 1, "failed": 1, "held_out": 1},
    "effect": {"reminded": {"deadlines": 0, "on_time": 0}, "held_out": {"deadlines": 0, "on_time": 0},
               "difference_pp": None, "ci95_pp": None},
}


@pytest.fixture(params=["postgres", "sqlite"])
def any_services(request: pytest.FixtureRequest) -> Services:
    """Services on PostgreSQL + Redis, then on the embedded default."""
    found: Services = request.getfixturevalue("services" if request.param == "postgres" else "sqlite_services")
    return found


async def test_report_counts_match_the_definitions_and_survive_retention(any_services: Services) -> None:
    services = any_services
    await seed(services)
    raw = await build_report(services, DAY, DAY, now=NOW)
    assert raw.as_json() == EXPECTED
    assert await roll_up(services, now=NOW) == 3  # the day before, DAY and the next day (the fa hand-off's)
    async with services.db.session() as s:
        assert (await s.get(AnalyticsRollup, DAY.isoformat())) is not None
    assert (await build_report(services, DAY, DAY, now=NOW)).as_json() == EXPECTED
    # a year later retention deletes every raw row of the day; the figures stay
    later = NOW + timedelta(days=400)
    deleted = (await run_retention(services, later)).deleted
    assert deleted["inbound_messages"] == 9 and deleted["handoffs"] == 2
    assert (await build_report(services, DAY, DAY, now=later)).as_json() == EXPECTED
    # one language: its own counts only
    arabic = (await build_report(services, DAY, DAY, "ar", now=later)).as_json()
    assert arabic["messages"]["inbound"] == 2 and arabic["conversations"]["total"] == 1
    assert arabic["reminders"]["held_out"] == 1 and arabic["handoffs"]["total"] == 0


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 0.5) is None
    assert percentile([300], 0.9) == 300
    assert percentile([3600, 7200], 0.9) == 6840
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5) == 6  # 5.5 rounds to even: 6


# --- the admin API ---------------------------------------------------------------------------

@pytest.fixture
async def admin_api(pg_schema: str, tmp_path: Path) -> Any:
    """The gateway app with ADMIN_API_TOKEN set, over in-process HTTP."""
    from bot.web.app import create_app
    from tests.conftest import make_settings, release

    services = Services.build(make_settings(tmp_path, ADMIN_API_TOKEN=ADMIN), schema=pg_schema)
    app = create_app(services, run_worker=False, redelivery_interval_s=0)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield services, client
    finally:
        await release(services, pg_schema)


async def test_api_analytics_json_and_csv(admin_api: Any) -> None:
    services, client = admin_api
    await seed(services)
    auth = {"authorization": f"Bearer {ADMIN}"}
    url = f"/api/analytics?from={DAY.isoformat()}&to={DAY.isoformat()}"
    assert (await client.get(url)).status_code == 401
    assert (await client.get(url, headers={"authorization": "Bearer wrong"})).status_code == 401
    answer = await client.get(url, headers=auth)
    assert answer.status_code == 200 and answer.json() == EXPECTED
    assert set(answer.json()) == {"conversations", "messages", "intents", "handoffs", "reminders", "effect"}
    persian = (await client.get(url + "&language=fa", headers=auth)).json()
    assert persian["messages"]["by_language"] == {"fa": {"inbound": 2, "fallback": 1}}
    assert persian["handoffs"]["first_response_s"] == {"p50": None, "p90": None}
    for bad in ("from=2026-13-01", "from=2026-03-10&to=2026-03-01", "language=tr", "from=2020-01-01&to=2026-01-01"):
        response = await client.get(f"/api/analytics?{bad}", headers=auth)
        assert response.status_code == 400 and "error" in response.json(), bad
    csv_text = (await client.get(f"/api/analytics.csv?from={(DAY - timedelta(days=1)).isoformat()}"
                                 f"&to={DAY.isoformat()}", headers=auth)).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("day,inbound,fallback,conversations,handed_off,handoffs,urgent")
    assert len(lines) == 3 and lines[1].startswith("2026-03-09,1,0,1,0,0,0")
    assert lines[2].startswith("2026-03-10,8,2,4,1,2,1")
    # nothing personal: no key, address or learner id in either answer
    for text in (answer.text, csv_text):
        assert not any(needle in text for needle in ("telegram:1", "whatsapp:+3", "L1", "L9"))


async def test_api_is_off_without_a_token(gateway: Gateway) -> None:
    response = await gateway.client.get("/api/analytics")
    assert response.status_code == 404


async def test_report_cache_builds_once_for_requests_arriving_together() -> None:
    import asyncio

    from bot.analytics.cache import ReportCache

    builds = 0

    async def build() -> int:
        nonlocal builds
        builds += 1
        await asyncio.sleep(0.01)
        return builds

    cache = ReportCache(ttl_s=60)
    assert await asyncio.gather(*(cache.get("k", build) for _ in range(9))) == [1] * 9
    assert await cache.get("k", build) == 1 and builds == 1
    assert await cache.get("other", build) == 2

    async def broken() -> int:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        await cache.get("x", broken)
    assert await cache.get("x", build) == 3  # a failed build is not kept
