"""From a verified webhook to replies: persist, route, ask Rasa, queue the answers.

Order and safety:
- `accept` persists every inbound message (unique on its provider id) before the
  webhook answers, so a redelivery is answered 200 and never handled twice.
- `process_contact` holds the contact's lease (bot/conversation/lease.py, shared by every gateway
  through the database) and takes the contact's received messages oldest first, so one
  conversation is handled in order.
- When Rasa is down the message stays `received`; the learner is told once, and
  `redeliver_pending` picks it up again when Rasa is back.

The bot path is the hot path of the gateway: it uses SQLAlchemy Core statements and
three short transactions per message (accept, take, finish); the ORM is used where
other areas need attached objects (hand-off to a mentor, gateway commands).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    String,
    Table,
    bindparam,
    case,
    false,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.channels.base import InboundEvent, ParseError
from bot.conversation import lease as contact_lease
from bot.conversation.commands import CommandResult, handler_for
from bot.conversation.interceptors import interceptors
from bot.conversation.lease import PIPELINE_TOKEN, PIPELINE_TTL_S, PIPELINE_WAIT_S, Backoff, LeaseState
from bot.conversation.text import clean_text, storable, storable_tree
from bot.i18n.catalogue import Button, Rendered
from bot.outbox.queue import enqueue, rendered_payload
from bot.privacy.logs import contact_ref
from bot.runtime import batching, metrics
from bot.runtime.batching import Batcher
from bot.runtime.services import Services
from bot.storage.db import StatementPool, snapshot, utcnow
from bot.storage.models import Contact, InboundMessage, Outbox
from integrations.rasa import RasaUnavailable

log = logging.getLogger(__name__)

MAX_PROCESS_ATTEMPTS = 3
NON_TEXT_KINDS = {"voice", "audio", "photo", "video", "document", "sticker", "location", "contact", "other"}
CONTACTS = cast(Table, Contact.__table__)
MESSAGES = cast(Table, InboundMessage.__table__)
OUTBOX = cast(Table, Outbox.__table__)
_background: set[asyncio.Task[Any]] = set()


# --- accepting ----------------------------------------------------------------

class _Statements:
    """Hot-path statements, built once per dialect: building a statement costs more than running it."""

    def __init__(self, dialect_insert: Any) -> None:
        ins = dialect_insert(CONTACTS).values(
            key=bindparam("key"), channel=bindparam("channel"), address=bindparam("address"),
            display_name=bindparam("display_name"), mode="bot", reminders_opt_out=False, stopped=False,
            pin_failures=0, created_at=bindparam("now"), last_inbound_at=bindparam("now"),
        )
        self.upsert_contact = ins.on_conflict_do_update(
            index_elements=["key"],
            set_={
                "last_inbound_at": ins.excluded.last_inbound_at,
                # keep a name the learner already has; fill it when we had none
                "display_name": func.coalesce(CONTACTS.c.display_name, ins.excluded.display_name),
                # a Telegram learner who writes has unblocked the bot (WhatsApp needs START: optout.py)
                "stopped": case((CONTACTS.c.channel == "telegram", false()), else_=CONTACTS.c.stopped),
            },
        ).returning(CONTACTS.c.id)
        self.insert_message = (
            dialect_insert(MESSAGES)
            .values({**{c: bindparam(c) for c in (
                "contact_id", "channel", "dedup_key", "provider_id", "kind", "text", "payload", "media_ref",
                "media_type", "created_at")}, "status": "received", "attempts": 0})
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(MESSAGES.c.id)
        )
        self.contact_by_key = select(CONTACTS).where(CONTACTS.c.key == bindparam("key"))
        self.next_message = (
            select(MESSAGES)
            .where(MESSAGES.c.contact_id == bindparam("contact_id"), MESSAGES.c.status == "received")
            .order_by(MESSAGES.c.id)
            .limit(1)
        )
        self.set_attempts = (
            update(MESSAGES).where(MESSAGES.c.id == bindparam("message_id")).values(attempts=bindparam("attempts"))
        )
        self.finish_message = (
            update(MESSAGES)
            .where(MESSAGES.c.id == bindparam("message_id"))
            .values(status=bindparam("status"), routed_to=bindparam("routed_to"),
                    processed_at=bindparam("processed_at"), language=bindparam("language"))
        )
        self.insert_outbox = insert(OUTBOX).values(
            {**{c: bindparam(c) for c in ("contact_id", "channel", "origin", "text", "payload", "in_reply_to",
                                          "next_attempt_at", "created_at", "status", "claimed_at")}, "attempts": 0}
        ).returning(OUTBOX.c.id)


_STATEMENTS: dict[bool, _Statements] = {}


# --- PostgreSQL: one statement (one round trip, autocommit) per step ----------------------------

def _python_defaults(table: Any, given: set[str]) -> list[tuple[str, Any]]:
    """Columns with a Python-side default that a hand-written INSERT would otherwise leave NULL."""
    return [
        (col.name, col.default)
        for col in table.columns
        if col.default is not None and col.name not in given and not col.primary_key
    ]


def _select_list(alias: str, table: Any) -> str:
    return ", ".join(f'{alias}."{c.name}" AS "{alias}__{c.name}"' for c in table.columns)


# a subquery evaluated before the row changes: this transaction's commit does not wait for the disk
_ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"


class _PgSql:
    def __init__(self) -> None:
        contact_cols = {"key", "channel", "address", "display_name", "mode", "reminders_opt_out", "stopped",
                        "pin_failures", "created_at", "last_inbound_at"}
        message_cols = {"contact_id", "channel", "dedup_key", "provider_id", "kind", "text", "payload", "media_ref",
                        "media_type", "created_at", "status", "attempts"}
        if _python_defaults(CONTACTS, contact_cols) or _python_defaults(MESSAGES, message_cols):
            raise RuntimeError("columns with Python-side defaults need a value in the accept statement")
        # the messages of every webhook arriving at the same moment (bot/runtime/batching.py): one upsert per
        # contact (the first of its messages names it), then the messages in arrival order
        self.accept_many = (
            "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
            "$6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) WITH ORDINALITY "
            "AS v(key, channel, address, display_name, dedup_key, provider_id, kind, text, payload, media_ref, "
            "media_type, ord)), "
            "c AS (INSERT INTO contacts (key, channel, address, display_name, mode, reminders_opt_out, stopped, "
            "pin_failures, created_at, last_inbound_at) SELECT DISTINCT ON (key) key, channel, address, display_name, "
            "'bot', false, false, 0, $12, $12 FROM v ORDER BY key, ord "
            "ON CONFLICT (key) DO UPDATE SET last_inbound_at = excluded.last_inbound_at, "
            "display_name = coalesce(contacts.display_name, excluded.display_name), "
            "stopped = CASE WHEN contacts.channel = 'telegram' THEN false ELSE contacts.stopped END RETURNING id, key) "
            "INSERT INTO inbound_messages (contact_id, channel, dedup_key, provider_id, kind, text, payload, "
            "media_ref, media_type, created_at, status, attempts) "
            "SELECT c.id, v.channel, v.dedup_key, v.provider_id, v.kind, v.text, v.payload::json, v.media_ref, "
            "v.media_type, $12, 'received', 0 FROM v JOIN c ON c.key = v.key ORDER BY v.ord "
            "ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key"
        )
        # for the contacts $1 (several conversations at once, bot/runtime/batching.py): take each one's lease
        # ($2 token, $3 until) unless another holds it (free, expired or ours at $4), and load the
        # contact and its oldest received message, counting the attempt
        self.take = (
            "WITH c AS (UPDATE contacts SET lease_token = $2, lease_until = $3 "  # noqa: S608  (our own metadata)
            "WHERE key = ANY($1::text[]) AND (lease_token IS NULL OR lease_token = $2 OR lease_until < $4) "
            f"AND {_ASYNC_COMMIT} RETURNING *), "
            "m AS (UPDATE inbound_messages SET attempts = attempts + 1 WHERE id IN ("
            "SELECT (SELECT i.id FROM inbound_messages AS i WHERE i.contact_id = c.id AND i.status = 'received' "
            "ORDER BY i.id LIMIT 1) FROM c) RETURNING *) "
            f"SELECT {_select_list('c', CONTACTS)}, {_select_list('m', MESSAGES)} "
            "FROM c LEFT JOIN m ON m.contact_id = c.id"
        )
        self.contacts_existing = "SELECT key FROM contacts WHERE key = ANY($1::text[])"
        # the take's columns in select-list order: the contact's, then the message's
        self.contact_names = [c.name for c in CONTACTS.columns]
        self.message_names = [c.name for c in MESSAGES.columns]
        outbox_cols = {"contact_id", "channel", "origin", "text", "payload", "in_reply_to", "next_attempt_at",
                       "created_at", "status", "claimed_at", "attempts"}
        if _python_defaults(OUTBOX, outbox_cols):
            raise RuntimeError("columns with Python-side defaults need a value in the finish statement")
        self._finish: dict[tuple[str, ...], str] = {}

    def finish(self, changed: tuple[str, ...]) -> str:
        """For the turns finishing at the same moment whose contacts change the columns `changed`: mark
        each message, update each contact, queue every reply (in order) — one statement.

        $1..$6 one array element per turn: message id, status, routed_to, processed_at, language,
        contact id; then one array per changed column; then one element per reply: the message it
        answers, contact id, channel, status, text, payload (JSON), claimed_at; last, now."""
        sql = self._finish.get(changed)
        if sql is not None:
            return sql
        unknown = set(changed) - set(CONTACTS.c.keys())
        if unknown:
            raise ValueError(f"not columns of contacts: {sorted(unknown)}")
        turn_arrays = ["$1::bigint[]", "$2::text[]", "$3::text[]", "$4::timestamptz[]", "$5::text[]", "$6::bigint[]"]
        turn_names = ["message_id", "status", "routed_to", "processed_at", "language", "contact_id"]
        sets = []
        for name in changed:
            kind = _pg_array_type(CONTACTS.c[name])
            turn_arrays.append(f"${len(turn_arrays) + 1}::{'text' if kind == 'json' else kind}[]")
            turn_names.append(f"new_{name}")
            sets.append(f'"{name}" = d."new_{name}"' + ("::json" if kind == "json" else ""))
        n = len(turn_arrays)
        reply_arrays = [f"${n + i}::{kind}[]" for i, kind in
                        enumerate(("bigint", "bigint", "text", "text", "text", "text", "timestamptz"), start=1)]
        now = f"${n + 8}"
        # built from our own table metadata (checked names); every value is a bound parameter
        update_contacts = f", cu AS (UPDATE contacts AS c SET {', '.join(sets)} FROM d WHERE c.id = d.contact_id)"  # noqa: S608
        sql = (
            f"WITH d AS (SELECT * FROM unnest({', '.join(turn_arrays)}) AS d({', '.join(turn_names)})), "  # noqa: S608
            "done AS (UPDATE inbound_messages AS m SET status = d.status, routed_to = d.routed_to, "
            "processed_at = d.processed_at, language = d.language FROM d WHERE m.id = d.message_id)"
            f"{update_contacts if sets else ''} "
            "INSERT INTO outbox (contact_id, channel, origin, text, payload, in_reply_to, next_attempt_at, "
            "created_at, status, claimed_at, attempts) "
            f"SELECT r.contact_id, r.channel, 'reply', r.text, r.payload::json, r.in_reply_to, {now}, {now}, "
            f"r.status, r.claimed_at, 0 FROM unnest({', '.join(reply_arrays)}) WITH ORDINALITY "
            "AS r(in_reply_to, contact_id, channel, status, text, payload, claimed_at, ord) ORDER BY r.ord "
            "RETURNING id, in_reply_to"
        )
        self._finish[changed] = sql
        return sql


def _pg_array_type(column: Any) -> str:
    """The PostgreSQL element type of a column, for the arrays of a batched statement."""
    kind = column.type
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, DateTime):
        return "timestamptz"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, Integer):  # BigInteger included
        return "int8"
    if isinstance(kind, String):  # Text included
        return "text"
    raise ValueError(f"no array type for column {column.name} ({kind})")


_PG: _PgSql | None = None


def _pg(services: Services) -> _PgSql | None:
    """The one-statement path on PostgreSQL; None on SQLite (which keeps the transactions)."""
    global _PG
    if services.db.is_sqlite:
        return None
    if _PG is None:
        _PG = _PgSql()
    return _PG


def _sql(services: Services) -> _Statements:
    sqlite = services.db.is_sqlite
    if sqlite not in _STATEMENTS:
        _STATEMENTS[sqlite] = _Statements(sqlite_insert if sqlite else pg_insert)
    return _STATEMENTS[sqlite]


async def _set_stopped(services: Services, event: InboundEvent) -> None:
    """The learner blocked (or unblocked) the bot: nothing is sent to a stopped contact."""
    async with services.db.engine.begin() as conn:
        await conn.execute(
            update(CONTACTS).where(CONTACTS.c.key == event.contact_key).values(stopped=event.kind == "blocked")
        )


async def accept(services: Services, events: list[InboundEvent]) -> list[str]:
    """Persist inbound events; returns the contact key of each new message (duplicates left out)."""
    keys: list[str] = []
    now = utcnow()
    sql = _sql(services)
    for event in events:
        if event.kind in ("blocked", "unblocked"):
            await _set_stopped(services, event)
    messages = [_storable_event(e) for e in events if e.kind not in ("blocked", "unblocked")]
    if not messages:
        return keys
    pg = _pg(services)
    if pg is not None:
        acceptor = batching.shared(services.extras, "pipeline_acceptor",
                                   lambda: Batcher(partial(_accept_many, services.db.raw_pool(), pg)))
        for event in messages:
            _count_inbound(event, await acceptor(event), keys)
        return keys
    async with services.db.engine.begin() as conn:
        for event in messages:
            contact_id = (
                await conn.execute(sql.upsert_contact, {
                    "key": event.contact_key, "channel": event.channel, "address": event.address,
                    "display_name": event.display_name, "now": now,
                })
            ).scalar_one()
            text, payload = _message_body(event)
            inserted = (
                await conn.execute(sql.insert_message, {
                    "contact_id": contact_id, "channel": event.channel, "dedup_key": event.dedup_key,
                    "provider_id": event.provider_id, "kind": event.kind, "text": text or None,
                    "payload": payload or None, "media_ref": event.media_ref,
                    "media_type": event.media_type, "created_at": now,
                })
            ).scalar_one_or_none()
            _count_inbound(event, inserted is not None, keys)
    return keys


MAX_ADDRESS_CHARS = 64  # contacts.address


def _storable_event(event: InboundEvent) -> InboundEvent:
    """The event with every string the database could refuse made storable: a payload that can
    never be stored must get a 400, not a 5xx the provider retries forever."""
    if len(event.address) > MAX_ADDRESS_CHARS or storable(event.address) != event.address:
        raise ParseError("not a valid chat address")
    return replace(
        event,
        dedup_key=storable(event.dedup_key)[:128],
        provider_id=storable(event.provider_id)[:128],
        display_name=storable(event.display_name)[:128] if event.display_name else None,
        media_ref=storable(event.media_ref) if event.media_ref else None,
        media_type=storable(str(event.media_type))[:64] if event.media_type else None,
        language_hint=storable(event.language_hint)[:16] if event.language_hint else None,
        payload=storable_tree(event.payload) if event.payload else None,
        ack=storable_tree(event.ack) if event.ack else None,
    )


async def _accept_many(pool: StatementPool, pg: _PgSql, events: list[InboundEvent]) -> list[bool]:
    """Store the messages of the webhooks arriving at the same moment; True for each one that is new."""
    columns: list[list[str | None]] = [[] for _ in range(11)]
    for event in events:
        text, payload = _message_body(event)
        row = (event.contact_key, event.channel, event.address, event.display_name, event.dedup_key,
               event.provider_id, event.kind, text or None, json.dumps(payload) if payload else None,
               event.media_ref, event.media_type)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    new = {row["dedup_key"] for row in await pool.fetch(pg.accept_many, *columns, utcnow())}
    # a redelivery racing its original in the same batch: only the first of them is new
    first: dict[str, int] = {}
    for index, event in enumerate(events):
        first.setdefault(event.dedup_key, index)
    return [event.dedup_key in new and first[event.dedup_key] == index for index, event in enumerate(events)]


def _message_body(event: InboundEvent) -> tuple[str, dict[str, Any]]:
    text, truncated = clean_text(event.text)
    payload = dict(event.payload or {})
    if truncated:
        payload["truncated"] = True
    if event.language_hint:
        payload["language_hint"] = event.language_hint
    if event.ack:
        payload["ack"] = event.ack
    return text, payload


def _count_inbound(event: InboundEvent, inserted: bool, keys: list[str]) -> None:
    if not inserted:
        metrics.INBOUND.labels(event.channel, "duplicate").inc()
        return
    metrics.INBOUND.labels(event.channel, "accepted").inc()
    keys.append(event.contact_key)


# One processing task per contact in this process. `_pending` counts the messages accepted (or
# found by redelivery) that the task still has to take: it takes exactly that many, so no message
# costs an extra empty look. A message another gateway accepted is taken by whichever process gets
# there first; the other then finds one message fewer (or none), and anything left behind is
# found by `redeliver_pending`.
_active: dict[str, asyncio.Task[Any]] = {}
_pending: dict[str, int] = {}
_UNTIL_EMPTY = 1_000_000


def schedule(services: Services, keys: list[str], until_empty: bool = False) -> None:
    """Process these contacts in the background (the webhook has already answered); `keys` holds a
    contact's key once per new message, or once with `until_empty` (redelivery)."""
    for key in keys:
        _pending[key] = min(_UNTIL_EMPTY, _pending.get(key, 0) + (_UNTIL_EMPTY if until_empty else 1))
        if key in _active:
            continue  # the running task looks at `_pending` again before it ends
        task = asyncio.create_task(_run_contact(services, key))
        _active[key] = task
        _background.add(task)
        task.add_done_callback(_background.discard)


