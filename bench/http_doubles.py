"""Instant local doubles of Rasa and the Bot API for the benchmarks, on a bare asyncio protocol.

The benchmark machine's two cores are shared by the gateway, PostgreSQL, Redis, the load
generator and these doubles; an aiohttp server costs ~0.13 ms of CPU per request, which the
gateway then cannot use. These answer from httptools' parser and a preformatted response,
at a fraction of that. They speak just enough HTTP/1.1 for the gateway's clients (keep-alive,
Content-Length bodies); the test suite keeps its full aiohttp doubles (tests/doubles.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httptools

Handler = Callable[[bytes, bytes, bytes], tuple[int, bytes]]  # (method, path, body) -> (status, JSON body)
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}
# the headers the real servers send, so that the gateway's clients parse as much as in production
BOT_API_HEADERS = (
    b"Server: nginx/1.18.0\r\nDate: Tue, 01 Dec 2026 12:00:00 GMT\r\nConnection: keep-alive\r\n"
    b"Strict-Transport-Security: max-age=31536000; includeSubDomains; preload\r\n"
    b"Access-Control-Allow-Origin: *\r\n"
    b"Access-Control-Expose-Headers: Content-Length,Content-Type,Date,Server,Connection\r\n"
)
RASA_HEADERS = b"Connection: keep-alive\r\nKeep-Alive: 5\r\n"


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, headers: bytes) -> None:
        self.handler = handler
        self.headers = headers
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status, payload = self.handler(self.parser.get_method(), self.url.split(b"?", 1)[0], b"".join(self.body))
        self.url, self.body = b"", []
        head = b"HTTP/1.1 %d %s\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            status, _REASONS.get(status, b"OK"), self.headers, len(payload))
        if self.transport is not None:
            self.transport.write(head + payload)
            if not self.parser.should_keep_alive():
                self.transport.close()


class BareDouble:
    """A local HTTP server answering every request with `handle`."""

    headers = b""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        raise NotImplementedError

    async def start(self) -> BareDouble:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Connection(self.handle, self.headers), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class InstantRasa(BareDouble):
    """Rasa's REST channel answering every message at once with one text that carries it back."""

    headers = RASA_HEADERS

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def handle(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        if method == b"GET" and path == b"/":
            return 200, b'"Hello from Rasa"'
        if method != b"POST" or path != b"/webhooks/rest/webhook":
            return 404, b"{}"
        try:
            message = json.loads(body)
        except ValueError:
            return 400, b"{}"
        self.count += 1
        return 200, json.dumps([{"recipient_id": message["sender"], "text": "re: " + str(message["message"])}]).encode()


class InstantBotApi(BareDouble):
    """The Bot API's sendMessage (urlencoded forms, as PTB's HTTPXRequest posts them, or JSON), recording
    what was sent and when it arrived."""

    headers = BOT_API_HEADERS

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []
        self.ids = itertools.count(1000)

    def handle(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        if not path.endswith(b"/sendMessage"):
            return 200, b'{"ok":true,"result":true}'
        try:
            params = json.loads(body) if body[:1] == b"{" else dict(parse_qsl(body.decode(), keep_blank_values=True))
        except ValueError:
            return 400, b'{"ok":false,"error_code":400,"description":"Bad Request: unreadable body"}'
        chat_id = str(params.get("chat_id"))
        message_id = next(self.ids)
        self.sent.append({"chat_id": chat_id, "text": params.get("text"), "message_id": message_id,
                          "at": time.monotonic()})
        chat = int(chat_id) if chat_id.lstrip("-").isdigit() else 0
        return 200, json.dumps({"ok": True, "result": {
            "message_id": message_id, "date": int(time.time()), "chat": {"id": chat, "type": "private"},
            "text": params.get("text")}}).encode()
