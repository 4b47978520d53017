"""The transport under python-telegram-bot's `Bot`: our keep-alive HTTP/1.1 client.

PTB takes any `BaseRequest`, the interface it defines for transports, so the `Bot` (its
methods, and its error handling that turns 429/403/400 answers into RetryAfter, Forbidden,
BadRequest) stays the official client and only the HTTP layer changes: PTB's default
(httpx) and aiohttp each cost more CPU per message than the rest of the send path
(integrations/http11.py). Requests go as JSON bodies, which the Bot API takes like forms
(https://core.telegram.org/bots/api#making-requests); a request with files goes as
multipart/form-data. Timeouts: connect, and the whole request within read + write.
"""

from __future__ import annotations

import json
import uuid

from integrations.http11 import HttpError, KeepAliveClient
from telegram._utils.defaultvalue import DEFAULT_NONE
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

_JSON_HEADERS = {"Content-Type": "application/json"}


class KeepAliveRequest(BaseRequest):
    """Pooled keep-alive connections to the Bot API behind PTB's transport interface."""

    def __init__(
        self,
        connection_pool_size: int = 64,
        read_timeout_s: float = 10.0,
        write_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._connect_timeout_s = connect_timeout_s
        # the Bot API keeps idle connections open for minutes; well under that
        self._client = KeepAliveClient(connection_pool_size, connect_timeout_s, idle_timeout_s=30.0)

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout_s

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        await self._client.close()

    @staticmethod
    def _value(given: ODVInput[float], default: float) -> float | None:
        return default if given is DEFAULT_NONE else given  # type: ignore[return-value]

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = DEFAULT_NONE,
        write_timeout: ODVInput[float] = DEFAULT_NONE,
        connect_timeout: ODVInput[float] = DEFAULT_NONE,
        pool_timeout: ODVInput[float] = DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        read_s = self._value(read_timeout, self._read_timeout_s)
        write_s = self._value(write_timeout, self._write_timeout_s)
        total_s = None if read_s is None or write_s is None else read_s + write_s
        body: bytes | None = None
        headers: dict[str, str] | None = None
        if request_data is not None:
            if request_data.contains_files:
                body, content_type = _multipart(request_data)
                headers = {"Content-Type": content_type}
            else:
                body = json.dumps(request_data.parameters).encode()
                headers = _JSON_HEADERS
        try:
            response = await self._client.request(method, url, body, headers, timeout_s=total_s)
        except TimeoutError as exc:
            raise TimedOut from exc
        except (HttpError, OSError) as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from exc
        return response.status, response.body


def _multipart(request_data: RequestData) -> tuple[bytes, str]:
    """The parameters as form fields and the files as file parts (RFC 7578)."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in request_data.json_parameters.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                     + value.encode() + b"\r\n")
    for name, part in request_data.multipart_data.items():
        filename, content = part[0], part[1]
        mimetype = part[2] if len(part) > 2 else "application/octet-stream"
        data = content if isinstance(content, bytes) else content.read()
        safe_name = str(filename).replace('"', "").replace("\r", "").replace("\n", "")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe_name}"\r\n'
            f"Content-Type: {mimetype}\r\n\r\n".encode() + data + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