def _slots(services: Services) -> asyncio.Semaphore:
    """How many contacts this process works on at once (`SANAD_PROCESS_CONCURRENCY`, default 32):
    under a backlog the rest wait here, holding no Redis or database connection."""
    slots = services.extras.get("pipeline_slots")
    if not isinstance(slots, asyncio.Semaphore):
        size = services.settings.process_concurrency
        if size < 1:
            raise ValueError("SANAD_PROCESS_CONCURRENCY must be at least 1")
        slots = services.extras["pipeline_slots"] = asyncio.Semaphore(size)
    return slots


async def _run_contact(services: Services, key: str) -> None:
    try:
        async with _slots(services):
            while _pending.get(key, 0) > 0:
                await process_contact(services, key)
            # no await between this check and the exit: a message scheduled meanwhile is seen above
    finally:
        _active.pop(key, None)
        _pending.pop(key, None)


async def drain() -> None:
    """Wait for scheduled processing (tests, shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


# --- processing ---------------------------------------------------------------

@dataclass
class Turn:
    """One message being handled, and what its handling will write in the finishing transaction."""

    contact: Contact
    message: InboundMessage
    replies: list[Rendered] = field(default_factory=list)
    routed_to: str = "bot"
    contact_changes: dict[str, Any] = field(default_factory=dict)


async def process_contact(services: Services, key: str) -> None:
    """Handle as many of the contact's received messages, oldest first, as `schedule` counted for it,
    holding the contact's lease (bot/conversation/lease.py) meanwhile."""
    holding = False
    backoff: Backoff | None = None
    try:
        while _pending.get(key, 0) > 0:
            started = time.perf_counter()
            taken = await _take_next(services, key)
            if taken == "busy":
                # another gateway works on this contact; if it stays busy, redelivery comes back to it
                backoff = backoff or Backoff(PIPELINE_WAIT_S)
                if await backoff.wait():
                    continue
                log.info("contact busy, left for redelivery contact=%s", contact_ref(key))
                _pending.pop(key, None)
                break
            backoff = None
            holding = holding or taken != "missing"
            if isinstance(taken, str):
                _pending.pop(key, None)  # none left (or the contact is gone): nothing more to do
                break
            _pending[key] -= 1
            if not await _process_taken(services, *taken, started=started):
                _pending.pop(key, None)  # Rasa is down: redelivery takes over from here
                break
    except Exception:
        # never let a background task die silently; the message stays received and is retried
        log.exception("processing failed contact=%s", contact_ref(key))
        _pending.pop(key, None)
    finally:
        if holding:
            try:
                await contact_lease.release(services, key, PIPELINE_TOKEN)
            except Exception:
                log.exception("lease not released (it expires) contact=%s", contact_ref(key))


