"""Scripted conversations through the real Rasa model (Telegram webhook → gateway → Rasa → action server → the
Bot API double), asserting on what the learner receives: a question in the middle of the credits question is
answered as itself, a dialect place name answers it, a question about a language is confirmed before switching,
and account linking is explained. Several languages; one stack for the session (conftest.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from bot.learners import linking
from bot.storage.models import Contact
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e


class Chat:
    """One learner's Telegram chat: send a text or press a button, read what came back."""

    def __init__(self, e2e: E2E, language_code: str) -> None:
        self.e2e, self.language_code = e2e, language_code
        self.chat = e2e.new_chat()
        self.received: list[dict[str, Any]] = []

    async def say(self, text: str, expect: int = 1) -> list[dict[str, Any]]:
        assert (await self.e2e.telegram(self.chat, text, self.language_code)).status_code == 200
        return await self._replies(expect)

    async def press(self, title: str, expect: int = 1) -> list[dict[str, Any]]:
        """Press the button `title` of the last message that had buttons (a Telegram callback query)."""
        keyboards = [m for m in self.received if m.get("reply_markup")]
        assert keyboards, "no buttons to press"
        rows = keyboards[-1]["reply_markup"]["inline_keyboard"]
        [data] = [row[0]["callback_data"] for row in rows if row[0]["text"] == title]
        query_id = f"cbq-{self.chat}-{len(self.received)}"
        update = {"update_id": int(time.time() * 1000) % 2_000_000_000, "callback_query": {
            "id": query_id, "chat_instance": "1", "data": data,
            "from": {"id": self.chat, "is_bot": False, "first_name": "Amal", "language_code": self.language_code},
            "message": {"message_id": 1, "date": int(time.time()), "chat": {"id": self.chat, "type": "private"}}}}
        response = await self.e2e.http.post("/webhooks/telegram", json=update, headers={
            "x-telegram-bot-api-secret-token": self.e2e.stack.env["TELEGRAM_WEBHOOK_SECRET"]})
        assert response.status_code == 200
        return await self._replies(expect)

    async def _replies(self, expect: int) -> list[dict[str, Any]]:
        sent = await self.e2e.telegram_replies(self.chat, len(self.received) + expect)
        new = sent[len(self.received):]
        self.received = sent
        assert len(new) == expect, [m.get("text") for m in new]
        return new

    async def link(self, learner_id: str) -> None:
        issued = await linking.issue_link_token(self.e2e.services, learner_id)
        await self.say(f"/start {issued['token']}")

    async def language(self) -> str:
        async with self.e2e.services.db.session() as session:
            contact = (await session.execute(select(Contact).where(Contact.key == f"telegram:{self.chat}")))
            return str(contact.scalar_one().language)


def text(e2e: E2E, key: str, lang: str, **params: Any) -> str:
    return e2e.services.catalogue.render(key, lang, **params).text


async def test_a_question_after_which_country_is_answered_as_itself(e2e: E2E) -> None:
    chat = Chat(e2e, "de")
    await chat.link("L1005")
    first = await chat.say("werden meine credits an einer uni in europa anerkannt?", expect=2)
    assert "ECTS" in first[0]["text"]
    assert first[1]["text"] == text(e2e, "dialogue_ask_country", "de")

    # not a place name: the deadline question is answered, and Sanad does not ask for a country again
    [reply] = await chat.say("wann ist meine nächste abgabe?")
    assert reply["text"] in (text(e2e, "learner_deadlines_none", "de"),) or reply["text"].startswith(
        text(e2e, "learner_deadlines_header", "de"))
    [reply] = await chat.say("danke dir!")
    assert reply["text"] == text(e2e, "utter_thank", "de")


async def test_a_levantine_place_name_answers_the_credits_question(e2e: E2E) -> None:
    chat = Chat(e2e, "ar")
    await chat.link("L1005")
    first = await chat.say("الجامعات بتعترف بالساعات اللي خلصتها؟", expect=2)
    assert first[1]["text"] == text(e2e, "dialogue_ask_country", "ar")
    [reply] = await chat.say("بألمانيا")
    assert "Rhein University of Applied Sciences" in reply["text"]
    assert text(e2e, "dialogue_recognition_unclear", "ar") not in reply["text"]


async def test_a_question_about_a_language_is_confirmed_before_switching(e2e: E2E) -> None:
    cat = e2e.services.catalogue
    chat = Chat(e2e, "de")
    [question] = await chat.say("kannst du auch Arabisch?")
    assert question["text"] == text(e2e, "dialogue_confirm_language", "de", language="Arabisch")
    titles = [row[0]["text"] for row in question["reply_markup"]["inline_keyboard"]]
    assert titles == [cat.text("dialogue_language_yes", "ar"), cat.text("dialogue_language_no", "de")]
    assert await chat.language() == "de"

    [reply] = await chat.press(cat.text("dialogue_language_no", "de"))
    assert reply["text"] == text(e2e, "utter_kept_as_is", "de")
    assert await chat.language() == "de"
    [reply] = await chat.say("wie melde ich mich für einen kurs an?")
    assert reply["text"] == text(e2e, "utter_enrolment_how", "de")  # still German

    [question] = await chat.say("sprichst du französisch?")
    assert question["text"] == text(e2e, "dialogue_confirm_language", "de", language="Französisch")
    [reply] = await chat.press(cat.text("dialogue_language_yes", "fr"))
    assert reply["text"] == text(e2e, "dialogue_language_changed", "fr")
    assert await chat.language() == "fr"


async def test_how_to_link_the_account_in_french_and_persian(e2e: E2E) -> None:
    for language, question in (("fr", "comment je relie mon compte à cette conversation ?"),
                               ("fa", "چطور حساب یادگیرنده مو به این چت وصل کنم؟")):
        chat = Chat(e2e, language)
        [reply] = await chat.say(question)
        assert reply["text"] == text(e2e, "utter_account_linking", language)
