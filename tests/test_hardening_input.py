"""Issue 11, items 7, 12, 13 and 14: bad input gets a 400 (or a 200 that keeps what was valid), one log
line, never a 5xx a provider retries forever; names lose bidi overrides; nothing read from a request
grows without bound; Telegram chat ids are integers."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.channels.base import HttpRequestData, Ignored, ParseError
from bot.channels.telegram.channel import SECRET_HEADER, TelegramChannel
from bot.storage.models import Contact, InboundMessage
from tests.conftest import TELEGRAM_SECRET, TELEGRAM_TOKEN, Gateway, make_settings
from tests.test_console_web import console, login, mentor  # noqa: F401  (fixture)
from tests.test_gateway_telegram import CORPUS, private_message
from tests.test_gateway_whatsapp import inbound

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\ufeff"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def stored(gw: Gateway) -> list[InboundMessage]:
    async with gw.services.db.session() as s:
        return list((await s.execute(select(InboundMessage).order_by(InboundMessage.id))).scalars())


def server_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("bot.") and r.levelno >= logging.WARNING]


# --- item 7: display names ------------------------------------------------------------------------

async def test_bidi_overrides_are_stripped_from_display_names(gateway: Gateway) -> None:
    spoof = "Li\u202ena\u2066\u200b"
    update = private_message(1, chat_id=777)
    update["message"]["from"]["first_name"] = spoof
    update["message"]["chat"]["first_name"] = spoof
    assert (await gateway.telegram(update)).status_code == 200
    assert (await gateway.whatsapp(inbound(ProfileName="\u202bOmar\u202c\ufeff"))).status_code == 200
    await gateway.settle()
    async with gateway.services.db.session() as s:
        names = {c.channel: c.display_name for c in (await s.execute(select(Contact))).scalars()}
    assert names == {"telegram": "Lina", "whatsapp": "Omar"}
    assert not any(ch in "".join(names.values()) for ch in BIDI)


# --- item 12: nested JSON, wrong types, out-of-range numbers ------------------------------------------

async def test_deeply_nested_json_is_a_400_with_one_log_line(gateway: Gateway,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    body = ('{"update_id": 5, "message": ' + nested(100_000) + "}").encode()
    response = await gateway.telegram(body)
    assert response.status_code == 400
    assert len(server_logs(caplog)) == 1 and not [r for r in caplog.records if r.levelno >= logging.ERROR]
    caplog.clear()
    deep_but_parseable = {"update_id": 6, "message": {"chat": {"id": 1, "type": "private"},
                                                      "text": "hi", "x": json.loads(nested(500))}}
    assert (await gateway.telegram(json.dumps(deep_but_parseable).encode())).status_code == 400
    caplog.clear()

    web = await gateway.client.post("/chat/api/messages", content=nested(100_000).encode(),
                                    headers={"x-requested-with": "sanad-webchat"})
    assert web.status_code == 400 and len(server_logs(caplog)) == 1
    caplog.clear()
    nlg = await gateway.client.post("/nlg", content=('{"response": "x", "tracker": ' + nested(100_000) + "}").encode())
    assert nlg.status_code == 400 and len(server_logs(caplog)) == 1
    assert await stored(gateway) == []


WRONG_TYPES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("language_code as an object", {"text": "hello", "from": {"id": 555001, "language_code": {"a": 1}}},
     {"kind": "text", "text": "hello"}),
    ("photo: [1, 2]", {"photo": [1, 2], "caption": "my certificate"},
     {"kind": "photo", "text": "my certificate", "media_ref": None}),
    ("file_size: 'x'", {"photo": [{"file_id": "small", "file_size": "x", "width": 90},
                                  {"file_id": "big", "file_size": 9000, "width": 1280}]},
     {"kind": "photo", "media_ref": "big"}),
    ("file_id as an object", {"document": {"file_id": {"nested": True}, "mime_type": "application/pdf"}},
     {"kind": "document", "media_ref": None, "media_type": "application/pdf"}),
    ("mime_type as a list", {"voice": {"file_id": "v1", "mime_type": ["audio/ogg"]}},
     {"kind": "voice", "media_ref": "v1", "media_type": "voice"}),
    ("text as a number, caption kept", {"text": 42, "caption": "see this"}, {"kind": "other", "text": "see this"}),
    ("location of strings", {"location": {"latitude": "north", "longitude": [1]}},
     {"kind": "location", "payload": {"latitude": None, "longitude": None}}),
]


@pytest.mark.parametrize(("label", "fields", "expected"), WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
async def test_wrongly_typed_telegram_fields_keep_the_message_without_them(
    gateway: Gateway, label: str, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    update = private_message(10)
    sender = fields.pop("from", None)
    update["message"].update(fields)
    if sender:
        update["message"]["from"].update(sender)
    response = await gateway.telegram(update)
    assert response.status_code == 200, response.text
    (row,) = await stored(gateway)
    for name, value in expected.items():
        if name == "payload":
            assert {k: row.payload.get(k) for k in value} == value, label
        else:
            assert getattr(row, name) == value, (label, name)
    assert "language_hint" not in (row.payload or {}) or isinstance(row.payload["language_hint"], str)


async def test_out_of_range_ids_are_a_400(gateway: Gateway, console: httpx.AsyncClient) -> None:  # noqa: F811
    huge = 2**63
    assert (await gateway.client.get(f"/chat/api/messages?client_id={'c' * 20}&after={10**30}")).status_code == 400
    assert (await gateway.client.get(f"/chat/api/messages?client_id={'c' * 20}&after=-1")).status_code == 400
    await mentor(gateway, "lead@example.org", "en", role="lead")
    await login(console, "lead@example.org")
    for path in (f"/console/h/{huge}", f"/console/h/{huge}/transcript", f"/console/h/{huge}/export",
                 f"/console/media/{huge}", f"/console/h/{10**40}"):
        assert (await console.get(path)).status_code == 400, path
    gateway.services.settings = gateway.services.settings.replace(admin_api_token="t")
    auth = {"Authorization": "Bearer t"}
    assert (await gateway.client.get(f"/api/broadcasts/{huge}", headers=auth)).status_code == 400
    assert (await gateway.client.post(f"/api/broadcasts/{huge}/cancel", headers=auth)).status_code == 400
    assert (await gateway.client.get("/api/broadcasts?limit=99999999999999999999", headers=auth)).status_code == 400


async def test_a_lone_surrogate_in_a_learner_id_is_a_400(gateway: Gateway) -> None:
    gateway.services.settings = gateway.services.settings.replace(admin_api_token="t")
    for raw in (b'{"learner_id": "\\ud800"}', b'{"learner_id": "L1\\u0000"}', b'{"learner_id": "L\\u202e1"}'):
        response = await gateway.client.post("/api/link-tokens", content=raw, headers={"Authorization": "Bearer t"})
        assert response.status_code == 400, raw


# --- item 13: bounded lists -----------------------------------------------------------------------------

async def test_twilio_num_media_is_bounded_before_any_list_is_built(gateway: Gateway) -> None:
    for n, claimed in enumerate(("100000", "100000000")):
        form = inbound(sid="SM" + str(n) * 32, body="", NumMedia=claimed, MediaUrl0="https://api.twilio.com/m0",
                       MediaContentType0="image/jpeg", MediaUrl1="https://api.twilio.com/m1",
                       MediaContentType1="image/png")
        assert (await gateway.whatsapp(form)).status_code == 200
    rows = await stored(gateway)
    assert len(rows) == 2
    for row in rows:
        media = (row.payload or {}).get("media", [])
        assert 2 <= len(media) <= 10
        assert media[0] == {"url": "https://api.twilio.com/m0", "type": "image/jpeg"}


# --- item 14: chat ids ---------------------------------------------------------------------------------

@pytest.mark.parametrize("chat_id", ["abc", "123", 1.5, True, None, {"id": 1}, 2**80])
async def test_non_numeric_telegram_chat_ids_are_rejected(gateway: Gateway, chat_id: Any) -> None:
    update = private_message(20)
    update["message"]["chat"]["id"] = chat_id
    response = await gateway.telegram(update)
    assert response.status_code == 400
    callback = {"update_id": 21, "callback_query": {"id": "cb1", "data": "yes", "from": {"id": chat_id},
                                                    "message": {"chat": {"id": chat_id, "type": "private"}}}}
    assert (await gateway.telegram(callback)).status_code == 400
    await gateway.settle()
    assert await stored(gateway) == [] and gateway.bot_api.sent == []


# --- a property: no shape of a (mutated) real update breaks the parser -------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\x00", "\u202e"]), max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
BODIES = [case["body"] for case in CORPUS if "body" in case] + [private_message(1, text="hello")]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(paths(child, (*prefix, index)))
    return found


@st.composite
def mutated_updates(draw: st.DrawFn) -> dict[str, Any]:
    update = copy.deepcopy(draw(st.sampled_from(BODIES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(paths(update)[1:]))
        parent = update
        for step in where[:-1]:
            parent = parent[step]
        parent[where[-1]] = draw(JSON_VALUES)
    return update


@pytest.fixture(scope="module")
def telegram_channel(tmp_path_factory: pytest.TempPathFactory) -> TelegramChannel:
    tmp = Path(tmp_path_factory.mktemp("channel"))
    return TelegramChannel(make_settings(tmp, TELEGRAM_BOT_TOKEN=TELEGRAM_TOKEN, TELEGRAM_WEBHOOK_SECRET="s"))


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(update=mutated_updates())
def test_any_mutation_of_a_real_update_parses_or_is_refused(telegram_channel: TelegramChannel,
                                                            update: dict[str, Any]) -> None:
    body = json.dumps(update).encode()
    request = HttpRequestData(url="https://x/webhooks/telegram", headers={SECRET_HEADER: "s"}, body=body)
    try:
        parsed = telegram_channel.parse(request)
    except ParseError:
        return
    if isinstance(parsed, Ignored):
        return
    for event in parsed:
        assert event.address.lstrip("-").isdigit()
        for field in ("text", "media_ref", "media_type", "language_hint", "display_name", "provider_id"):
            assert getattr(event, field) is None or isinstance(getattr(event, field), str), field
        assert event.display_name is None or not any(ch in event.display_name for ch in BIDI)
        json.dumps(event.payload)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(update=mutated_updates())
async def test_any_mutation_of_a_real_update_is_a_200_or_a_400_through_the_gateway(
    gateway: Gateway, update: dict[str, Any]
) -> None:
    before = await count_messages(gateway)
    response = await gateway.client.post("/webhooks/telegram", content=json.dumps(update).encode(),
                                         headers={"content-type": "application/json", SECRET_HEADER: TELEGRAM_SECRET})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200 and response.json().get("accepted"):
        assert await count_messages(gateway) == before + 1


async def count_messages(gw: Gateway) -> int:
    async with gw.services.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(InboundMessage))).scalar_one())