Taken = tuple[Contact, InboundMessage]


async def _take_next(services: Services, key: str) -> Taken | LeaseState:
    """Take the contact's lease and load the contact and its oldest received message, counting the
    attempt; "held" when the lease is ours but no message waits, else "busy" or "missing"."""
    pg = _pg(services)
    if pg is not None:
        taker = batching.shared(services.extras, "pipeline_taker",
                                lambda: Batcher(partial(_take_many, services.db.raw_pool(), pg)))
        taken: Taken | LeaseState = await taker(key)
        return taken
    sql = _sql(services)
    async with services.db.engine.begin() as conn:
        state = await contact_lease.try_acquire(conn, key, PIPELINE_TOKEN, PIPELINE_TTL_S)
        if state != "held":
            return state
        crow = (await conn.execute(sql.contact_by_key, {"key": key})).mappings().first()
        if crow is None:
            return "missing"
        mrow = (await conn.execute(sql.next_message, {"contact_id": crow["id"]})).mappings().first()
        if mrow is None:
            return "held"
        attempts = int(mrow["attempts"]) + 1
        await conn.execute(sql.set_attempts, {"message_id": mrow["id"], "attempts": attempts})
    # detached snapshots: areas read them, and write through their own sessions
    return snapshot(Contact, dict(crow)), snapshot(InboundMessage, {**mrow, "attempts": attempts})


