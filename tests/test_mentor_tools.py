# ruff: noqa: F811  (pytest fixtures imported from other test modules are parameters here)
"""The mentors' tools over the console and the learner's channel: queue search and filters, saved replies,
labels and outcomes, the satisfaction question, deadline extensions (assistant, planner, reminders), ticks."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from bot.mentoring.extensions import ExtensionLookup, set_extension_lookup
from bot.storage.db import utcnow
from bot.storage.models import (
    AuditEntry,
    Contact,
    DeadlineExtension,
    Handoff,
    HandoffLabel,
    Outbox,
    Reminder,
    SavedReply,
)
from tests.conftest import Gateway
from tests.test_console_i18n import demo_url, link_to_demo_learner  # noqa: F401  (a fixture)
from tests.test_console_web import console, csrf, csrf_of, login, mentor, only_handoff, tg_update  # noqa: F401

ASK = "Can I speak with a real person about my course"


async def whatsapp_claimed(gw: Gateway, console: httpx.AsyncClient) -> tuple[dict[str, str], Handoff, str]:
    """A WhatsApp learner asks for a person and Amal claims the conversation in the console."""
    await mentor(gw, "amal@example.org", "en")
    form = {"From": "whatsapp:+4915112345678", "To": "whatsapp:+14155238886", "Body": ASK,
            "MessageSid": "SM" + "1" * 32, "AccountSid": "AC" + "0" * 32, "NumMedia": "0", "ProfileName": "Omar"}
    await gw.whatsapp(form)
    await gw.settle()
    h = await only_handoff(gw)
    await login(console, "amal@example.org")
    token = await csrf(console)
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    return form, h, token


async def escalate(gw: Gateway, chat_id: int, name: str, update_id: int, lang: str = "en") -> None:
    update = tg_update(update_id, ASK, chat_id=chat_id, lang=lang)
    update["message"]["chat"]["first_name"] = update["message"]["from"]["first_name"] = name
    await gw.telegram(update)
    await gw.settle()


def queue_ids(html: str) -> set[int]:
    return {int(i) for i in re.findall(r'data-handoff="(\d+)"', html)}


async def test_queue_search_and_filters(gateway: Gateway, console: httpx.AsyncClient) -> None:
    await mentor(gateway, "lead@example.org", "en,ar", role="lead")
    await escalate(gateway, 1, "Lina", 1)
    await escalate(gateway, 2, "Omar", 2)
    async with gateway.services.db.session() as s:
        rows = {c.display_name: c for c in (await s.execute(select(Contact))).scalars()}
        rows["Omar"].learner_id = "L77"
        handoffs = {h.contact_id: h for h in (await s.execute(select(Handoff))).scalars()}
        lina, omar = handoffs[rows["Lina"].id], handoffs[rows["Omar"].id]
        omar.urgent = True
        s.add(HandoffLabel(kind="label", name="visa", active=True))
    await login(console, "lead@example.org")
    queue = (await console.get("/console")).text
    assert queue_ids(queue) == {lina.id, omar.id}
    # urgent first, then oldest
    assert queue.index(f'data-handoff="{omar.id}"') < queue.index(f'data-handoff="{lina.id}"')
    assert "#L77" in queue and "Lina" in queue
    assert queue_ids((await console.get("/console?q=lin")).text) == {lina.id}
    assert queue_ids((await console.get("/console?q=l77")).text) == {omar.id}
    assert queue_ids((await console.get("/console?urgent=1")).text) == {omar.id}
    assert queue_ids((await console.get("/console?channel=whatsapp")).text) == set()
    assert queue_ids((await console.get("/console?reason=request_human&language=en")).text) == {lina.id, omar.id}
    # a label, then the filter by label; the live fragment keeps the filter
    page = await console.get(f"/console/h/{lina.id}")
    label_id = int(re.search(r'name="label" value="(\d+)"', page.text).group(1))  # type: ignore[union-attr]
    await console.post(f"/console/h/{lina.id}/labels", data={"csrf_token": csrf_of(page.text),
                                                              "label": str(label_id)})
    filtered = (await console.get(f"/console?label={label_id}")).text
    assert queue_ids(filtered) == {lina.id} and f'data-fragment="/console/queue?label={label_id}"' in filtered
    assert queue_ids((await console.get(f"/console/queue?label={label_id}")).text) == {lina.id}


async def test_saved_replies_leads_edit_mentors_insert_filled(gateway: Gateway, console: httpx.AsyncClient,
                                                             demo_url: str) -> None:
    await mentor(gateway, "lead@example.org", "fa,en", role="lead")
    await mentor(gateway, "farid@example.org", "fa,en")
    await escalate(gateway, 3, "Farid", 3, lang="fa")
    await link_to_demo_learner(gateway, demo_url)
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        contact.language = "fa"

    await login(console, "farid@example.org")
    refused = await console.post("/console/saved", data={"csrf_token": await csrf(console), "language": "fa",
                                                         "name": "docs", "text": "x"})
    assert "error=leads_edit_only" in refused.headers["location"]
    await console.post("/console/logout", data={"csrf_token": await csrf(console)})

    await login(console, "lead@example.org")
    token = await csrf(console)
    made = await console.post("/console/saved", data={
        "csrf_token": token, "language": "fa", "name": "deadline",
        "text": "سلام {first_name}، مهلت بعدی شما: {next_deadline}"})
    assert made.headers["location"].endswith("notice=saved")
    clash = await console.post("/console/saved", data={"csrf_token": token, "language": "fa", "name": "DEADLINE",
                                                       "text": "again"})
    assert "error=saved_taken" in clash.headers["location"]
    listing = await console.get("/console/saved")
    assert "deadline" in listing.text and "{first_name}" in listing.text
    await console.post("/console/logout", data={"csrf_token": await csrf(console)})

    await login(console, "farid@example.org")
    h = await only_handoff(gateway)
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": await csrf(console)})
    page = await console.get(f"/console/h/{h.id}")
    data = json.loads(re.search(r'<script type="application/json" id="saved-replies">(.*?)</script>',
                                page.text, re.S).group(1))  # type: ignore[union-attr]
    assert data[0]["name"] == "deadline"
    assert data[0]["text"].startswith("سلام Farid، مهلت بعدی شما: Week 5 writing task")
    assert 'id="saved-picker"' in page.text and "/console/static/tools.js" in page.text


async def test_outcome_on_resolve_and_the_satisfaction_answer(gateway: Gateway, console: httpx.AsyncClient) -> None:
    await mentor(gateway, "amal@example.org", "en")
    await escalate(gateway, 4, "Lina", 4)
    h = await only_handoff(gateway)
    await login(console, "amal@example.org")
    token = await csrf(console)
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    page = await console.get(f"/console/h/{h.id}")
    assert '<option value="extension granted"' in page.text  # the default outcomes
    wrong = await console.post(f"/console/h/{h.id}/resolve", data={"csrf_token": token, "outcome": "nonsense"})
    assert "error=unknown_outcome" in wrong.headers["location"]
    await console.post(f"/console/h/{h.id}/resolve", data={"csrf_token": token, "outcome": "technical"})
    await gateway.settle()
    done = await only_handoff(gateway)
    assert (done.state, done.resolution) == ("resolved", "technical") and done.satisfaction_asked_at is not None
    question = gateway.bot_api.sent[-1]
    buttons = [b["callback_data"] for row in question["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == [f"/csat {h.id} {n}" for n in range(1, 6)]

    rasa_before = len(gateway.rasa.messages)
    press = {"update_id": 50, "callback_query": {
        "id": "cq50", "from": {"id": 4, "is_bot": False, "first_name": "Lina"},
        "message": {"message_id": 77, "chat": {"id": 4, "type": "private"}, "date": 1732790000, "text": "?"},
        "chat_instance": "1", "data": f"/csat {h.id} 4"}}
    await gateway.telegram(press)
    await gateway.settle()
    assert (await only_handoff(gateway)).satisfaction == 4
    thanks = gateway.bot_api.sent[-1]
    comment_button = thanks["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert comment_button == f"/csat_comment {h.id}"
    press["update_id"], press["callback_query"]["id"], press["callback_query"]["data"] = 51, "cq51", comment_button
    await gateway.telegram(press)
    await gateway.telegram(tg_update(52, "Amal was very kind, thank you", chat_id=4))
    await gateway.settle()
    rated = await only_handoff(gateway)
    assert rated.satisfaction_comment == "Amal was very kind, thank you"
    assert len(gateway.rasa.messages) == rasa_before  # none of these went to the assistant
    # afterwards a question is a question again
    await gateway.telegram(tg_update(53, "when is my next deadline", chat_id=4))
    await gateway.settle()
    assert gateway.rasa.messages[-1]["message"] == "when is my next deadline"
    console_page = await console.get(f"/console/h/{h.id}")
    assert "4/5" in console_page.text and "Amal was very kind" in console_page.text


async def test_a_question_instead_of_a_comment_is_not_swallowed(gateway: Gateway, console: httpx.AsyncClient) -> None:
    """WhatsApp: the rating is the digit of a numbered button; typing instead of tapping "add a comment"."""
    form, h, token = await whatsapp_claimed(gateway, console)
    await console.post(f"/console/h/{h.id}/resolve", data={"csrf_token": token})
    await gateway.settle()
    assert "1." in gateway.twilio.sent[-1]["Body"] and "5." in gateway.twilio.sent[-1]["Body"]
    for sid, body in (("2", "5"), ("3", "what about my certificate?")):  # after the first message, SM111…
        form["Body"], form["MessageSid"] = body, "SM" + sid * 32
        await gateway.whatsapp(form)
        await gateway.settle()
    rated = await only_handoff(gateway)
    assert rated.satisfaction == 5 and rated.satisfaction_comment is None
    assert gateway.rasa.messages[-1]["message"] == "what about my certificate?"


async def test_recording_an_extension_moves_answers_and_reminders(gateway: Gateway, console: httpx.AsyncClient,
                                                                  demo_url: str,
                                                                  tmp_path: Any) -> None:
    from bot.reminders.dispatch import dispatch_due_reminders
    from bot.reminders.planner import plan_reminders
    from flows import learner as learner_flows
    from integrations.platform import DEMO_PLATFORM_TOKEN, PlatformClient

    await mentor(gateway, "amal@example.org", "en,fa")
    await escalate(gateway, 5, "Farid", 5)
    await link_to_demo_learner(gateway, demo_url)
    h = await only_handoff(gateway)
    await login(console, "amal@example.org")
    token = await csrf(console)
    # a mentor who has not claimed it cannot record one
    early = await console.post(f"/console/h/{h.id}/extension", data={
        "csrf_token": token, "deadline_id": "L1002-w5", "new_due_at": "2099-01-01T10:00", "reason": "ill"})
    assert "error=claim_before_reply" in early.headers["location"]
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    page = await console.get(f"/console/h/{h.id}")
    assert 'value="L1002-w5"' in page.text
    new_local = (utcnow() + timedelta(days=12)).strftime("%Y-%m-%dT11:00")
    past = await console.post(f"/console/h/{h.id}/extension", data={
        "csrf_token": token, "deadline_id": "L1002-w5", "new_due_at": "2020-01-01T10:00", "reason": "ill"})
    assert "error=extension_past" in past.headers["location"]
    done = await console.post(f"/console/h/{h.id}/extension", data={
        "csrf_token": token, "deadline_id": "L1002-w5", "new_due_at": new_local,
        "reason": "medical certificate for two weeks"})
    assert done.headers["location"].endswith("notice=extension")
    async with gateway.services.db.session() as s:
        ext = (await s.execute(select(DeadlineExtension))).scalar_one()
        audits = list((await s.execute(select(AuditEntry).where(AuditEntry.action == "deadline.extension"))).scalars())
    assert ext.learner_id == "L1002" and ext.title == "Week 5 writing task"
    # the learner's time zone (Asia/Kabul, +04:30) was applied to the form's date and time
    assert ext.new_due_at.strftime("%H:%M") == "06:30"
    assert len(audits) == 1 and "medical" not in json.dumps(audits[0].detail)

    # the assistant's deadline answer uses the mentor's date and says so
    client = PlatformClient(demo_url, DEMO_PLATFORM_TOKEN, gateway.services.coord)
    learner_flows.set_platform_client(client)
    set_extension_lookup(ExtensionLookup(gateway.services.settings, gateway.services.db))
    try:
        from rasa_sdk.executor import ActionExecutor

        from tests.test_flows_learner import action_call, run, texts

        executor = ActionExecutor()
        executor.register_package("flows")
        answer = texts(await run(executor, action_call("action_deadlines", learner_id="L1002")))
    finally:
        learner_flows.set_platform_client(None)
        set_extension_lookup(None)
        await client.aclose()
    line = next(row for row in answer.splitlines() if "Week 5 writing task" in row)
    assert "new date set by your mentor" in line and "11:00" in line

    # the reminder planner plans for the new date; the reminder says it came from the mentor
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        contact.timezone = "Asia/Kabul"
    planner_client = PlatformClient(demo_url, DEMO_PLATFORM_TOKEN, gateway.services.coord)
    try:
        await plan_reminders(gateway.services, planner_client)
    finally:
        await planner_client.aclose()
    async with gateway.services.db.session() as s:
        planned = list((await s.execute(select(Reminder).where(Reminder.deadline_id == "L1002-w5"))).scalars())
    assert planned and all(r.due_at == ext.new_due_at and (r.data or {}).get("extended") for r in planned)
    first = min(planned, key=lambda r: r.send_at)
    await dispatch_due_reminders(gateway.services, now=first.send_at + timedelta(minutes=1))
    async with gateway.services.db.session() as s:
        text = (await s.execute(select(Outbox.text).where(Outbox.origin == "reminder"))).scalar_one()
    assert "new date your mentor agreed with you" in (text or "")


async def test_delivered_and_read_ticks_on_mentor_replies(gateway: Gateway, console: httpx.AsyncClient) -> None:
    _form, h, token = await whatsapp_claimed(gateway, console)
    await console.post(f"/console/h/{h.id}/reply", data={"csrf_token": token, "text": "Hello Omar"})
    await gateway.settle()
    async with gateway.services.db.session() as s:
        sid = (await s.execute(select(Outbox.provider_id).where(Outbox.origin == "mentor"))).scalar_one()

    def ticks(html: str) -> list[str]:
        return re.findall(r'class="ticks (\w+)"', html)

    assert ticks((await console.get(f"/console/h/{h.id}/transcript")).text) == ["sent"]
    for status in ("delivered", "read"):
        callback = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "0" * 32}
        assert (await gateway.whatsapp(callback, path="/webhooks/whatsapp/status")).status_code == 200
        assert ticks((await console.get(f"/console/h/{h.id}/transcript")).text) == [status]


async def test_console_pages_have_no_inline_script(gateway: Gateway, console: httpx.AsyncClient) -> None:
    await mentor(gateway, "lead@example.org", "en", role="lead")
    await escalate(gateway, 6, "Lina", 6)
    h = await only_handoff(gateway)
    await login(console, "lead@example.org")
    for path in ("/console", f"/console/h/{h.id}", "/console/saved", "/console/lists", "/console/telegram"):
        html = (await console.get(path)).text
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"\son[a-z]+=", html), path
    assert "notify.js" in (await console.get("/console")).text


async def test_web_chat_marks_a_mentor_reply_delivered_when_the_page_has_it(gateway: Gateway,
                                                                           console: httpx.AsyncClient) -> None:
    await mentor(gateway, "amal@example.org", "en")
    client_id = "webclient_0123456789abcdef"
    headers = {"x-requested-with": "sanad-webchat", "content-type": "application/json"}
    body = json.dumps({"client_id": client_id, "message_id": "m1", "text": ASK})
    assert (await gateway.client.post("/chat/api/messages", content=body, headers=headers)).status_code == 200
    await gateway.settle()
    h = await only_handoff(gateway)
    await login(console, "amal@example.org")
    token = await csrf(console)
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    await console.post(f"/console/h/{h.id}/reply", data={"csrf_token": token, "text": "Hello from Amal"})
    await gateway.settle()
    assert re.findall(r'class="ticks (\w+)"', (await console.get(f"/console/h/{h.id}/transcript")).text) == ["sent"]
    page = await gateway.client.get(f"/chat/api/messages?client_id={client_id}&after=0")
    assert any(m["text"] == "Hello from Amal" and m["from"] == "mentor" for m in page.json()["messages"])
    ticks = re.findall(r'class="ticks (\w+)"', (await console.get(f"/console/h/{h.id}/transcript")).text)
    assert ticks == ["delivered"]


async def test_held_text_reaches_a_learner_back_with_the_assistant_before_its_answer(
        gateway: Gateway, console: httpx.AsyncClient) -> None:
    """12.6 after the hand-off ended: the learner's next message releases the held text first; on a shared
    phone with a PIN it waits for the PIN."""
    gateway.services.settings = gateway.services.settings.replace(
        whatsapp_templates={"MENTOR_REPLY": "HX0000mentorreply"})
    form, h, token = await whatsapp_claimed(gateway, console)
    await gateway.settle()
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        contact.last_inbound_at = utcnow() - timedelta(hours=30)
        contact.pin_hash = "not-verified-yet"  # a PIN is set and not given since
    await console.post(f"/console/h/{h.id}/reply", data={"csrf_token": token, "text": "Your extension is fine"})
    await console.post(f"/console/h/{h.id}/resolve", data={"csrf_token": token})
    await gateway.settle()
    bodies = [m.get("Body") for m in gateway.twilio.sent]
    assert "Your extension is fine" not in bodies

    form["Body"], form["MessageSid"] = "hello again", "SM" + "5" * 32
    await gateway.whatsapp(form)
    await gateway.settle()
    assert "Your extension is fine" not in [m.get("Body") for m in gateway.twilio.sent]  # the PIN first

    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        contact.pin_hash = None
    form["Body"], form["MessageSid"] = "are you there?", "SM" + "6" * 32
    before = len(gateway.twilio.sent)
    await gateway.whatsapp(form)
    await gateway.settle()
    after = [m.get("Body") for m in gateway.twilio.sent[before:]]
    assert after[0] == "Your extension is fine" and after[1] == "echo: are you there?"


async def test_leads_keep_the_label_and_outcome_lists_and_delete_saved_replies(gateway: Gateway,
                                                                              console: httpx.AsyncClient) -> None:
    await mentor(gateway, "lead@example.org", "en", role="lead")
    await mentor(gateway, "amal@example.org", "en")
    await login(console, "amal@example.org")
    refused = await console.post("/console/lists", data={"csrf_token": await csrf(console), "kind": "label",
                                                         "name": "visa"})
    assert "error=leads_edit_only" in refused.headers["location"]
    await console.post("/console/logout", data={"csrf_token": await csrf(console)})

    await login(console, "lead@example.org")
    token = await csrf(console)
    await console.post("/console/lists", data={"csrf_token": token, "kind": "label", "name": "visa"})
    await console.post("/console/lists", data={"csrf_token": token, "kind": "outcome", "name": "scholarship advice"})
    await console.post("/console/lists", data={"csrf_token": token, "kind": "outcome", "name": "licence issued",
                                               "retire": "1"})
    page = (await console.get("/console/lists")).text
    assert "visa" in page and "scholarship advice" in page and "licence issued" not in page
    assert "extension granted" in page  # the other default outcomes stay
    await escalate(gateway, 7, "Lina", 7)
    h = await only_handoff(gateway)
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    conversation = (await console.get(f"/console/h/{h.id}")).text
    assert '<option value="scholarship advice"' in conversation and '<option value="licence issued"' not in conversation
    assert 'name="label" value=' in conversation

    await console.post("/console/saved", data={"csrf_token": token, "language": "en", "name": "hello",
                                               "text": "Hello {first_name}"})
    async with gateway.services.db.session() as s:
        reply = (await s.execute(select(SavedReply))).scalar_one()
    deleted = await console.post(f"/console/saved/{reply.id}/delete", data={"csrf_token": token})
    assert deleted.headers["location"].endswith("notice=deleted")
    async with gateway.services.db.session() as s:
        assert (await s.execute(select(SavedReply))).scalars().all() == []
