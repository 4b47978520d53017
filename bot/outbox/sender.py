"""The outbox sender: claims queued rows and delivers them through their channel.

Claiming. A worker locks a batch of due rows (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL,
so concurrent workers take disjoint batches; SQLite runs a single worker) and marks them
`UPDATE … SET status = 'sending' WHERE id IN (…) AND status = 'queued'` in the same transaction.
Claimed rows are `sending` with `claimed_at`;
a row left `sending` longer than `OUTBOX_CLAIM_TIMEOUT_S` belonged to a worker that died and
goes back to `queued`.

Crash bound. Each row's outcome is committed right after its provider call returns, so after a
SIGKILL the only rows whose fate is unknown are those whose provider call had been made but whose
result was not committed yet: at most `concurrency` rows per worker (one send in flight per send
task). Those go back to queued and are sent again; every other claimed row was never handed to
the provider. Duplicates after a crash are therefore <= the sends in flight (<= `concurrency`).

A restarted process takes its own claims back at once (`claimed_by` is its token, see
bot/conversation/lease.py): `reclaim_own`.

Rate limits (bot/outbox/rates.py, shared through Redis when configured): Telegram
`TELEGRAM_RATE_PER_S` overall and `TELEGRAM_CHAT_RATE_PER_S` per chat, WhatsApp
`WHATSAPP_RATE_PER_S` per sender number. Send errors (bot/channels/base.py):
THROTTLED pauses the channel for retry_after; TRANSIENT retries with exponential backoff up to
`SEND_MAX_ATTEMPTS`; CONTACT_STOPPED marks the contact stopped, never retries and cancels its
reminders and broadcasts; OUTSIDE_WINDOW resends as the approved WhatsApp template.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels.base import OutboundMessage, SendError, SendErrorKind, SendResult, Template
from bot.channels.whatsapp.errors import error_kind
from bot.i18n.catalogue import Button, normalise_language
from bot.runtime import metrics
from bot.runtime.settings import Settings
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, EarlyReceipt, Outbox, Reminder

if TYPE_CHECKING:
    from bot.runtime.services import Services

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6  # default of SEND_MAX_ATTEMPTS
PROACTIVE_ORIGINS = frozenset({"reminder", "broadcast"})
WHATSAPP_WINDOW = timedelta(hours=24)
# the longest a send task sleeps inline for a rate limit before handing the row back to the queue (a
# chat's window after a burst: bot/outbox/rates.py)
MAX_INLINE_WAIT_S = 3.5
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 900.0
DELIVERY_RANK = {"sent": 1, "delivered": 2, "read": 3}
TEMPLATE_KINDS = {"reminder": "REMINDER", "broadcast": "BROADCAST", "mentor": "MENTOR_REPLY"}


@dataclass
class Claimed:
    """A claimed outbox row with what sending it needs from its contact."""

    id: int
    contact_id: int
    contact_key: str
    channel: str
    origin: str
    text: str
    payload: dict[str, Any]
    attempts: int
    address: str
    language: str
    stopped: bool
    opted_out: bool
    last_inbound_at: datetime | None


class Deferred(Exception):
    """The row cannot go out now (channel paused, chat rate): back to the queue until `at`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"deferred {wait_s:.2f}s")
        self.wait_s = wait_s


# --- WhatsApp templates -------------------------------------------------------------

def whatsapp_template(settings: Settings, origin: str, language: str, params: dict[str, str]) -> Template | None:
    """The approved template for a message outside the 24-hour window, from
    `WHATSAPP_TEMPLATE_<KIND>_<LANG>` (KIND: REMINDER, BROADCAST, MENTOR_REPLY, MESSAGE), falling back
    to `WHATSAPP_TEMPLATE_<KIND>` and then English. Value: `HX<ContentSid>` or
    `HX<ContentSid>|1=title,2=when` to map ContentVariables to reminder parameters (default 1=text)."""
    templates = settings.whatsapp_templates
    lang = normalise_language(language).upper()
    kinds = [TEMPLATE_KINDS.get(origin, "MESSAGE"), "MESSAGE"]
    raw = None
    for kind in dict.fromkeys(kinds):
        raw = templates.get(f"{kind}_{lang}") or templates.get(kind) or templates.get(f"{kind}_EN")
        if raw:
            break
    if not raw:
        return None
    sid, _, mapping = raw.partition("|")
    names: dict[str, str] = {}
    for pair in (p for p in mapping.split(",") if p.strip()):
        number, _, name = pair.partition("=")
        names[number.strip()] = name.strip()
    if not names:
        names = {"1": "text"}
    # WhatsApp rejects template variables with newlines or tabs
    variables = {num: " ".join(str(params.get(name, "")).split()) for num, name in names.items()}
    return Template(sid=sid.strip(), variables=variables)


