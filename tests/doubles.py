"""Local HTTP test doubles of the systems Sanad talks to: Telegram's Bot API, Twilio, Rasa.

The real clients (python-telegram-bot's `Bot`, twilio's `Client`, our Rasa client) are
pointed at these servers; nothing patches the clients themselves."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpDouble:
    """An aiohttp server on 127.0.0.1 that records requests."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HttpDouble:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def __aenter__(self) -> HttpDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class BotApiDouble(HttpDouble):
    """Telegram Bot API: sendMessage, answerCallbackQuery, getMe, setWebhook, getFile and file downloads,
    and the forum calls of a mentor group (createForumTopic, editForumTopic, closeForumTopic,
    deleteForumTopic, editMessageText, pinChatMessage, copyMessage, sendDocument), answered with the
    objects Telegram returns.

    `files[file_id] = (content, chunked)` puts a file there (`chunked`: sent without a Content-Length).

    Messages to a forum topic (a `message_thread_id`) are kept in `group_posts`, the rest in `sent`.
    `fail_next` queues error answers, e.g. (429, {"retry_after": 1}) or (403, "Forbidden: bot was blocked by the user").
    `rate_limit_per_s` makes it answer 429 above that rate (token bucket)."""

    def __init__(self, rate_limit_per_s: float | None = None) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []
        self.callbacks: list[str] = []
        self.fail_next: list[tuple[int, Any]] = []
        self.blocked_chats: set[str] = set()
        self.ids = itertools.count(1000)
        self.rate = rate_limit_per_s
        self.tokens = 1.0
        self.stamp = time.monotonic()
        self.throttled = 0
        self.arrived = asyncio.Event()
        # the mentor group: (chat id, thread id) -> topic name; posts, edits and other calls in order
        self.topics: dict[tuple[str, int], str] = {}
        self.group_posts: list[dict[str, Any]] = []
        self.group_calls: list[dict[str, Any]] = []
        self.callback_texts: list[str] = []
        self.forum_fail_next: list[tuple[int, Any]] = []
        self.files: dict[str, tuple[bytes, bool]] = {}
        self.file_bytes_sent = 0
        self.app.router.add_post("/bot{token}/{method}", self.handle)
        self.app.router.add_get("/bot{token}/getFile", self.get_file)
        self.app.router.add_get("/file/bot{token}/{path:.*}", self.download)

    async def get_file(self, request: web.Request) -> web.Response:
        file_id = request.query.get("file_id", "")
        if file_id not in self.files:
            return self._error(400, "Bad Request: invalid file_id")
        content, _ = self.files[file_id]
        return web.json_response({"ok": True, "result": {"file_id": file_id, "file_size": len(content),
                                                         "file_path": f"documents/{file_id}"}})

    async def download(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["path"].removeprefix("documents/")
        if file_id not in self.files:
            return web.Response(status=404)
        content, chunked = self.files[file_id]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(content)
        await response.prepare(request)
        for start in range(0, len(content), 1024):
            await response.write(content[start:start + 1024])
            self.file_bytes_sent += len(content[start:start + 1024])
        await response.write_eof()
        return response

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data = await request.json()
            return dict(data) if isinstance(data, dict) else {}
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if not isinstance(value, str):  # a file part (sendDocument)
                params[key] = {"filename": value.filename, "size": len(value.file.read())}
                continue
            text = value
            try:
                params[key] = json.loads(text) if text[:1] in "{[" else text
            except json.JSONDecodeError:
                params[key] = text
        return params

    def _error(self, status: int, detail: Any) -> web.Response:
        if status == 429:
            retry = detail.get("retry_after", 1) if isinstance(detail, dict) else 1
            body = {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry}",
                    "parameters": {"retry_after": retry}}
        else:
            body = {"ok": False, "error_code": status, "description": str(detail)}
        return web.json_response(body, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        self.requests.append({"method": method, "params": params})
        if method == "getMe":
            return web.json_response({"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "Sanad",
                                                             "username": "SanadBot"}})
        if method == "answerCallbackQuery":
            self.callbacks.append(str(params.get("callback_query_id")))
            self.callback_texts.append(str(params.get("text") or ""))
            return web.json_response({"ok": True, "result": True})
        forum = await self._forum(method, params)
        if forum is not None:
            return forum
        if method == "setWebhook":
            return web.json_response({"ok": True, "result": True})
        if method != "sendMessage":
            return web.json_response({"ok": True, "result": True})
        if self.fail_next:
            status, detail = self.fail_next.pop(0)
            return self._error(status, detail)
        chat_id = str(params.get("chat_id"))
        if chat_id in self.blocked_chats:
            return self._error(403, "Forbidden: bot was blocked by the user")
        if self.rate is not None:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens < 1.0:
                self.throttled += 1
                return self._error(429, {"retry_after": 1})
            self.tokens -= 1.0
        message_id = next(self.ids)
        self.sent.append({"chat_id": chat_id, "text": params.get("text"), "reply_markup": params.get("reply_markup"),
                          "message_id": message_id, "at": time.monotonic()})
        self.arrived.set()
        return web.json_response({"ok": True, "result": {
            "message_id": message_id, "date": int(time.time()),
            "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else 0, "type": "private"},
            "text": params.get("text")}})

    def _chat(self, chat_id: str, thread_id: Any) -> dict[str, Any]:
        return {"id": int(chat_id), "title": "Sanad mentors", "type": "supergroup", "is_forum": True}

    async def _forum(self, method: str, params: dict[str, Any]) -> web.Response | None:
        """The mentor group's calls (`forum_fail_next` queues error answers for them); None for anything else."""
        chat_id = str(params.get("chat_id"))
        thread = params.get("message_thread_id")
        forum_call = method in ("createForumTopic", "editForumTopic", "closeForumTopic", "deleteForumTopic",
                                "pinChatMessage", "editMessageText", "copyMessage", "sendDocument") \
            or (method == "sendMessage" and thread is not None)
        if forum_call and self.forum_fail_next:
            status, detail = self.forum_fail_next.pop(0)
            return self._error(status, detail)
        if method in ("createForumTopic", "editForumTopic", "closeForumTopic", "deleteForumTopic",
                      "pinChatMessage", "editMessageText"):
            self.group_calls.append({"method": method, **params})
        if method == "createForumTopic":
            thread_id = next(self.ids)
            self.topics[(chat_id, thread_id)] = str(params.get("name"))
            self.arrived.set()
            return web.json_response({"ok": True, "result": {
                "message_thread_id": thread_id, "name": params.get("name"), "icon_color": params.get("icon_color")}})
        if method in ("editForumTopic", "closeForumTopic", "deleteForumTopic"):
            key = (chat_id, int(thread) if thread is not None else 0)
            if key not in self.topics:
                return self._error(400, "Bad Request: message thread not found")
            if method == "editForumTopic":
                self.topics[key] = str(params.get("name"))
            if method == "deleteForumTopic":
                del self.topics[key]
            return web.json_response({"ok": True, "result": True})
        if method == "editMessageText":
            return web.json_response({"ok": True, "result": {
                "message_id": int(params.get("message_id") or 0), "date": int(time.time()),
                "chat": self._chat(chat_id, None), "text": params.get("text")}})
        if method in ("copyMessage", "sendDocument") or (method == "sendMessage" and thread is not None):
            if thread is not None and (chat_id, int(thread)) not in self.topics:
                return self._error(400, "Bad Request: message thread not found")
            message_id = next(self.ids)
            self.group_posts.append({
                "method": method, "chat_id": chat_id, "thread_id": int(thread) if thread is not None else None,
                "text": params.get("text") or params.get("caption"), "reply_markup": params.get("reply_markup"),
                "parse_mode": params.get("parse_mode"), "from_chat_id": params.get("from_chat_id"),
                "document": params.get("document"), "message_id": message_id, "at": time.monotonic()})
            self.arrived.set()
            if method == "copyMessage":
                return web.json_response({"ok": True, "result": {"message_id": message_id}})
            return web.json_response({"ok": True, "result": {
                "message_id": message_id, "date": int(time.time()), "chat": self._chat(chat_id, thread),
                "message_thread_id": thread, "is_topic_message": True, "text": params.get("text")}})
        return None

    def topic_posts(self, thread_id: int) -> list[dict[str, Any]]:
        return [p for p in self.group_posts if p["thread_id"] == thread_id]

    async def wait_for_group(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` posts reached the mentor group."""
        deadline = time.monotonic() + timeout_s
        while len(self.group_posts) < count and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=0.2)
            except TimeoutError:
                pass
        return self.group_posts

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` messages were sent."""
        deadline = time.monotonic() + timeout_s
        while len(self.sent) < count and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=0.2)
            except TimeoutError:
                pass
        return self.sent


class TwilioDouble(HttpDouble):
    """Twilio's Messages resource: POST /2010-04-01/Accounts/{sid}/Messages.json."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, str]] = []
        self.fail_next: list[tuple[int, int]] = []  # (HTTP status, Twilio error code)
        self.ids = itertools.count(1)
        self.arrived = asyncio.Event()
        # media a learner sent, served at /2010-04-01/Accounts/{sid}/Messages/{msg}/Media/{media} (basic auth)
        self.media: dict[str, tuple[bytes, str]] = {}
        self.app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self.handle)
        self.app.router.add_get("/2010-04-01/Accounts/{sid}/Messages/{message}/Media/{media}", self.serve_media)

    async def serve_media(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Basic "):
            return web.Response(status=401)
        found = self.media.get(request.match_info["media"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type=found[1])

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.requests.append(form)
        if self.fail_next:
            status, code = self.fail_next.pop(0)
            return web.json_response({"code": code, "message": f"error {code}", "more_info": "", "status": status},
                                     status=status)
        sid = f"SM{next(self.ids):032d}"
        self.sent.append({**form, "sid": sid})
        self.arrived.set()
        return web.json_response({"sid": sid, "status": "queued", "to": form.get("To"), "from": form.get("From"),
                                  "body": form.get("Body"), "account_sid": request.match_info["sid"]}, status=201)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout_s
        while len(self.sent) < count and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=0.2)
            except TimeoutError:
                pass
        return self.sent


Responder = Callable[[dict[str, Any]], list[dict[str, Any]]]


def echo_responder(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"recipient_id": body.get("sender"), "text": f"echo: {body.get('message')}"}]


