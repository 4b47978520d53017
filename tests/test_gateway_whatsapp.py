"""WhatsApp (Twilio) webhook: signed forms in, twilio's Client out to a local Twilio double."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bot.storage.models import Contact, InboundMessage, Outbox
from tests.conftest import TWILIO_FROM, Gateway


@pytest.fixture
def gateway(any_gateway: Gateway) -> Gateway:
    """Every test of this module runs on PostgreSQL + Redis and on SQLite without Redis."""
    return any_gateway


def inbound(sid: str = "SM" + "1" * 32, body: str = "hello", **extra: str) -> dict[str, str]:
    form = {
        "SmsMessageSid": sid, "NumMedia": "0", "ProfileName": "Amal", "SmsSid": sid, "WaId": "4915112345678",
        "SmsStatus": "received", "Body": body, "To": TWILIO_FROM, "NumSegments": "1", "MessageSid": sid,
        "AccountSid": "AC" + "0" * 32, "From": "whatsapp:+4915112345678", "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


async def rows(gw: Gateway, model: Any) -> list[Any]:
    async with gw.services.db.session() as s:
        return list((await s.execute(select(model).order_by(model.id))).scalars().all())


async def test_signed_message_is_answered_through_twilio(gateway: Gateway) -> None:
    response = await gateway.whatsapp(inbound())
    assert response.status_code == 200
    await gateway.settle()
    sent = await gateway.twilio.wait_for(1)
    assert sent[0]["To"] == "whatsapp:+4915112345678"
    assert sent[0]["From"] == TWILIO_FROM
    assert sent[0]["Body"] == "echo: hello"
    assert sent[0]["StatusCallback"].endswith("/webhooks/whatsapp/status")
    assert gateway.rasa.messages[0]["sender"] == "whatsapp:+4915112345678"
    out = (await rows(gateway, Outbox))[0]
    assert out.status == "sent" and out.provider_id == sent[0]["sid"]


@pytest.mark.parametrize(("signature", "sign", "status"), [(None, False, 401), ("forged", True, 403)])
async def test_unsigned_or_forged_requests_are_rejected(
    gateway: Gateway, signature: str | None, sign: bool, status: int
) -> None:
    response = await gateway.whatsapp(inbound(), sign=sign, signature=signature)
    assert response.status_code == status
    assert await rows(gateway, InboundMessage) == []


async def test_signature_over_other_params_is_rejected(gateway: Gateway) -> None:
    from twilio.request_validator import RequestValidator

    from tests.conftest import TWILIO_TOKEN

    url = gateway.services.settings.public_base_url + "/webhooks/whatsapp"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, inbound(body="original"))
    response = await gateway.whatsapp(inbound(body="tampered"), signature=signature)
    assert response.status_code == 403


async def test_duplicate_delivery_is_processed_once(gateway: Gateway) -> None:
    for _ in range(3):
        assert (await gateway.whatsapp(inbound())).status_code == 200
    await gateway.settle()
    assert len(gateway.rasa.messages) == 1
    assert len(gateway.twilio.sent) == 1


@pytest.mark.parametrize(
    ("form", "status"),
    [({"Body": "no sender"}, 400), ({"From": "whatsapp:+1", "Body": "no sid"}, 400)],
)
async def test_incomplete_forms_are_400(gateway: Gateway, form: dict[str, str], status: int) -> None:
    assert (await gateway.whatsapp(form)).status_code == status


MEDIA = [
    ("voice", {"NumMedia": "1", "MediaContentType0": "audio/ogg", "MediaUrl0": "https://api.twilio.com/m/ME1"}),
    ("photo", {"NumMedia": "1", "MediaContentType0": "image/jpeg", "MediaUrl0": "https://api.twilio.com/m/ME2"}),
    ("document", {"NumMedia": "1", "MediaContentType0": "application/pdf", "MediaUrl0": "https://api.twilio.com/m/ME3"}),
]


@pytest.mark.parametrize(("kind", "extra"), MEDIA, ids=[m[0] for m in MEDIA])
async def test_media_is_stored_with_its_url_and_answered(gateway: Gateway, kind: str, extra: dict[str, str]) -> None:
    await gateway.whatsapp(inbound(body="", **extra))
    await gateway.settle()
    row = (await rows(gateway, InboundMessage))[0]
    assert row.kind == kind and row.media_ref == extra["MediaUrl0"]
    sent = await gateway.twilio.wait_for(1)
    rendered = gateway.services.catalogue.render(f"gateway_media_{kind}", "en")
    assert sent[0]["Body"].startswith(rendered.text)
    assert "1. " + rendered.buttons[0].title in sent[0]["Body"]  # buttons as numbered options


async def test_location_is_parsed(gateway: Gateway) -> None:
    await gateway.whatsapp(inbound(body="", Latitude="36.2", Longitude="37.1", Label="Aleppo"))
    await gateway.settle()
    row = (await rows(gateway, InboundMessage))[0]
    assert row.kind == "location" and row.payload["latitude"] == "36.2"


async def test_numbered_reply_means_the_offered_button(gateway: Gateway) -> None:
    gateway.rasa.responder = lambda body: (
        [{"text": "Which topic?", "buttons": [{"title": "Deadlines", "payload": "/ask_deadline"},
                                              {"title": "Credits", "payload": "/ask_recognition"}]}]
        if body["message"] == "menu" else [{"text": f"got {body['message']}"}]
    )
    await gateway.whatsapp(inbound(sid="SM" + "a" * 32, body="menu"))
    await gateway.settle()
    await gateway.whatsapp(inbound(sid="SM" + "b" * 32, body="2"))
    await gateway.settle()
    assert gateway.rasa.messages[-1]["message"] == "/ask_recognition"
    assert "1. Deadlines\n2. Credits" in gateway.twilio.sent[0]["Body"]


async def test_quick_reply_button_payload(gateway: Gateway) -> None:
    await gateway.whatsapp(inbound(body="Yes", ButtonPayload="/affirm", ButtonText="Yes"))
    await gateway.settle()
    assert gateway.rasa.messages[0]["message"] == "/affirm"


async def test_long_body_is_split_under_1600(gateway: Gateway) -> None:
    gateway.rasa.responder = lambda body: [{"text": "A sentence about deadlines. " * 200}]
    await gateway.whatsapp(inbound())
    await gateway.settle()
    sent = await gateway.twilio.wait_for(4)
    assert len(sent) >= 4 and all(len(m["Body"]) <= 1600 for m in sent)


@pytest.mark.parametrize(
    ("code", "status", "expected_row", "stopped"),
    [(21610, 400, "failed", True), (63016, 400, "failed", False), (20500, 500, "queued", False)],
)
async def test_send_errors_are_classified(
    gateway: Gateway, code: int, status: int, expected_row: str, stopped: bool
) -> None:
    gateway.twilio.fail_next.append((status, code))
    await gateway.whatsapp(inbound())
    await gateway.settle()
    out = (await rows(gateway, Outbox))[0]
    contact = (await rows(gateway, Contact))[0]
    assert out.status in (expected_row, "queued" if code == 63016 else expected_row)
    assert contact.stopped is stopped


async def test_status_callback_updates_the_stored_message(gateway: Gateway) -> None:
    await gateway.whatsapp(inbound())
    await gateway.settle()
    sid = gateway.twilio.sent[0]["sid"]
    for status in ("sent", "delivered", "read", "delivered"):
        response = await gateway.whatsapp({"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC"},
                                          path="/webhooks/whatsapp/status")
        assert response.status_code == 200
    out = (await rows(gateway, Outbox))[0]
    assert out.delivery_status == "read"  # never moves backwards
    forged = await gateway.whatsapp({"MessageSid": sid, "MessageStatus": "failed"}, path="/webhooks/whatsapp/status",
                                    signature="nope")
    assert forged.status_code == 403


async def test_a_status_callback_that_overtakes_the_send_outcome_is_applied_later(gateway: Gateway) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bot.outbox.sender import apply_early_receipts
    from bot.storage.db import utcnow
    from bot.storage.models import EarlyReceipt

    await gateway.whatsapp(inbound())
    await gateway.settle()
    out = (await rows(gateway, Outbox))[0]
    early_sid = "SM" + "9" * 32
    for status in ("sent", "delivered"):  # Twilio's callbacks, before we stored the message's SID
        response = await gateway.whatsapp({"MessageSid": early_sid, "MessageStatus": status, "AccountSid": "AC"},
                                          path="/webhooks/whatsapp/status")
        assert response.status_code == 200 and response.json()["known"] is False
    stray = await gateway.whatsapp({"MessageSid": "SM" + "8" * 32, "MessageStatus": "read", "AccountSid": "AC"},
                                   path="/webhooks/whatsapp/status")
    assert stray.json()["known"] is False
    assert len(await rows(gateway, EarlyReceipt)) == 3
    async with gateway.services.db.session() as s:
        await s.execute(update(Outbox).where(Outbox.id == out.id).values(provider_id=early_sid, delivery_status="sent"))
        # the stray one has waited for its message longer than anyone should
        await s.execute(update(EarlyReceipt).where(EarlyReceipt.provider_id == "SM" + "8" * 32)
                        .values(received_at=utcnow() - timedelta(hours=2)))
    assert await apply_early_receipts(gateway.services) == 2
    assert (await rows(gateway, Outbox))[0].delivery_status == "delivered"
    assert await rows(gateway, EarlyReceipt) == []