def _outbound(text: str, payload: dict[str, Any], language: str, template: Template | None = None) -> OutboundMessage:
    buttons = tuple(Button(str(b["title"]), str(b["payload"])) for b in payload.get("buttons", []))
    if template is None and payload.get("template"):
        tpl = payload["template"]
        template = Template(sid=str(tpl["sid"]), variables={k: str(v) for k, v in tpl.get("variables", {}).items()})
    return OutboundMessage(text=text, buttons=buttons, template=template, language=language)


# --- the sender ---------------------------------------------------------------------

class OutboxSender:
    """Delivers outbox rows; safe to run in several processes (rows are claimed first)."""

    def __init__(self, services: Services, *, batch_size: int | None = None, concurrency: int | None = None) -> None:
        self.services = services
        self.batch_size = batch_size or services.settings.send_batch
        self.concurrency = concurrency or services.settings.send_concurrency
        if self.batch_size < 1 or self.concurrency < 1:
            raise ValueError("SANAD_SEND_BATCH and SANAD_SEND_CONCURRENCY must be at least 1")
        self.max_attempts = services.settings.send_max_attempts or MAX_ATTEMPTS
        self.rates = services.send_rates
        self._claim_lock = asyncio.Lock()
        self.stats: dict[str, int] = {"sent": 0, "failed": 0, "retried": 0, "deferred": 0, "throttled": 0}

    # -- public API --------------------------------------------------------------

    async def send_ids(self, ids: list[int]) -> int:
        """Send these rows now if they are still queued and due (replies right after they were written)."""
        if not ids:
            return 0
        claimed = await self._claim(list(ids), len(ids))
        await self._send_all(claimed)
        return len(claimed)

    async def send_claimed(self, rows: list[Claimed]) -> None:
        """Send rows the caller wrote already claimed (`sending`, with `claimed_at`) in its own
        transaction: the gateway's replies skip a claiming round trip this way."""
        if rows:
            await self._send_all(rows)

    async def run_once(self, limit: int = 100) -> int:
        """Return stale claims to the queue, then claim and send up to `limit` due rows in batches;
        returns how many rows were claimed."""
        await self.requeue_stale()
        total = 0
        while total < limit:
            claimed = await self._claim(None, min(self.batch_size, limit - total))
            if not claimed:
                break
            total += len(claimed)
            await self._send_all(claimed)
        return total

    async def reclaim_own(self) -> int:
        """At start-up: rows this process had claimed before it stopped are sent now (the provider may
        have got the ones in flight at the crash: at most `concurrency` of them go out twice)."""
        async with self.services.db.session() as session:
            ids = list((await session.execute(
                update(Outbox)
                .where(Outbox.status == "sending", Outbox.claimed_by == self.services.instance_token)
                .values(status="queued", claimed_at=None, claimed_by=None, next_attempt_at=utcnow())
                .returning(Outbox.id)
                .execution_options(synchronize_session=False)
            )).scalars())
        if ids:
            log.warning("took back %d outbox claims of this process from before it stopped", len(ids))
            await self.send_ids(sorted(ids))
        return len(ids)

    async def requeue_stale(self) -> int:
        """Rows `sending` for longer than the claim timeout belonged to a worker that died."""
        cutoff = utcnow() - timedelta(seconds=self.services.settings.outbox_claim_timeout_s)
        async with self.services.db.session() as session:
            result = await session.execute(
                update(Outbox)
                .where(Outbox.status == "sending", Outbox.claimed_at < cutoff)
                .values(status="queued", claimed_at=None, claimed_by=None, next_attempt_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            log.warning("returned %d stale outbox claims to the queue", count)
        return count

    # -- claiming --------------------------------------------------------------------

    async def _claim(self, ids: list[int] | None, limit: int) -> list[Claimed]:
        now = utcnow()
        due = select(Outbox.id).where(Outbox.status == "queued", Outbox.next_attempt_at <= now)
        if ids is not None:
            due = due.where(Outbox.id.in_(ids))
        due = due.order_by(Outbox.next_attempt_at, Outbox.id).limit(limit)
        if not self.services.db.is_sqlite:
            due = due.with_for_update(skip_locked=True)
        async with self._claim_lock, self.services.db.session() as session:
            # two statements, not UPDATE … WHERE id IN (SELECT … LIMIT … SKIP LOCKED): PostgreSQL may
            # re-run such a subquery and claim more rows than the limit
            candidates = list((await session.execute(due)).scalars().all())
            if not candidates:
                return []
            claimed_ids = list(
                (
                    await session.execute(
                        update(Outbox)
                        .where(Outbox.id.in_(candidates), Outbox.status == "queued")
                        .values(status="sending", claimed_at=now, claimed_by=self.services.instance_token)
                        .returning(Outbox.id)
                        .execution_options(synchronize_session=False)
                    )
                ).scalars().all()
            )
            if not claimed_ids:
                return []
            rows = (
                await session.execute(
                    select(
                        Outbox.id, Outbox.contact_id, Contact.key, Outbox.channel, Outbox.origin, Outbox.text,
                        Outbox.payload, Outbox.attempts, Contact.address, Contact.language, Contact.stopped,
                        Contact.reminders_opt_out, Contact.last_inbound_at,
                    )
                    .join(Contact, Contact.id == Outbox.contact_id)
                    .where(Outbox.id.in_(claimed_ids))
                    .order_by(Outbox.id)
                )
            ).all()
        return [
            Claimed(
                id=r[0], contact_id=r[1], contact_key=r[2], channel=r[3], origin=r[4], text=r[5] or "",
                payload=dict(r[6] or {}), attempts=r[7], address=r[8], language=normalise_language(r[9]),
                stopped=bool(r[10]), opted_out=bool(r[11]), last_inbound_at=as_utc(r[12]) if r[12] else None,
            )
            for r in rows
        ]

    # -- sending ---------------------------------------------------------------------

    async def _send_all(self, claimed: list[Claimed]) -> None:
        """One task per contact at a time keeps each chat's messages in order."""
        groups: OrderedDict[int, list[Claimed]] = OrderedDict()
        for row in claimed:
            groups.setdefault(row.contact_id, []).append(row)
        if len(groups) == 1:
            # the gateway's replies to one message: no tasks to spread them over
            await self._send_group(next(iter(groups.values())))
            return
        waiting = deque(groups.values())

        async def worker() -> None:
            while waiting:
                await self._send_group(waiting.popleft())

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(groups)))))

    async def _send_group(self, group: list[Claimed]) -> None:
        """One contact's rows, in order."""
        for index, row in enumerate(group):
            try:
                await self._deliver(row)
            except Deferred as exc:
                # keep the chat's order: everything after it waits as well
                await self._defer([r.id for r in group[index:]], exc.wait_s)
                return

    async def _deliver(self, row: Claimed) -> None:
        channel = self.services.channels.get(row.channel)
        if channel is None:
            await self._finish(row.id, status="failed", error="channel_off")
            return
        if row.origin in PROACTIVE_ORIGINS and (row.stopped or row.opted_out):
            await self._finish(row.id, status="cancelled", error="contact_stopped" if row.stopped else "opted_out")
            return
        template = None
        if row.channel == "whatsapp" and self._needs_template(row):
            template = whatsapp_template(
                self.services.settings, row.origin, row.language, self._template_params(row)
            )
        message = _outbound(row.text, row.payload, row.language, template)
        await self._wait_for_rate(row)
        try:
            try:
                result = await channel.send(row.address, message)
            except SendError as exc:
                if exc.kind is not SendErrorKind.OUTSIDE_WINDOW or message.template is not None:
                    raise
                fallback = whatsapp_template(
                    self.services.settings, row.origin, row.language, self._template_params(row)
                )
                if fallback is None:
                    raise
                result = await channel.send(row.address, _outbound(row.text, row.payload, row.language, fallback))
        except SendError as exc:
            await self._failed(row, exc)
            return
        except Exception as exc:  # a channel bug must not lose the row: retry it later
            log.exception("channel %s raised outside its error set for outbox=%s", row.channel, row.id)
            await self._failed(row, SendError(SendErrorKind.TRANSIENT, type(exc).__name__))
            return
        await self._sent(row, result)

    def _needs_template(self, row: Claimed) -> bool:
        if row.payload.get("template") or row.payload.get("force_template"):
            return bool(row.payload.get("force_template"))
        if row.origin not in PROACTIVE_ORIGINS:
            return False
        return row.last_inbound_at is None or row.last_inbound_at < utcnow() - WHATSAPP_WINDOW

    @staticmethod
    def _template_params(row: Claimed) -> dict[str, str]:
        params = dict(row.payload.get("template_params") or {})
        params.setdefault("text", row.text)
        return {k: str(v) for k, v in params.items()}

    async def _wait_for_rate(self, row: Claimed) -> None:
        """Take the send's place in the channel's limits; sleeps briefly, or defers the row."""
        while True:
            admission = await self.rates.admit(row.channel, row.contact_key)
            if admission.admitted:
                return
            # paused channel or a chat that has to wait long: give the row back instead of holding a task
            if admission.wait_s > MAX_INLINE_WAIT_S:
                raise Deferred(admission.wait_s)
            await asyncio.sleep(admission.wait_s)

    # -- outcomes ----------------------------------------------------------------------

    async def _defer(self, ids: list[int], wait_s: float) -> None:
        self.stats["deferred"] += len(ids)
        async with self.services.db.session() as session:
            await session.execute(
                update(Outbox)
                .where(Outbox.id.in_(ids), Outbox.status == "sending")
                .values(status="queued", claimed_at=None, next_attempt_at=utcnow() + timedelta(seconds=wait_s))
                .execution_options(synchronize_session=False)
            )

    async def _finish(self, row_id: int, *, status: str, error: str | None) -> None:
        async with self.services.db.session() as session:
            await session.execute(
                update(Outbox)
                .where(Outbox.id == row_id)
                .values(status=status, last_error=error, claimed_at=None)
                .execution_options(synchronize_session=False)
            )
            if status == "cancelled":
                await session.execute(
                    update(Reminder)
                    .where(Reminder.outbox_id == row_id, Reminder.status == "queued")
                    .values(status="cancelled", updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )

    async def _sent(self, row: Claimed, result: SendResult) -> None:
        self.stats["sent"] += 1
        metrics.OUTBOUND.labels(row.channel, "sent").inc()
        values: dict[str, Any] = {
            "status": "sent",
            "sent_at": utcnow(),
            "attempts": row.attempts + 1,
            "provider_id": (result.provider_ids[0] if result.provider_ids else None),
            "delivery_status": "sent",
            "last_error": None,
        }
        if len(result.provider_ids) > 1:
            values["payload"] = {**row.payload, "provider_ids": list(result.provider_ids)}
        if row.origin != "reminder":
            async with self.services.db.autocommit() as conn:
                await conn.execute(update(Outbox).where(Outbox.id == row.id).values(**values))
            return
        async with self.services.db.session() as session:
            await session.execute(
                update(Outbox).where(Outbox.id == row.id).values(**values).execution_options(synchronize_session=False)
            )
            if row.origin == "reminder":
                await session.execute(
                    update(Reminder)
                    .where(Reminder.outbox_id == row.id)
                    .values(status="sent", updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )

    async def _failed(self, row: Claimed, exc: SendError) -> None:
        kind = exc.kind
        metrics.OUTBOUND.labels(row.channel, kind.value).inc()
        attempts = row.attempts + 1
        now = utcnow()
        values: dict[str, Any] = {"last_error": kind.value, "claimed_at": None}
        async with self.services.db.session() as session:
            if kind is SendErrorKind.THROTTLED:
                # the provider's limit, not the message's fault: pause the channel, do not count it
                self.stats["throttled"] += 1
                delay_s = max(exc.retry_after_s or 1.0, 0.1)
                await self.rates.pause(row.channel, delay_s)
                values.update(status="queued", next_attempt_at=now + timedelta(seconds=delay_s))
            elif kind is SendErrorKind.CONTACT_STOPPED:
                values.update(status="failed", attempts=attempts)
                await stop_contact(session, row.contact_id)
            elif kind is SendErrorKind.TRANSIENT and attempts < self.max_attempts:
                self.stats["retried"] += 1
                delay_s = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
                values.update(status="queued", attempts=attempts, next_attempt_at=now + timedelta(seconds=delay_s))
            else:
                self.stats["failed"] += 1
                values.update(status="failed", attempts=attempts)
            await session.execute(
                update(Outbox).where(Outbox.id == row.id).values(**values).execution_options(synchronize_session=False)
            )
        log.warning("send failed outbox=%s channel=%s kind=%s attempt=%d", row.id, row.channel, kind.value, attempts)


async def stop_contact(session: AsyncSession, contact_id: int) -> None:
    """The provider says the contact blocked us or unsubscribed: nothing proactive goes out any more."""
    from bot.reminders.planner import cancel_contact_reminders

    await session.execute(
        update(Contact).where(Contact.id == contact_id).values(stopped=True).execution_options(
            synchronize_session=False
        )
    )
    await cancel_contact_reminders(session, contact_id, "contact_stopped")


# --- delivery status callbacks --------------------------------------------------------

EARLY_RECEIPT_MAX_AGE = timedelta(hours=1)


async def receive_delivery_status(
    services: Services, channel: str, provider_id: str, status: str, error_code: str | None
) -> bool:
    """A provider's status callback: recorded on its outbox row, or kept as an early receipt when
    the row does not carry the provider id yet (the callback overtook the send's outcome);
    returns whether the row was found."""
    if await record_delivery_status(services, channel, provider_id, status, error_code):
        return True
    async with services.db.session() as session:
        session.add(EarlyReceipt(channel=channel, provider_id=provider_id[:128], status=(status or "")[:16],
                                 error_code=str(error_code)[:16] if error_code else None))
    return False


async def apply_early_receipts(services: Services, limit: int = 500) -> int:
    """Record the early receipts whose message now has its provider id (worker); receipts that
    matched nothing for an hour are dropped. Returns how many were recorded."""
    now = utcnow()
    async with services.db.session() as session:
        receipts = list((await session.execute(
            select(EarlyReceipt).order_by(EarlyReceipt.id).limit(limit)
        )).scalars())
    applied = 0
    done: list[int] = []
    for receipt in receipts:
        if await record_delivery_status(
            services, receipt.channel, receipt.provider_id, receipt.status, receipt.error_code
        ):
            applied += 1
            done.append(receipt.id)
        elif as_utc(receipt.received_at) < now - EARLY_RECEIPT_MAX_AGE:
            done.append(receipt.id)
    if done:
        async with services.db.session() as session:
            await session.execute(delete(EarlyReceipt).where(EarlyReceipt.id.in_(done)))
    return applied


async def record_delivery_status(
    services: Services, channel: str, provider_id: str, status: str, error_code: str | None
) -> bool:
    """Store a provider's status callback on the outbox row; False when no row has that provider id.

    Never moves backwards (read > delivered > sent); failed/undelivered is recorded unless the
    message was already delivered or read. Twilio 63016 (outside the 24-hour window) requeues the
    message once as the approved template; 21610 (unsubscribed) stops the contact.
    """
    status = (status or "").strip().lower()
    async with services.db.session() as session:
        query = select(Outbox).where(Outbox.provider_id == provider_id, Outbox.channel == channel).limit(1)
        if not services.db.is_sqlite:
            query = query.with_for_update()
        row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            return False
        current = row.delivery_status
        if status in DELIVERY_RANK:
            if current in ("failed", "undelivered"):
                if status != "sent":  # a later delivered/read proves it arrived after all
                    row.delivery_status = status
            elif DELIVERY_RANK.get(current or "", 0) < DELIVERY_RANK[status]:
                row.delivery_status = status
            return True
        if status not in ("failed", "undelivered"):
            return True  # queued / accepted / sending: nothing to record
        if current in ("delivered", "read"):
            return True
        code = (error_code or "").strip()
        kind = error_kind(code) if channel == "whatsapp" and code else None
        payload = dict(row.payload or {})
        if kind is SendErrorKind.OUTSIDE_WINDOW and not payload.get("force_template") and not payload.get("template"):
            contact = await session.get(Contact, row.contact_id)
            template = whatsapp_template(
                services.settings, row.origin, (contact.language if contact else None) or "en",
                {**payload.get("template_params", {}), "text": row.text or ""},
            )
            if template is not None:
                payload["force_template"] = True
                row.payload = payload
                row.status = "queued"
                row.delivery_status = None
                row.provider_id = None
                row.claimed_by = None
                row.last_error = "outside_window"
                row.next_attempt_at = utcnow()
                return True
        row.delivery_status = status
        row.last_error = (f"{status}:{code}" if code else status)[:64]
        if kind is SendErrorKind.CONTACT_STOPPED:
            row.last_error = "contact_stopped"
            await stop_contact(session, row.contact_id)
    return True
