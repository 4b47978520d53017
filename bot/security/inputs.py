"""Decoding untrusted input into something the rest of Sanad can rely on, or a clear refusal.

`BadInput` is raised for anything that can never succeed (the web layer answers 400, or 200 and
ignores it for a provider webhook). JSON is refused past a nesting depth no real payload reaches
(Telegram updates and Rasa's NLG requests stay under 20), before a recursive walk can overflow
the stack; ids must fit the database's 64-bit integers; times must stay inside the calendar.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

MAX_JSON_DEPTH = 64
DB_ID_MAX = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER (64-bit) on SQLite


class BadInput(ValueError):
    """Input that can never be processed, with a short reason safe to show and log."""


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Is `value` nested at most `limit` containers deep? (iterative: no recursion to overflow)"""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def loads_json(body: bytes | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` that raises BadInput for bad JSON, too deep a nesting, or text no database can store."""
    try:
        value = json.loads(body)
    except RecursionError as exc:
        raise BadInput("JSON nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput("the body is not JSON") from exc
    if not json_depth_ok(value, limit):
        raise BadInput("JSON nested too deeply")
    return value


def db_id(raw: Any) -> int:
    """A positive id that fits the database, from a path or query value."""
    try:
        value = int(str(raw), 10)
    except ValueError as exc:
        raise BadInput("not an id") from exc
    if not 0 < value <= DB_ID_MAX:
        raise BadInput("id out of range")
    return value


def bounded_int(raw: Any, low: int, high: int, name: str) -> int:
    """An integer query value within [low, high]."""
    try:
        value = int(str(raw), 10)
    except ValueError as exc:
        raise BadInput(f"{name} must be a whole number") from exc
    if not low <= value <= high:
        raise BadInput(f"{name} must be between {low} and {high}")
    return value


def storable_text(value: str, name: str) -> str:
    """`value` unchanged, unless it holds what no database can store: NUL or a lone surrogate."""
    if "\x00" in value:
        raise BadInput(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInput(f"{name} is not valid Unicode (a lone surrogate)") from exc
    return value


def utc_time(moment: datetime, name: str) -> datetime:
    """An aware time converted to UTC, refused when UTC falls off the calendar (year 1 or 9999)."""
    from datetime import UTC

    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise BadInput(f"{name} is outside the calendar") from exc
