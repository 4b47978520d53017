"""An aiohttp transport for python-telegram-bot's `Bot`.

PTB's default transport (httpx) costs the gateway more CPU per message than the rest of
the send path; PTB takes any `BaseRequest`, the interface it defines for transports, so
the `Bot` (and its error handling) stays the official client and only the HTTP layer
changes. Timeouts map onto aiohttp's: connect, and total as read + write.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from telegram._utils.defaultvalue import DEFAULT_NONE
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

_JSON_HEADERS = {"Content-Type": "application/json"}


class AiohttpRequest(BaseRequest):
    """A pooled aiohttp client behind PTB's transport interface."""

    def __init__(
        self,
        connection_pool_size: int = 64,
        read_timeout_s: float = 10.0,
        write_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout_s

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=60),
                headers={"User-Agent": self.USER_AGENT},
            )
        return self._session

    async def initialize(self) -> None:
        self._client()

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

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
        total = None if read_s is None or write_s is None else read_s + write_s
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=self._value(connect_timeout, self._connect_timeout_s))
        data: Any = None
        headers = None
        if request_data is not None:
            if request_data.contains_files:
                form = aiohttp.FormData()
                for name, value in request_data.json_parameters.items():
                    form.add_field(name, value)
                for name, part in request_data.multipart_data.items():
                    filename, content, mimetype = part[0], part[1], part[2] if len(part) > 2 else None
                    form.add_field(name, content, filename=filename, content_type=mimetype)
                data = form
            else:
                # a JSON body costs less to build than a urlencoded form, and the Bot API takes both:
                # https://core.telegram.org/bots/api#making-requests
                data = json.dumps(request_data.parameters).encode()
                headers = _JSON_HEADERS
        try:
            async with self._client().request(method, url, data=data, timeout=timeout, headers=headers) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
