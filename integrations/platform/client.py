"""Async client of the learning platform API (contract: docs/platform-api.yaml).

Every call goes through the same path: circuit breaker -> short cache (learner
data only) -> GET with bearer token, connect/read timeouts and bounded retries
(429 and 5xx, exponential backoff with full jitter, Retry-After honoured) ->
pydantic validation. The results are typed models; the errors are
`LearnerNotFound`, `PlatformUnavailable` and `PlatformDataError`, never a raw
httpx or pydantic exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from integrations.platform.breaker import CircuitBreaker
from integrations.platform.errors import LearnerNotFound, PlatformDataError, PlatformUnavailable
from integrations.platform.models import Credit, Deadline, DeadlinePage, Enrolment, Learner, LearnerDeadline, University

if TYPE_CHECKING:
    from bot.runtime.coordination import Coordinator
    from bot.runtime.settings import Settings

log = logging.getLogger(__name__)

#: bearer token of the built-in demo platform (it holds sample data only)
DEMO_PLATFORM_TOKEN = "sanad-demo-platform-token"  # noqa: S105  (public demo credential, not a secret)
DEMO_PLATFORM_PATH = "/demo-platform"

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def cache_prefix(learner_id: str) -> str:
    """Prefix of every cache key holding this learner's data (erasure drops it)."""
    return f"platform:{quote(learner_id, safe='')}:"


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("platform times must be timezone-aware")
    return moment.isoformat()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _describe(exc: ValidationError) -> str:
    """Field locations and reasons only: values may be personal data."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)[:5]
    ]
    return "; ".join(parts)


class PlatformClient:
    """Reads learners, enrolments, deadlines, credits and the recognition catalogue."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        coord: Coordinator | None = None,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        max_attempts: int = 3,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 2.0,
        max_retry_after_s: float = 5.0,
        total_budget_s: float = 8.0,
        cache_ttl_s: float = 60.0,
        catalogue_cache_ttl_s: float = 600.0,
        breaker_threshold: int = 3,
        breaker_cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.coord = coord
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.total_budget_s = total_budget_s
        self.cache_ttl_s = cache_ttl_s
        self.catalogue_cache_ttl_s = catalogue_cache_ttl_s
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_s, clock)
        headers = {"Accept": "application/json", "User-Agent": "sanad-platform-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the contract -----------------------------------------------------

    async def learner(self, learner_id: str) -> Learner:
        """`GET /v1/learners/{id}`; raises LearnerNotFound on 404."""
        return await self._cached_get(
            cache_prefix(learner_id) + "learner",
            self._learner_path(learner_id),
            None,
            learner_id,
            lambda data: self._validate(Learner, data, "learner"),
        )

    async def enrolments(self, learner_id: str) -> list[Enrolment]:
        return await self._cached_get(
            cache_prefix(learner_id) + "enrolments",
            self._learner_path(learner_id, "enrolments"),
            None,
            learner_id,
            lambda data: self._validate_items(Enrolment, data, "enrolments"),
        )

    async def deadlines(
        self, learner_id: str, from_: datetime | None = None, to: datetime | None = None
    ) -> list[Deadline]:
        """Deadlines with `from <= due_at < to` (either bound optional), sorted by due time."""
        params: dict[str, str] = {}
        if from_ is not None:
            params["from"] = _iso(from_)
        if to is not None:
            params["to"] = _iso(to)
        key = cache_prefix(learner_id) + f"deadlines:{params.get('from', '')}:{params.get('to', '')}"
        items = await self._cached_get(
            key,
            self._learner_path(learner_id, "deadlines"),
            params,
            learner_id,
            lambda data: self._validate_items(Deadline, data, "deadlines"),
        )
        return sorted(items, key=lambda d: d.due_at)

    async def credits(self, learner_id: str) -> list[Credit]:
        return await self._cached_get(
            cache_prefix(learner_id) + "credits",
            self._learner_path(learner_id, "credits"),
            None,
            learner_id,
            lambda data: self._validate_items(Credit, data, "credits"),
        )

    async def recognition(self, country: str | None = None, university: str | None = None) -> list[University]:
        """Partner universities (optionally of one country / matching one university) and what they recognise."""
        params: dict[str, str] = {}
        if country:
            params["country"] = country
        if university:
            params["university"] = university
        key = "platform-catalogue:recognition:" + quote(params.get("country", ""), safe="") + ":" + quote(
            params.get("university", ""), safe=""
        )
        return await self._cached_get(
            key,
            "/v1/recognition",
            params,
            None,
            lambda data: self._validate_items(University, data, "recognition"),
            ttl_s=self.catalogue_cache_ttl_s,
        )

    async def deadline_pages(
        self, from_: datetime | None = None, to: datetime | None = None, *, max_pages: int = 10_000
    ) -> AsyncIterator[DeadlinePage]:
        """Every learner's deadlines in the window, one page at a time (`GET /v1/deadlines`, not cached)."""
        params: dict[str, str] = {}
        if from_ is not None:
            params["from"] = _iso(from_)
        if to is not None:
            params["to"] = _iso(to)
        cursor: str | None = None
        for _ in range(max_pages):
            query = dict(params)
            if cursor:
                query["cursor"] = cursor
            # the largest answers Sanad reads: parsed and validated in one pass by pydantic-core
            body = await self._get("/v1/deadlines", query, None, raw=True)
            try:
                page = DeadlinePage.model_validate_json(body)
            except ValidationError as exc:
                raise PlatformDataError(f"deadlines page: {_describe(exc)}") from None
            yield page
            if not page.next_cursor:
                return
            if page.next_cursor == cursor:
                raise PlatformDataError("deadlines page: next_cursor did not advance")
            cursor = page.next_cursor
        raise PlatformDataError(f"deadlines: more than {max_pages} pages")

    async def all_deadlines(self, from_: datetime | None = None, to: datetime | None = None) -> AsyncIterator[
        LearnerDeadline
    ]:
        """Every learner's deadlines in the window, item by item."""
        async for page in self.deadline_pages(from_, to):
            for item in page.items:
                yield item

    async def forget(self, learner_id: str) -> int:
        """Drop this learner's cached data (erasure, relinking)."""
        if self.coord is None:
            return 0
        return await self.coord.cache_delete_prefix(cache_prefix(learner_id))

    # --- plumbing ---------------------------------------------------------

    @staticmethod
    def _learner_path(learner_id: str, what: str | None = None) -> str:
        if not learner_id:
            raise ValueError("learner_id must not be empty")
        path = f"/v1/learners/{quote(learner_id, safe='')}"
        return f"{path}/{what}" if what else path

    @staticmethod
    def _validate(model: type[_M], data: Any, what: str) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise PlatformDataError(f"{what}: {_describe(exc)}") from None

    @staticmethod
    def _validate_items(model: type[_M], data: Any, what: str) -> list[_M]:
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            raise PlatformDataError(f"{what}: expected an object with an 'items' list")
        try:
            return TypeAdapter(list[model]).validate_python(data["items"])  # type: ignore[valid-type]
        except ValidationError as exc:
            raise PlatformDataError(f"{what}: {_describe(exc)}") from None

    async def _cached_get(
        self,
        key: str,
        path: str,
        params: dict[str, str] | None,
        learner_id: str | None,
        parse: Callable[[Any], _T],
        ttl_s: float | None = None,
    ) -> _T:
        """Cached answer if it still parses, else ask the platform; only answers that parse are cached."""
        cached = await self._cache_get(key)
        if cached is not None:
            try:
                return parse(cached)
            except PlatformDataError:
                log.warning("platform cache held an unusable entry; asking again")
        data = await self._get(path, params, learner_id)
        result = parse(data)
        await self._cache_set(key, data, self.cache_ttl_s if ttl_s is None else ttl_s)
        return result

    async def _cache_get(self, key: str) -> Any:
        if self.coord is None or self.cache_ttl_s <= 0:
            return None
        try:
            raw = await self.coord.cache_get(key)
            return None if raw is None else json.loads(raw)
        except Exception as exc:  # noqa: BLE001  (a cache failure must not cost the answer)
            log.warning("platform cache read failed: %s", type(exc).__name__)
            return None

    async def _cache_set(self, key: str, data: Any, ttl_s: float) -> None:
        if self.coord is None or ttl_s <= 0:
            return
        try:
            await self.coord.cache_set(key, json.dumps(data, separators=(",", ":")), ttl_s)
        except Exception as exc:  # noqa: BLE001  (a cache failure must not cost the answer)
            log.warning("platform cache write failed: %s", type(exc).__name__)

    async def _get(self, path: str, params: dict[str, str] | None, learner_id: str | None, raw: bool = False) -> Any:
        """One logical GET through the breaker, with bounded retries; returns the decoded JSON
        (the body's bytes with `raw`)."""
        if not self.breaker.allow():
            raise PlatformUnavailable(f"platform circuit open (retry in {self.breaker.retry_in_s():.0f} s)")
        try:
            async with asyncio.timeout(self.total_budget_s):
                data = await self._get_with_retries(path, params, learner_id, raw)
        except TimeoutError:
            self.breaker.record_failure()
            log.warning("platform GET %s: no answer within %.1f s", path, self.total_budget_s)
            raise PlatformUnavailable(f"no answer within {self.total_budget_s} s") from None
        except PlatformUnavailable:
            self.breaker.record_failure()
            raise
        except (LearnerNotFound, PlatformDataError):
            self.breaker.record_success()  # the platform is alive, only this answer is unusable
            raise
        except BaseException:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return data

    def _backoff_s(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))

    async def _get_with_retries(
        self, path: str, params: dict[str, str] | None, learner_id: str | None, raw: bool = False
    ) -> Any:
        started = time.monotonic()
        reason = "no attempt"
        for attempt in range(1, self.max_attempts + 1):
            retry_after_s: float | None = None
            try:
                response = await self._http.get(path, params=params)
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.TransportError as exc:
                reason = f"connection error ({type(exc).__name__})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    if raw:
                        return response.content
                    try:
                        return response.json()
                    except ValueError:
                        raise PlatformDataError(f"{path}: response is not JSON") from None
                if status == 404 and learner_id is not None:
                    raise LearnerNotFound(learner_id)
                if status not in _RETRY_STATUSES:
                    log.error("platform GET %s answered %s (check PLATFORM_API_URL/TOKEN)", path, status)
                    raise PlatformUnavailable(f"platform answered HTTP {status}")
                reason = f"HTTP {status}"
                retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
            if attempt == self.max_attempts:
                break
            if retry_after_s is not None and retry_after_s > self.max_retry_after_s:
                reason += f", Retry-After {retry_after_s:.0f} s is beyond what a learner can wait"
                break
            delay_s = self._backoff_s(attempt) if retry_after_s is None else retry_after_s
            if time.monotonic() - started + delay_s >= self.total_budget_s:
                break
            log.info("platform GET %s: %s, retry %d in %.2f s", path, reason, attempt, delay_s)
            await asyncio.sleep(delay_s)
        log.warning("platform GET %s failed after %d attempt(s): %s", path, attempt, reason)
        raise PlatformUnavailable(f"platform unavailable: {reason}")


def make_platform_client(
    settings: Settings, coord: Coordinator | None = None, **options: Any
) -> PlatformClient:
    """The configured platform, or the built-in demo platform mounted by the gateway at /demo-platform.

    `SANAD_DEMO_PLATFORM_URL` overrides where the demo platform is reached (e.g. when the
    action server cannot reach PUBLIC_BASE_URL). `SANAD_PLATFORM_CACHE_TTL_S` sets the cache time.
    """
    options.setdefault("cache_ttl_s", settings.platform_cache_ttl_s)
    if settings.platform_api_url:
        return PlatformClient(settings.platform_api_url, settings.platform_api_token, coord, **options)
    demo_url = settings.demo_platform_url or settings.public_base_url + DEMO_PLATFORM_PATH
    return PlatformClient(demo_url, DEMO_PLATFORM_TOKEN, coord, **options)
