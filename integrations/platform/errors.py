"""What can go wrong when Sanad asks the learning platform something."""

from __future__ import annotations


class PlatformError(Exception):
    """Base of every platform client error."""


class LearnerNotFound(PlatformError):
    """The platform answered 404 for this learner: the id is unknown (or was deleted)."""

    def __init__(self, learner_id: str) -> None:
        super().__init__(f"learner {learner_id!r} not found on the platform")
        self.learner_id = learner_id


class PlatformUnavailable(PlatformError):
    """No usable answer: breaker open, timeout, connection error or retries exhausted."""


class PlatformDataError(PlatformError):
    """The platform answered, but the body is not JSON or misses/garbles contract fields."""
