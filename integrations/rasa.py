"""Client of the Rasa server: the REST channel for messages and the HTTP API for trackers.

One `httpx.AsyncClient` per process carries every call (its own connection pool and
keep-alive). Two kinds of failure, because they call for different handling:
`RasaUnavailable` (refused, timed out, 5xx: Rasa is down, the message waits) and
`RasaRefused` (a 4xx or an answer that is not what the API promises: asking again the same
way will not help, so it counts toward the message's attempts).
"""

from __future__ import annotations

import zlib
from typing import Any
from urllib.parse import quote

import httpx

# Rasa's HTTP server (Sanic) closes connections idle for 5 s: keep them for less than that
KEEPALIVE_EXPIRY_S = 4.0


class RasaError(Exception):
    """A call to Rasa that gave no usable answer."""


class RasaUnavailable(RasaError):
    """Rasa did not answer (down, timeout, 5xx): the message stays queued."""


class RasaRefused(RasaError):
    """Rasa answered, but with a 4xx or something that is not the API's answer."""


class RasaClient:
    """Talks to the Rasa servers of `url`: one, or several separated by commas.

    With several, a conversation goes to the same server every time (a hash of its sender id),
    so each server's caches and in-memory locks see all of it, and throughput grows with the
    servers (one Rasa process answers a few dozen messages a second). When that server refuses
    the connection, the next one takes the conversation: the servers share the tracker store
    (SQL) and the lock store (Redis), as in docker-compose.yml. A server that does not answer in
    time is not bypassed: it may still be working on the message.

    `token` is Rasa's `--auth-token`, sent as the `token` query parameter its HTTP API reads.
    """

    def __init__(
        self, url: str, timeout_s: float = 10.0, token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.urls = [part.strip().rstrip("/") for part in url.split(",") if part.strip()]
        if not self.urls:
            raise ValueError("no Rasa server URL")
        self.timeout_s = timeout_s
        self.token = token
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(3.0, timeout_s)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64,
                                keepalive_expiry=KEEPALIVE_EXPIRY_S),
            transport=transport,
        )

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
        params = {"token": self.token} if self.token else None
        servers = self.servers_for(sender_id)
        for index, server in enumerate(servers):
            try:
                response = await self._http.request(method, server + path, params=params, json=body)
                break
            except httpx.ConnectError as exc:
                if index + 1 == len(servers):
                    raise RasaUnavailable(type(exc).__name__) from exc
            except httpx.HTTPError as exc:
                raise RasaUnavailable(type(exc).__name__) from exc
        if response.status_code >= 500:
            raise RasaUnavailable(f"rasa answered {response.status_code}")
        if response.status_code >= 400:
            raise RasaRefused(f"rasa refused the request: {response.status_code}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise RasaRefused("answer is not JSON") from exc

    async def send_message(self, sender_id: str, text: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        """One learner message through Rasa's REST channel; returns Rasa's replies."""
        body = {"sender": sender_id, "message": text, "metadata": metadata}
        result = await self._request("POST", "/webhooks/rest/webhook", sender_id, body)
        if not isinstance(result, list):
            raise RasaRefused("unexpected answer from the REST channel")
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
                response = await self._http.get(f"{server}/", timeout=2.0)
            except httpx.HTTPError:
                return False
            if response.status_code != 200:
                return False
        return True

    async def close(self) -> None:
        await self._http.aclose()
