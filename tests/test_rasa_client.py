"""The Rasa client on the keep-alive transport: paths Rasa understands, failures as RasaUnavailable."""

from __future__ import annotations

import pytest
from aiohttp import web

from integrations.rasa import RasaClient, RasaRefused, RasaUnavailable
from tests.doubles import HttpDouble, free_port


async def test_conversation_ids_go_into_paths_as_rasa_reads_them() -> None:
    seen: list[str] = []

    async def tracker(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({"events": []})

    double = HttpDouble()
    double.app.router.add_route("*", "/conversations/{tail:.*}", tracker)
    async with double:
        client = RasaClient(double.url, timeout_s=2, token="s3cret")
        try:
            await client.get_tracker("whatsapp:+4915112345678")
            await client.append_events("telegram:42", [{"event": "restart"}])
            await client.get_tracker("web:a b/c")
        finally:
            await client.close()
    assert seen == [
        "/conversations/whatsapp:+4915112345678/tracker?token=s3cret",
        "/conversations/telegram:42/tracker/events?token=s3cret",
        "/conversations/web:a%20b%2Fc/tracker?token=s3cret",
    ]


@pytest.mark.parametrize(("status", "body", "error"), [
    (500, b"{}", RasaUnavailable),  # Rasa is down: the message waits
    (400, b'{"message": "bad"}', RasaRefused),  # Rasa refuses this message: asking again will not help
    (200, b"not json", RasaRefused),
    (200, b'{"not": "a list"}', RasaRefused),
])
async def test_bad_answers_are_told_apart(status: int, body: bytes, error: type[Exception]) -> None:
    double = HttpDouble()
    double.app.router.add_post("/webhooks/rest/webhook", lambda r: web.Response(status=status, body=body))
    async with double:
        client = RasaClient(double.url, timeout_s=2)
        try:
            with pytest.raises(error):
                await client.send_message("telegram:1", "hi", {})
        finally:
            await client.close()


async def test_rasa_down_is_unavailable_and_ping_says_so() -> None:
    client = RasaClient(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    try:
        with pytest.raises(RasaUnavailable):
            await client.send_message("telegram:1", "hi", {})
        assert await client.ping() is False
    finally:
        await client.close()


async def test_several_servers_each_keep_their_conversations_and_a_refusing_one_is_passed_over() -> None:
    def server(name: str, seen: list[tuple[str, str]]) -> HttpDouble:
        async def webhook(request: web.Request) -> web.Response:
            body = await request.json()
            seen.append((name, body["sender"]))
            return web.json_response([{"recipient_id": body["sender"], "text": name}])

        double = HttpDouble()
        double.app.router.add_post("/webhooks/rest/webhook", webhook)
        double.app.router.add_get("/", lambda r: web.Response(text="Hello from Rasa"))
        return double

    seen: list[tuple[str, str]] = []
    first, second = server("a", seen), server("b", seen)
    senders = [f"telegram:{i}" for i in range(40)]
    async with first, second:
        client = RasaClient(f"{first.url}, {second.url}/", timeout_s=2)
        try:
            assert await client.ping()
            for _ in range(2):
                for sender in senders:
                    await client.send_message(sender, "hi", {})
            owner = {}
            for name, sender in seen:
                assert owner.setdefault(sender, name) == name  # always the same server
            assert {name for name, _ in seen} == {"a", "b"}  # and both get conversations
            await second.stop()
            seen.clear()
            answers = [await client.send_message(sender, "hi", {}) for sender in senders]
            assert {a[0]["text"] for a in answers} == {"a"}  # b refuses connections: a takes its conversations
            assert not await client.ping()
        finally:
            await client.close()
