"""Client of the learning platform API: typed models, errors, breaker and the client itself."""

from integrations.platform.breaker import CircuitBreaker
from integrations.platform.client import (
    DEMO_PLATFORM_PATH,
    DEMO_PLATFORM_TOKEN,
    PlatformClient,
    cache_prefix,
    make_platform_client,
    parse_retry_after,
)
from integrations.platform.errors import LearnerNotFound, PlatformDataError, PlatformError, PlatformUnavailable
from integrations.platform.models import (
    Credit,
    Deadline,
    DeadlinePage,
    Enrolment,
    Learner,
    LearnerDeadline,
    RecognisedModule,
    University,
)

__all__ = [
    "DEMO_PLATFORM_PATH",
    "DEMO_PLATFORM_TOKEN",
    "CircuitBreaker",
    "Credit",
    "Deadline",
    "DeadlinePage",
    "Enrolment",
    "Learner",
    "LearnerDeadline",
    "LearnerNotFound",
    "PlatformClient",
    "PlatformDataError",
    "PlatformError",
    "PlatformUnavailable",
    "RecognisedModule",
    "University",
    "cache_prefix",
    "make_platform_client",
    "parse_retry_after",
]
