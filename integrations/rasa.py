"""Client of the Rasa server: the REST channel for messages and the HTTP API for trackers."""

from __future__ import annotations

import json
import zlib
from typing import Any
from urllib.parse import quote, urlencode

from integrations.http11 import ConnectError, HttpError, KeepAliveClient

_JSON_HEADERS = {"Content-Type": "application/json"}


class RasaUnavailable(Exception):
    """Rasa did not answer (down, timeout, 5xx): the message stays queued."""


class RasaClient:
    """Talks to the Rasa servers of `url`: one, or several separated by commas.

    With several, a conversation goes to the same server every time (a hash of its sender id),
    so each server's caches and in-memory locks see all of it, and throughput grows with the
    servers (one Rasa process answers a few dozen messages a second). When that server refuses
    the connection, the next one takes the conversation: the servers share the tracker store
    (SQL) and the lock store (Redis), as in docker-compose.yml. A server that does not answer in
    time is not bypassed: it may still be working on the message.
    """

    def __init__(self, url: str, timeout_s: float = 10.0, token: str | None = None) -> None:
        self.urls = [part.strip().rstrip("/") for part in url.split(",") if part.strip()]
        if not self.urls:
            raise ValueError("no Rasa server URL")
        self.timeout_s = timeout_s
        self.token = token
        # Rasa's HTTP server (Sanic) closes connections idle for 5 s: reuse them for less than that
        self._http = KeepAliveClient(limit_per_origin=64, connect_timeout_s=min(3.0, timeout_s), idle_timeout_s=4.0)

    def servers_for(self, sender_id: str) -> list[str]:
        """The servers to try for a conversation, its own first."""
        first = zlib.crc32(sender_id.encode()) % len(self.urls)
        return self.urls[first:] + self.urls[:first]

    @staticmethod
    def _conversation(sender_id: str) -> str:
        # ":" and "+" stay as they are ("telegram:123", "whatsapp:+49…"): Rasa does not decode %3A in
        # the path, and takes the conversation id as written
        return f"/conversations/{quote(sender_id, safe=':+')}"

    async def _request(self, method: str, path: str, sender_id: str, body: Any = None) -> Any:
        query = f"?{urlencode({'token': self.token})}" if self.token else ""
        data = None if body is None else json.dumps(body).encode()
        headers = _JSON_HEADERS if data is not None else None
        servers = self.servers_for(sender_id)
        for index, server in enumerate(servers):
            try:
                response = await self._http.request(method, server + path + query, data, headers,
                                                    timeout_s=self.timeout_s)
                break
            except ConnectError as exc:
                if index + 1 == len(servers):
                    raise RasaUnavailable(type(exc).__name__) from exc
            except (HttpError, TimeoutError, OSError) as exc:
                raise RasaUnavailable(type(exc).__name__) from exc
        if response.status >= 500:
            raise RasaUnavailable(f"rasa answered {response.status}")
        if response.status >= 400:
            text = response.body[:200].decode("utf-8", "replace")
            raise RasaUnavailable(f"rasa refused the request: {response.status} {text}")
        try:
            return json.loads(response.body) if response.body else None
        except ValueError as exc:
            raise RasaUnavailable("answer is not JSON") from exc

    async def send_message(self, sender_id: str, text: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        """One learner message through Rasa's REST channel; returns Rasa's replies."""
        body = {"sender": sender_id, "message": text, "metadata": metadata}
        result = await self._request("POST", "/webhooks/rest/webhook", sender_id, body)
        if not isinstance(result, list):
            raise RasaUnavailable("unexpected answer from the REST channel")
        return [item for item in result if isinstance(item, dict)]

    async def append_events(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        await self._request("POST", f"{self._conversation(sender_id)}/tracker/events", sender_id, events)

    async def replace_events(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        await self._request("PUT", f"{self._conversation(sender_id)}/tracker/events", sender_id, events)

    async def get_tracker(self, sender_id: str) -> dict[str, Any]:
        result = await self._request("GET", f"{self._conversation(sender_id)}/tracker", sender_id)
        return result if isinstance(result, dict) else {}

    async def ping(self) -> bool:
        """True when every server answers."""
        for server in self.urls:
            try:
                response = await self._http.request("GET", f"{server}/", timeout_s=2.0)
            except (HttpError, TimeoutError, OSError):
                return False
            if response.status != 200:
                return False
        return True

    async def close(self) -> None:
        await self._http.close()
