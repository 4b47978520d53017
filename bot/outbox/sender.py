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

Rate limits go through `services.coord.admit_send`, one round trip (Redis when configured, so every worker
shares them): Telegram `TELEGRAM_RATE_PER_S` overall and `TELEGRAM_CHAT_RATE_PER_S` per chat,
WhatsApp `WHATSAPP_RATE_PER_S` per sender number. Send errors (bot/channels/base.py):
THROTTLED pauses the channel for retry_after; TRANSIENT retries with exponential backoff up to
`SEND_MAX_ATTEMPTS`; CONTACT_STOPPED marks the contact stopped, never retries and cancels its
reminders and broadcasts; OUTSIDE_WINDOW resends as the approved WhatsApp template.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels.base import OutboundMessage, SendError, SendErrorKind, SendResult, Template
from bot.i18n.catalogue import Button, normalise_language
from bot.runtime import metrics
from bot.runtime.batching import Batcher
from bot.runtime.services import Services
from bot.runtime.settings import Settings
from bot.storage.db import as_utc, utcnow
from bot.storage.models import Contact, EarlyReceipt, Outbox, Reminder

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6  # default of SEND_MAX_ATTEMPTS
PROACTIVE_ORIGINS = frozenset({"reminder", "broadcast"})
WHATSAPP_WINDOW = timedelta(hours=24)
WINDOW_ERROR_CODES = frozenset({"63016"})
STOP_ERROR_CODES = frozenset({"21610"})
# the longest a send task sleeps inline for a rate limit before handing the row back to the queue
MAX_INLINE_WAIT_S = 2.0
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 900.0
DELIVERY_RANK = {"sent": 1, "delivered": 2, "read": 3}
TEMPLATE_KINDS = {"reminder": "REMINDER", "broadcast": "BROADCAST", "mentor": "MENTOR_REPLY"}


@dataclass
class Claimed:
    """A claimed outbox row with what sending it needs from its contact."""

    id: int
    contact_id: int
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


# --- the outcome of successful sends on PostgreSQL -----------------------------------