async def _take_many(pool: StatementPool, pg: _PgSql, keys: list[str]) -> list[Taken | LeaseState]:
    """`_take_next` for the conversations asking at the same moment, in one statement."""
    now = utcnow()
    rows = await pool.fetch(pg.take, keys, PIPELINE_TOKEN, now + timedelta(seconds=PIPELINE_TTL_S), now)
    split = len(pg.contact_names)
    found: dict[str, Taken | LeaseState] = {}
    for row in rows:
        values = tuple(row)
        contact_values = dict(zip(pg.contact_names, values[:split], strict=True))
        message_values = dict(zip(pg.message_names, values[split:], strict=True))
        found[contact_values["key"]] = (
            "held" if message_values["id"] is None
            else (snapshot(Contact, contact_values), snapshot(InboundMessage, message_values))
        )
    if len(found) < len(keys):
        missing = [key for key in keys if key not in found]
        existing = {row["key"] for row in await pool.fetch(pg.contacts_existing, missing)}
        found.update({key: "busy" if key in existing else "missing" for key in missing})
    return [found[key] for key in keys]


async def _process_taken(services: Services, contact: Contact, message: InboundMessage, started: float) -> bool:
    """Handle a taken message; False when Rasa is down (stop for now)."""
    turn = Turn(contact, message)
    if message.attempts > MAX_PROCESS_ATTEMPTS:
        # a message that keeps failing must not block the conversation forever
        turn.replies.append(services.catalogue.render("gateway_error", contact.language or "en"))
        await _finish(services, turn, status="failed")
        return True
    if contact.mode != "bot":
        await _route_to_mentor(services, contact, message)
        metrics.PROCESSED.labels(contact.channel, "mentor").observe(time.perf_counter() - started)
        return True
    await _acknowledge(services, contact, message)
    handled = await _handle_with_bot(services, turn)
    metrics.PROCESSED.labels(contact.channel, "bot").observe(time.perf_counter() - started)
    return handled


