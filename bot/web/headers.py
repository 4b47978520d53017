"""Security headers of the pages people open in a browser: the mentor console and the web chat.

Every response under those paths gets a Content-Security-Policy that runs scripts and styles only
from the gateway's own static files (no inline script, no `eval`, no framing, forms post only
here), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and `Referrer-Policy:
no-referrer`. A response that sets one of them itself keeps its own (console media are served
with `Content-Security-Policy: sandbox`). Provider webhooks never pass here (bot/web/app.py).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", PAGE_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
BROWSER_PATHS: tuple[str, ...] = ("/console", "/chat")


class SecurityHeaders:
    """ASGI middleware adding PAGE_HEADERS to every response under BROWSER_PATHS."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...] = BROWSER_PATHS) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.paths):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in PAGE_HEADERS if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