class RasaDouble(HttpDouble):
    """Rasa's REST channel and tracker API; `up = False` makes it answer 503."""

    def __init__(self, responder: Responder = echo_responder) -> None:
        super().__init__()
        self.responder = responder
        self.up = True
        self.delay_s = 0.0  # answer this late (the tracker is written first, as Rasa does)
        # answer the REST channel with this instead (e.g. (400, '{"error": ...}') or (200, "<html>")
        self.broken_answer: tuple[int, str] | None = None
        self.token: str | None = None  # when set, every request must carry ?token= (Rasa's --auth-token)
        self.messages: list[dict[str, Any]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.app.router.add_get("/", self.root)
        self.app.router.add_post("/webhooks/rest/webhook", self.webhook)
        self.app.router.add_post("/conversations/{sender}/tracker/events", self.append)
        self.app.router.add_put("/conversations/{sender}/tracker/events", self.replace)
        self.app.router.add_get("/conversations/{sender}/tracker", self.tracker)

    async def root(self, request: web.Request) -> web.Response:
        if not self.up:
            return web.Response(status=503)
        return web.Response(text="Hello from Rasa: 3.6.21")

    async def webhook(self, request: web.Request) -> web.Response:
        if not self.up:
            return web.Response(status=503, text="down")
        if self.token is not None and request.query.get("token") != self.token:
            return web.json_response({"message": "User is not authenticated."}, status=401)
        if self.broken_answer is not None:
            self.messages.append(await request.json())
            status, text = self.broken_answer
            return web.Response(status=status, text=text, content_type="text/html")
        body = await request.json()
        self.messages.append(body)
        replies = self.responder(body)
        sender = str(body.get("sender"))
        events = self.events.setdefault(sender, [])
        events.append({"event": "user", "text": body.get("message"), "metadata": body.get("metadata") or {}})
        for reply in replies:
            data = {k: reply[k] for k in ("buttons", "custom", "image") if k in reply}
            events.append({"event": "bot", "text": reply.get("text"), "data": data})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.json_response(replies)

    async def append(self, request: web.Request) -> web.Response:
        events = await request.json()
        batch = events if isinstance(events, list) else [events]
        self.events.setdefault(request.match_info["sender"], []).extend(batch)
        return web.json_response({"sender_id": request.match_info["sender"]})

    async def replace(self, request: web.Request) -> web.Response:
        self.events[request.match_info["sender"]] = list(await request.json())
        return web.json_response({"sender_id": request.match_info["sender"]})

    async def tracker(self, request: web.Request) -> web.Response:
        sender = request.match_info["sender"]
        return web.json_response({"sender_id": sender, "events": self.events.get(sender, [])})
