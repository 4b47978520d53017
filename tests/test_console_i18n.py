"""The mentor console in the mentor's language: en, ar, fa, fr, de, right to left for ar and fa.

Every page string comes from `bot/i18n/locales/<lang>/console.json`; the language is the switcher's
cookie, else the mentor's first language, else (login page) the browser's Accept-Language."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from markupsafe import escape
from sqlalchemy import select

from bot.i18n.catalogue import get_catalogue
from bot.runtime.settings import LANGUAGES
from bot.storage.db import utcnow
from bot.storage.models import Contact, Handoff, Mentor, MentorNote
from bot.web.console.i18n import LANG_COOKIE, UI, from_accept_language, mentor_default, supported
from integrations.demo_platform import BackgroundServer, demo_app
from integrations.platform import DEMO_PLATFORM_TOKEN, PlatformClient
from tests.conftest import Gateway
from tests.test_console_web import console, csrf_of, login, mentor, only_handoff, tg_update  # noqa: F401

RTL = {"ar", "fa"}
LEARNER_TEXT = "I want a human please"
# English console strings that must not be left over in another language's pages
ENGLISH_ONLY = (
    "Waiting", "My conversations", "With mentors", "Log out", "On duty", "Off duty", "Open", "Claim",
    "Learner record", "Internal notes", "Add note", "Resolve", "Send", "Reply to the learner", "Back to the queue",
    "Hand back to bot", "Transfer", "Enrolments", "Next deadlines", "Credits", "earned", "in progress", "ago",
    "asked for a person", "with mentor", "Queue", "Sanad mentors", "Password", "Log in", "Learner", "Assistant",
    "Coordinated Universal Time", "Afghanistan Time", "Language", "Download", "Note for the team",
)
RAW_KEY = re.compile(r"console_[a-z]")


def t(key: str, lang: str, **params: object) -> str:
    """A catalogue text as it appears in the HTML (autoescaped)."""
    return str(escape(get_catalogue().text(key, lang, **params)))


def visible(page_html: str) -> str:
    """The page without its <script> blocks (their JSON is checked through the catalogue)."""
    return re.sub(r"<script\b[^>]*>.*?</script>", "", page_html, flags=re.S)


def _has_word(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text) is not None


def leftovers(page_html: str, lang: str) -> list[str]:
    """English-only phrases on a page in `lang` (a word the language shares, e.g. French "Assistant", is fine)."""
    if lang == "en":
        return []
    own = [v for v in get_catalogue().entries[lang].values() if isinstance(v, str)]
    page = visible(page_html)
    return [phrase for phrase in ENGLISH_ONLY
            if _has_word(page, phrase) and not any(_has_word(v, phrase) for v in own)]


def assert_page_in(page_html: str, lang: str) -> None:
    direction = "rtl" if lang in RTL else "ltr"
    assert f'<html lang="{lang}" dir="{direction}">' in page_html
    assert not RAW_KEY.search(page_html), RAW_KEY.findall(page_html)
    assert not leftovers(page_html, lang), leftovers(page_html, lang)


def mentor_languages_for(lang: str) -> str:
    """The mentor reads `lang` first and also takes English conversations (the test learner's)."""
    return "en" if lang == "en" else f"{lang},en"


async def waiting_handoff(gateway: Gateway, chat_id: int = 424242) -> Handoff:
    await gateway.telegram(tg_update(chat_id, LEARNER_TEXT, chat_id=chat_id))
    await gateway.settle()
    return await only_handoff(gateway)


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with BackgroundServer(demo_app()) as server:
        yield server.url


async def link_to_demo_learner(gateway: Gateway, demo_url: str, learner_id: str = "L1002") -> None:
    """L1002 of the demo platform lives in Asia/Kabul and has deadlines in the next days."""
    gateway.services.platform_client = PlatformClient(demo_url, DEMO_PLATFORM_TOKEN, gateway.services.coord)
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        contact.learner_id = learner_id


# --- (a) every page in every language ----------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_login_page_in_every_language(gateway: Gateway, console: httpx.AsyncClient,  # noqa: F811
                                            lang: str) -> None:
    page = await console.get("/console/login", headers={"accept-language": lang})
    assert page.status_code == 200
    assert_page_in(page.text, lang)
    for key in ("console_title_login", "console_login_heading", "console_login_password", "console_login_submit"):
        assert t(key, lang) in page.text
    wrong = await console.post("/console/login", headers={"accept-language": lang},
                               data={"email": "nobody@example.org", "password": "nope nope nope",
                                     "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 401
    assert_page_in(wrong.text, lang)
    assert t("console_login_wrong", lang) in wrong.text


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_queue_and_conversation_pages_in_every_language(gateway: Gateway, console: httpx.AsyncClient,  # noqa: F811
                                                              demo_url: str, lang: str) -> None:
    await mentor(gateway, "amal@example.org", mentor_languages_for(lang))
    h = await waiting_handoff(gateway)
    await link_to_demo_learner(gateway, demo_url)
    await login(console, "amal@example.org")

    queue = await console.get("/console")
    assert queue.status_code == 200
    assert_page_in(queue.text, lang)
    assert LEARNER_TEXT in queue.text  # learner content as written, direction left to the browser
    assert '<p class="last" dir="auto">' in queue.text
    for key in ("console_waiting", "console_claim", "console_my_conversations", "console_no_open",
                "console_reason_request_human", "console_logout", "console_on_duty"):
        assert t(key, lang) in queue.text, key
    assert (await console.get("/console/queue")).text.count(t("console_claim", lang)) == 1

    waiting = await console.get(f"/console/h/{h.id}")
    assert_page_in(waiting.text, lang)
    assert t("console_claim_conversation", lang) in waiting.text
    assert t("console_state_waiting", lang) in waiting.text

    token = csrf_of(queue.text)
    claimed = await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    assert claimed.status_code == 303
    await console.post(f"/console/h/{h.id}/note", data={"csrf_token": token, "text": "call back on Monday"})
    page = await console.get(f"/console/h/{h.id}?notice=noted")
    assert page.status_code == 200
    assert_page_in(page.text, lang)
    for key in ("console_record", "console_deadlines", "console_credits", "console_notes", "console_add_note",
                "console_resolve", "console_hand_back", "console_transfer", "console_transfer_queue",
                "console_reply_placeholder", "console_send", "console_state_with_mentor", "console_notice_noted",
                "console_who_learner", "console_channel_telegram", "console_learner_status_active"):
        assert t(key, lang) in page.text, key
    assert '<span dir="auto">call back on Monday</span>' in page.text
    assert '<span class="text" dir="auto">' + LEARNER_TEXT + "</span>" in page.text
    # the learner's deadlines in her own zone (Asia/Kabul), named in the mentor's language, not "… UTC"
    deadlines = re.findall(r'<span class="muted deadline">([^<]+)</span>', page.text)
    assert deadlines
    zone_name = {"en": "Afghanistan Time", "ar": "توقيت أفغانستان", "fa": "وقت افغانستان",
                 "fr": "heure de l’Afghanistan", "de": "Afghanistan-Zeit"}[lang]
    assert all(d.endswith(f"({zone_name})") for d in deadlines), deadlines

    transcript = await console.get(f"/console/h/{h.id}/transcript")
    assert not RAW_KEY.search(transcript.text)
    assert not leftovers(transcript.text, lang)
    assert t("console_who_learner", lang) in transcript.text


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_whatsapp_window_warning_notices_and_errors_in_every_language(
        gateway: Gateway, console: httpx.AsyncClient, lang: str) -> None:  # noqa: F811
    await mentor(gateway, "amal@example.org", mentor_languages_for(lang))
    form = {"From": "whatsapp:+4915112345678", "To": "whatsapp:+14155238886", "Body": LEARNER_TEXT,
            "MessageSid": "SM" + "2" * 32, "AccountSid": "AC" + "0" * 32, "NumMedia": "0", "ProfileName": "Omar"}
    assert (await gateway.whatsapp(form)).status_code == 200
    await gateway.settle()
    h = await only_handoff(gateway)
    await login(console, "amal@example.org")
    token = csrf_of((await console.get("/console")).text)
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    async with gateway.services.db.session() as s:
        contact = (await s.execute(select(Contact))).scalar_one()
        contact.last_inbound_at = utcnow() - timedelta(hours=26)
    page = await console.get(f"/console/h/{h.id}")
    assert_page_in(page.text, lang)
    assert t("console_whatsapp_window", lang) in page.text and t("console_send_template", lang) in page.text
    assert t("console_channel_whatsapp", lang) in page.text
    assert t("console_record_not_linked", lang) in page.text
    # a refused reply comes back as a translated error (an unknown one is shown as it is)
    empty = await console.post(f"/console/h/{h.id}/reply", data={"csrf_token": token, "text": "   "})
    assert empty.status_code == 303 and "error=" in empty.headers["location"]
    shown = await console.get(empty.headers["location"])
    assert t("console_error_empty_reply", lang) in shown.text
    unknown = await console.get(f"/console/h/{h.id}?error=something%20else")
    assert "something else" in unknown.text
    # errors given as HTTP status pages are in the mentor's language too
    forbidden = await console.post(f"/console/h/{h.id}/note", data={"csrf_token": "forged", "text": "x"})
    assert forbidden.status_code == 403 and forbidden.text == t("console_error_csrf", lang)
    missing = await console.get("/console/h/999999")
    assert missing.status_code == 404 and missing.text == t("console_error_no_conversation", lang)
    # notices after redirects, and the closed state with its translated outcome
    resolved = await console.post(f"/console/h/{h.id}/resolve", data={"csrf_token": token})
    assert resolved.headers["location"] == "/console?notice=resolved"
    queue = await console.get(resolved.headers["location"])
    assert_page_in(queue.text, lang)
    assert t("console_notice_resolved", lang) in queue.text
    closed = await console.get(f"/console/h/{h.id}")
    assert t("console_closed_outcome", lang, outcome=t("console_outcome_resolved", lang)) in closed.text


# --- (b) the default: the mentor's first language ---------------------------------------

@pytest.mark.parametrize(("languages", "expected"), [
    ("fa,en", "fa"), ("ar", "ar"), ("de,fr", "de"), ("fr", "fr"), ("en,ar", "en"),
    (" AR , en", "ar"), ("tr,ar", "en"), ("", "en"),
])
async def test_default_is_the_mentors_first_language(gateway: Gateway, console: httpx.AsyncClient,  # noqa: F811
                                                     languages: str, expected: str) -> None:
    await mentor(gateway, "amal@example.org", "en", role="lead")
    async with gateway.services.db.session() as s:  # as stored (the CLI would refuse "tr")
        (await s.execute(select(Mentor))).scalar_one().languages = languages
    await login(console, "amal@example.org")
    page = await console.get("/console")
    direction = "rtl" if expected in RTL else "ltr"
    assert f'<html lang="{expected}" dir="{direction}">' in page.text
    assert t("console_with_mentors", expected) in page.text  # a lead's second list


def test_mentor_default_and_supported_codes() -> None:
    assert mentor_default(Mentor(languages="fa,en")) == "fa"
    assert mentor_default(Mentor(languages="ps,fa")) == "en"  # Pashto first: no console in it
    assert mentor_default(Mentor(languages="prs")) == "fa"  # Dari
    assert [supported(c) for c in ("ar-SY", "fa_AF", "de-AT", "EN", "tr", "", None)] == [
        "ar", "fa", "de", "en", None, None, None]


# --- (c) the switcher's cookie overrides the default ---------------------------------------

async def test_switcher_cookie_overrides_the_mentors_language(gateway: Gateway,
                                                              console: httpx.AsyncClient) -> None:  # noqa: F811
    await mentor(gateway, "amal@example.org", "ar,en")
    h = await waiting_handoff(gateway)
    await login(console, "amal@example.org")
    queue = await console.get("/console")
    assert '<html lang="ar" dir="rtl">' in queue.text
    for code in LANGUAGES:  # the switcher offers every language under its own name
        assert f'href="/console/lang/{code}?next=/console"' in queue.text
        assert t("console_language_name", code) in queue.text
    assert 'class="current" aria-current="true">العربية</a>' in queue.text

    switched = await console.get(f"/console/lang/de?next=/console/h/{h.id}")
    assert switched.status_code == 303 and switched.headers["location"] == f"/console/h/{h.id}"
    cookie = switched.headers["set-cookie"].lower()
    assert cookie.startswith(f"{LANG_COOKIE}=de;") and "path=/console" in cookie and "samesite=lax" in cookie
    page = await console.get(f"/console/h/{h.id}")
    assert '<html lang="de" dir="ltr">' in page.text
    assert t("console_claim_conversation", "de") in page.text
    assert_page_in(page.text, "de")
    # fragments follow the choice too
    assert t("console_claim", "de") in (await console.get("/console/queue")).text
    # an unknown code changes nothing; the way back never leaves the console
    ignored = await console.get("/console/lang/xx?next=https://evil.example/")
    assert ignored.status_code == 303 and ignored.headers["location"] == "/console"
    assert "set-cookie" not in ignored.headers
    assert '<html lang="de" dir="ltr">' in (await console.get("/console")).text
    for target in ("//evil.example/", "/elsewhere", "https://evil.example/console"):
        response = await console.get("/console/lang/fr", params={"next": target})
        assert response.headers["location"] == "/console"


@pytest.mark.parametrize("bad", ["xx", "AR", "ar-SY", "", "../en", "de-DE"])
async def test_invalid_cookie_falls_back_to_the_mentors_language(gateway: Gateway, bad: str) -> None:
    from tests.test_console_web import handoff_responder

    gateway.rasa.responder = handoff_responder
    await mentor(gateway, "farid@example.org", "fa,en")
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        await login(client, "farid@example.org")
        page = await client.get("/console", headers={"cookie": _cookies(client) + f"; {LANG_COOKIE}={bad}"})
        assert page.status_code == 200 and '<html lang="fa" dir="rtl">' in page.text
        assert_page_in(page.text, "fa")
        login_page = await client.get("/console/login", headers={"cookie": f"{LANG_COOKIE}={bad}",
                                                                 "accept-language": "fr"})
        assert '<html lang="fr" dir="ltr">' in login_page.text


def _cookies(client: httpx.AsyncClient) -> str:
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


# --- (d) the login page: cookie, else Accept-Language, else English ----------------------

@pytest.mark.parametrize(("header", "expected"), [
    ("fa-IR,fa;q=0.9,en;q=0.8", "fa"),
    ("ar-SY", "ar"),
    ("prs-AF, en;q=0.5", "fa"),
    ("pt-BR, de;q=0.7, en;q=0.5", "de"),
    ("en;q=0.2, fr;q=0.9", "fr"),
    ("tr, ja;q=0.8", "en"),
    ("*", "en"),
    ("de;q=0, fr;q=0.1", "fr"),
    ("", "en"),
])
async def test_login_page_follows_accept_language(gateway: Gateway, console: httpx.AsyncClient,  # noqa: F811
                                                  header: str, expected: str) -> None:
    page = await console.get("/console/login", headers={"accept-language": header})
    direction = "rtl" if expected in RTL else "ltr"
    assert f'<html lang="{expected}" dir="{direction}">' in page.text
    assert t("console_login_heading", expected) in page.text


async def test_login_page_cookie_beats_accept_language(gateway: Gateway,
                                                       console: httpx.AsyncClient) -> None:  # noqa: F811
    switched = await console.get("/console/lang/ar?next=/console/login")
    assert switched.headers["location"] == "/console/login"
    page = await console.get("/console/login", headers={"accept-language": "de-DE,de;q=0.9"})
    assert '<html lang="ar" dir="rtl">' in page.text
    assert_page_in(page.text, "ar")


def test_accept_language_parsing() -> None:
    assert from_accept_language("da, en-GB;q=0.8, ar;q=0.9") == "ar"
    assert from_accept_language("fr;q=abc, de;q=0.5") == "de"  # a broken weight counts as 0
    assert from_accept_language(None) is None


# --- formats and labels ---------------------------------------------------------------

def test_times_use_babel_in_the_ui_language() -> None:
    now = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
    three_min = now - timedelta(minutes=3)
    assert UI("en").ago(three_min, now) == "3 minutes ago"
    assert UI("de").ago(three_min, now) == "vor 3 Minuten"
    assert UI("fr").ago(three_min, now) == "il y a 3 minutes"
    assert UI("ar").ago(three_min, now) == "قبل 3 دقائق"
    assert UI("fa").ago(three_min, now) == "3 دقیقه پیش"
    assert UI("en").duration(now - timedelta(hours=2, minutes=5), now) == "2 hours"
    assert UI("en").ago(now - timedelta(seconds=5), now) == "1 minute ago"
    deadline = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
    assert UI("en").deadline(deadline, "Asia/Kabul") == "Dec 3, 2026, 9:30\u202fPM (Afghanistan Time)"
    assert UI("de").deadline(deadline, "Europe/Berlin") == "03.12.2026, 18:00 (Mitteleuropäische Normalzeit)"
    assert UI("de").deadline(deadline, "Not/AZone").endswith("17:00 (Koordinierte Weltzeit)")
    assert UI("fr").stamp(deadline) == "3 déc., 17:00 UTC"


def test_unknown_enum_values_show_as_they_are() -> None:
    ui = UI("fr")
    assert ui.label("state", "with_mentor") == "avec un mentor"
    assert ui.label("state", "paused_by_admin") == "paused_by_admin"
    assert ui.label("channel", "signal") == "signal"
    assert ui.label("reason", None) == ""


async def test_notes_and_ago_in_the_ui_language(gateway: Gateway, console: httpx.AsyncClient) -> None:  # noqa: F811
    await mentor(gateway, "yusuf@example.org", "de,en")
    h = await waiting_handoff(gateway)
    await login(console, "yusuf@example.org")
    token = csrf_of((await console.get("/console")).text)
    await console.post(f"/console/h/{h.id}/claim", data={"csrf_token": token})
    async with gateway.services.db.session() as s:
        s.add(MentorNote(contact_id=h.contact_id, handoff_id=h.id, mentor_id=None, text="alte Notiz",
                         created_at=utcnow() - timedelta(hours=3)))
    page = await console.get(f"/console/h/{h.id}")
    assert "ehemaliges Teammitglied, vor 3 Stunden" in page.text
    assert t("console_last_activity", "de", ago="vor 1 Minute") in (await console.get("/console")).text
