"""Client of the Rasa server: the REST channel for messages and the HTTP API for trackers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from integrations.http11 import HttpError, KeepAliveClient

_JSON_HEADERS = {"Content-Type": "application/json"}


class RasaUnavailable(Exception):
    """Rasa did not answer (down, timeout, 5xx): the message stays queued."""


class RasaClient:
    """Talks to one Rasa server (or a load balancer in front of several)."""

    def __init__(self, url: str, timeout_s: float = 10.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.token = token
        # Rasa's HTTP server (Sanic) closes connections idle for 5 s: reuse them for less than that
        self._http = KeepAliveClient(limit_per_origin=64, connect_timeout_s=min(3.0, timeout_s), idle_timeout_s=4.0)

    def _conversation(self, sender_id: str) -> str:
        # ":" and "+" stay as they are ("telegram:123", "whatsapp:+49…"): Rasa does not decode %3A in
        # the path, and takes the conversation id as written
        return f"{self.url}/conversations/{quote(sender_id, safe=':+')}"

    async def _request(self, method: str, url: str, body: Any = None) -> Any:
        if self.token:
            url = f"{url}?{urlencode({'token': self.token})}"
        data = None if body is None else json.dumps(body).encode()
        try:
            response = await self._http.request(method, url, data, _JSON_HEADERS if data is not None else None,
                                                timeout_s=self.timeout_s)
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
        result = await self._request("POST", f"{self.url}/webhooks/rest/webhook", body)
        if not isinstance(result, list):
            raise RasaUnavailable("unexpected answer from the REST channel")
        return [item for item in result if isinstance(item, dict)]

    async def append_events(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        await self._request("POST", f"{self._conversation(sender_id)}/tracker/events", events)

    async def replace_events(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        await self._request("PUT", f"{self._conversation(sender_id)}/tracker/events", events)

    async def get_tracker(self, sender_id: str) -> dict[str, Any]:
        result = await self._request("GET", f"{self._conversation(sender_id)}/tracker")
        return result if isinstance(result, dict) else {}

    async def ping(self) -> bool:
        try:
            response = await self._http.request("GET", f"{self.url}/", timeout_s=2.0)
        except (HttpError, TimeoutError, OSError):
            return False
        return response.status == 200

    async def close(self) -> None:
        await self._http.close()
