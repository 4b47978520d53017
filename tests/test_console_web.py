"""The mentor console over HTTP: security, and the whole learner -> mentor -> bot round trip."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.i18n.catalogue import get_catalogue
from bot.mentoring.accounts import add_mentor
from bot.privacy.audit import subject_ref
from bot.storage.db import utcnow
from bot.storage.models import AuditEntry, Contact, Handoff, Outbox
from tests.conftest import Gateway

PASSWORD = "correct horse battery"
HANDOFF_WORDS = ("human", "person", "mentor", "إنسان")


def handoff_responder(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Rasa double: a request for a person makes the action ask the gateway for a hand-off."""
    text = str(body.get("message") or "").lower()
    if any(word in text for word in HANDOFF_WORDS):
        return [{"recipient_id": body["sender"],
                 "custom": {"sanad": {"command": "handoff", "reason": "request_human", "urgent": False}}}]
    return [{"recipient_id": body["sender"], "text": f"echo: {body.get('message')}"}]


@pytest.fixture
async def console(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client over https (the session cookie is Secure under an https PUBLIC_BASE_URL)."""
    gateway.rasa.responder = handoff_responder
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield client


async def mentor(gw: Gateway, email: str, languages: str, role: str = "mentor") -> int:
    async with gw.services.db.session() as s:
        return (await add_mentor(s, email, PASSWORD, languages, role, display_name=email.split("@")[0].title())).id


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    page = await client.get("/console/login")
    return await client.post("/console/login", data={"email": email, "password": password,
                                                     "csrf_token": csrf_of(page.text)})


async def csrf(client: httpx.AsyncClient) -> str:
    return csrf_of((await client.get("/console")).text)


def tg_update(update_id: int, text: str, chat_id: int = 424242, lang: str = "en") -> dict[str, Any]:
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": 1732790000, "text": text,
        "chat": {"id": chat_id, "type": "private", "first_name": "Lina"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Lina", "language_code": lang}}}


async def only_handoff(gw: Gateway) -> Handoff:
    async with gw.services.db.session() as s:
        return (await s.execute(select(Handoff))).scalar_one()


# --- security ----------------------------------------------------------------------

async def test_no_session_redirects_to_login(gateway: Gateway, console: httpx.AsyncClient) -> None:
    for path in ("/console", "/console/h/1"):
        response = await console.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/console/login"
    response = await console.post("/console/h/1/claim", data={"csrf_token": "x"})
    assert response.status_code == 303 and response.headers["location"] == "/console/login"
    assert (await console.get("/console/events")).status_code == 401


async def test_login_sets_a_hardened_cookie_and_wrong_password_fails(gateway: Gateway,
                                                                     console: httpx.AsyncClient) -> None:
    await mentor(gateway, "amal@example.org", "ar,en")
    assert (await login(console, "amal@example.org", "wrong password!")).status_code == 401
    response = await login(console, "AMAL@example.org")
    assert response.status_code == 303 and response.headers["location"] == "/console"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie
    page = await console.get("/console")
    # the console speaks the mentor's first language ("ar,en"): see tests/test_console_i18n.py
    assert page.status_code == 200 and 'lang="ar" dir="rtl"' in page.text
    assert get_catalogue().text("console_waiting", "ar") in page.text
    logout = await console.post("/console/logout", data={"csrf_token": csrf_of(page.text)})
    assert logout.status_code == 303
    assert (await console.get("/console")).status_code == 303


async def test_login_without_csrf_is_forbidden(gateway: Gateway, console: httpx.AsyncClient) -> None:
    await mentor(gateway, "amal@example.org", "en")
    await console.get("/console/login")
    response = await console.post("/console/login", data={"email": "amal@example.org", "password": PASSWORD})
    assert response.status_code == 403


async def test_login_is_rate_limited(gateway: Gateway, console: httpx.AsyncClient) -> None:
    await mentor(gateway, "amal@example.org", "en")
    statuses = [(await login(console, "amal@example.org", "nope nope nope")).status_code for _ in range(7)]
    # five wrong passwords, then this address waits (tests/test_console_sessions.py: growing delays)
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    # even the right password waits from here
    assert (await login(console, "amal@example.org")).status_code == 429


async def test_forms_without_csrf_are_forbidden(gateway: Gateway, console: httpx.AsyncClient) -> None:
    await mentor(gateway, "amal@example.org", "en")
    await gateway.telegram(tg_update(1, "I want a human"))
    await gateway.settle()
    h = await only_handoff(gateway)
    await login(console, "amal@example.org")
    assert (await console.post(f"/console/h/{h.id}/claim", data={})).status_code == 403
    assert (await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": "forged"})).status_code == 403
    assert (await only_handoff(gateway)).state == "waiting"


async def test_mentor_cannot_open_a_conversation_outside_their_languages(gateway: Gateway,
                                                                         console: httpx.AsyncClient) -> None:
    await mentor(gateway, "fr@example.org", "fr")
    await gateway.telegram(tg_update(1, "I want a human"))
    await gateway.settle()
    h = await only_handoff(gateway)
    assert h.language == "en"
    await login(console, "fr@example.org")
    token = await csrf(console)
    assert (await console.get(f"/console/h/{h.id}")).status_code == 403
    assert (await console.get(f"/console/h/{h.id}/transcript")).status_code == 403
    assert (await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})).status_code == 403
    assert (await console.get("/console/h/999999")).status_code == 404
    assert f"/console/h/{h.id}" not in (await console.get("/console/queue")).text


# --- the round trip ------------------------------------------------------------------

async def test_telegram_learner_mentor_round_trip(gateway: Gateway, console: httpx.AsyncClient) -> None:
    lead = await mentor(gateway, "lead@example.org", "de", role="lead")
    await mentor(gateway, "amal@example.org", "en,ar")
    await gateway.telegram(tg_update(1, "hello"))
    await gateway.telegram(tg_update(2, "Can I speak with a real person about my course"))
    await gateway.settle()
    h = await only_handoff(gateway)
    waiting_note = gateway.bot_api.sent[-1]["text"]
    assert "mentor" in waiting_note and "bot" in waiting_note

    await login(console, "amal@example.org")
    queue = await console.get("/console")
    assert f"/console/h/{h.id}" in queue.text and "Can I speak with a real person about my course" in queue.text
    token = csrf_of(queue.text)
    claimed = await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    assert claimed.status_code == 303 and claimed.headers["location"].startswith(f"/console/h/{h.id}")
    page = await console.get(f"/console/h/{h.id}")
    assert page.status_code == 200 and "Learner record" in page.text
    assert "Can I speak with a real person about my course" in page.text

    sent_before = len(gateway.bot_api.sent)
    reply = await console.post(f"/console/h/{h.id}/reply",
                               data={"csrf_token": token, "text": "Hi Lina, I am Amal. How can I help?"})
    assert reply.status_code == 303
    sent = await gateway.bot_api.wait_for(sent_before + 1)
    assert any(m["text"] == "Hi Lina, I am Amal. How can I help?" for m in sent)

    rasa_before = len(gateway.rasa.messages)
    await gateway.telegram(tg_update(3, "My exam was yesterday and I was ill"))
    await gateway.settle()
    assert len(gateway.rasa.messages) == rasa_before  # went to the mentor, not to Rasa
    fragment = await console.get(f"/console/h/{h.id}/transcript")
    assert "My exam was yesterday and I was ill" in fragment.text

    note = await console.post(f"/console/h/{h.id}/note", data={"csrf_token": token, "text": "check medical note"})
    assert note.status_code == 303
    resolved = await console.post(f"/console/h/{h.id}/resolve", data={"csrf_token": token})
    assert resolved.status_code == 303
    assert (await only_handoff(gateway)).state == "resolved"
    await gateway.telegram(tg_update(4, "when is my next deadline"))
    await gateway.settle()
    assert gateway.rasa.messages[-1]["message"] == "when is my next deadline"
    events = gateway.rasa.events["telegram:424242"]
    listen = max(i for i, e in enumerate(events) if e == {"event": "action", "name": "action_listen"})
    # the hand-back told Rasa to listen again before the learner's next message reached it
    assert events[listen + 1] == {"event": "user", "text": "when is my next deadline",
                                  "metadata": events[listen + 1]["metadata"]}

    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        entries = list((await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())
    ref = subject_ref(gateway.services.settings, contact.key)
    actions = {(e.action, e.actor) for e in entries if e.subject_ref == ref}
    assert ("mentor.reply", "mentor:2") in actions and ("conversation.read", "mentor:2") in actions
    assert ("handoff.resolved", "mentor:2") in actions
    assert all("Amal" not in repr(e.detail) for e in entries)
    assert lead  # the lead exists but never touched this conversation


async def test_whatsapp_reply_outside_window_goes_out_as_template(gateway: Gateway,
                                                                  console: httpx.AsyncClient) -> None:
    gateway.services.settings = gateway.services.settings.replace(
        whatsapp_templates={"MENTOR_REPLY_EN": "HX0000mentorreply"})
    await mentor(gateway, "amal@example.org", "en")
    form = {"From": "whatsapp:+4915112345678", "To": "whatsapp:+14155238886",
            "Body": "Can I speak with a real person about my course",
            "MessageSid": "SM" + "1" * 32, "AccountSid": "AC" + "0" * 32, "NumMedia": "0", "ProfileName": "Omar"}
    assert (await gateway.whatsapp(form)).status_code == 200
    await gateway.settle()
    h = await only_handoff(gateway)
    await login(console, "amal@example.org")
    token = await csrf(console)
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    await gateway.settle()
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        contact.last_inbound_at = utcnow() - timedelta(hours=26)
    page = await console.get(f"/console/h/{h.id}")
    assert "More than 24 hours" in page.text and "Send template" in page.text
    before = len(gateway.twilio.sent)
    response = await console.post(f"/console/h/{h.id}/reply", data={"csrf_token": token, "text": "Hello Omar"})
    assert response.status_code == 303 and "notice=template" in response.headers["location"]
    sent = await gateway.twilio.wait_for(before + 1)
    assert sent[-1].get("ContentSid") == "HX0000mentorreply"
    await gateway.settle()
    assert len(gateway.twilio.sent) == before + 1  # only the template: the text waits
    async with gateway.services.db.session() as s:
        rows = list((await s.execute(select(Outbox).where(Outbox.origin == "mentor").order_by(Outbox.id))).scalars())
    assert rows[0].payload and rows[0].payload["template"]["sid"] == "HX0000mentorreply"
    assert rows[1].text == "Hello Omar" and rows[1].status == "held"
    assert "Hello Omar" in (await console.get(f"/console/h/{h.id}/transcript")).text

    # the learner answers the template: the held text goes out first, and the answer reaches the mentor
    form["Body"], form["MessageSid"] = "ok, what did you write?", "SM" + "2" * 32
    assert (await gateway.whatsapp(form)).status_code == 200
    await gateway.settle()
    sent = await gateway.twilio.wait_for(before + 2)
    assert sent[before + 1].get("Body") == "Hello Omar"
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        held = await s.get(Outbox, rows[1].id)
    assert contact.held_since is None and held is not None and held.status == "sent"


async def test_export_goes_to_the_mentor_of_the_conversation_only(gateway: Gateway,
                                                                   console: httpx.AsyncClient) -> None:
    await mentor(gateway, "amal@example.org", "en,ar")
    await mentor(gateway, "omar@example.org", "en")
    await gateway.telegram(tg_update(1, "my student number is 7731, can I speak with a person"))
    await gateway.settle()
    h = await only_handoff(gateway)

    await login(console, "omar@example.org")  # sees the waiting conversation, but has not claimed it
    assert (await console.get(f"/console/h/{h.id}/export")).status_code == 403
    await console.post("/console/logout", data={"csrf_token": await csrf(console)})

    await login(console, "amal@example.org")
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": await csrf(console)})
    export = await console.get(f"/console/h/{h.id}/export")
    assert export.status_code == 200
    assert export.headers["content-disposition"].startswith("attachment;")
    data = export.json()
    assert "my student number is 7731, can I speak with a person" in json_dump(data)
    async with gateway.services.db.session() as s:
        actions = [e.action for e in (await s.execute(select(AuditEntry))).scalars()]
    assert "export.download" in actions


def json_dump(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
