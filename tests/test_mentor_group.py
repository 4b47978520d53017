"""The Telegram mentor group against the local Bot API double: topics, mirroring both ways, commands, linking,
erasure and retention. Updates have the shapes Telegram sends in forum supergroups."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bot.channels.telegram.mentor_group import GroupButton, GroupMessage, parse_group_update, parse_link_request
from bot.mentoring.accounts import add_mentor
from bot.mentoring.group.sender import delete_orphaned_topics
from bot.storage.db import utcnow
from bot.storage.models import (
    Contact,
    Handoff,
    Mentor,
    MentorGroupPost,
    MentorGroupTopic,
    MentorNote,
    Outbox,
    SavedReply,
)
from tests.conftest import Gateway
from tests.test_console_web import PASSWORD, csrf_of, handoff_responder, login, tg_update

GROUP = -1001234567890
GROUP_AR = -1001111111111
AMAL_TG = 5550001  # Amal's Telegram account
STRANGER_TG = 5559999
CASES = json.loads((Path(__file__).parent / "data" / "telegram_mentor_group.json").read_text(encoding="utf-8"))


def _chat(chat_id: int = GROUP) -> dict[str, Any]:
    return {"id": chat_id, "title": "Sanad mentors", "is_forum": True, "type": "supergroup"}


def topic_message(update_id: int, thread_id: int, user_id: int, text: str, chat_id: int = GROUP) -> dict[str, Any]:
    """What Telegram posts for a member's message in a forum topic."""
    bot = {"id": 1, "is_bot": True, "first_name": "Sanad", "username": "SanadBot"}
    return {"update_id": update_id, "message": {
        "message_id": 9000 + update_id, "from": {"id": user_id, "is_bot": False, "first_name": "Amal"},
        "chat": _chat(chat_id), "date": 1740443226, "message_thread_id": thread_id, "is_topic_message": True,
        "reply_to_message": {"message_id": thread_id, "from": bot, "chat": _chat(chat_id), "date": 1740443100,
                             "message_thread_id": thread_id, "is_topic_message": True,
                             "forum_topic_created": {"name": "topic", "icon_color": 7322096}},
        "text": text}}


def card_press(update_id: int, thread_id: int, card_id: int, user_id: int, data: str) -> dict[str, Any]:
    """What Telegram posts when a member presses an inline button on the bot's card in a topic."""
    return {"update_id": update_id, "callback_query": {
        "id": f"cb{update_id}", "from": {"id": user_id, "is_bot": False, "first_name": "Amal"},
        "message": {"message_id": card_id, "from": {"id": 1, "is_bot": True, "first_name": "Sanad"},
                    "chat": _chat(), "date": 1740443101, "message_thread_id": thread_id, "is_topic_message": True,
                    "text": "card"},
        "chat_instance": "-5784926352343223", "data": data}}


def private_text(update_id: int, user_id: int, text: str) -> dict[str, Any]:
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": 1740443226, "text": text,
        "chat": {"id": user_id, "type": "private", "first_name": "Amal"},
        "from": {"id": user_id, "is_bot": False, "first_name": "Amal", "language_code": "en"}}}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_group_updates_are_parsed_from_real_shapes(case: dict[str, Any]) -> None:
    found = parse_group_update(case["update"], frozenset({GROUP}))
    expect = case["expect"]
    if expect is None:
        assert found is None
        return
    if expect["kind"] == "button":
        assert isinstance(found, GroupButton)
        assert (found.chat_id, found.thread_id, found.user_id, found.data, found.message_id) == (
            expect["chat_id"], expect["thread_id"], expect["user_id"], expect["data"], expect["message_id"])
        return
    assert isinstance(found, GroupMessage)
    assert (found.chat_id, found.thread_id, found.user_id, found.text, found.has_media, found.is_service) == (
        expect["chat_id"], expect["thread_id"], expect["user_id"], expect["text"], expect["has_media"],
        expect["is_service"])


