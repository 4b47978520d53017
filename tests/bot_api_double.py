"""A local double of Telegram's Bot API `sendMessage` (tests and bench/reminders.py).

It records every chat_id it accepted, can enforce a token-bucket limit of R msg/s
(answering 429 with `retry_after` above it, like Telegram), and answers scripted errors
per chat (403 blocked, 500). Runs in a thread so a killed worker process cannot take it down.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class BotApiDouble:
    def __init__(self, rate_per_s: float | None = None, burst: float = 1.0, delay_s: float = 0.0) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.delay_s = delay_s
        self.accepted: list[str] = []
        self.accepted_at: list[float] = []
        self.texts: dict[str, list[str]] = {}
        self.too_many = 0
        self.errors: dict[str, list[tuple[int, str]]] = {}  # chat_id -> scripted answers, used in order
        self._tokens = burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self._next_id = 1000
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                data = json.dumps(double.stats()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                method = self.path.rsplit("/", 1)[-1]
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    params = json.loads(raw or b"{}")
                else:
                    from urllib.parse import parse_qs

                    params = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                status, body = double.handle(method, params)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # a client killed mid-request (the crash test) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> BotApiDouble:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self.accepted)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            span = self.accepted_at[-1] - self.accepted_at[0] if len(self.accepted_at) > 1 else 0.0
            return {
                "accepted": len(self.accepted), "too_many": self.too_many, "span_s": span,
                "rate_per_s": (len(self.accepted) - 1) / span if span > 0 else 0.0,
                "duplicates": len(self.accepted) - len(set(self.accepted)),
            }

    def _take(self) -> float:
        """0 when a token was taken, else seconds until one is available."""
        if self.rate_per_s is None:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s

    def handle(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "getMe":
            return 200, {"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "Sanad", "username": "SanadBot"}}
        if method != "sendMessage":
            return 200, {"ok": True, "result": True}
        chat_id = str(params.get("chat_id"))
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            scripted = self.errors.get(chat_id)
            if scripted:
                status, description = scripted.pop(0)
                body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
                if status == 429:
                    body["parameters"] = {"retry_after": 1}
                return status, body
            wait = self._take()
            if wait > 0:
                self.too_many += 1
                retry = max(1, int(wait + 0.999))
                return 429, {
                    "ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry}",
                    "parameters": {"retry_after": retry},
                }
            self.accepted.append(chat_id)
            self.accepted_at.append(time.monotonic())
            self.texts.setdefault(chat_id, []).append(str(params.get("text", "")))
            self._next_id += 1
            message_id = self._next_id
        return 200, {
            "ok": True,
            "result": {
                "message_id": message_id, "date": int(time.time()),
                "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else 0, "type": "private"},
                "text": params.get("text", ""),
            },
        }


def serve(port: int, rate_per_s: float | None, burst: float) -> None:
    """Run a double in its own process (bench/reminders.py), so its CPU is not counted as ours."""
    double = BotApiDouble(rate_per_s=rate_per_s, burst=burst)
    double.server.server_close()
    double.server = type(double.server)(("127.0.0.1", port), double.server.RequestHandlerClass)
    double.server.daemon_threads = True
    double.server.serve_forever()
