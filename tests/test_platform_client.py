"""Platform client against a local HTTP double: timeouts, 429, 5xx, malformed data, 404, cache, breaker."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.runtime.coordination import LocalCoordinator, RedisCoordinator
from integrations.demo_platform import BackgroundServer
from integrations.platform import (
    LearnerNotFound,
    PlatformClient,
    PlatformDataError,
    PlatformUnavailable,
    cache_prefix,
    make_platform_client,
    parse_retry_after,
)
from tests.conftest import REDIS_URL, make_settings

TOKEN = "double-token"
LEARNER = {"id": "42", "first_name": "Amina", "preferred_language": "ar", "timezone": "Asia/Amman",
           "country": "JO", "status": "active", "extra_field": "ignored"}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw: str | None = None


class PlatformDouble:
    """Scripted replies per path; counts and timestamps every request it sees."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.counts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.queries: list[dict[str, str]] = []
        self.auth: list[str] = []

    def script(self, path: str, *replies: Reply) -> None:
        self.scripts[path] = list(replies)

    def reset(self) -> None:
        self.scripts.clear()
        self.counts.clear()
        self.times.clear()
        self.queries.clear()
        self.auth.clear()

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.counts[path] += 1
        self.times.setdefault(path, []).append(time.monotonic())
        self.queries.append(dict(request.query_params))
        self.auth.append(request.headers.get("authorization", ""))
        replies = self.scripts.get(path) or [Reply(404, {"error": "not_found"})]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        content = reply.raw if reply.raw is not None else json.dumps(reply.body)
        return Response(content, reply.status, headers=reply.headers, media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle)])


@pytest.fixture(scope="module")
def double_server() -> Iterator[tuple[PlatformDouble, str]]:
    double = PlatformDouble()
    with BackgroundServer(double.app()) as server:
        yield double, server.url


@pytest.fixture
def double(double_server: tuple[PlatformDouble, str]) -> PlatformDouble:
    double_server[0].reset()
    return double_server[0]


@pytest.fixture
def url(double_server: tuple[PlatformDouble, str]) -> str:
    return double_server[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(url: str, coord: Any = None, **kw: Any) -> PlatformClient:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 0.02)
    return PlatformClient(url, TOKEN, coord, **kw)


async def test_learner_typed_with_bearer_token_and_extra_fields(double: PlatformDouble, url: str) -> None:
    double.script("/v1/learners/42", Reply(body=LEARNER))
    c = client(url)
    learner = await c.learner("42")
    await c.aclose()
    assert learner.first_name == "Amina" and learner.timezone == "Asia/Amman"
    assert learner.model_extra == {"extra_field": "ignored"}
    assert double.auth == [f"Bearer {TOKEN}"]


async def test_404_is_learner_not_found(double: PlatformDouble, url: str) -> None:
    c = client(url)
    with pytest.raises(LearnerNotFound) as info:
        await c.enrolments("nobody")
    await c.aclose()
    assert info.value.learner_id == "nobody"
    assert double.counts["/v1/learners/nobody/enrolments"] == 1  # 404 is not retried
    assert c.breaker.state == "closed"


async def test_slow_platform_times_out_and_is_retried_within_budget(double: PlatformDouble, url: str) -> None:
    double.script("/v1/learners/42", Reply(body=LEARNER, delay_s=1.5))
    c = client(url, read_timeout_s=0.1, max_attempts=2)
    with pytest.raises(PlatformUnavailable, match="timeout"):
        await c.learner("42")
    await c.aclose()
    assert double.counts["/v1/learners/42"] == 2


async def test_total_budget_bounds_the_wait(double: PlatformDouble, url: str) -> None:
    double.script("/v1/learners/42", Reply(body=LEARNER, delay_s=1.5))
    c = client(url, read_timeout_s=5.0, total_budget_s=0.3, max_attempts=5)
    with pytest.raises(PlatformUnavailable, match="no answer within"):
        await c.learner("42")
    await c.aclose()
    assert double.counts["/v1/learners/42"] == 1


async def test_500_then_success(double: PlatformDouble, url: str) -> None:
    double.script("/v1/learners/42", Reply(500, {"error": "boom"}), Reply(503), Reply(body=LEARNER))
    c = client(url)
    learner = await c.learner("42")
    await c.aclose()
    assert learner.id == "42"
    assert double.counts["/v1/learners/42"] == 3
    assert c.breaker.failures == 0


