"""Labels on conversations and the outcome chosen on resolve, from lists the leads keep.

Two lists (`handoff_labels.kind`): `label` (put on a conversation any time, several at once,
filterable in the queue) and `outcome` (one, chosen when resolving; stored on the hand-off
as `resolution`, by name, so the analytics keep it even if the list changes later). A new
deployment starts with the outcomes extension granted, licence issued, technical, referred
and other. Removing an entry hides it from the pickers; what was recorded stays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mentoring.events import publish_after_commit
from bot.mentoring.handoff import HandoffError, console_event
from bot.privacy.audit import audit, mentor_actor
from bot.storage.models import Handoff, HandoffLabel, HandoffLabelLink, Mentor

if TYPE_CHECKING:
    from bot.runtime.services import Services

KINDS = ("label", "outcome")
DEFAULT_OUTCOMES = ("extension granted", "licence issued", "technical", "referred", "other")
MAX_NAME = 64


async def entries(session: AsyncSession, kind: str, *, include_inactive: bool = False) -> list[HandoffLabel]:
    """The list of `kind`. Until a lead first changes the outcome list, it is the default one
    (shown from memory: reading never writes)."""
    if kind not in KINDS:
        raise ValueError(kind)
    query = select(HandoffLabel).where(HandoffLabel.kind == kind).order_by(HandoffLabel.name)
    rows = list((await session.execute(query)).scalars().all())
    if kind == "outcome" and not rows:
        rows = [HandoffLabel(kind="outcome", name=name, active=True) for name in DEFAULT_OUTCOMES]
    return rows if include_inactive else [row for row in rows if row.active]


async def _materialise_defaults(session: AsyncSession, kind: str) -> None:
    """Write the default outcomes before a lead's first change to the list."""
    if kind != "outcome":
        return
    exists = (await session.execute(select(HandoffLabel.id).where(HandoffLabel.kind == kind).limit(1))).first()
    if exists is None:
        for name in DEFAULT_OUTCOMES:
            session.add(HandoffLabel(kind=kind, name=name, active=True))
        await session.flush()


async def add_entry(services: Services, session: AsyncSession, lead: Mentor, kind: str, name: str) -> HandoffLabel:
    if lead.role != "lead":
        raise HandoffError("only leads edit the lists", "leads_edit_only")
    if kind not in KINDS:
        raise HandoffError("unknown list", "label_kind")
    name = " ".join(name.split())[:MAX_NAME]
    if not name:
        raise HandoffError("give a name", "label_name")
    await _materialise_defaults(session, kind)
    row = (await session.execute(select(HandoffLabel).where(
        HandoffLabel.kind == kind, func.lower(HandoffLabel.name) == name.lower()))).scalars().first()
    if row is None:
        row = HandoffLabel(kind=kind, name=name, active=True)
        session.add(row)
    row.active = True
    await session.flush()
    audit(session, services.settings, actor=mentor_actor(lead.id), action=f"{kind}.add", contact_key=None,
          detail={"label_id": row.id})
    return row


async def retire_entry(services: Services, session: AsyncSession, lead: Mentor, kind: str, name: str) -> None:
    """Take an entry off the pickers (what was recorded with it stays)."""
    if lead.role != "lead":
        raise HandoffError("only leads edit the lists", "leads_edit_only")
    if kind not in KINDS:
        raise HandoffError("unknown list", "label_kind")
    await _materialise_defaults(session, kind)
    row = (await session.execute(select(HandoffLabel).where(
        HandoffLabel.kind == kind, func.lower(HandoffLabel.name) == name.strip().lower()))).scalars().first()
    if row is not None:
        row.active = False
        audit(session, services.settings, actor=mentor_actor(lead.id), action=f"{row.kind}.retire",
              contact_key=None, detail={"label_id": row.id})


async def labels_of(session: AsyncSession, handoff_ids: list[int]) -> dict[int, list[HandoffLabel]]:
    """The labels on each hand-off."""
    found: dict[int, list[HandoffLabel]] = {hid: [] for hid in handoff_ids}
    if not handoff_ids:
        return found
    rows = (await session.execute(
        select(HandoffLabelLink.handoff_id, HandoffLabel)
        .join(HandoffLabel, HandoffLabel.id == HandoffLabelLink.label_id)
        .where(HandoffLabelLink.handoff_id.in_(handoff_ids)).order_by(HandoffLabel.name))).all()
    for handoff_id, label in rows:
        found[int(handoff_id)].append(label)
    return found


async def set_labels(services: Services, session: AsyncSession, handoff: Handoff, mentor: Mentor,
                     label_ids: list[int]) -> None:
    """Replace the hand-off's labels with these (entries of the label list)."""
    valid = {row.id for row in await entries(session, "label", include_inactive=True)}
    chosen = sorted({i for i in label_ids if i in valid})
    await session.execute(delete(HandoffLabelLink).where(HandoffLabelLink.handoff_id == handoff.id))
    for label_id in chosen:
        session.add(HandoffLabelLink(handoff_id=handoff.id, label_id=label_id))
    await session.flush()
    audit(session, services.settings, actor=mentor_actor(mentor.id), action="handoff.labels", contact_key=None,
          detail={"handoff_id": handoff.id, "label_ids": chosen})
    publish_after_commit(services, session, console_event("labels", handoff))


async def outcome_named(session: AsyncSession, raw: str | None) -> str | None:
    """The outcome entry matching `raw` (by name, any case), as it is written; None for none."""
    wanted = (raw or "").strip()
    if not wanted:
        return None
    for row in await entries(session, "outcome"):
        if row.name.lower() == wanted.lower():
            return row.name
    raise HandoffError("choose an outcome from the list", "unknown_outcome")
