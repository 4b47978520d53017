"""Telegram webhook: captured real updates and crafted cases through the real HTTP stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.storage.models import Contact, InboundMessage, Outbox
from tests.conftest import DATA_DIR, Gateway


@pytest.fixture
def gateway(any_gateway: Gateway) -> Gateway:
    """Every test of this module runs on PostgreSQL + Redis and on SQLite without Redis."""
    return any_gateway

CORPUS = [json.loads(line) for line in (DATA_DIR / "telegram_corpus.jsonl").read_text().splitlines() if line.strip()]


def private_message(update_id: int, chat_id: int = 555001, **fields: Any) -> dict[str, Any]:
    message = {
        "message_id": update_id + 7,
        "date": 1732790000,
        "chat": {"id": chat_id, "type": "private", "first_name": "Lina"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Lina", "language_code": "en"},
        **fields,
    }
    return {"update_id": update_id, "message": message}


async def count(gw: Gateway, model: Any) -> int:
    async with gw.services.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.mark.parametrize("case", CORPUS, ids=[c["label"][:60] for c in CORPUS])
async def test_corpus_update_is_answered_without_server_error(gateway: Gateway, case: dict[str, Any]) -> None:
    body = case["raw"].encode() if "raw" in case else json.dumps(case["body"]).encode()
    first = await gateway.telegram(body)
    second = await gateway.telegram(body)
    await gateway.settle()
    if case.get("invalid"):
        assert first.status_code == 400
    else:
        assert 200 <= first.status_code < 300, first.text
        assert 200 <= second.status_code < 300
    # nothing is answered twice: at most one reply per distinct update
    assert len(gateway.bot_api.sent) <= 1
    assert len(gateway.rasa.messages) <= 1


async def test_corpus_private_text_reaches_rasa_once_and_is_answered(
    gateway: Gateway,
) -> None:
    update = next(c["body"] for c in CORPUS if c["label"].startswith("message (private text"))
    for _ in range(3):  # Telegram redelivers when it does not see a 200 in time
        assert (await gateway.telegram(update)).status_code == 200
    await gateway.settle()
    assert [m["message"] for m in gateway.rasa.messages] == ["hello there"]
    assert gateway.rasa.messages[0]["sender"] == "telegram:218485655"
    assert gateway.rasa.messages[0]["metadata"]["channel"] == "telegram"
    sent = await gateway.bot_api.wait_for(1)
    assert [m["text"] for m in sent] == ["echo: hello there"]
    assert await count(gateway, InboundMessage) == 1


@pytest.mark.parametrize(
    ("headers_secret", "status"),
    [(None, 401), ("wrong", 403), ("", 403)],
)
async def test_unsigned_or_forged_updates_are_rejected(
    gateway: Gateway, headers_secret: str | None, status: int
) -> None:
    response = await gateway.telegram(private_message(1), secret=headers_secret)
    assert response.status_code == status
    await gateway.settle()
    assert await count(gateway, InboundMessage) == 0
    assert gateway.rasa.messages == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (b'{"update_id": "x"}', 400),
        (b'{"message": {"text": "hi"}}', 400),
        (b'{"update_id": 5, "message": {"text": "no chat"}}', 400),
        (b"\xff\xfe", 400),
    ],
)
async def test_malformed_bodies_are_400(gateway: Gateway, body: bytes, status: int) -> None:
    assert (await gateway.telegram(body)).status_code == status


IGNORED = [
    ({"update_id": 11, "edited_message": private_message(11, text="edited")["message"]}, "edited message"),
    ({"update_id": 12, "channel_post": {"message_id": 1, "chat": {"id": -100, "type": "channel"}, "date": 1}},
     "channel post"),
    ({"update_id": 13, "some_future_update": {"x": 1}}, "unknown update type"),
    ({"update_id": 14, "message": {"message_id": 1, "date": 1, "chat": {"id": -5, "type": "group"}, "text": "hi"}},
     "not a private chat"),
    ({"update_id": 15, "my_chat_member": {"chat": {"id": -9, "type": "supergroup"}, "new_chat_member": {}}},
     "chat member update outside a private chat"),
]


@pytest.mark.parametrize(("update", "reason"), IGNORED, ids=[r for _, r in IGNORED])
async def test_understood_but_unneeded_updates_are_ignored(
    gateway: Gateway, update: dict[str, Any], reason: str
) -> None:
    response = await gateway.telegram(update)
    assert response.status_code == 200
    assert response.json()["ignored"] == reason
    await gateway.settle()
    assert await count(gateway, InboundMessage) == 0


MEDIA = [
    ("voice", {"voice": {"file_id": "VOICE-1", "file_unique_id": "u", "duration": 3, "mime_type": "audio/ogg"}},
     "VOICE-1"),
    ("photo", {"photo": [{"file_id": "P-small", "file_unique_id": "a", "width": 90, "height": 90, "file_size": 100},
                         {"file_id": "P-large", "file_unique_id": "b", "width": 800, "height": 800,
                          "file_size": 9000}]}, "P-large"),
    ("document", {"document": {"file_id": "DOC-1", "file_unique_id": "d", "mime_type": "application/pdf"}}, "DOC-1"),
    ("sticker", {"sticker": {"file_id": "ST-1", "file_unique_id": "s", "type": "regular", "width": 1, "height": 1,
                             "is_animated": False, "is_video": False, "emoji": "👍"}}, "ST-1"),
    ("location", {"location": {"latitude": 52.5, "longitude": 13.4}}, None),
    ("contact", {"contact": {"phone_number": "+4915100000000", "first_name": "X"}}, None),
    ("other", {"dice": {"emoji": "🎲", "value": 3}}, None),
]


@pytest.mark.parametrize(("kind", "fields", "media_ref"), MEDIA, ids=[m[0] for m in MEDIA])
async def test_non_text_is_stored_with_its_file_and_answered_in_the_learners_language(
    gateway: Gateway, kind: str, fields: dict[str, Any], media_ref: str | None
) -> None:
    update = private_message(40, **fields)
    update["message"]["from"]["language_code"] = "ar"
    assert (await gateway.telegram(update)).status_code == 200
    await gateway.settle()
    async with gateway.services.db.session() as s:
        row = (await s.execute(select(InboundMessage))).scalar_one()
    assert row.kind == kind
    assert row.media_ref == media_ref
    sent = await gateway.bot_api.wait_for(1)
    expected = gateway.services.catalogue.render(f"gateway_media_{kind}", "ar").text
    assert sent[0]["text"] == expected
    assert gateway.rasa.messages == []  # answered by the gateway, not guessed by Rasa


async def test_callback_query_is_answered_then_its_payload_goes_to_rasa(gateway: Gateway) -> None:
    update = {
        "update_id": 70,
        "callback_query": {
            "id": "cbq-1",
            "from": {"id": 555002, "is_bot": False, "first_name": "Omid", "language_code": "fa"},
            "message": {"message_id": 3, "date": 1, "chat": {"id": 555002, "type": "private"}, "text": "menu"},
            "chat_instance": "1",
            "data": "/ask_deadline",
        },
    }
    assert (await gateway.telegram(update)).status_code == 200
    await gateway.settle()
    assert gateway.bot_api.callbacks == ["cbq-1"]
    assert gateway.rasa.messages[0]["message"] == "/ask_deadline"


async def test_start_with_parameter_is_kept_as_a_command(gateway: Gateway) -> None:
    entities = [{"type": "bot_command", "offset": 0, "length": 6}]
    await gateway.telegram(private_message(80, text="/start", entities=entities))
    await gateway.settle()
    async with gateway.services.db.session() as s:
        row = (await s.execute(select(InboundMessage))).scalar_one()
    assert row.kind == "command" and row.payload["command"] == "start"


async def test_long_text_is_truncated_with_a_note_and_control_characters_stripped(gateway: Gateway) -> None:
    text = "\x00\x07" + ("word " * 2000)
    await gateway.telegram(private_message(90, text=text))
    await gateway.settle()
    async with gateway.services.db.session() as s:
        row = (await s.execute(select(InboundMessage))).scalar_one()
    assert len(row.text) == 4096 and "\x00" not in row.text and "\x07" not in row.text
    sent = await gateway.bot_api.wait_for(2)
    note = gateway.services.catalogue.text("gateway_truncated", "en")
    assert sent[0]["text"] == note


async def test_long_reply_is_split_and_buttons_become_an_inline_keyboard(gateway: Gateway) -> None:
    paragraph = "This is a sentence about your course. " * 40
    long_reply = "\n\n".join([paragraph] * 5)
    gateway.rasa.responder = lambda body: [
        {"text": long_reply, "buttons": [{"title": "Deadlines", "payload": "/ask_deadline"},
                                         {"title": "Long", "payload": "/x" + "y" * 80}]}
    ]
    await gateway.telegram(private_message(100, text="tell me everything"))
    await gateway.settle()
    sent = await gateway.bot_api.wait_for(2)
    assert len(sent) >= 2 and all(len(m["text"]) <= 4096 for m in sent)
    def squash(text: str) -> str:
        return "".join(text.split())

    assert squash("".join(m["text"] for m in sent)) == squash(long_reply)
    keyboard = sent[-1]["reply_markup"]["inline_keyboard"]
    assert keyboard[0][0]["callback_data"] == "/ask_deadline"
    assert keyboard[1][0]["callback_data"] == "btn:1"  # 82 bytes do not fit Telegram's 64
    assert sent[0]["reply_markup"] is None
    # pressing the long button sends its full payload to Rasa
    await gateway.telegram({"update_id": 101, "callback_query": {
        "id": "q2", "from": {"id": 555001, "is_bot": False, "first_name": "Lina"}, "chat_instance": "1",
        "message": {"message_id": 1, "date": 1, "chat": {"id": 555001, "type": "private"}}, "data": "btn:1"}})
    await gateway.settle()
    assert gateway.rasa.messages[-1]["message"] == "/x" + "y" * 80


async def test_blocking_the_bot_stops_the_contact(gateway: Gateway) -> None:
    await gateway.telegram(private_message(110, text="hi"))
    await gateway.settle()
    bot_user = {"id": 1, "is_bot": True, "first_name": "S"}
    await gateway.telegram({"update_id": 111, "my_chat_member": {
        "chat": {"id": 555001, "type": "private"}, "from": {"id": 555001, "is_bot": False, "first_name": "L"},
        "date": 1, "old_chat_member": {"status": "member", "user": bot_user},
        "new_chat_member": {"status": "kicked", "until_date": 0, "user": bot_user}}})
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
    assert contact.stopped is True


async def test_send_errors_follow_the_closed_set(gateway: Gateway) -> None:
    gateway.bot_api.blocked_chats.add("555003")
    await gateway.telegram(private_message(120, chat_id=555003, text="hello"))
    await gateway.settle()
    async with gateway.services.db.session() as s:
        out = (await s.execute(select(Outbox))).scalar_one()
        contact = (await s.execute(select(Contact))).scalar_one()
    assert out.status == "failed" and out.last_error == "contact_stopped"
    assert contact.stopped is True


async def test_throttled_send_is_retried_not_lost(gateway: Gateway) -> None:
    gateway.bot_api.fail_next.append((429, {"retry_after": 1}))
    await gateway.telegram(private_message(130, text="hello"))
    await gateway.settle()
    async with gateway.services.db.session() as s:
        out = (await s.execute(select(Outbox))).scalar_one()
    assert out.status == "queued" and out.last_error == "throttled"
    import asyncio

    from bot.outbox.sender import OutboxSender

    await asyncio.sleep(1.1)
    await OutboxSender(gateway.services).run_once()
    assert [m["text"] for m in gateway.bot_api.sent] == ["echo: hello"]


def test_corpus_notice_is_kept_beside_the_data() -> None:
    assert "MIT" in (Path(DATA_DIR) / "TELEGRAM_CORPUS_NOTICE.md").read_text()


async def test_a_learner_who_writes_again_has_unblocked_the_bot(gateway: Gateway) -> None:
    gateway.bot_api.blocked_chats.add("555004")
    await gateway.telegram(private_message(140, chat_id=555004, text="hello"))
    await gateway.settle()
    gateway.bot_api.blocked_chats.clear()
    await gateway.telegram(private_message(141, chat_id=555004, text="hello again"))
    await gateway.settle()
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
    assert contact.stopped is False
    assert [m["text"] for m in gateway.bot_api.sent] == ["echo: hello again"]
