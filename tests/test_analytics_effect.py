"""The reminder experiment: random hold-out in the planner, outcomes read from the platform after the
deadlines, and the effect with its Newcombe–Wilson interval, recovered from a simulated platform
where a reminder raises on-time submission by a known amount."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.analytics.effect import MIN_PER_ARM, estimate, newcombe, wilson
from bot.analytics.holdout import check_outcomes
from bot.analytics.report import effects
from bot.outbox.sender import OutboxSender
from bot.reminders.dispatch import dispatch_due_reminders
from bot.reminders.planner import plan_reminders
from bot.runtime.services import Services
from bot.runtime.settings import LANGUAGES
from bot.storage.db import utcnow
from bot.storage.models import Contact, Reminder, ReminderAssignment
from integrations.demo_platform import BackgroundServer
from tests.conftest import gateway_env, make_settings, release
from tests.doubles import BotApiDouble, RasaDouble, TwilioDouble

TOKEN = "simulated-platform-token"


# --- the interval itself ----------------------------------------------------------------------

def test_wilson_and_newcombe_match_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10: 56/70 - 48/80 and 9/10 - 3/10
    difference, low, high = newcombe(56, 70, 48, 80)
    assert round(difference, 4) == 0.2 and round(low, 4) == 0.0524 and round(high, 4) == 0.3339
    assert [round(v, 4) for v in newcombe(9, 10, 3, 10)] == [0.6, 0.1705, 0.8090]
    low1, high1 = wilson(81, 263)  # Newcombe (1998), Stat Med 17:857, example (c)
    assert (round(low1, 4), round(high1, 4)) == (0.2553, 0.3662)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_not_enough_data_below_the_stated_size() -> None:
    small = estimate(MIN_PER_ARM - 1, 20, 500, 250)
    assert small.difference_pp is None and small.ci95_pp is None and not small.enough
    assert small.as_dict()["reminded"] == {"deadlines": MIN_PER_ARM - 1, "on_time": 20}
    enough = estimate(MIN_PER_ARM, 20, MIN_PER_ARM, 10)
    assert enough.difference_pp == pytest.approx(33.3) and enough.ci95_pp is not None


def test_interval_covers_the_truth_at_about_the_nominal_rate() -> None:
    """2,000 simulated experiments (seeded): the 95 % interval holds the true difference ~95 % of the time."""
    rng = random.Random(20261202)
    p_reminded, p_held, n_reminded, n_held = 0.62, 0.47, 240, 60
    truth = 100 * (p_reminded - p_held)
    covered = 0
    runs = 2000
    for _ in range(runs):
        x1 = sum(rng.random() < p_reminded for _ in range(n_reminded))
        x0 = sum(rng.random() < p_held for _ in range(n_held))
        e = estimate(n_reminded, x1, n_held, x0)
        assert e.ci95_pp is not None
        covered += e.ci95_pp[0] <= truth <= e.ci95_pp[1]
    assert 0.93 <= covered / runs <= 0.97, covered / runs


# --- the whole loop against a simulated platform -------------------------------------------------

class SimulatedPlatform:
    """`GET /v1/deadlines` of the contract over HTTP: one deadline per learner; `submitted_at` is set
    by the simulation after the reminders went out."""

    def __init__(self, deadlines: dict[str, dict[str, Any]]) -> None:
        self.deadlines = deadlines
        self.server = BackgroundServer(Starlette(routes=[Route("/v1/deadlines", self.feed)]))

    async def feed(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        start = datetime.fromisoformat(request.query_params["from"])
        end = datetime.fromisoformat(request.query_params["to"])
        rows = [{"learner_id": lid, **doc} for lid, doc in sorted(self.deadlines.items())
                if start <= datetime.fromisoformat(doc["due_at"]) < end]
        offset = int(request.query_params.get("cursor") or 0)
        page = rows[offset: offset + 500]
        more = offset + 500 < len(rows)
        return JSONResponse({"items": page, "next_cursor": str(offset + 500) if more else None})


@pytest.fixture
async def experiment(pg_schema: str, tmp_path: Path) -> AsyncIterator[tuple[Services, BotApiDouble, dict[str, Any]]]:
    deadlines: dict[str, dict[str, Any]] = {}
    platform = SimulatedPlatform(deadlines)
    async with BotApiDouble() as bot_api, TwilioDouble() as twilio, RasaDouble() as rasa:
        with platform.server as server:
            env = gateway_env(bot_api.url, twilio.url, rasa.url) | {
                "PLATFORM_API_URL": server.url, "PLATFORM_API_TOKEN": TOKEN, "REMINDER_HOLDOUT": "0.5",
                "REMINDER_OFFSETS_H": "24", "QUIET_HOURS_START": "0", "QUIET_HOURS_END": "0",
                "TELEGRAM_RATE_PER_S": "100000", "TELEGRAM_CHAT_RATE_PER_S": "100000",
            }
            services = Services.build(make_settings(tmp_path, **env), schema=pg_schema)
            try:
                yield services, bot_api, deadlines
            finally:
                await release(services, pg_schema)


LEARNERS = 1500
BASE_RATE = 0.50
TRUE_EFFECT = 0.15  # a reminder raises the chance of submitting on time by 15 points


async def test_holdout_recovers_a_known_effect_within_its_interval(
        experiment: tuple[Services, BotApiDouble, dict[str, Any]]) -> None:
    services, bot_api, deadlines = experiment
    now = utcnow().replace(microsecond=0)
    due = now + timedelta(hours=23)  # the 24-hour reminder is an hour late: sent now (within the grace)
    async with services.db.session() as s:
        for i in range(LEARNERS):
            s.add(Contact(key=f"telegram:{50000 + i}", channel="telegram", address=str(50000 + i),
                          language=LANGUAGES[i % len(LANGUAGES)], learner_id=f"L{i}", timezone="UTC",
                          linked_at=now))
            deadlines[f"L{i}"] = {"id": f"essay-{i}", "course_id": "c1", "course_title": "Statistics",
                                  "title": "Essay", "kind": "assignment", "due_at": due.isoformat(),
                                  "submitted_at": None}

    stats = await plan_reminders(services, services.platform(), now)
    assert 0.45 * LEARNERS < stats.held_out < 0.55 * LEARNERS
    await dispatch_due_reminders(services, now)
    sender = OutboxSender(services)
    while await sender.run_once(500):
        pass
    reached = {int(m["chat_id"]) - 50000 for m in bot_api.sent}
    async with services.db.session() as s:
        arms = dict((await s.execute(select(ReminderAssignment.learner_id, ReminderAssignment.arm))).all())
    assert len(arms) == LEARNERS
    # held-out pairs got no reminder, every reminded pair exactly one
    assert reached == {int(lid[1:]) for lid, arm in arms.items() if arm == "reminded"}
    assert len(bot_api.sent) == len(reached)

    # planning again changes no assignment
    await plan_reminders(services, services.platform(), now + timedelta(minutes=5))
    async with services.db.session() as s:
        assert dict((await s.execute(select(ReminderAssignment.learner_id, ReminderAssignment.arm))).all()) == arms
        assert await s.scalar(select(func.count()).select_from(Reminder)) == len(reached)

    # the learners act; the platform records when they submitted
    rng = random.Random(7)
    for i in range(LEARNERS):
        p = BASE_RATE + (TRUE_EFFECT if i in reached else 0.0)
        if rng.random() < p:
            deadlines[f"L{i}"]["submitted_at"] = (due - timedelta(hours=2)).isoformat()
        elif rng.random() < 0.5:
            deadlines[f"L{i}"]["submitted_at"] = (due + timedelta(hours=3)).isoformat()  # late

    assert (await check_outcomes(services, services.platform(), now=due + timedelta(hours=2))).checked == 0
    outcome = await check_outcomes(services, services.platform(), now=due + timedelta(hours=7))
    assert outcome.checked == LEARNERS and outcome.missing == 0

    overall, by_language = await effects(services, now.date(), due.date(), None)
    assert overall.reminded + overall.held_out == LEARNERS
    assert overall.difference_pp is not None and overall.ci95_pp is not None
    low, high = overall.ci95_pp
    assert low <= 100 * TRUE_EFFECT <= high, overall
    assert high - low < 12  # 1,500 pairs split in two: about ±5 points
    assert set(by_language) == set(LANGUAGES) and all(e.enough for e in by_language.values())
    # a month later the learner and deadline ids are gone; the counts stay
    await check_outcomes(services, services.platform(), now=due + timedelta(days=31))
    async with services.db.session() as s:
        assert await s.scalar(select(func.count()).where(ReminderAssignment.learner_id.is_not(None))) == 0
    assert (await effects(services, now.date(), due.date(), None))[0] == overall
