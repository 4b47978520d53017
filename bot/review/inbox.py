"""The review inbox: doubtful messages, newest first, and a reviewer's one-click label.

Leads see every language; a mentor sees the items in the languages they answer (the same rule
as hand-offs). A label is an intent of the Rasa domain, or `none` (not an intent: the message is
kept out of the training data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

import yaml
from sqlalchemy import func, select, update

from bot.runtime.settings import PROJECT_ROOT
from bot.storage.db import as_utc, utcnow
from bot.storage.models import InboundMessage, Mentor, ReviewItem

if TYPE_CHECKING:
    from bot.runtime.services import Services

NOT_AN_INTENT = "none"
PAGE_SIZE = 50
DOMAIN_FILE = PROJECT_ROOT / "nlu" / "domain.yml"


class ReviewError(ValueError):
    """A label that cannot be applied; `code` names it for the console's catalogue."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@lru_cache(maxsize=1)
def domain_intents() -> tuple[str, ...]:
    """The intents of the Rasa domain, in its order: the labels a reviewer may pick."""
    data = yaml.safe_load(DOMAIN_FILE.read_text(encoding="utf-8")) or {}
    names = [str(i if isinstance(i, str) else next(iter(i))) for i in data.get("intents") or []]
    return tuple(name for name in names if name != "nlu_fallback")


def languages_of(mentor: Mentor) -> set[str] | None:
    """The item languages a reviewer sees (None: all, for a lead)."""
    if mentor.role == "lead":
        return None
    return {code.strip() for code in (mentor.languages or "").split(",") if code.strip()}


@dataclass(frozen=True)
class Item:
    """One message waiting for (or given) a label, as the inbox shows it."""

    id: int
    text: str
    language: str
    predicted_intent: str | None
    confidence: float | None
    fallback: bool
    created_at: datetime
    label: str | None


async def waiting_count(services: Services, mentor: Mentor | None = None) -> int:
    """Items with no label yet (in the reviewer's languages)."""
    query = select(func.count()).select_from(ReviewItem).where(ReviewItem.label.is_(None))
    languages = languages_of(mentor) if mentor is not None else None
    if languages is not None:
        query = query.where(ReviewItem.language.in_(sorted(languages) or ["-"]))
    async with services.db.session() as session:
        return int(await session.scalar(query) or 0)


async def exportable_count(services: Services) -> int:
    """Labelled with an intent and not exported yet."""
    async with services.db.session() as session:
        return int(await session.scalar(
            select(func.count()).select_from(ReviewItem).where(
                ReviewItem.label.is_not(None), ReviewItem.label != NOT_AN_INTENT, ReviewItem.exported_at.is_(None))
        ) or 0)


async def list_items(services: Services, mentor: Mentor, waiting: bool = True, limit: int = PAGE_SIZE) -> list[Item]:
    """Newest first: the items waiting for a label (or, with waiting=False, the last labelled ones)."""
    query = (
        select(ReviewItem, InboundMessage.text)
        .join(InboundMessage, InboundMessage.id == ReviewItem.inbound_id)
        .where(ReviewItem.label.is_(None) if waiting else ReviewItem.label.is_not(None))
        .order_by(ReviewItem.id.desc())
        .limit(max(1, min(limit, 500)))
    )
    languages = languages_of(mentor)
    if languages is not None:
        query = query.where(ReviewItem.language.in_(sorted(languages) or ["-"]))
    async with services.db.session() as session:
        rows = (await session.execute(query)).all()
    return [
        Item(row.id, text or "", row.language, row.predicted_intent, row.confidence, row.fallback,
             as_utc(row.created_at), row.label)
        for row, text in rows
    ]


async def label_item(services: Services, mentor: Mentor, item_id: int, label: str) -> None:
    """Set the label of one item (a later click corrects it, until it is exported)."""
    if label != NOT_AN_INTENT and label not in domain_intents():
        raise ReviewError("unknown_intent")
    async with services.db.session() as session:
        item = await session.get(ReviewItem, item_id)
        if item is None:
            raise ReviewError("no_item")
        languages = languages_of(mentor)
        if languages is not None and item.language not in languages:
            raise ReviewError("not_yours")
        if item.exported_at is not None:
            raise ReviewError("exported")
        await session.execute(
            update(ReviewItem).where(ReviewItem.id == item_id)
            .values(label=label, labelled_by=mentor.id, labelled_at=utcnow())
        )