def test_link_requests_from_private_chats_only() -> None:
    assert parse_link_request(private_text(1, 7, "/mentor AB23CD45")).code == "AB23CD45"  # type: ignore[union-attr]
    assert parse_link_request(private_text(2, 7, "/start mentor-ab23cd45")).code == "AB23CD45"  # type: ignore[union-attr]
    assert parse_link_request(private_text(3, 7, "/start abc")) is None
    assert parse_link_request(private_text(4, 7, "mentor AB23CD45")) is None
    assert parse_link_request(private_text(6, 7, "/mentor please help me")) is None  # a learner, not a code
    in_group = topic_message(5, 42, 7, "/mentor AB12CD34")
    assert parse_link_request(in_group) is None


# --- the gateway with a mentor group -----------------------------------------------------

@pytest.fixture
async def group_gateway(gateway: Gateway) -> Gateway:
    gateway.rasa.responder = handoff_responder
    # Telegram's own limit (20 a minute per group) would spread these tests' posts over minutes
    gateway.services.settings = gateway.services.settings.replace(
        telegram_mentor_group_id=GROUP, telegram_mentor_group_ids={"ar": GROUP_AR}, telegram_group_rate_per_min=6000)
    async with gateway.services.db.session() as s:
        await add_mentor(s, "amal@example.org", PASSWORD, "en,ar", display_name="Amal", telegram_user_id=AMAL_TG)
    return gateway


async def escalate_telegram(gw: Gateway, chat_id: int = 424242, name: str = "Lina", update_id: int = 1,
                            lang: str = "en", text: str = "Can I speak with a real person about my course") -> Handoff:
    update = tg_update(update_id, text, chat_id=chat_id, lang=lang)
    update["message"]["from"]["first_name"] = update["message"]["chat"]["first_name"] = name
    assert (await gw.telegram(update)).status_code == 200
    await gw.settle()
    async with gw.services.db.session() as s:
        contact = (await s.execute(select(Contact).where(Contact.address == str(chat_id)))).scalar_one()
        return (await s.execute(select(Handoff).where(Handoff.contact_id == contact.id))).scalar_one()


async def topic_of(gw: Gateway, handoff_id: int) -> MentorGroupTopic:
    async with gw.services.db.session() as s:
        return (await s.execute(select(MentorGroupTopic).where(MentorGroupTopic.handoff_id == handoff_id))).scalar_one()


async def state_of(gw: Gateway, handoff_id: int) -> Handoff:
    async with gw.services.db.session() as s:
        found = await s.get(Handoff, handoff_id)
        assert found is not None
        return found


