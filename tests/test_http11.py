"""The keep-alive HTTP/1.1 client against real local servers: reuse, limits, odd answers, failures, TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import integrations.http11 as http11
from integrations.http11 import HttpError, KeepAliveClient
from tests.doubles import HttpDouble


class CountingServer(HttpDouble):
    """An aiohttp server that counts the connections it was asked on."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: set[Any] = set()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.delay_s = 0.0
        self.close_after = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        path = request.path
        if path == "/chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for piece in (b'{"parts": ', b"[1, 2, ", b"3]}"):
                await response.write(piece)
            await response.write_eof()
            return response
        if path == "/missing":
            return web.json_response({"error": "nope"}, status=404)
        if path == "/broken":
            return web.json_response({"error": "down"}, status=503)
        body = await request.read()
        headers = {"Connection": "close"} if self.close_after else {}
        return web.json_response({"method": request.method, "path": path, "query": request.query_string,
                                  "host": request.headers.get("Host"), "body": body.decode(),
                                  "type": request.headers.get("Content-Type")}, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    async with CountingServer() as s:
        yield s  # type: ignore[misc]


@pytest.fixture
async def client() -> AsyncIterator[KeepAliveClient]:
    c = KeepAliveClient(limit_per_origin=4, connect_timeout_s=2.0, idle_timeout_s=5.0)
    try:
        yield c
    finally:
        await c.close()


async def raw_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> Any:
    return await asyncio.start_server(handler, "127.0.0.1", 0)


def port_of(server: Any) -> int:
    return int(server.sockets[0].getsockname()[1])


async def test_requests_and_answers_round_trip(server: CountingServer, client: KeepAliveClient) -> None:
    response = await client.request("POST", server.url + "/echo?x=1", b'{"a": 1}', {"Content-Type": "application/json"})
    assert response.status == 200 and response.headers["content-type"].startswith("application/json")
    data = json.loads(response.body)
    assert data == {"method": "POST", "path": "/echo", "query": "x=1", "host": f"127.0.0.1:{server.port}",
                    "body": '{"a": 1}', "type": "application/json"}
    assert (await client.request("GET", server.url + "/missing")).status == 404
    assert (await client.request("GET", server.url + "/broken")).status == 503
    assert json.loads((await client.request("GET", server.url + "/chunked")).body) == {"parts": [1, 2, 3]}


async def test_one_connection_serves_request_after_request(server: CountingServer, client: KeepAliveClient) -> None:
    for i in range(20):
        await client.request("POST", server.url + "/echo", str(i).encode())
    assert len(server.peers) == 1


async def test_concurrent_requests_share_at_most_the_limit(server: CountingServer, client: KeepAliveClient) -> None:
    server.delay_s = 0.05
    results = await asyncio.gather(*(client.request("GET", server.url + f"/n{i}") for i in range(12)))
    assert [json.loads(r.body)["path"] for r in results] == [f"/n{i}" for i in range(12)]
    assert len(server.peers) == 4  # limit_per_origin
    assert client._stats()[f"127.0.0.1:{server.port}"] == {"open": 4, "idle": 4}


async def test_connection_close_is_honoured(server: CountingServer, client: KeepAliveClient) -> None:
    server.close_after = True
    await client.request("GET", server.url + "/a")
    await client.request("GET", server.url + "/b")
    assert len(server.peers) == 2
    assert client._stats()[f"127.0.0.1:{server.port}"]["open"] == 0


async def test_a_connection_idle_too_long_is_not_reused(server: CountingServer) -> None:
    client = KeepAliveClient(idle_timeout_s=0.1)
    try:
        await client.request("GET", server.url + "/a")
        await asyncio.sleep(0.2)
        await client.request("GET", server.url + "/b")
        assert len(server.peers) == 2
    finally:
        await client.close()


async def test_a_connection_the_server_dropped_is_replaced(client: KeepAliveClient) -> None:
    connections = 0

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # keep-alive by the headers, but the server hangs up

    srv = await raw_server(answer_once)
    try:
        url = f"http://127.0.0.1:{port_of(srv)}/x"
        assert (await client.request("GET", url)).body == b"ok"
        await asyncio.sleep(0.05)
        assert (await client.request("GET", url)).body == b"ok"
        assert connections == 2
    finally:
        srv.close()


async def test_a_body_ended_by_closing_the_connection(client: KeepAliveClient) -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    srv = await raw_server(old_style)
    try:
        response = await client.request("GET", f"http://127.0.0.1:{port_of(srv)}/")
        assert (response.status, response.body) == (200, b"all of it")
    finally:
        srv.close()


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
async def test_malformed_or_cut_answers_are_errors(client: KeepAliveClient, answer: bytes) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    srv = await raw_server(bad)
    try:
        with pytest.raises(HttpError):
            await client.request("GET", f"http://127.0.0.1:{port_of(srv)}/")
        assert client._stats()[f"127.0.0.1:{port_of(srv)}"]["open"] == 0
    finally:
        srv.close()


async def test_a_body_over_the_limit_is_refused(server: CountingServer, client: KeepAliveClient,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "MAX_BODY_BYTES", 10)
    with pytest.raises(HttpError):
        await client.request("POST", server.url + "/echo", b"x" * 100)


async def test_a_slow_answer_times_out_and_its_connection_is_dropped(server: CountingServer,
                                                                   client: KeepAliveClient) -> None:
    server.delay_s = 0.5
    with pytest.raises(TimeoutError):
        await client.request("GET", server.url + "/slow", timeout_s=0.1)
    assert client._stats()[f"127.0.0.1:{server.port}"] == {"open": 0, "idle": 0}
    server.delay_s = 0
    assert (await client.request("GET", server.url + "/fast")).status == 200


async def test_a_cancelled_request_frees_its_connection(server: CountingServer, client: KeepAliveClient) -> None:
    server.delay_s = 0.5
    task = asyncio.create_task(client.request("GET", server.url + "/slow"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client._stats()[f"127.0.0.1:{server.port}"]["open"] == 0


async def test_nobody_listening_is_an_error(client: KeepAliveClient) -> None:
    from tests.doubles import free_port

    with pytest.raises(HttpError):
        await client.request("GET", f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(ValueError):
        await client.request("GET", "ftp://example.org/")


async def test_closing_drops_the_connections_and_a_later_request_opens_one(server: CountingServer) -> None:
    client = KeepAliveClient()
    await client.request("GET", server.url + "/a")
    await client.close()
    assert client._stats() == {}
    await client.request("GET", server.url + "/b")
    assert len(server.peers) == 2
    await client.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return key, cert


async def test_https_verifies_the_server_certificate(certificate: tuple[Path, Path]) -> None:
    key, cert = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/", lambda r: web.json_response({"tls": True}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    trusting = KeepAliveClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
    untrusting = KeepAliveClient()
    try:
        response = await trusting.request("GET", f"https://localhost:{port}/")
        assert json.loads(response.body) == {"tls": True}
        with pytest.raises(HttpError):  # a certificate nobody vouches for
            await untrusting.request("GET", f"https://localhost:{port}/")
    finally:
        await trusting.close()
        await untrusting.close()
        await runner.cleanup()


async def test_the_bot_api_transport_sends_files_as_multipart() -> None:
    """PTB's `Bot` on our transport: a document goes out as multipart/form-data with its fields."""
    from telegram import Bot

    from bot.channels.telegram.transport import KeepAliveRequest

    received: dict[str, Any] = {}

    async def send_document(request: web.Request) -> web.Response:
        form = await request.post()
        document = form["document"]
        received.update(chat_id=form["chat_id"], caption=form["caption"], filename=document.filename,  # type: ignore[union-attr]
                        content=document.file.read())  # type: ignore[union-attr]
        return web.json_response({"ok": True, "result": {
            "message_id": 5, "date": 1, "chat": {"id": 42, "type": "private"},
            "document": {"file_id": "F", "file_unique_id": "U"}}})

    double = HttpDouble()
    double.app.router.add_post("/bot{token}/sendDocument", send_document)
    async with double:
        bot = Bot("1:T", base_url=f"{double.url}/bot", request=KeepAliveRequest())
        sent = await bot.send_document(chat_id=42, document=b"%PDF-1.4 certificate", filename="certificate.pdf",
                                       caption="Your certificate")
        await bot.request.shutdown()
    assert sent.message_id == 5
    assert received == {"chat_id": "42", "caption": "Your certificate", "filename": "certificate.pdf",
                        "content": b"%PDF-1.4 certificate"}