async def test_429_honours_retry_after(double: PlatformDouble, url: str) -> None:
    double.script("/v1/learners/42", Reply(429, {"error": "slow down"}, {"Retry-After": "1"}), Reply(body=LEARNER))
    c = client(url)
    await c.learner("42")
    await c.aclose()
    first, second = double.times["/v1/learners/42"]
    assert second - first >= 0.95  # waited as told, not the 10 ms backoff


async def test_429_with_long_retry_after_gives_up_at_once(double: PlatformDouble, url: str) -> None:
    double.script("/v1/learners/42", Reply(429, {}, {"Retry-After": "3600"}), Reply(body=LEARNER))
    c = client(url)
    with pytest.raises(PlatformUnavailable, match="Retry-After"):
        await c.learner("42")
    await c.aclose()
    assert double.counts["/v1/learners/42"] == 1


async def test_retries_are_bounded(double: PlatformDouble, url: str) -> None:
    double.script("/v1/learners/42/credits", Reply(502))
    c = client(url, max_attempts=3)
    with pytest.raises(PlatformUnavailable, match="HTTP 502"):
        await c.credits("42")
    await c.aclose()
    assert double.counts["/v1/learners/42/credits"] == 3


async def test_wrong_token_is_not_retried(double: PlatformDouble, url: str) -> None:
    double.script("/v1/recognition", Reply(401, {"error": "unauthorized"}))
    c = client(url)
    with pytest.raises(PlatformUnavailable, match="401"):
        await c.recognition(country="DE")
    await c.aclose()
    assert double.counts["/v1/recognition"] == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(raw="<html>oops</html>"), "not JSON"),
        (Reply(body={"results": []}), "'items' list"),
        (Reply(body={"items": [{"course_id": "C1", "course_title": "T", "provider": "P", "status": "active"}]}),
         "progress_pct"),
        (Reply(body={"items": [{"course_id": "C1", "course_title": "T", "provider": "P", "status": "active",
                                "progress_pct": "lots"}]}), "progress_pct"),
    ],
)
async def test_malformed_answers_are_data_errors(double: PlatformDouble, url: str, reply: Reply, message: str) -> None:
    double.script("/v1/learners/42/enrolments", reply)
    coord = LocalCoordinator()
    c = client(url, coord)
    with pytest.raises(PlatformDataError, match=message):
        await c.enrolments("42")
    with pytest.raises(PlatformDataError):
        await c.enrolments("42")
    await c.aclose()
    assert double.counts["/v1/learners/42/enrolments"] == 2  # a garbled answer is never cached
    assert c.breaker.state == "closed"


async def test_naive_due_date_is_a_data_error(double: PlatformDouble, url: str) -> None:
    item = {"id": "d1", "course_id": "C1", "course_title": "T", "title": "A1", "kind": "assignment",
            "due_at": "2030-01-01T10:00:00"}
    double.script("/v1/learners/42/deadlines", Reply(body={"items": [item]}))
    c = client(url)
    with pytest.raises(PlatformDataError, match="due_at"):
        await c.deadlines("42")
    await c.aclose()


async def test_deadlines_send_window_and_sort(double: PlatformDouble, url: str) -> None:
    def item(i: str, due: str) -> dict[str, Any]:
        return {"id": i, "course_id": "C1", "course_title": "T", "title": i, "kind": "exam", "due_at": due}

    double.script("/v1/learners/42/deadlines", Reply(body={"items": [
        item("late", "2030-01-03T10:00:00+02:00"), item("early", "2030-01-02T10:00:00Z")]}))
    c = client(url)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    items = await c.deadlines("42", start, start + timedelta(days=30))
    await c.aclose()
    assert [d.id for d in items] == ["early", "late"]
    assert items[0].submitted_at is None
    assert double.queries[-1] == {"from": "2030-01-01T00:00:00+00:00", "to": "2030-01-31T00:00:00+00:00"}


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_cache_spares_the_platform_and_erasure_drops_it(
    double: PlatformDouble, url: str, backend: str
) -> None:
    coord: Any = LocalCoordinator("t:") if backend == "local" else RedisCoordinator(REDIS_URL, f"t-{id(double)}:")
    double.script("/v1/learners/42", Reply(body=LEARNER))
    double.script("/v1/learners/42/credits", Reply(body={"items": []}))
    c = client(url, coord)
    try:
        for _ in range(3):
            await c.learner("42")
        await c.credits("42")
        assert double.counts["/v1/learners/42"] == 1
        assert await coord.cache_get(cache_prefix("42") + "learner") is not None
        dropped = await coord.cache_delete_prefix("platform:42:")
        assert dropped == 2
        await c.learner("42")
        assert double.counts["/v1/learners/42"] == 2
        assert await c.forget("42") == 1
    finally:
        await coord.cache_delete_prefix("platform")
        await c.aclose()
        await coord.close()


