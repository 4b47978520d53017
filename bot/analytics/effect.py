"""The reminders' effect: on-time rates of the reminded and held-out pairs, their difference in
percentage points and its 95 % confidence interval (Newcombe's hybrid score interval, method 10
of Newcombe 1998, built from the two Wilson score intervals).

Below `MIN_PER_ARM` pairs with a known outcome in either arm the difference is not given
("not enough data yet"): with fewer, the interval is too wide to say anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054
MIN_PER_ARM = 30


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (as fractions)."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x0: int, n0: int, z: float = Z95) -> tuple[float, float, float]:
    """Difference p1 - p0 and its interval (fractions), Newcombe's method 10."""
    p1, p0 = x1 / n1, x0 / n0
    l1, u1 = wilson(x1, n1, z)
    l0, u0 = wilson(x0, n0, z)
    difference = p1 - p0
    low = difference - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return difference, max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class Effect:
    """Counts of both arms and, with enough data, the difference in points and its 95 % interval."""

    reminded: int
    reminded_on_time: int
    held_out: int
    held_out_on_time: int
    difference_pp: float | None
    ci95_pp: tuple[float, float] | None

    @property
    def enough(self) -> bool:
        return self.difference_pp is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "reminded": {"deadlines": self.reminded, "on_time": self.reminded_on_time},
            "held_out": {"deadlines": self.held_out, "on_time": self.held_out_on_time},
            "difference_pp": self.difference_pp,
            "ci95_pp": list(self.ci95_pp) if self.ci95_pp is not None else None,
        }


def estimate(reminded: int, reminded_on_time: int, held_out: int, held_out_on_time: int) -> Effect:
    """The effect of reminders on on-time submission; None fields below MIN_PER_ARM in an arm."""
    if min(reminded, held_out) < MIN_PER_ARM:
        return Effect(reminded, reminded_on_time, held_out, held_out_on_time, None, None)
    difference, low, high = newcombe(reminded_on_time, reminded, held_out_on_time, held_out)
    return Effect(reminded, reminded_on_time, held_out, held_out_on_time,
                  round(100 * difference, 1), (round(100 * low, 1), round(100 * high, 1)))
