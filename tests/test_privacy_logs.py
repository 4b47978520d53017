"""Logs and metrics carry no message text, names or phone numbers; contact keys are hashed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.privacy.logs import PHONE_MASK, PrivacyFilter, configure_logging, contact_ref, redact, reset_logging
from bot.storage.models import Contact
from tests.conftest import Gateway, make_settings

NAME = "Lina Haddad"
PHONE = "+49 151 12345678"
CHAT_ID = 731550042
TEXTS = [
    "hello, I am Lina Haddad",
    f"my number is {PHONE} and my email is lina.h@example.org",
    "I feel hopeless, I cannot go on with my exams",
    "/pin",
]


@pytest.fixture
def private_logging(tmp_path: Any) -> Iterator[io.StringIO]:
    """`configure_logging` as every process calls it, printing to a buffer; undone afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(make_settings(tmp_path), logging.DEBUG, stream=stream)
    try:
        yield stream
    finally:
        reset_logging()
        root.setLevel(level)


@pytest.mark.parametrize(
    ("raw", "leaks", "kept"),
    [
        ("processing contact=telegram:731550042", ["731550042"], ["processing contact=c_"]),
        ("sent to whatsapp:+4915112345678 ok", ["4915112345678", "+49"], ["sent to c_"]),
        ("caller +49 151 1234 5678 and 0151-12345678 and (030) 1234567", ["1234", "030"], [PHONE_MASK]),
        ("POST https://api.telegram.org/bot123456:AAAbbbCCCdddEEEfffGGGhhhIIIjjjKKK/sendMessage", ["AAAbbb"],
         ["/sendMessage"]),
        ("outbox 42 sent at 2026-01-15 10:00:00 from 192.168.100.200 in 0.0123456 s", [],
         ["outbox 42", "2026-01-15 10:00:00", "192.168.100.200", "0.0123456"]),
    ],
)
def test_redact_masks_keys_numbers_and_tokens(raw: str, leaks: list[str], kept: list[str]) -> None:
    out = redact(raw)
    assert [x for x in leaks if x in out] == []
    assert [x for x in kept if x not in out] == []


def test_contact_ref_is_short_keyed_and_stable() -> None:
    a = contact_ref("telegram:1", "secret-a")
    assert a == contact_ref("telegram:1", "secret-a") and a != contact_ref("telegram:1", "secret-b")
    assert a.startswith("c_") and len(a) == 14 and contact_ref(a) == a
    assert contact_ref(None) == "-"


def test_filter_drops_text_and_names_given_as_extra(private_logging: io.StringIO) -> None:
    log = logging.getLogger("sanad.test")
    record = log.makeRecord("sanad.test", logging.INFO, __file__, 1, "reply for %s", ("telegram:42424242",), None,
                            extra={"text": TEXTS[2], "first_name": NAME, "outbox_id": 7, "to": "whatsapp:+4915112"})
    PrivacyFilter().filter(record)
    assert record.getMessage() == f"reply for {contact_ref('telegram:42424242')}"
    assert record.text == "[redacted]" and record.first_name == "[redacted]"
    assert record.outbox_id == 7 and "4915112" not in record.to
    try:
        raise ValueError(f"bad input {TEXTS[1]}")
    except ValueError:
        log.exception("failed for whatsapp:+4915112345678")
    printed = private_logging.getvalue()
    assert "4915112345678" not in printed and "12345678" not in printed and "ValueError" in printed


def telegram_update(update_id: int, text: str) -> dict[str, Any]:
    person = {"id": CHAT_ID, "first_name": "Lina", "last_name": "Haddad", "username": "lina_h", "language_code": "en"}
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": 1732790000, "chat": {**person, "type": "private"},
        "from": {**person, "is_bot": False}, "text": text,
    }}


async def test_full_conversation_logs_and_metrics_hold_nothing_personal(
    private_logging: io.StringIO, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # the Rasa double echoes the learner's words and greets them by name: replies carry personal data
    gateway.rasa.responder = lambda body: [
        {"recipient_id": body["sender"], "text": f"Hi {body['metadata'].get('first_name')}: {body['message']}"}
    ]
    gateway.rasa.up = False  # the first message meets a Rasa outage: the gateway logs a warning about it
    for n, text in enumerate(TEXTS, start=1):
        response = await gateway.telegram(telegram_update(9000 + n, text))
        assert response.status_code == 200
        await gateway.settle()
        gateway.rasa.up = True
    sent = await gateway.bot_api.wait_for(len(TEXTS))
    gateway.services.settings = gateway.services.settings.replace(metrics_token="scrape-token")
    metrics = (await gateway.client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})).text
    assert "sanad_inbound_messages_total" in metrics

    # the conversation really happened, with the personal data in it
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact).where(Contact.key == f"telegram:{CHAT_ID}"))).scalar_one()
    assert contact.display_name and "Lina" in contact.display_name
    assert any("hopeless" in (m["text"] or "") for m in sent)
    key_ref = contact_ref(f"telegram:{CHAT_ID}", gateway.services.settings.secret_key)
    assert any(key_ref in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)

    captured = "\n".join(
        [r.getMessage() + " " + json.dumps({k: str(v) for k, v in r.__dict__.items()
                                            if k not in ("msg", "args", "message")}) for r in caplog.records]
        + [private_logging.getvalue(), metrics]
    )
    forbidden = ["Lina", "Haddad", "lina_h", str(CHAT_ID), "12345678", "151 1234", "hopeless", "cannot go on",
                 "lina.h@example.org", "TEST-token"]
    assert [f for f in forbidden if f.lower() in captured.lower()] == []
