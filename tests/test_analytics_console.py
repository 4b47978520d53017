"""The staff pages of the console: analytics (leads), the review inbox (leads and mentors) with its
export to training data, and broadcasts (leads), in the five languages."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot.analytics.understanding import Understanding, record_understanding
from bot.privacy.erasure import erase_contact
from bot.review.export import export_reviewed, mask
from bot.review.inbox import domain_intents
from bot.runtime.settings import LANGUAGES
from bot.storage.models import Broadcast, Contact, InboundMessage, Outbox, ReviewItem
from tests.conftest import Gateway
from tests.test_console_i18n import assert_page_in, t
from tests.test_console_web import console, csrf_of, login, mentor, tg_update  # noqa: F401


async def doubtful(gateway: Gateway, chat_id: int, text: str, lang: str = "en", name: str = "Lina") -> int:
    """A learner message that fell back (as Rasa would report it): a review item."""
    update = tg_update(chat_id, text, chat_id=chat_id, lang=lang)
    update["message"]["from"]["first_name"] = name
    update["message"]["chat"]["first_name"] = name
    await gateway.telegram(update)
    await gateway.settle()
    async with gateway.services.db.session() as s:
        message = (await s.execute(select(InboundMessage).order_by(InboundMessage.id.desc()).limit(1))).scalar_one()
        if lang != "en":
            message.language = lang
    await record_understanding(gateway.services, [Understanding(
        message.id, f"telegram:{chat_id}", "nlu_fallback", 0.24, True, "ask_deadline", 0.2)])
    return message.id


# --- analytics --------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_analytics_page_for_leads_in_every_language(gateway: Gateway, console: httpx.AsyncClient,  # noqa: F811
                                                          lang: str) -> None:
    await mentor(gateway, "lead@example.org", lang, role="lead")
    await doubtful(gateway, 9001, "blorp")
    await login(console, "lead@example.org")
    page = await console.get("/console/analytics?from=2026-01-01&to=2026-12-31")
    assert page.status_code == 200
    assert_page_in(page.text, lang)
    for key in ("console_analytics_definitions", "console_analytics_effect", "console_analytics_chart_messages",
                "console_analytics_chart_effect", "console_analytics_def_fallback"):
        assert t(key, lang) in page.text, key
    assert "<script" not in page.text.split("</main>")[0].split("<main>")[1]  # no inline script in the page
    charts = re.findall(r'<img src="(/console/analytics/chart/[a-z_]+\.svg\?[^"]+)"', page.text)
    assert len(charts) == 8
    for url in charts:
        svg = await console.get(url.replace("&amp;", "&"))
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        assert "<svg" in svg.text and "<script" not in svg.text and "http://kozea" not in svg.text
    messages = await console.get(charts[0].replace("&amp;", "&"))
    assert t("console_analytics_series_contained", lang) in messages.text
    csv_file = await console.get("/console/analytics.csv?from=2026-01-01&to=2026-01-02")
    assert csv_file.text.splitlines()[0].startswith("day,inbound")


async def test_analytics_is_for_leads_only(gateway: Gateway, console: httpx.AsyncClient) -> None:  # noqa: F811
    assert (await console.get("/console/analytics")).headers["location"] == "/console/login"
    assert (await console.get("/console/analytics/chart/messages.svg")).status_code == 401
    await mentor(gateway, "amal@example.org", "en")
    await login(console, "amal@example.org")
    for path in ("/console/analytics", "/console/analytics.csv", "/console/analytics/chart/sla.svg",
                 "/console/broadcasts"):
        response = await console.get(path)
        assert response.status_code == 403 and response.text == t("console_error_leads_only", "en"), path
    queue = await console.get("/console")
    assert 'href="/console/review"' in queue.text and 'href="/console/analytics"' not in queue.text


async def test_analytics_page_rejects_a_bad_range(gateway: Gateway, console: httpx.AsyncClient) -> None:  # noqa: F811
    await mentor(gateway, "lead@example.org", "de", role="lead")
    await login(console, "lead@example.org")
    response = await console.get("/console/analytics?from=2026-05-01&to=2026-04-01")
    assert response.status_code == 400 and response.text == t("console_analytics_bad_range", "de")
    assert (await console.get("/console/analytics/chart/nope.svg")).status_code == 404


# --- the review inbox ----------------------------------------------------------------------------

async def test_review_inbox_one_click_label_languages_and_erasure(gateway: Gateway,
                                                                  console: httpx.AsyncClient) -> None:  # noqa: F811
    await mentor(gateway, "farid@example.org", "fa")
    first = await doubtful(gateway, 9101, "vaqt-e emtehan key-e?", "fa")
    await doubtful(gateway, 9102, "when essay", "en")
    await login(console, "farid@example.org")
    page = await console.get("/console/review")
    assert_page_in(page.text, "fa")
    assert "vaqt-e emtehan key-e?" in page.text and "when essay" not in page.text  # only Farsi for this mentor
    assert t("console_review_waiting", "fa", n="1") in page.text
    assert page.text.count('name="label"') == len(domain_intents()) + 1
    assert 'value="ask_deadline" class="suggested"' in page.text
    token = csrf_of(page.text)
    item_id = int(re.search(r'data-item="(\d+)"', page.text).group(1))  # type: ignore[union-attr]
    assert (await console.post(f"/console/review/{item_id}/label", data={"label": "ask_deadline"})).status_code == 403
    done = await console.post(f"/console/review/{item_id}/label", data={"csrf_token": token, "label": "ask_deadline"})
    assert done.status_code == 303 and done.headers["location"] == "/console/review?notice=labelled"
    bad = await console.post(f"/console/review/{item_id}/label", data={"csrf_token": token, "label": "weather"})
    assert bad.headers["location"].endswith("error=unknown_intent")
    async with gateway.services.db.session() as s:
        items = {i.inbound_id: i for i in (await s.execute(select(ReviewItem))).scalars()}
    assert items[first].label == "ask_deadline" and items[first].labelled_by is not None
    other = next(i for i in items.values() if i.inbound_id != first)
    refused = await console.post(f"/console/review/{other.id}/label", data={"csrf_token": token, "label": "greet"})
    assert refused.headers["location"].endswith("error=not_yours")
    labelled = await console.get("/console/review?show=labelled")
    assert "vaqt-e emtehan key-e?" in labelled.text and t("console_review_exportable", "fa", n="1") in labelled.text
    # erasing the learner takes their items with them
    report = await erase_contact(gateway.services, "telegram:9101")
    assert report.review_items == 1
    async with gateway.services.db.session() as s:
        assert [i.inbound_id for i in (await s.execute(select(ReviewItem))).scalars()] == [other.inbound_id]


def test_masking_numbers_emails_and_names() -> None:
    assert mask("my name is Omar, mail omar.k@gmail.com or call +49 151 2345", ["Lina Haddad", "Lina", "Haddad"]) == (
        "my name is Sam, mail someone@example.org or call +00 000 0000")
    assert mask("Lina here, learner L-20431 [urgent](x)", ["Lina"]) == "Sam here, learner L-00000 (urgent)(x)"
    assert mask("اسمي ليلى ورقمي ٠٥٩٩١٢٣٤٥٦", []) == "اسمي Sam ورقمي 0000000000"
    assert mask("ich heiße Jonas", []) == "ich heiße Sam"


async def test_export_reviewed_writes_masked_rasa_data(gateway: Gateway, tmp_path: Path) -> None:
    ids = [await doubtful(gateway, 9201, "Lina: when is my essay due? my id 48213", name="Lina Haddad"),
           await doubtful(gateway, 9202, "hello", name="Omar"),  # a line of a test set: left out
           await doubtful(gateway, 9203, "asdfgh", name="Omar"),
           await doubtful(gateway, 9204, "wann ist abgabe", "de", name="Jonas")]
    labels = ["ask_deadline", "greet", "none", "ask_deadline"]
    async with gateway.services.db.session() as s:
        for inbound_id, label in zip(ids, labels, strict=True):
            item = (await s.execute(select(ReviewItem).where(ReviewItem.inbound_id == inbound_id))).scalar_one()
            item.label = label
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    (tests_dir / "held_out.yml").write_text('version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - Hello\n')
    data_dir = tmp_path / "data"
    report = await export_reviewed(gateway.services, data_dir, tests_dir)
    assert report.written == {"en": 1, "de": 1} and report.skipped_test_lines == 1
    english = yaml.safe_load((data_dir / "en" / "reviewed.yml").read_text())
    assert english["version"] == "3.1"
    assert english["nlu"] == [{"intent": "ask_deadline",
                               "examples": "- Sam: when is my essay due? my id 00000\n"}]
    assert "wann ist abgabe" in (data_dir / "de" / "reviewed.yml").read_text()
    # exported once: a second run adds nothing, and the items are marked
    assert (await export_reviewed(gateway.services, data_dir, tests_dir)).written == {}
    async with gateway.services.db.session() as s:
        exported = [i.exported_at is not None for i in (await s.execute(select(ReviewItem).order_by(ReviewItem.id)))
                    .scalars()]
    assert exported == [True, True, False, True]


# --- broadcasts ------------------------------------------------------------------------------------

async def test_broadcast_page_counts_then_sends_and_cancels(gateway: Gateway,
                                                            console: httpx.AsyncClient) -> None:  # noqa: F811
    await mentor(gateway, "lead@example.org", "fr,en", role="lead")
    async with gateway.services.db.session() as s:
        for i, (lang, channel) in enumerate([("ar", "telegram"), ("ar", "whatsapp"), ("fa", "telegram"),
                                             ("de", "telegram"), ("en", "telegram")]):
            s.add(Contact(key=f"{channel}:{700 + i}", channel=channel, address=str(700 + i), language=lang,
                          learner_id=f"L{700 + i}"))
        s.add(Contact(key="telegram:799", channel="telegram", address="799", language="ar", learner_id="L799",
                      reminders_opt_out=True))
    await login(console, "lead@example.org")
    page = await console.get("/console/broadcasts")
    assert_page_in(page.text, "fr")
    token = csrf_of(page.text)
    form = {"csrf_token": token, "text_ar": "الموعد غدًا", "text_fa": "مهلت فردا است", "text_en": "",
            "channel": "telegram", "linked": "yes"}
    counted = await console.post("/console/broadcasts/preview", data=form)
    assert counted.status_code == 200
    # Arabic and Persian on Telegram, not the opted-out one; English and German were left empty
    assert t("console_broadcasts_recipients", "fr", n="2") in counted.text
    assert t("console_broadcasts_send", "fr", n="2") in counted.text and "الموعد غدًا" in counted.text
    empty = await console.post("/console/broadcasts/preview", data={"csrf_token": token, "linked": "yes"})
    assert empty.status_code == 400 and t("console_broadcasts_error_no_text", "fr") in empty.text
    created = await console.post("/console/broadcasts", data=form)
    assert created.status_code == 303
    url = created.headers["location"]
    broadcast_id = int(url.rsplit("/", 1)[1])
    async with gateway.services.db.session() as s:
        row = await s.get(Broadcast, broadcast_id)
        assert row is not None and row.segment == {"language": ["ar", "fa"], "linked": ["yes"], "channel": ["telegram"]}
        assert row.texts == {"ar": "الموعد غدًا", "fa": "مهلت فردا است"} and row.created_by.startswith("mentor:")
    detail = await console.get(url)
    assert detail.status_code == 200 and 'src="/console/static/broadcasts.js"' in detail.text
    assert 'data-progress-url="' + url + '/progress"' in detail.text
    progress = (await console.get(url + "/progress")).json()
    assert progress["status"] == "scheduled" and progress["id"] == broadcast_id
    from bot.reminders.broadcasts import expand_due_broadcasts

    await expand_due_broadcasts(gateway.services)
    progress = (await console.get(url + "/progress")).json()
    assert (progress["status"], progress["recipients"], progress["queued"]) == ("sending", 2, 2)
    assert (await console.post(url + "/cancel", data={"csrf_token": token})).status_code == 303
    progress = (await console.get(url + "/progress")).json()
    assert progress["status"] == "cancelled" and progress["cancelled"] == 2
    async with gateway.services.db.session() as s:
        statuses = (await s.execute(select(Outbox.status).where(Outbox.broadcast_id == broadcast_id))).scalars().all()
    assert statuses == ["cancelled", "cancelled"]
    scheduled = await console.post("/console/broadcasts", data={**form, "send_at": "2030-01-02T09:30"})
    async with gateway.services.db.session() as s:
        later = await s.get(Broadcast, int(scheduled.headers["location"].rsplit("/", 1)[1]))
        assert later is not None and later.send_at is not None
        assert later.send_at.isoformat().startswith("2030-01-02T09:30")


RASA = Path(__file__).resolve().parents[1] / ".venv-rasa" / "bin" / "rasa"


async def test_exported_examples_pass_rasa_data_validate(gateway: Gateway, tmp_path: Path) -> None:
    """`rasa data validate` (no training) accepts the project's data with an export added to it."""
    import shutil
    import subprocess

    if not RASA.is_file():
        pytest.skip("the Rasa virtual environment is not installed")
    nlu = Path(__file__).resolve().parents[1] / "nlu"
    data_dir = tmp_path / "data"
    shutil.copytree(nlu / "data", data_dir)
    ids = [await doubtful(gateway, 9301, "Lina: deadline of [stats](course) essay?? id 4821", name="Lina"),
           await doubtful(gateway, 9302, "متى موعد التسليم يا سند؟ رقمي ٠٥٩٩", "ar", name="ليلى")]
    async with gateway.services.db.session() as s:
        for inbound_id in ids:
            item = (await s.execute(select(ReviewItem).where(ReviewItem.inbound_id == inbound_id))).scalar_one()
            item.label = "ask_deadline"
    report = await export_reviewed(gateway.services, data_dir, nlu / "tests")
    assert report.written == {"en": 1, "ar": 1}
    done = subprocess.run(
        [str(RASA), "data", "validate", "--data", str(data_dir), "--domain", "domain.yml", "--config", "config.yml",
         "--fail-on-warnings"], cwd=nlu, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
