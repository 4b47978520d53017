"""The demo platform speaks the contract: reached over real HTTP by the same client code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from integrations.demo_platform import LEARNERS, BackgroundServer, demo_app
from integrations.platform import DEMO_PLATFORM_TOKEN, LearnerNotFound, PlatformClient, PlatformUnavailable


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with BackgroundServer(demo_app(page_size=4)) as server:
        yield server.url


@pytest.fixture
async def platform(demo_url: str) -> AsyncIterator[PlatformClient]:
    client = PlatformClient(demo_url, DEMO_PLATFORM_TOKEN, cache_ttl_s=0)
    yield client
    await client.aclose()


def test_sample_learners_cover_every_language_and_status() -> None:
    assert {doc["preferred_language"] for doc in LEARNERS.values()} >= {"ar", "fa", "en", "fr", "de"}
    assert {doc["status"] for doc in LEARNERS.values()} == {"active", "paused", "alumni"}
    zones = {doc["timezone"] for doc in LEARNERS.values() if doc["preferred_language"] == "ar"}
    assert zones & {"Asia/Amman", "Europe/Berlin"}
    assert any(doc["timezone"] == "Asia/Kabul" for doc in LEARNERS.values())


async def test_every_learner_endpoint_parses(platform: PlatformClient) -> None:
    for learner_id in LEARNERS:
        learner = await platform.learner(learner_id)
        assert learner.id == learner_id
        assert await platform.enrolments(learner_id)
        await platform.deadlines(learner_id)
        assert await platform.credits(learner_id)


async def test_deadlines_are_relative_to_today(platform: PlatformClient) -> None:
    now = datetime.now(UTC)
    tz = ZoneInfo("Asia/Amman")
    items = await platform.deadlines("L1001", now - timedelta(days=7), now + timedelta(days=30))
    today = now.astimezone(tz).date()
    days = {d.title: (d.due_at.astimezone(tz).date() - today).days for d in items}
    assert days["Assignment 3: Loops and iterations"] == 1
    assert days["Assignment 4: Files"] == 7
    assert days["Assignment 2: Conditional code"] == -2  # one in the past
    submitted = [d for d in items if d.submitted]
    assert [d.title for d in submitted] == ["Quiz 4: Strings"]
    assert all(now - timedelta(days=7) <= d.due_at < now + timedelta(days=30) for d in items)
    assert "Course ends" not in days  # 40 days away: outside the window


async def test_credits_earned_and_in_progress(platform: PlatformClient) -> None:
    credits = await platform.credits("L1005")
    assert sum(c.ects for c in credits if c.status == "earned") == 15
    statuses = {c.status for c in await platform.credits("L1001")}
    assert statuses == {"earned", "in_progress"}


async def test_recognition_filters_by_country_and_university(platform: PlatformClient) -> None:
    everything = await platform.recognition()
    assert {u.country for u in everything} >= {"DE", "FR", "JO", "LB", "TR"}
    german = await platform.recognition(country="de")
    assert {u.country for u in german} == {"DE"} and len(german) == 2
    lyon = await platform.recognition(university="lyon")
    assert [u.university_id for u in lyon] == ["U-FR-LYON"]
    assert lyon[0].info_url.startswith("https://") and lyon[0].modules


async def test_global_deadlines_paginate(platform: PlatformClient, demo_url: str) -> None:
    now = datetime.now(UTC)
    pages = [p async for p in platform.deadline_pages(now - timedelta(days=1), now + timedelta(days=30))]
    items = [d for p in pages for d in p.items]
    assert len(pages) > 2 and all(len(p.items) <= 4 for p in pages)
    assert len({(d.learner_id, d.id) for d in items}) == len(items)
    assert {d.learner_id for d in items} >= {"L1001", "L1002", "L1003"}


async def test_unknown_learner_is_404(platform: PlatformClient) -> None:
    with pytest.raises(LearnerNotFound):
        await platform.learner("L9999")


async def test_token_is_checked(demo_url: str) -> None:
    wrong = PlatformClient(demo_url, "wrong-token")
    with pytest.raises(PlatformUnavailable, match="401"):
        await wrong.learner("L1001")
    await wrong.aclose()
    async with httpx.AsyncClient(base_url=demo_url) as raw:
        assert (await raw.get("/v1/recognition")).status_code == 401
        bad = await raw.get("/v1/learners/L1001/deadlines", params={"from": "yesterday"},
                            headers={"Authorization": f"Bearer {DEMO_PLATFORM_TOKEN}"})
        assert bad.status_code == 400
