"""Who may read a hand-off's conversation in the console, and up to when.

Visibility follows the hand-off's life:
- a lead reads every hand-off, at any time;
- a mentor reads a waiting hand-off in one of their languages (to decide whether to claim it),
  and the hand-off they hold, live;
- once it has ended, the mentor who held it last reads it for `HANDOFF_REVIEW_WINDOW_S` more,
  and only what was said up to its end;
- nobody else reads it.
An ended hand-off shows the conversation up to its end to everyone, leads included: later
messages belong to whatever comes next. Media follow the same rule (a file is readable when its
message is); the learner's data export, which holds everything, is for the mentor who holds the
hand-off while it is open, and for leads. The console writes every read to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.mentoring.handoff import mentor_languages
from bot.storage.db import as_utc
from bot.storage.models import Handoff, Mentor


@dataclass(frozen=True)
class View:
    """What a mentor may read of one hand-off: `allowed`, and messages up to `until` (None: all, live)."""

    allowed: bool
    until: datetime | None = None
    why: str = "none"  # lead | holder | waiting | review | none

    def shows(self, created_at: datetime) -> bool:
        """Is a message written at `created_at` part of this view?"""
        return self.allowed and (self.until is None or as_utc(created_at) <= self.until)


def view_of(mentor: Mentor, handoff: Handoff, now: datetime, review_window_s: float) -> View:
    """The view `mentor` has of `handoff` at `now` (see the module doc)."""
    ended = as_utc(handoff.resolved_at) if handoff.state == "resolved" and handoff.resolved_at else None
    if mentor.role == "lead":
        return View(True, ended, "lead")
    if ended is None:
        if handoff.state == "with_mentor" and handoff.mentor_id == mentor.id:
            return View(True, None, "holder")
        if handoff.state == "waiting" and handoff.language in mentor_languages(mentor):
            return View(True, None, "waiting")
        return View(False)
    if handoff.mentor_id == mentor.id and as_utc(now) - ended <= timedelta(seconds=review_window_s):
        return View(True, ended, "review")
    return View(False)


def may_export(mentor: Mentor, handoff: Handoff) -> bool:
    """The export holds all the learner's data, later messages too: leads, and the holder while open."""
    return mentor.role == "lead" or (handoff.state == "with_mentor" and handoff.mentor_id == mentor.id)