async def test_a_handoff_opens_a_topic_with_the_card_and_mirrors_the_learner(group_gateway: Gateway) -> None:
    gw = group_gateway
    h = await escalate_telegram(gw)
    topic = await topic_of(gw, h.id)
    assert topic.chat_id == GROUP and topic.thread_id is not None and topic.status == "open"
    name = gw.bot_api.topics[(str(GROUP), topic.thread_id)]
    assert name.startswith("Lina · EN · Telegram")
    card = gw.bot_api.topic_posts(topic.thread_id)[0]
    assert card["message_id"] == topic.card_message_id
    assert "Lina" in card["text"] and "Can I speak with a real person about my course" in card["text"]
    assert card["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == f"claim:{h.id}"

    # what the learner writes next appears in the topic as it arrives, media as a copy of the file
    assert (await gw.telegram(tg_update(2, "My exam was yesterday and I was ill"))).status_code == 200
    photo = tg_update(3, "")
    del photo["message"]["text"]
    photo["message"]["photo"] = [{"file_id": "AgACAgQAAxkBAAIB", "file_unique_id": "AQAD", "file_size": 1201,
                                  "width": 90, "height": 67}]
    photo["message"]["caption"] = "my medical note"
    assert (await gw.telegram(photo)).status_code == 200
    await gw.settle()
    posts = gw.bot_api.topic_posts(topic.thread_id)
    assert posts[-2]["text"] == "👤 My exam was yesterday and I was ill"
    assert posts[-1]["method"] == "copyMessage" and posts[-1]["from_chat_id"] == "424242"


async def test_per_language_groups_and_no_phone_numbers_in_topic_names(group_gateway: Gateway) -> None:
    gw = group_gateway
    arabic = await escalate_telegram(gw, chat_id=777, name="سارة", update_id=11, lang="ar",
                                     text="أريد التحدث مع إنسان من فضلك")
    assert (await topic_of(gw, arabic.id)).chat_id == GROUP_AR
    form = {"From": "whatsapp:+4915112345678", "To": "whatsapp:+14155238886",
            "Body": "Can I speak with a real person about my course", "MessageSid": "SM" + "7" * 32,
            "AccountSid": "AC" + "0" * 32, "NumMedia": "0", "ProfileName": "+49 151 1234 5678"}
    assert (await gw.whatsapp(form)).status_code == 200
    await gw.settle()
    async with gw.services.db.session() as s:
        h = (await s.execute(select(Handoff).join(Contact, Contact.id == Handoff.contact_id)
                             .where(Contact.channel == "whatsapp"))).scalar_one()
    topic = await topic_of(gw, h.id)
    name = gw.bot_api.topics[(str(GROUP), topic.thread_id)]  # type: ignore[index]
    assert "Learner " in name and "151" not in name and "5678" not in name
    assert all("5678" not in (p["text"] or "") for p in gw.bot_api.topic_posts(topic.thread_id or 0))


async def test_claim_button_reply_in_topic_reaches_the_learner_and_the_console(group_gateway: Gateway) -> None:
    gw = group_gateway
    h = await escalate_telegram(gw)
    topic = await topic_of(gw, h.id)
    thread, card = int(topic.thread_id or 0), int(topic.card_message_id or 0)

    # someone who is not a linked mentor presses Claim: nothing changes, they are told to link first
    await gw.telegram(card_press(100, thread, card, STRANGER_TG, f"claim:{h.id}"))
    await gw.settle()
    assert (await state_of(gw, h.id)).state == "waiting"
    assert gw.bot_api.callback_texts[-1].startswith("Link your Telegram account")

    await gw.telegram(card_press(101, thread, card, AMAL_TG, f"claim:{h.id}"))
    await gw.settle()
    claimed = await state_of(gw, h.id)
    assert claimed.state == "with_mentor"
    assert "You have this conversation now" in gw.bot_api.callback_texts[-1]
    edits = [c for c in gw.bot_api.group_calls if c["method"] == "editMessageText"]
    assert edits and "With Amal" in edits[-1]["text"]

    sent_before = len(gw.bot_api.sent)
    posts_before = len(gw.bot_api.topic_posts(thread))
    await gw.telegram(topic_message(102, thread, AMAL_TG, "Hi Lina, I am Amal. How can I help?"))
    await gw.settle()
    to_learner = [m for m in gw.bot_api.sent[sent_before:] if m["chat_id"] == "424242"]
    assert [m["text"] for m in to_learner] == ["Hi Lina, I am Amal. How can I help?"]
    async with gw.services.db.session() as s:
        row = (await s.execute(select(Outbox).where(Outbox.origin == "mentor"))).scalar_one()
        amal = (await s.execute(select(Mentor).where(Mentor.email == "amal@example.org"))).scalar_one()
    assert row.author_mentor_id == amal.id and row.status == "sent"
    # not echoed back into the topic it came from
    assert all("How can I help" not in (p["text"] or "") for p in gw.bot_api.topic_posts(thread)[posts_before:])

    # the console shows the same conversation: claimed by Amal, with her reply
    transport = httpx.ASGITransport(app=gw.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as console:
        await login(console, "amal@example.org")
        page = await console.get(f"/console/h/{h.id}")
        assert "Hi Lina, I am Amal. How can I help?" in page.text and "Amal" in page.text
        # and a console reply appears in the topic at once
        await console.post(f"/console/h/{h.id}/reply", data={"csrf_token": csrf_of(page.text),
                                                               "text": "Which course is it?"})
    await gw.settle()
    assert gw.bot_api.topic_posts(thread)[-1]["text"] == "✉️ Amal: Which course is it?"


async def test_writing_in_a_waiting_topic_claims_it_and_others_are_ignored(group_gateway: Gateway,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    gw = group_gateway
    h = await escalate_telegram(gw)
    thread = int((await topic_of(gw, h.id)).thread_id or 0)
    with caplog.at_level(logging.INFO):
        response = await gw.telegram(topic_message(200, thread, STRANGER_TG, "I am not a mentor"))
    assert response.json()["mentor_group"] == "ignored: not a linked mentor"
    assert "no mentor linked was ignored" in caplog.text and "I am not a mentor" not in caplog.text
    await gw.settle()
    async with gw.services.db.session() as s:
        mentor_rows = select(func.count()).select_from(Outbox).where(Outbox.origin == "mentor")
        assert (await s.execute(mentor_rows)).scalar() == 0

    await gw.telegram(topic_message(201, thread, AMAL_TG, "Hello Lina"))
    await gw.settle()
    assert (await state_of(gw, h.id)).state == "with_mentor"
    assert gw.bot_api.sent[-1]["text"] == "Hello Lina" and gw.bot_api.sent[-1]["chat_id"] == "424242"
    # Telegram retries a webhook it thinks failed: the same update is handled once
    again = await gw.telegram(topic_message(201, thread, AMAL_TG, "Hello Lina"))
    assert again.json()["mentor_group"] == "duplicate"
    await gw.settle()
    async with gw.services.db.session() as s:
        assert (await s.execute(mentor_rows)).scalar() == 1


async def test_commands_note_saved_transfer_resolve(group_gateway: Gateway) -> None:
    gw = group_gateway
    async with gw.services.db.session() as s:
        s.add(SavedReply(language="en", name="docs", text="Hi {first_name}, please send the documents."))
    h = await escalate_telegram(gw)
    thread = int((await topic_of(gw, h.id)).thread_id or 0)
    await gw.telegram(topic_message(300, thread, AMAL_TG, "/claim"))
    await gw.telegram(topic_message(301, thread, AMAL_TG, "/note@SanadBot check the medical note"))
    await gw.settle()
    async with gw.services.db.session() as s:
        note = (await s.execute(select(MentorNote))).scalar_one()
    assert note.text == "check the medical note"
    assert "Note saved" in gw.bot_api.topic_posts(thread)[-1]["text"]

    sent_before = len(gw.bot_api.sent)
    await gw.telegram(topic_message(302, thread, AMAL_TG, "/saved docs"))
    await gw.settle()
    assert gw.bot_api.sent[sent_before]["text"] == "Hi Lina, please send the documents."
    assert gw.bot_api.topic_posts(thread)[-1]["text"] == "✉️ Amal: Hi Lina, please send the documents."
    await gw.telegram(topic_message(303, thread, AMAL_TG, "/saved nothing-like-this"))
    await gw.settle()
    assert "No saved reply" in gw.bot_api.topic_posts(thread)[-1]["text"]

    # back to the queue: the learner is told another mentor takes over
    await gw.telegram(topic_message(304, thread, AMAL_TG, "/transfer"))
    await gw.settle()
    assert (await state_of(gw, h.id)).state == "waiting"
    assert "another mentor will take over" in gw.bot_api.sent[-1]["text"]

    await gw.telegram(topic_message(305, thread, AMAL_TG, "/claim"))
    await gw.settle()
    await gw.telegram(topic_message(306, thread, AMAL_TG, "/resolve extension granted"))
    await gw.settle()
    done = await state_of(gw, h.id)
    assert (done.state, done.outcome, done.resolution) == ("resolved", "resolved", "extension granted")
    assert "How helpful" in gw.bot_api.sent[-1]["text"]  # the satisfaction question follows
    assert any(c["method"] == "closeForumTopic" for c in gw.bot_api.group_calls)
    # a message in the closed topic does not reach the learner
    before = len(gw.bot_api.sent)
    await gw.telegram(topic_message(307, thread, AMAL_TG, "one more thing"))
    await gw.settle()
    assert len(gw.bot_api.sent) == before


async def test_urgent_topic_is_marked_pinned_and_mentions_the_mentors(group_gateway: Gateway) -> None:
    gw = group_gateway

    def distress(body: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"recipient_id": body["sender"], "text": "You are not alone."},
                {"recipient_id": body["sender"],
                 "custom": {"sanad": {"command": "handoff", "reason": "distress", "urgent": True}}}]

    gw.rasa.responder = distress
    h = await escalate_telegram(gw, text="I can't go on anymore")
    topic = await topic_of(gw, h.id)
    assert gw.bot_api.topics[(str(GROUP), topic.thread_id)].startswith("🔴 ")  # type: ignore[index]
    pins = [c for c in gw.bot_api.group_calls if c["method"] == "pinChatMessage"]
    assert pins and int(pins[0]["message_id"]) == topic.card_message_id
    urgent = gw.bot_api.topic_posts(int(topic.thread_id or 0))[-1]
    assert urgent["parse_mode"] == "HTML" and f"tg://user?id={AMAL_TG}" in urgent["text"]


async def test_linking_a_telegram_account_with_a_one_time_code(group_gateway: Gateway) -> None:
    gw = group_gateway
    async with gw.services.db.session() as s:
        await add_mentor(s, "omar@example.org", PASSWORD, "en", display_name="Omar")
    transport = httpx.ASGITransport(app=gw.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as console:
        await login(console, "omar@example.org")
        page = await console.get("/console/telegram")
        made = await console.post("/console/telegram", data={"csrf_token": csrf_of(page.text)})
    code = made.text.split("/mentor ", 1)[1].split("<", 1)[0].strip()
    assert len(code) == 8 and "start=mentor-" in made.text

    wrong = await gw.telegram(private_text(400, 6660001, "/mentor WRNGCD22"))
    assert wrong.json()["mentor_group"] == "link_refused"
    linked = await gw.telegram(private_text(401, 6660001, f"/mentor {code}"))
    assert linked.json()["mentor_group"] == "linked"
    await gw.settle()
    assert "omar@example.org" in gw.bot_api.sent[-1]["text"]
    async with gw.services.db.session() as s:
        omar = (await s.execute(select(Mentor).where(Mentor.email == "omar@example.org"))).scalar_one()
        contacts = (await s.execute(select(func.count()).select_from(Contact))).scalar()
    assert omar.telegram_user_id == 6660001 and omar.telegram_link_code_hash is None
    assert contacts == 0  # the link request never became a learner conversation
    reused = await gw.telegram(private_text(402, 6660002, f"/mentor {code}"))
    assert reused.json()["mentor_group"] == "link_refused"


async def test_erasure_and_retention_delete_the_topics(group_gateway: Gateway) -> None:
    from bot.privacy.erasure import erase_contact
    from bot.privacy.retention import run_retention

    gw = group_gateway
    first = await escalate_telegram(gw)
    second = await escalate_telegram(gw, chat_id=515151, name="Omid", update_id=50)
    first_thread = (await topic_of(gw, first.id)).thread_id
    second_thread = (await topic_of(gw, second.id)).thread_id
    await erase_contact(gw.services, "telegram:424242")
    await gw.settle()
    assert (str(GROUP), first_thread) not in gw.bot_api.topics
    assert (str(GROUP), second_thread) in gw.bot_api.topics
    async with gw.services.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(MentorGroupTopic))).scalar() == 1
        assert (await s.execute(select(func.count()).select_from(MentorGroupPost)
                                .where(MentorGroupPost.handoff_id == first.id))).scalar() == 0

    # retention: a hand-off resolved long ago goes, and its topic with it
    async with gw.services.db.session() as s:
        row = await s.get(Handoff, second.id)
        assert row is not None
        row.state, row.resolved_at = "resolved", utcnow() - timedelta(days=400)
        contact = await s.get(Contact, row.contact_id)
        assert contact is not None
        contact.mode = "bot"
    await run_retention(gw.services)
    assert await delete_orphaned_topics(gw.services) == 1
    assert (str(GROUP), second_thread) not in gw.bot_api.topics


async def test_whatsapp_learner_media_and_the_24_hour_rule_from_the_topic(group_gateway: Gateway) -> None:
    gw = group_gateway
    gw.services.settings = gw.services.settings.replace(whatsapp_templates={"MENTOR_REPLY": "HX0000mentorreply"})
    form = {"From": "whatsapp:+4915112345678", "To": "whatsapp:+14155238886",
            "Body": "Can I speak with a real person about my course", "MessageSid": "SM" + "1" * 32,
            "AccountSid": "AC" + "0" * 32, "NumMedia": "0", "ProfileName": "Omar"}
    assert (await gw.whatsapp(form)).status_code == 200
    await gw.settle()
    async with gw.services.db.session() as s:
        h = (await s.execute(select(Handoff))).scalar_one()
    thread = int((await topic_of(gw, h.id)).thread_id or 0)

    # a photo on WhatsApp reaches the topic as a file
    media_url = f"{gw.twilio.url}/2010-04-01/Accounts/{'AC' + '0' * 32}/Messages/MM1/Media/ME1"
    gw.twilio.media["ME1"] = (b"\x89PNG fake image bytes", "image/png")
    photo = dict(form, Body="", MessageSid="SM" + "2" * 32, NumMedia="1", MediaUrl0=media_url,
                 MediaContentType0="image/png")
    assert (await gw.whatsapp(photo)).status_code == 200
    await gw.settle()
    upload = gw.bot_api.topic_posts(thread)[-1]
    assert upload["method"] == "sendDocument" and upload["document"]["size"] == len(b"\x89PNG fake image bytes")

    # the learner went quiet for more than a day: the mentor's words from the topic wait, the template goes
    async with gw.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        contact.last_inbound_at = utcnow() - timedelta(hours=30)
    before = len(gw.twilio.sent)
    await gw.telegram(topic_message(500, thread, AMAL_TG, "Hello Omar, here is what to do"))
    await gw.settle()
    sent = gw.twilio.sent[before:]
    assert [m.get("ContentSid") for m in sent][-1] == "HX0000mentorreply"
    assert all(m.get("Body") != "Hello Omar, here is what to do" for m in sent)
    assert "held until the learner answers" in gw.bot_api.topic_posts(thread)[-1]["text"]


async def test_what_telegram_refused_for_now_waits_and_the_worker_sends_it_in_order(group_gateway: Gateway) -> None:
    from bot.mentoring.group import sender

    gw = group_gateway
    gw.bot_api.forum_fail_next.append((500, "Internal Server Error"))  # createForumTopic fails once
    h = await escalate_telegram(gw)
    topic = await topic_of(gw, h.id)
    assert topic.thread_id is None and topic.status == "creating" and topic.attempts == 1
    await gw.telegram(tg_update(2, "are you there?"))
    await gw.settle()
    assert gw.bot_api.group_posts == []  # everything waits for the topic, in order
    assert await sender.flush_due(gw.services) == 0  # not before the back-off
    async with gw.services.db.session() as s:
        row = await s.get(MentorGroupTopic, topic.id)
        assert row is not None and row.next_attempt_at is not None
        row.next_attempt_at = utcnow()  # the back-off is over
    await sender.job(gw.services)  # the worker's next pass
    topic = await topic_of(gw, h.id)
    posts = gw.bot_api.topic_posts(int(topic.thread_id or 0))
    assert topic.status == "open" and posts[0]["message_id"] == topic.card_message_id
    assert posts[-1]["text"] == "👤 are you there?"
    async with gw.services.db.session() as s:
        statuses = (await s.execute(select(MentorGroupPost.status).where(MentorGroupPost.handoff_id == h.id))).all()
    assert {row[0] for row in statuses} == {"sent"}
