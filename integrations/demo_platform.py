"""A demo learning platform speaking the same contract as the real one (docs/platform-api.yaml).

It is the embedded default when `PLATFORM_API_URL` is unset: the gateway mounts
`demo_app()` at `/demo-platform` and the platform client reaches it over real
HTTP with `DEMO_PLATFORM_TOKEN`. Deadlines are computed relative to the current
day in each learner's time zone, so "tomorrow" is always tomorrow. The people,
courses and universities are invented sample data.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integrations.platform.client import DEMO_PLATFORM_TOKEN

DEFAULT_PAGE_SIZE = 50


# --- sample data -----------------------------------------------------------

LEARNERS: dict[str, dict[str, Any]] = {
    "L1001": {"first_name": "Amina", "preferred_language": "ar", "timezone": "Asia/Amman", "country": "JO",
              "status": "active"},
    "L1002": {"first_name": "Farid", "preferred_language": "fa", "timezone": "Asia/Kabul", "country": "AF",
              "status": "active"},
    "L1003": {"first_name": "Grace", "preferred_language": "en", "timezone": "Africa/Nairobi", "country": "KE",
              "status": "active"},
    "L1004": {"first_name": "Aline", "preferred_language": "fr", "timezone": "Europe/Paris", "country": "FR",
              "status": "paused"},
    "L1005": {"first_name": "Yusuf", "preferred_language": "de", "timezone": "Europe/Berlin", "country": "DE",
              "status": "alumni"},
    "L1006": {"first_name": "Rami", "preferred_language": "ar", "timezone": "Europe/Berlin", "country": "DE",
              "status": "active"},
}

COURSES: dict[str, dict[str, str]] = {
    "C-PY4E": {"title": "Python for Everybody", "provider": "Coursera · University of Michigan"},
    "C-DS101": {"title": "Introduction to Data Science", "provider": "Coursera · IBM"},
    "C-LHL": {"title": "Learning How to Learn", "provider": "Coursera · Deep Teaching Solutions"},
    "C-ENG": {"title": "English for Career Development", "provider": "Coursera · University of Pennsylvania"},
    "C-PM": {"title": "Foundations of Project Management", "provider": "Coursera · Google"},
    "C-FIN": {"title": "Financial Markets", "provider": "Coursera · Yale University"},
    "C-WRT": {"title": "Academic English: Writing", "provider": "Coursera · University of California, Irvine"},
}

MODULES: dict[str, dict[str, Any]] = {
    "M-PROG1": {"title": "Programming Fundamentals", "ects": 6.0},
    "M-DATA1": {"title": "Foundations of Data Science", "ects": 5.0},
    "M-STUDY": {"title": "Study Skills", "ects": 2.0},
    "M-ENG-B2": {"title": "Academic English B2", "ects": 5.0},
    "M-PM1": {"title": "Project Management Basics", "ects": 4.0},
    "M-FIN1": {"title": "Introduction to Finance", "ects": 6.0},
}

# learner -> (course, status, progress %, days since enrolment, days until the course ends)
ENROLMENTS: dict[str, list[tuple[str, str, float, int, int]]] = {
    "L1001": [("C-PY4E", "active", 45, 60, 40), ("C-LHL", "completed", 100, 150, -30),
              ("C-DS101", "pending", 0, 2, 90)],
    "L1002": [("C-ENG", "active", 70, 80, 25), ("C-PM", "active", 20, 20, 70)],
    "L1003": [("C-DS101", "active", 55, 45, 35), ("C-WRT", "completed", 100, 200, -60),
              ("C-FIN", "dropped", 10, 120, 5)],
    "L1004": [("C-FIN", "active", 30, 50, 28), ("C-LHL", "completed", 100, 300, -200)],
    "L1005": [("C-PY4E", "completed", 100, 400, -200), ("C-ENG", "completed", 100, 380, -150),
              ("C-PM", "completed", 100, 300, -100)],
    "L1006": [("C-PM", "active", 60, 40, 20), ("C-ENG", "completed", 100, 210, -90)],
}

# learner -> (deadline id suffix, course, title, kind, days from today, local hour, submitted days ago or None)
DEADLINES: dict[str, list[tuple[str, str, str, str, int, int, int | None]]] = {
    "L1001": [
        ("a3", "C-PY4E", "Assignment 3: Loops and iterations", "assignment", 1, 21, None),
        ("q4", "C-PY4E", "Quiz 4: Strings", "assignment", 3, 12, 1),
        ("a4", "C-PY4E", "Assignment 4: Files", "assignment", 7, 21, None),
        ("ex", "C-PY4E", "Final exam", "exam", 14, 10, None),
        ("a2", "C-PY4E", "Assignment 2: Conditional code", "assignment", -2, 21, None),
        ("en", "C-DS101", "Enrolment confirmation", "enrolment", 5, 18, None),
        ("end", "C-PY4E", "Course ends", "course_end", 40, 23, None),
    ],
    "L1002": [
        ("w5", "C-ENG", "Week 5 writing task", "assignment", 1, 20, None),
        ("w4", "C-ENG", "Week 4 listening quiz", "assignment", 2, 20, 0),
        ("p1", "C-PM", "Project charter draft", "assignment", 8, 20, None),
        ("ex", "C-ENG", "Final assessment", "exam", 21, 10, None),
        ("w3", "C-ENG", "Week 3 vocabulary quiz", "assignment", -3, 20, None),
    ],
    "L1003": [
        ("m2", "C-DS101", "Module 2 peer review", "assignment", 1, 22, None),
        ("m3", "C-DS101", "Module 3 lab", "assignment", 7, 22, None),
        ("m1", "C-DS101", "Module 1 quiz", "assignment", 2, 22, 1),
        ("ex", "C-DS101", "Final exam", "exam", 18, 9, None),
        ("m0", "C-DS101", "Orientation survey", "assignment", -1, 22, None),
    ],
    "L1004": [
        ("w2", "C-FIN", "Week 2 problem set", "assignment", 1, 23, None),
        ("w3", "C-FIN", "Week 3 problem set", "assignment", 7, 23, None),
        ("w1", "C-FIN", "Week 1 problem set", "assignment", 4, 23, 2),
        ("w0", "C-FIN", "Welcome quiz", "assignment", -4, 23, None),
        ("end", "C-FIN", "Course ends", "course_end", 28, 23, None),
    ],
    "L1005": [],
    "L1006": [
        ("s4", "C-PM", "Stakeholder map", "assignment", 1, 18, None),
        ("s5", "C-PM", "Risk register", "assignment", 7, 18, None),
        ("s3", "C-PM", "Project scope quiz", "assignment", 3, 18, 1),
        ("s2", "C-PM", "Team charter", "assignment", -2, 18, None),
        ("end", "C-PM", "Course ends", "course_end", 20, 23, None),
    ],
}

# learner -> (module, status, days since completion or None while in progress)
CREDITS: dict[str, list[tuple[str, str, int | None]]] = {
    "L1001": [("M-STUDY", "earned", 30), ("M-PROG1", "in_progress", None)],
    "L1002": [("M-ENG-B2", "in_progress", None), ("M-PM1", "in_progress", None)],
    "L1003": [("M-ENG-B2", "earned", 60), ("M-DATA1", "in_progress", None)],
    "L1004": [("M-STUDY", "earned", 200), ("M-FIN1", "in_progress", None)],
    "L1005": [("M-PROG1", "earned", 200), ("M-ENG-B2", "earned", 150), ("M-PM1", "earned", 100)],
    "L1006": [("M-ENG-B2", "earned", 90), ("M-PM1", "in_progress", None)],
}

UNIVERSITIES: list[dict[str, Any]] = [
    {"university_id": "U-DE-RHEIN", "university_name": "Rhein University of Applied Sciences", "country": "DE",
     "modules": ["M-PROG1", "M-DATA1", "M-ENG-B2"]},
    {"university_id": "U-DE-NORD", "university_name": "Hochschule Nord", "country": "DE",
     "modules": ["M-PM1", "M-FIN1"]},
    {"university_id": "U-FR-LYON", "university_name": "Université Lyon Sud", "country": "FR",
     "modules": ["M-DATA1", "M-FIN1", "M-STUDY"]},
    {"university_id": "U-JO-AMMAN", "university_name": "Amman Applied University", "country": "JO",
     "modules": ["M-PROG1", "M-ENG-B2", "M-STUDY"]},
    {"university_id": "U-LB-BEIRUT", "university_name": "Beirut Open University", "country": "LB",
     "modules": ["M-ENG-B2", "M-PM1"]},
    {"university_id": "U-TR-IST", "university_name": "Istanbul Bridge University", "country": "TR",
     "modules": ["M-PROG1", "M-DATA1"]},
]


# --- rendering the sample data relative to "now" ------------------------------

def _at(now: datetime, tz: str, days: int, hour: int) -> datetime:
    """`days` after today's date in the learner's zone, at `hour`:00 local time."""
    zone = ZoneInfo(tz)
    local_day = now.astimezone(zone).date() + timedelta(days=days)
    return datetime(local_day.year, local_day.month, local_day.day, hour, 0, tzinfo=zone)


def learner_doc(learner_id: str) -> dict[str, Any]:
    return {"id": learner_id, **LEARNERS[learner_id]}


def enrolment_docs(learner_id: str, now: datetime) -> list[dict[str, Any]]:
    tz = LEARNERS[learner_id]["timezone"]
    return [
        {
            "course_id": course,
            "course_title": COURSES[course]["title"],
            "provider": COURSES[course]["provider"],
            "status": status,
            "progress_pct": progress,
            "enrolled_at": _at(now, tz, -since, 9).isoformat(),
            "ends_at": _at(now, tz, until, 23).isoformat(),
        }
        for course, status, progress, since, until in ENROLMENTS[learner_id]
    ]


def deadline_docs(learner_id: str, now: datetime) -> list[dict[str, Any]]:
    tz = LEARNERS[learner_id]["timezone"]
    docs = []
    for suffix, course, title, kind, days, hour, submitted_ago in DEADLINES[learner_id]:
        due = _at(now, tz, days, hour)
        submitted = None if submitted_ago is None else _at(now, tz, -submitted_ago, 8).isoformat()
        docs.append({
            "id": f"{learner_id}-{suffix}",
            "course_id": course,
            "course_title": COURSES[course]["title"],
            "title": title,
            "kind": kind,
            "due_at": due.isoformat(),
            "submitted_at": submitted,
        })
    return sorted(docs, key=lambda d: datetime.fromisoformat(d["due_at"]))


def credit_docs(learner_id: str, now: datetime) -> list[dict[str, Any]]:
    tz = LEARNERS[learner_id]["timezone"]
    return [
        {
            "module_id": module,
            "module_title": MODULES[module]["title"],
            "ects": MODULES[module]["ects"],
            "status": status,
            "completed_at": None if ago is None else _at(now, tz, -ago, 12).isoformat(),
        }
        for module, status, ago in CREDITS[learner_id]
    ]


def university_docs(country: str | None, university: str | None) -> list[dict[str, Any]]:
    docs = []
    for uni in UNIVERSITIES:
        if country and uni["country"].lower() != country.strip().lower():
            continue
        if university:
            wanted = university.strip().lower()
            if wanted != uni["university_id"].lower() and wanted not in uni["university_name"].lower():
                continue
        docs.append({
            "university_id": uni["university_id"],
            "university_name": uni["university_name"],
            "country": uni["country"],
            "modules": [
                {"module_id": m, "module_title": MODULES[m]["title"], "ects": MODULES[m]["ects"]}
                for m in uni["modules"]
            ],
            "info_url": f"https://example.org/recognition/{uni['university_id'].lower()}",
        })
    return docs


# --- the HTTP app ------------------------------------------------------------

def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _window(request: Request) -> tuple[datetime | None, datetime | None]:
    bounds: list[datetime | None] = []
    for name in ("from", "to"):
        raw = request.query_params.get(name)
        if not raw:
            bounds.append(None)
            continue
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if value.tzinfo is None:
            raise ValueError(f"{name} needs a UTC offset")
        bounds.append(value)
    return bounds[0], bounds[1]


def _in_window(doc: dict[str, Any], start: datetime | None, end: datetime | None) -> bool:
    due = datetime.fromisoformat(doc["due_at"])
    return (start is None or due >= start) and (end is None or due < end)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    offset = json.loads(base64.urlsafe_b64decode(padded.encode()))["o"]
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("bad cursor")
    return offset


@dataclass
class _DemoState:
    token: str
    clock: Callable[[], datetime]
    page_size: int


def demo_app(
    token: str = DEMO_PLATFORM_TOKEN,
    clock: Callable[[], datetime] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Starlette:
    """The demo platform as a Starlette app (mounted by the gateway at /demo-platform)."""
    state = _DemoState(token=token, clock=clock or (lambda: datetime.now(UTC)), page_size=max(1, page_size))

    def authorised(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {state.token}".encode())

    def guard(handler: Callable[[Request], JSONResponse]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> JSONResponse:
            if not authorised(request):
                return _error(401, "unauthorized", "missing or wrong bearer token")
            learner_id = request.path_params.get("learner_id")
            if learner_id is not None and learner_id not in LEARNERS:
                return _error(404, "not_found", "unknown learner")
            try:
                return handler(request)
            except (ValueError, KeyError, TypeError) as exc:
                return _error(400, "bad_request", str(exc))

        return endpoint

    def learner(request: Request) -> JSONResponse:
        return JSONResponse(learner_doc(request.path_params["learner_id"]))

    def enrolments(request: Request) -> JSONResponse:
        return JSONResponse({"items": enrolment_docs(request.path_params["learner_id"], state.clock())})

    def deadlines(request: Request) -> JSONResponse:
        start, end = _window(request)
        docs = deadline_docs(request.path_params["learner_id"], state.clock())
        return JSONResponse({"items": [d for d in docs if _in_window(d, start, end)]})

    def credits(request: Request) -> JSONResponse:
        return JSONResponse({"items": credit_docs(request.path_params["learner_id"], state.clock())})

    def recognition(request: Request) -> JSONResponse:
        params = request.query_params
        return JSONResponse({"items": university_docs(params.get("country"), params.get("university"))})

    def all_deadlines(request: Request) -> JSONResponse:
        start, end = _window(request)
        now = state.clock()
        rows = [
            {"learner_id": lid, **doc}
            for lid in sorted(LEARNERS)
            for doc in deadline_docs(lid, now)
            if _in_window(doc, start, end)
        ]
        rows.sort(key=lambda r: (datetime.fromisoformat(r["due_at"]), r["learner_id"], r["id"]))
        cursor = request.query_params.get("cursor")
        offset = _decode_cursor(cursor) if cursor else 0
        page = rows[offset: offset + state.page_size]
        more = offset + state.page_size < len(rows)
        return JSONResponse({"items": page, "next_cursor": _encode_cursor(offset + state.page_size) if more else None})

    return Starlette(routes=[
        Route("/v1/learners/{learner_id}", guard(learner)),
        Route("/v1/learners/{learner_id}/enrolments", guard(enrolments)),
        Route("/v1/learners/{learner_id}/deadlines", guard(deadlines)),
        Route("/v1/learners/{learner_id}/credits", guard(credits)),
        Route("/v1/recognition", guard(recognition)),
        Route("/v1/deadlines", guard(all_deadlines)),
    ])


# --- serving it on a free port (tests, benchmarks, `sanad run` helpers) ----------

class BackgroundServer:
    """An ASGI app served by uvicorn in a background thread on 127.0.0.1 (real HTTP)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=self._server.run, name="sanad-background-http", daemon=True)
        self.url = ""

    def start(self, wait_s: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("background HTTP server did not start")
            time.sleep(0.01)
        sock = self._server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
