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
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

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
        self._started = False
        self._headers_complete = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._started = True
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
        self._started = self._headers_complete = False
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
        if self.transport is None or not self.usable:
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


class _Pool:
    """Keep-alive connections to one origin, at most `limit` open."""

    def __init__(self, origin: Origin, limit: int, ssl_context: ssl.SSLContext | None) -> None:
        self.origin = origin
        self.limit = limit
        self.ssl_context = ssl_context
        self.idle: list[_Connection] = []
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.open = 0
        self.closed = False

    async def acquire(self, connect_timeout_s: float, idle_timeout_s: float) -> _Connection:
        while True:
            if self.closed:
                raise HttpError("client closed")
            while self.idle:
                conn = self.idle.pop()
                if conn.usable and time.monotonic() - conn.idle_since < idle_timeout_s:
                    return conn
                self.discard(conn)  # the server may have dropped it: never send into a stale connection
            if self.open < self.limit:
                self.open += 1
                try:
                    return await self._connect(connect_timeout_s)
                except BaseException:
                    self.open -= 1
                    self._hand_over(None)
                    raise
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._hand_over(waiter.result())
                raise
            if handed is not None:
                return handed
            # None: a connection closed and freed its slot; go round and open one

    async def _connect(self, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        server_hostname = self.origin.host if self.ssl_context is not None else None
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    _Connection, self.origin.host, self.origin.port, ssl=self.ssl_context,
                    server_hostname=server_hostname,
                )
        except (OSError, ssl.SSLError) as exc:  # TimeoutError (an OSError) goes to the caller as it is
            if isinstance(exc, TimeoutError):
                raise

            raise ConnectError(f"cannot connect to {self.origin.host}:{self.origin.port}: {exc}") from exc
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.usable and not self.closed:
            self._hand_over(conn)
        else:
            self.discard(conn)

    def discard(self, conn: _Connection) -> None:
        conn.close()
        self.open -= 1
        self._hand_over(None)

    def _hand_over(self, conn: _Connection | None) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self.idle.append(conn)

    def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        self.closed = True
        for conn in self.idle:
            conn.close()
        self.open -= len(self.idle)
        self.idle.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(HttpError("client closed"))


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
        self._pools: dict[Origin, _Pool] = {}
        self._targets: dict[str, tuple[Origin, str]] = {}

    def _pool(self, origin: Origin) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            context = None
            if origin.scheme == "https":
                context = self._ssl_context or ssl.create_default_context()
            pool = self._pools[origin] = _Pool(origin, self.limit, context)
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
            conn = await pool.acquire(self.connect_timeout_s, self.idle_timeout_s)
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
            pool.close()
        self._pools.clear()

    def _stats(self) -> dict[str, Any]:
        """Open and idle connections per origin (tests)."""
        return {f"{o.host}:{o.port}": {"open": p.open, "idle": len(p.idle)} for o, p in self._pools.items()}