async def test_breaker_opens_fails_fast_and_probes(double: PlatformDouble, url: str) -> None:
    clock = FakeClock()
    double.script("/v1/learners/42", Reply(500))
    c = client(url, max_attempts=1, breaker_threshold=2, breaker_cooldown_s=30, clock=clock)
    for _ in range(2):
        with pytest.raises(PlatformUnavailable, match="HTTP 500"):
            await c.learner("42")
    assert c.breaker.state == "open"
    with pytest.raises(PlatformUnavailable, match="circuit open"):
        await c.learner("42")
    assert double.counts["/v1/learners/42"] == 2  # failed fast: the platform saw nothing

    clock.now += 31  # cool-down over: one probe, which fails and re-opens
    with pytest.raises(PlatformUnavailable, match="HTTP 500"):
        await c.learner("42")
    assert double.counts["/v1/learners/42"] == 3
    assert c.breaker.state == "open"

    clock.now += 31
    double.script("/v1/learners/42", Reply(body=LEARNER))
    assert (await c.learner("42")).id == "42"
    assert c.breaker.state == "closed"
    await c.aclose()


async def test_dead_platform_fails_fast(url: str) -> None:
    c = PlatformClient("http://127.0.0.1:9", TOKEN, max_attempts=2, backoff_base_s=0.01, breaker_threshold=1)
    with pytest.raises(PlatformUnavailable, match="connection error"):
        await c.learner("42")
    with pytest.raises(PlatformUnavailable, match="circuit open"):
        await c.learner("42")
    await c.aclose()


async def test_global_deadlines_follow_the_cursor(double: PlatformDouble, url: str) -> None:
    def item(i: str) -> dict[str, Any]:
        return {"learner_id": "L" + i, "id": i, "course_id": "C1", "course_title": "T", "title": i,
                "kind": "assignment", "due_at": "2030-01-02T10:00:00+00:00", "submitted_at": None}

    double.script("/v1/deadlines",
                  Reply(body={"items": [item("1"), item("2")], "next_cursor": "p2"}),
                  Reply(body={"items": [item("3")], "next_cursor": None}))
    c = client(url)
    ids = [d.learner_id async for d in c.all_deadlines(datetime(2030, 1, 1, tzinfo=UTC))]
    await c.aclose()
    assert ids == ["L1", "L2", "L3"]
    assert [q.get("cursor") for q in double.queries] == [None, "p2"]


async def test_cursor_that_does_not_advance_is_a_data_error(double: PlatformDouble, url: str) -> None:
    double.script("/v1/deadlines", Reply(body={"items": [], "next_cursor": "same"}))
    c = client(url)
    with pytest.raises(PlatformDataError, match="advance"):
        async for _ in c.deadline_pages():
            pass
    await c.aclose()
    assert double.counts["/v1/deadlines"] == 2


def test_retry_after_parsing() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Tue, 01 Jan 2030 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_factory_prefers_configured_platform_then_demo(tmp_path: Any) -> None:
    real = make_platform_client(make_settings(tmp_path, PLATFORM_API_URL="https://lms.example.org/api/",
                                              PLATFORM_API_TOKEN="t0k"))
    demo = make_platform_client(make_settings(tmp_path))
    override = make_platform_client(make_settings(tmp_path, SANAD_DEMO_PLATFORM_URL="http://127.0.0.1:7777/demo"))
    assert real.base_url == "https://lms.example.org/api"
    assert demo.base_url == "https://sanad.example.org/demo-platform"
    assert override.base_url == "http://127.0.0.1:7777/demo"