async def _route_to_mentor(services: Services, contact: Contact, message: InboundMessage) -> None:
    from bot.mentoring.routing import route_to_mentor

    async with services.db.session() as session:
        attached = await session.get(Contact, contact.id)
        row = await session.get(InboundMessage, message.id)
        if attached is None or row is None:
            return
        replies = await route_to_mentor(services, session, attached, row)
        row.status, row.routed_to, row.processed_at = "done", "mentor", utcnow()
        ids = [(await enqueue(session, attached, r, origin="system", in_reply_to=row.id)).id for r in replies]
    await _acknowledge(services, contact, message)
    await send_now(services, ids)


async def _acknowledge(services: Services, contact: Contact, message: InboundMessage) -> None:
    ack = (message.payload or {}).get("ack")
    channel = services.channels.get(contact.channel)
    if ack and channel is not None and message.attempts <= 1:
        event = InboundEvent(channel=contact.channel, address=contact.address, dedup_key="", provider_id="", ack=ack)
        await channel.acknowledge(event)


async def send_now(services: Services, outbox_ids: list[int]) -> None:
    """Deliver freshly queued rows right away (the worker picks up whatever this misses)."""
    sender = services.extras.get("sender")
    if sender is not None and outbox_ids:
        await sender.send_ids(outbox_ids)


def resolve_button(contact: Contact, channel_numbered: bool, message: InboundMessage) -> str | None:
    """Map a WhatsApp reply "2" or a Telegram `btn:2` to the payload of the button last offered."""
    buttons = contact.pending_buttons or []
    text = (message.text or "").strip()
    index: int | None = None
    if message.kind == "button" and text.startswith("btn:") and text[4:].isdigit():
        index = int(text[4:])
    elif channel_numbered and message.kind == "text" and text.isdigit() and 1 <= int(text) <= len(buttons):
        index = int(text) - 1
    if index is not None and 0 <= index < len(buttons):
        return str(buttons[index]["payload"])
    return None


