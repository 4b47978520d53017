"""Cleaning learner text and splitting long replies at natural boundaries."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

MAX_INBOUND_CHARS = 4096
# C0/C1 controls except tab and newline; also zero-width and bidi overrides that can spoof the console
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u202a-\u202e\u2066-\u2069\ufeff]")
_SENTENCE_END = re.compile(r"(?<=[.!?؟。])\s+")


def storable(value: str) -> str:
    """`value` as the database can store it: without NUL characters (PostgreSQL text refuses them)
    and with lone surrogates, which have no UTF-8 form, replaced."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def storable_tree(value: Any) -> Any:
    """`storable` applied to every string (keys too) of a JSON-like value."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_tree(v) for v in value]
    return value


def clean_text(text: str | None) -> tuple[str, bool]:
    """Strip control characters, normalise to NFC and cap the length; returns (text, truncated)."""
    if not text:
        return "", False
    text = storable(text)
    cleaned = _CONTROL.sub("", unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")))
    cleaned = cleaned.strip()
    if len(cleaned) > MAX_INBOUND_CHARS:
        return cleaned[:MAX_INBOUND_CHARS], True
    return cleaned, False


def split_text(text: str, limit: int) -> list[str]:
    """Split `text` into parts of at most `limit` characters, at paragraph, then line, then
    sentence, then word boundaries; a single unbreakable run is cut hard."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    for separator in ("\n\n", "\n", None, " "):
        pieces = _SENTENCE_END.split(text) if separator is None else text.split(separator)
        joiner = " " if separator is None else separator
        if len(pieces) < 2:
            continue
        current = ""
        for piece in pieces:
            candidate = piece if not current else current + joiner + piece
            if len(candidate) <= limit:
                current = candidate
                continue
            if current:
                parts.append(current)
            if len(piece) > limit:
                parts.extend(split_text(piece, limit))
                current = ""
            else:
                current = piece
        if current:
            parts.append(current)
        return [p.strip() for p in parts if p.strip()]
    return [text[i : i + limit] for i in range(0, len(text), limit)]
