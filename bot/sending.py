"""The outbox sender: claims queued rows and delivers them through their channel."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from bot.catalogue import Button
from bot.channels.base import OutboundMessage, SendError, SendErrorKind, Template
from bot.db import utcnow
from bot.models import Contact, Outbox
from bot.services import Services

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6


def outbound_from_row(row: Outbox, language: str) -> OutboundMessage:
    payload: dict[str, Any] = row.payload or {}
    buttons = tuple(Button(str(b["title"]), str(b["payload"])) for b in payload.get("buttons", []))
    template = None
    if payload.get("template"):
        tpl = payload["template"]
        template = Template(sid=str(tpl["sid"]), variables={k: str(v) for k, v in tpl.get("variables", {}).items()})
    return OutboundMessage(text=row.text or "", buttons=buttons, template=template, language=language)


class OutboxSender:
    """Delivers outbox rows; safe to run in several processes (rows are claimed first)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def send_ids(self, ids: list[int]) -> int:
        """Send these rows now if they are still queued (replies right after they were written)."""
        if not ids:
            return 0
        async with self.services.db.session() as session:
            claimed = (
                await session.execute(
                    update(Outbox)
                    .where(Outbox.id.in_(ids), Outbox.status == "queued", Outbox.next_attempt_at <= utcnow())
                    .values(status="sending", claimed_at=utcnow())
                    .returning(Outbox.id)
                )
            ).scalars().all()
        for row_id in sorted(claimed):
            await self._deliver(row_id)
        return len(claimed)

    async def run_once(self, limit: int = 100) -> int:
        """Claim and send up to `limit` due rows."""
        async with self.services.db.session() as session:
            query = (
                select(Outbox.id)
                .where(Outbox.status == "queued", Outbox.next_attempt_at <= utcnow())
                .order_by(Outbox.id)
                .limit(limit)
            )
            if not self.services.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            ids = list((await session.execute(query)).scalars().all())
            if ids:
                await session.execute(
                    update(Outbox).where(Outbox.id.in_(ids)).values(status="sending", claimed_at=utcnow())
                )
        for row_id in ids:
            await self._deliver(row_id)
        return len(ids)

    async def _deliver(self, row_id: int) -> None:
        async with self.services.db.session() as session:
            row = await session.get(Outbox, row_id)
            if row is None:
                return
            contact = await session.get(Contact, row.contact_id)
            if contact is None or contact.stopped:
                row.status = "cancelled"
                row.last_error = "contact_stopped"
                return
            channel = self.services.channels.get(row.channel)
            if channel is None:
                row.status = "failed"
                row.last_error = "channel_off"
                return
            message = outbound_from_row(row, contact.language or "en")
            address = contact.address
        try:
            result = await channel.send(address, message)
        except SendError as exc:
            await self._failed(row_id, exc)
            return
        async with self.services.db.session() as session:
            await session.execute(
                update(Outbox)
                .where(Outbox.id == row_id)
                .values(
                    status="sent",
                    sent_at=utcnow(),
                    attempts=Outbox.attempts + 1,
                    provider_id=",".join(result.provider_ids)[:128],
                    last_error=None,
                )
            )

    async def _failed(self, row_id: int, exc: SendError) -> None:
        async with self.services.db.session() as session:
            row = await session.get(Outbox, row_id)
            if row is None:
                return
            row.attempts += 1
            row.last_error = exc.kind.value
            if exc.kind.stops_contact:
                row.status = "failed"
                contact = await session.get(Contact, row.contact_id)
                if contact is not None:
                    contact.stopped = True
            elif exc.kind.retryable and row.attempts < MAX_ATTEMPTS:
                delay_s = exc.retry_after_s if exc.kind is SendErrorKind.THROTTLED and exc.retry_after_s else 2**row.attempts
                if exc.kind is SendErrorKind.THROTTLED:
                    await self.services.coord.pause(f"channel:{row.channel}", delay_s)
                row.status = "queued"
                row.next_attempt_at = utcnow() + timedelta(seconds=delay_s)
            else:
                row.status = "failed"
        log.warning("send failed outbox=%s kind=%s", row_id, exc.kind.value)