# the sends that finish together, recorded in one statement (bot/runtime/batching.py); set_config(…, true) is
# SET LOCAL for the statement's own transaction: its commit does not wait for the disk
_SENT_SQL = (
    "WITH o AS (UPDATE outbox AS o SET status = 'sent', sent_at = v.sent_at, attempts = v.attempts, "
    "provider_id = v.provider_id, delivery_status = 'sent', last_error = NULL, "
    "payload = coalesce(v.payload::json, o.payload) "
    "FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::text[], $5::text[], $6::bool[]) "
    "AS v(id, sent_at, attempts, provider_id, payload, reminder) "
    "WHERE o.id = v.id AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL "
    "RETURNING o.id, v.reminder, v.sent_at) "
    "UPDATE reminders AS r SET status = 'sent', updated_at = o.sent_at FROM o WHERE o.reminder AND r.outbox_id = o.id"
)
# (outbox id, sent_at, attempts, provider id, payload as JSON or None, a reminder's send)
SentRow = tuple[int, datetime, int, str | None, str | None, bool]


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
        self._claim_lock = asyncio.Lock()
        self._record_sent: Batcher[SentRow, None] = Batcher(self._record_sent_rows)
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

    async def requeue_stale(self) -> int:
        """Rows `sending` for longer than the claim timeout belonged to a worker that died."""
        cutoff = utcnow() - timedelta(seconds=self.services.settings.outbox_claim_timeout_s)
        async with self.services.db.session() as session:
            result = await session.execute(
                update(Outbox)
                .where(Outbox.status == "sending", Outbox.claimed_at < cutoff)
                .values(status="queued", claimed_at=None, next_attempt_at=utcnow())
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
                        .values(status="sending", claimed_at=now)
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
                        Outbox.id, Outbox.contact_id, Outbox.channel, Outbox.origin, Outbox.text, Outbox.payload,
                        Outbox.attempts, Contact.address, Contact.language, Contact.stopped,
                        Contact.reminders_opt_out, Contact.last_inbound_at,
                    )
                    .join(Contact, Contact.id == Outbox.contact_id)
                    .where(Outbox.id.in_(claimed_ids))
                    .order_by(Outbox.id)
                )
            ).all()
        return [
            Claimed(
                id=r[0], contact_id=r[1], channel=r[2], origin=r[3], text=r[4] or "", payload=dict(r[5] or {}),
                attempts=r[6], address=r[7], language=normalise_language(r[8]), stopped=bool(r[9]),
                opted_out=bool(r[10]), last_inbound_at=as_utc(r[11]) if r[11] else None,
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
        """Take the channel's tokens (shared through Redis); sleeps briefly, or defers the row."""
        settings = self.services.settings
        chat_key = f"telegram:chat:{row.address}" if row.channel == "telegram" else None
        # per chat: a token bucket (Telegram tolerates a short burst in one chat, 1 msg/s on average);
        # the channel's overall limit: evenly spaced slots, reserved in order across workers
        slot_key, slot_rate = {
            "telegram": ("telegram:global", settings.telegram_rate_per_s),
            "whatsapp": (f"whatsapp:sender:{settings.twilio_whatsapp_from}", settings.whatsapp_rate_per_s),
        }.get(row.channel, (None, 0.0))
        while True:
            # one round trip: pause, chat bucket and slot (shared through Redis when configured)
            kind, wait_s = await self.services.coord.admit_send(
                f"channel:{row.channel}", chat_key, settings.telegram_chat_rate_per_s, 3.0, slot_key, slot_rate
            )
            if kind == "slot":
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                return
            # paused channel or a chat that has to wait long: give the row back instead of holding a task
            if wait_s > MAX_INLINE_WAIT_S:
                raise Deferred(wait_s)
            await asyncio.sleep(wait_s)

    # -- outcomes ----------------------------------------------------------------------

    async def _record_sent_rows(self, rows: list[SentRow]) -> list[None]:
        columns = list(zip(*rows, strict=True))
        await self.services.db.raw_pool().execute(_SENT_SQL, *(list(c) for c in columns))
        return [None] * len(rows)

    @asynccontextmanager
    async def _outcome_session(self) -> AsyncIterator[AsyncSession]:
        """A transaction recording a send's outcome. On PostgreSQL its commit does not wait for the
        disk: a killed *worker* loses nothing (the commit is in the server), only a crash of the
        database server itself may forget the last fraction of a second of outcomes, whose rows would
        then be sent again — the same at-least-once bound as a worker crash."""
        async with self.services.db.session() as session:
            if not self.services.db.is_sqlite:
                await session.execute(text("SET LOCAL synchronous_commit = off"))
            yield session

    async def _defer(self, ids: list[int], wait_s: float) -> None:
        self.stats["deferred"] += len(ids)
        async with self._outcome_session() as session:
            await session.execute(
                update(Outbox)
                .where(Outbox.id.in_(ids), Outbox.status == "sending")
                .values(status="queued", claimed_at=None, next_attempt_at=utcnow() + timedelta(seconds=wait_s))
                .execution_options(synchronize_session=False)
            )

    async def _finish(self, row_id: int, *, status: str, error: str | None) -> None:
        async with self._outcome_session() as session:
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
        if not self.services.db.is_sqlite:
            # with the outcomes of the sends that finish at the same time, its commit not waiting for
            # the disk (see _outcome_session); it is recorded before this send task takes another row
            payload = json.dumps(values["payload"]) if "payload" in values else None
            sent: SentRow = (row.id, values["sent_at"], values["attempts"], values["provider_id"], payload,
                             row.origin == "reminder")
            await self._record_sent(sent)
            return
        async with self._outcome_session() as session:
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
        async with self._outcome_session() as session:
            if kind is SendErrorKind.THROTTLED:
                # the provider's limit, not the message's fault: pause the channel, do not count it
                self.stats["throttled"] += 1
                delay_s = max(exc.retry_after_s or 1.0, 0.1)
                await self.services.coord.pause(f"channel:{row.channel}", delay_s)
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
        payload = dict(row.payload or {})
        if code in WINDOW_ERROR_CODES and not payload.get("force_template") and not payload.get("template"):
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
                row.last_error = "outside_window"
                row.next_attempt_at = utcnow()
                return True
        row.delivery_status = status
        row.last_error = (f"{status}:{code}" if code else status)[:64]
        if code in STOP_ERROR_CODES:
            row.last_error = "contact_stopped"
            await stop_contact(session, row.contact_id)
    return True