def rasa_metadata(services: Services, contact: Contact, message: InboundMessage) -> dict[str, Any]:
    """What custom actions know about the learner (see flows/context.py)."""
    from bot.privacy.pin import pin_required

    return {
        "channel": contact.channel,
        "language": contact.language or "en",
        "learner_id": contact.learner_id,
        "timezone": contact.timezone,
        "country": contact.country,
        "first_name": contact.display_name,
        "pin_required": pin_required(contact, utcnow(), services.settings),
        "message_kind": message.kind,
        "inbound_id": message.id,
    }


def _update_language(turn: Turn, text: str) -> None:
    from bot.conversation.language import choose_language, detect_language

    contact, message = turn.contact, turn.message
    hint = (message.payload or {}).get("language_hint")
    if message.kind == "text" and text and not text.startswith("/"):
        detected, confidence = detect_language(text, hint)
    else:
        detected, confidence = None, 0.0
    language, source = choose_language(contact.language, contact.language_source, detected, confidence, hint)
    message.language = detected
    if (language, source) != (contact.language, contact.language_source):
        contact.language, contact.language_source = language, source
        turn.contact_changes.update(language=language, language_source=source)


async def _handle_with_bot(services: Services, turn: Turn) -> bool:
    """Gateway answers, interceptors, then Rasa; returns False when Rasa is unavailable (stop for now)."""
    contact, message = turn.contact, turn.message
    channel = services.channels.get(contact.channel)
    text = message.text or ""
    button_payload = resolve_button(contact, bool(channel is not None and channel.numbered_buttons), message)
    if button_payload is not None:
        text = button_payload
    elif message.kind == "button":
        text = str((message.payload or {}).get("payload") or text)
    _update_language(turn, text)
    lang = contact.language or "en"

    if message.kind in NON_TEXT_KINDS and not message.text:
        turn.replies.append(services.catalogue.render(f"gateway_media_{message.kind}", lang))
        turn.routed_to = "gateway"
        await _finish(services, turn)
        return True

    for intercept in interceptors():
        result = await intercept(services, contact, message)
        if result is not None:
            turn.replies.extend(result.replies)
            turn.routed_to = "gateway"
            await _finish(services, turn, reload_contact=True)
            return True

    if services.rasa is None:
        raise RuntimeError("no Rasa client configured")
    try:
        rasa_started = time.perf_counter()
        metadata = rasa_metadata(services, contact, message)
        items = None
        if (message.payload or {}).get("rasa_attempted"):
            # an earlier call may have reached Rasa before it timed out: never run the message twice
            items = await replies_already_given(services, contact.key, message.id)
        if items is None:
            items = await services.rasa.send_message(contact.key, text or "/greet", metadata)
        metrics.RASA_LATENCY.observe(time.perf_counter() - rasa_started)
    except RasaUnavailable as exc:
        metrics.RASA_ERRORS.inc()
        log.warning("rasa unavailable contact=%s reason=%s", contact_ref(contact.key), exc)
        await _rasa_trouble(services, turn)
        return False
    await _apply_rasa_replies(services, turn, items)
    return True


async def _rasa_trouble(services: Services, turn: Turn) -> None:
    """Tell the learner once that the answer will come later; the message stays queued."""
    contact, message = turn.contact, turn.message
    ids: list[int] = []
    replies: list[Rendered] = []
    async with services.db.engine.begin() as conn:
        # Rasa being down is not the message's fault: the attempt does not count. Rasa may still have
        # got it (a timeout): the flag makes the retry look in Rasa's tracker first.
        await conn.execute(_sql(services).set_attempts, {"message_id": message.id, "attempts": message.attempts - 1})
        if not (message.payload or {}).get("rasa_attempted"):
            await conn.execute(
                update(MESSAGES).where(MESSAGES.c.id == message.id)
                .values(payload={**(message.payload or {}), "rasa_attempted": True})
            )
        changes = dict(turn.contact_changes)
        notify = contact.rasa_trouble_notified_at is None
        if notify:
            changes["rasa_trouble_notified_at"] = utcnow()
            replies = [services.catalogue.render("gateway_rasa_trouble", contact.language or "en")]
            ids = await _insert_outbox(services, conn, contact, message.id, replies, origin="system")
        if changes:
            await conn.execute(update(CONTACTS).where(CONTACTS.c.id == contact.id).values(**changes))
    if ids:
        await send_claimed(services, contact, ids, replies, origin="system")


async def replies_already_given(services: Services, sender_id: str, inbound_id: int) -> list[dict[str, Any]] | None:
    """Rasa's answers to this message if its tracker already holds it, as REST-channel items; else None."""
    if services.rasa is None:
        return None
    tracker = await services.rasa.get_tracker(sender_id)
    events = tracker.get("events") or []
    replies: list[dict[str, Any]] | None = None
    for event in events:
        if not isinstance(event, dict):
            continue
        if event.get("event") == "user":
            if replies is not None:
                break  # the next learner message: Rasa's answer to ours is complete
            if (event.get("metadata") or {}).get("inbound_id") == inbound_id:
                replies = []
        elif event.get("event") == "bot" and replies is not None:
            data = event.get("data") or {}
            item: dict[str, Any] = {"text": event.get("text")}
            if data.get("buttons"):
                item["buttons"] = data["buttons"]
            if data.get("image"):
                item["image"] = data["image"]
            if data.get("custom"):
                item["custom"] = data["custom"]
            replies.append(item)
    return replies


