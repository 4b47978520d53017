"""A small HTTP/1.1 keep-alive client for the gateway's calls on every message: Rasa's REST
channel and the Telegram Bot API.

aiohttp spends ~80 µs of CPU on each such request (request and response objects, header
multidicts, timers, the payload registry): two requests per message were a sixth of the
gateway's budget of 1 ms. This client writes a request in one preformatted write and
parses the answer with httptools, the C parser uvicorn already uses, on pooled keep-alive
connections: ~15 µs a request.

It does what those calls need and no more: one origin per pool, bodies as bytes, responses
with Content-Length, chunked or closed-delimited bodies, TLS with the system's CA store, a
connect timeout and a deadline for the whole request. No redirects, proxies, cookies or
compression (it never asks for any). A connection is used for one request at a time and is
closed, never reused, after any error, a timeout, a cancellation or `Connection: close`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httptools

from integrations.pooling import ConnectionPool, PoolClosed

USER_AGENT = b"Sanad"
MAX_BODY_BYTES = 16 * 1024 * 1024


class HttpError(Exception):
    """The request did not get a complete HTTP answer (refused, reset, malformed, too large)."""


class ConnectError(HttpError):
    """No connection to the server could be opened: the request was not sent."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> tuple[Origin, str]:
        """The origin of an absolute http(s) URL and its path with the query."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an absolute http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port), target

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `exchange` sends a request and waits for the whole answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = time.monotonic()
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._headers_complete = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed response: {exc}"))

    def eof_received(self) -> bool | None:
        self._server_closed()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_closed()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_complete = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY_BYTES:
            self._fail(HttpError("response body too large"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        response = Response(self.parser.get_status_code(), self._headers, b"".join(self._body))
        keep_alive = self.parser.should_keep_alive()
        self._headers, self._body, self._size = {}, [], 0
        self._headers_complete = False
        if not keep_alive:
            self.close()
        self.idle_since = time.monotonic()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # -- use -----------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    async def exchange(self, request: bytes) -> Response:
        if not self.usable or self.transport is None:
            raise HttpError("connection closed")
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(request)
        return await waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _server_closed(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._headers_complete and self._delimited_by_close():
            # a body delimited by the end of the connection (no Content-Length, not chunked)
            self.on_message_complete()
            return
        self._fail(HttpError("connection closed before the response was complete"))

    def _delimited_by_close(self) -> bool:
        return "content-length" not in self._headers and (
            "chunked" not in self._headers.get("transfer-encoding", "").lower())


async def _connect(origin: Origin, ssl_context: ssl.SSLContext | None, timeout_s: float) -> _Connection:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _, conn = await loop.create_connection(
                _Connection, origin.host, origin.port, ssl=ssl_context,
                server_hostname=origin.host if ssl_context is not None else None,
            )
    except (OSError, ssl.SSLError) as exc:  # TimeoutError (an OSError) goes to the caller as it is
        if isinstance(exc, TimeoutError):
            raise
        raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
    return conn


class KeepAliveClient:
    """Pooled keep-alive HTTP/1.1 requests; `request` answers with the whole response."""

    def __init__(
        self,
        limit_per_origin: int = 64,
        connect_timeout_s: float = 5.0,
        idle_timeout_s: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limit = limit_per_origin
        self.connect_timeout_s = connect_timeout_s
        # below the keep-alive of the servers we call (Rasa's Sanic closes after 5 s): a request
        # never goes into a connection the server is about to drop
        self.idle_timeout_s = idle_timeout_s
        self._ssl_context = ssl_context
        self._pools: dict[Origin, ConnectionPool[_Connection]] = {}
        self._targets: dict[str, tuple[Origin, str]] = {}

    def _pool(self, origin: Origin) -> ConnectionPool[_Connection]:
        pool = self._pools.get(origin)
        if pool is None:
            context = None
            if origin.scheme == "https":
                context = self._ssl_context or ssl.create_default_context()

            def fresh(conn: _Connection) -> bool:
                # never send into a connection the server may be dropping
                return conn.usable and time.monotonic() - conn.idle_since < self.idle_timeout_s

            pool = self._pools[origin] = ConnectionPool(
                partial(_connect, origin, context, self.connect_timeout_s), self.limit, fresh, _Connection.close
            )
        return pool

    def _target(self, url: str) -> tuple[Origin, str]:
        target = self._targets.get(url)
        if target is None:
            target = Origin.of(url)
            if len(self._targets) < 1024:  # the same few URLs over and over (one per Bot API method)
                self._targets[url] = target
        return target

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = 10.0,
    ) -> Response:
        """Send one request; raises TimeoutError past `timeout_s` and HttpError without a whole answer."""
        origin, target = self._target(url)
        head = [b"%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n" % (
            method.encode("ascii"), target.encode("ascii"), origin.host_header, USER_AGENT)]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: %d\r\n" % len(body or b""))
        payload = b"".join(head) + b"\r\n" + (body or b"")
        pool = self._pool(origin)
        async with asyncio.timeout(timeout_s):
            try:
                conn = await pool.acquire()
            except PoolClosed as exc:
                raise HttpError("client closed") from exc
            try:
                response = await conn.exchange(payload)
            except BaseException:
                pool.discard(conn)  # mid-request (error, timeout, cancel): never reused
                raise
        pool.release(conn)
        return response

    async def close(self) -> None:
        """Close the idle connections (those in use close when their request ends); a later request
        opens new ones."""
        for pool in self._pools.values():
            for conn in pool.close():
                conn.close()
        self._pools.clear()

    def _stats(self) -> dict[str, Any]:
        """Open and idle connections per origin (tests)."""
        return {f"{o.host}:{o.port}": {"open": p.open, "idle": p.idle} for o, p in self._pools.items()}
