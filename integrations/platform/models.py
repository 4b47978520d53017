"""Typed results of the platform API (contract in docs/platform-api.yaml).

Unknown extra fields are accepted so the platform can grow; a missing or
malformed contract field is a validation error that the client turns into
`PlatformDataError`. Enumerated values (status, kind) are kept as plain strings
so that a new value on the platform does not break every conversation.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

LEARNER_STATUSES = frozenset({"active", "paused", "alumni"})
ENROLMENT_STATUSES = frozenset({"pending", "active", "completed", "dropped"})
DEADLINE_KINDS = frozenset({"assignment", "exam", "course_end", "enrolment"})
CREDIT_STATUSES = frozenset({"earned", "in_progress"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Learner(_Model):
    """`GET /v1/learners/{id}`."""

    id: str
    first_name: str
    preferred_language: str
    timezone: str
    country: str | None = None
    status: str


class Enrolment(_Model):
    """One item of `GET /v1/learners/{id}/enrolments`."""

    course_id: str
    course_title: str
    provider: str
    status: str
    progress_pct: float = Field(ge=0, le=100)
    enrolled_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None


class Deadline(_Model):
    """One item of `GET /v1/learners/{id}/deadlines`."""

    id: str
    course_id: str
    course_title: str
    title: str
    kind: str
    due_at: AwareDatetime
    submitted_at: AwareDatetime | None = None

    @property
    def submitted(self) -> bool:
        return self.submitted_at is not None


class LearnerDeadline(Deadline):
    """One item of `GET /v1/deadlines`: a deadline with its learner."""

    learner_id: str


class DeadlinePage(_Model):
    """One page of `GET /v1/deadlines`; `next_cursor` is None on the last page."""

    items: list[LearnerDeadline]
    next_cursor: str | None = None


class Credit(_Model):
    """One item of `GET /v1/learners/{id}/credits`."""

    module_id: str
    module_title: str
    ects: float = Field(ge=0)
    status: str
    completed_at: AwareDatetime | None = None


class RecognisedModule(_Model):
    """A module a partner university recognises, with the ECTS it grants."""

    module_id: str
    module_title: str
    ects: float = Field(ge=0)


class University(_Model):
    """One item of `GET /v1/recognition`."""

    university_id: str
    university_name: str
    country: str
    modules: list[RecognisedModule]
    info_url: str