def _rendered_from_rasa(item: dict[str, Any]) -> Rendered | None:
    text = item.get("text")
    image = item.get("image")
    if not text and image:
        text = str(image)
    if not text:
        return None
    buttons = tuple(
        Button(str(b.get("title", "")), str(b.get("payload", "")))
        for b in item.get("buttons") or []
        if isinstance(b, dict) and b.get("payload")
    )
    return Rendered(str(text), buttons)


async def _apply_rasa_replies(services: Services, turn: Turn, items: list[dict[str, Any]]) -> None:
    """Queue Rasa's texts in order; gateway commands run where they appear, after what precedes them."""
    if turn.contact.rasa_trouble_notified_at is not None:
        turn.contact_changes["rasa_trouble_notified_at"] = None
    finished = False
    for item in items:
        custom = item.get("custom")
        command = custom.get("sanad") if isinstance(custom, dict) else None
        if isinstance(command, dict) and command.get("command"):
            if not finished:
                await _finish(services, turn)
                finished = True
            else:
                await _queue_more(services, turn.contact, turn.message.id, turn.replies)
            turn.replies = []
            result = await _run_command(services, turn.contact, command)
            if result is not None:
                if result.suppress_bot_replies:
                    return
                turn.replies.extend(result.replies)
            continue
        rendered = _rendered_from_rasa(item)
        if rendered is not None:
            turn.replies.append(rendered)
    if not finished:
        await _finish(services, turn)
    elif turn.replies:
        await _queue_more(services, turn.contact, turn.message.id, turn.replies)


async def _insert_outbox(
    services: Services,
    conn: AsyncConnection,
    contact: Contact,
    message_id: int,
    replies: list[Rendered],
    origin: str = "reply",
) -> list[int]:
    now = utcnow()
    # with a sender in this process the rows are written already claimed and sent right after commit
    claim = services.extras.get("sender") is not None
    statement = _sql(services).insert_outbox
    ids: list[int] = []
    for reply in replies:  # one by one: ids in reply order on every backend
        params = {"contact_id": contact.id, "channel": contact.channel, "origin": origin, "text": reply.text,
                  "payload": rendered_payload(reply), "in_reply_to": message_id, "next_attempt_at": now,
                  "created_at": now, "status": "sending" if claim else "queued", "claimed_at": now if claim else None}
        ids.append(int((await conn.execute(statement, params)).scalar_one()))
    return ids


async def send_claimed(
    services: Services, contact: Contact, ids: list[int], replies: list[Rendered], origin: str = "reply"
) -> None:
    """Deliver rows that `_insert_outbox` wrote as claimed by this process."""
    sender = services.extras.get("sender")
    if sender is None or not ids:
        return
    from bot.outbox.sender import Claimed

    rows = [
        Claimed(
            id=row_id, contact_id=contact.id, channel=contact.channel, origin=origin, text=reply.text,
            payload=rendered_payload(reply) or {}, attempts=0, address=contact.address,
            language=contact.language or "en", stopped=bool(contact.stopped), opted_out=bool(contact.reminders_opt_out),
            last_inbound_at=contact.last_inbound_at,
        )
        for row_id, reply in zip(ids, replies, strict=True)
    ]
    await sender.send_claimed(rows)


def _buttons_of(replies: list[Rendered]) -> list[dict[str, str]] | None:
    offered = [r for r in replies if r.buttons]
    if not offered:
        return None
    return [{"title": b.title, "payload": b.payload} for b in offered[-1].buttons]


async def _finish(services: Services, turn: Turn, status: str = "done", reload_contact: bool = False) -> None:
    """One transaction: the message is done, its replies are queued, the contact's changes are saved."""
    contact, message = turn.contact, turn.message
    replies = list(turn.replies)
    if (message.payload or {}).get("truncated"):
        replies.insert(0, services.catalogue.render("gateway_truncated", contact.language or "en"))
    pg = _pg(services)
    if pg is not None and not reload_contact:
        ids = await _finish_pg(services, pg, turn, status, replies)
        await send_claimed(services, contact, ids, replies)
        return
    async with services.db.engine.begin() as conn:
        if reload_contact:
            # an interceptor may have changed the contact (linked it, erased it)
            crow = (await conn.execute(select(CONTACTS).where(CONTACTS.c.id == contact.id))).mappings().first()
            if crow is None:
                return
            contact = Contact(**dict(crow))
        await conn.execute(_sql(services).finish_message, {
            "message_id": message.id, "status": status, "routed_to": turn.routed_to, "processed_at": utcnow(),
            "language": message.language,
        })
        changes = {k: v for k, v in turn.contact_changes.items() if not reload_contact or k != "language"}
        buttons = _buttons_of(replies)
        if buttons is not None:
            changes["pending_buttons"] = buttons
        if changes:
            await conn.execute(update(CONTACTS).where(CONTACTS.c.id == contact.id).values(**changes))
        ids = await _insert_outbox(services, conn, contact, message.id, replies)
    await send_claimed(services, contact, ids, replies)


