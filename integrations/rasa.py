"""Client of the Rasa server: the REST channel for messages and the HTTP API for trackers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp


class RasaUnavailable(Exception):
    """Rasa did not answer (down, timeout, 5xx): the message stays queued."""


class RasaClient:
    """Talks to one Rasa server (or a load balancer in front of several)."""

    def __init__(self, url: str, timeout_s: float = 10.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(3.0, timeout_s))
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                json_serialize=json.dumps,
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
            )
        return self._session

    def _conversation(self, sender_id: str) -> str:
        return f"{self.url}/conversations/{quote(sender_id, safe='')}"

    async def _request(self, method: str, url: str, body: Any = None) -> Any:
        params = {"token": self.token} if self.token else None
        try:
            async with self._http().request(method, url, json=body, params=params) as resp:
                if resp.status >= 500:
                    raise RasaUnavailable(f"rasa answered {resp.status}")
                if resp.status >= 400:
                    text = await resp.text()
                    raise RasaUnavailable(f"rasa refused the request: {resp.status} {text[:200]}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise RasaUnavailable(type(exc).__name__) from exc

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
            async with self._http().get(f"{self.url}/", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