# what one turn writes when it finishes on PostgreSQL (see _PgSql.finish)
FinishRow = tuple[int, str, str, Any, str | None, int, str, tuple[Any, ...], list[tuple[str, str | None]], bool]


async def _finish_pg(services: Services, pg: _PgSql, turn: Turn, status: str, replies: list[Rendered]) -> list[int]:
    contact, message = turn.contact, turn.message
    changes = dict(turn.contact_changes)
    buttons = _buttons_of(replies)
    if buttons is not None:
        changes["pending_buttons"] = buttons
    changed = tuple(sorted(changes))
    claim = services.extras.get("sender") is not None
    payloads = [rendered_payload(r) for r in replies]
    row: FinishRow = (
        message.id, status, turn.routed_to, utcnow(), message.language, contact.id, contact.channel,
        tuple(changes[name] for name in changed),
        [(r.text, None if p is None else json.dumps(p)) for r, p in zip(replies, payloads, strict=True)], claim,
    )
    # one batcher per shape of the statement (the contact columns it changes)
    finisher = batching.shared(services.extras.setdefault("pipeline_finishers", {}), changed,
                               lambda: Batcher(partial(_finish_many, services.db.raw_pool(), pg, changed)))
    ids: list[int] = await finisher(row)
    return ids


async def _finish_many(
    pool: StatementPool, pg: _PgSql, changed: tuple[str, ...], rows: list[FinishRow]
) -> list[list[int]]:
    """`_finish_pg` for the turns finishing at the same moment with the same contact columns changed."""
    kinds = [_pg_array_type(CONTACTS.c[name]) for name in changed]
    turn_columns: list[list[Any]] = [[] for _ in range(6 + len(changed))]
    reply_columns: list[list[Any]] = [[] for _ in range(7)]
    now = utcnow()
    for message_id, status, routed_to, processed_at, language, contact_id, channel, values, replies, claim in rows:
        for column, value in zip(turn_columns, (message_id, status, routed_to, processed_at, language, contact_id),
                                 strict=False):
            column.append(value)
        for offset, (value, kind) in enumerate(zip(values, kinds, strict=True)):
            turn_columns[6 + offset].append(json.dumps(value) if kind == "json" and value is not None else value)
        for text, payload in replies:
            for column, value in zip(reply_columns, (message_id, contact_id, channel, "sending" if claim else "queued",
                                                     text, payload, now if claim else None), strict=True):
                column.append(value)
    inserted = await pool.fetch(pg.finish(changed), *turn_columns, *reply_columns, now)
    by_message: dict[int, list[int]] = {}
    for record in inserted:
        by_message.setdefault(int(record["in_reply_to"]), []).append(int(record["id"]))
    # ids come from one sequence in the order the rows were inserted (reply order)
    return [sorted(by_message.get(row[0], [])) for row in rows]


async def _queue_more(services: Services, contact: Contact, message_id: int, replies: list[Rendered]) -> None:
    """Replies that follow a gateway command (the contact may have been erased by it)."""
    if not replies:
        return
    async with services.db.engine.begin() as conn:
        exists = (await conn.execute(select(CONTACTS.c.id).where(CONTACTS.c.id == contact.id))).first()
        if exists is None:
            return
        buttons = _buttons_of(replies)
        if buttons is not None:
            await conn.execute(update(CONTACTS).where(CONTACTS.c.id == contact.id).values(pending_buttons=buttons))
        ids = await _insert_outbox(services, conn, contact, message_id, replies)
    await send_claimed(services, contact, ids, replies)


async def _run_command(services: Services, contact: Contact, command: dict[str, Any]) -> CommandResult | None:
    name = str(command["command"])
    handler = handler_for(name)
    if handler is None:
        log.warning("unknown gateway command %s", name)
        return None
    args = {k: v for k, v in command.items() if k != "command"}
    async with services.db.session() as session:
        fresh = await session.get(Contact, contact.id)
    if fresh is None:
        return None
    return await handler(services, fresh, args)


# --- redelivery ---------------------------------------------------------------

async def redeliver_pending(services: Services, older_than_s: float = 5.0, limit: int = 200) -> int:
    """Process contacts whose messages wait (Rasa was down, a gateway died mid-way)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    async with services.db.engine.connect() as conn:
        keys = list(
            (
                await conn.execute(
                    select(CONTACTS.c.key)
                    .join(MESSAGES, MESSAGES.c.contact_id == CONTACTS.c.id)
                    .where(MESSAGES.c.status == "received", MESSAGES.c.created_at <= cutoff)
                    .group_by(CONTACTS.c.key)
                    .limit(limit)
                )
            ).scalars()
        )
        if keys and services.rasa is not None and not await services.rasa.ping():
            # only contacts in mentor mode can progress without Rasa
            keys = list(
                (
                    await conn.execute(select(CONTACTS.c.key).where(CONTACTS.c.key.in_(keys), CONTACTS.c.mode != "bot"))
                ).scalars()
            )
    schedule(services, keys, until_empty=True)
    await asyncio.gather(*(task for key in keys if (task := _active.get(key)) is not None), return_exceptions=True)
    return len(keys)
