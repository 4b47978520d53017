"""Issue 11, items 2 and 3: media a learner sends are served so that nothing in them runs as the
mentor, streamed with a size cap; every console page carries the security headers."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.storage.models import Handoff, InboundMessage
from tests.conftest import Gateway
from tests.test_console_web import console, csrf, login, mentor, tg_update  # noqa: F401  (fixture)

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("/console/h/1/export")</script></svg>'
HTML = b"<html><script>document.forms[0].submit()</script></html>"


def document_update(update_id: int, file_id: str, mime_type: str, kind: str = "document") -> dict[str, Any]:
    update = tg_update(update_id, "")
    message = update["message"]
    del message["text"]
    message[kind] = {"file_id": file_id, "file_unique_id": file_id, "mime_type": mime_type, "file_size": 10}
    return update


async def claimed_by_amal(gateway: Gateway, client: httpx.AsyncClient) -> int:
    await mentor(gateway, "amal@example.org", "en")
    await gateway.telegram(tg_update(1, "I want a human please"))
    await gateway.settle()
    await login(client, "amal@example.org")
    async with gateway.services.db.session() as s:
        handoff_id = int((await s.execute(select(Handoff.id))).scalar_one())
    await client.post(f"/console/h/{handoff_id}/claim", data={"csrf_token": await csrf(client)})
    return handoff_id


async def message_of(gateway: Gateway, file_id: str) -> int:
    async with gateway.services.db.session() as s:
        return int((await s.execute(select(InboundMessage.id).where(InboundMessage.media_ref == file_id))).scalar_one())


@pytest.mark.parametrize(("mime_type", "body", "served", "disposition"), [
    ("image/svg+xml", SVG, "application/octet-stream", "attachment"),
    ("text/html", HTML, "application/octet-stream", "attachment"),
    ("application/pdf", b"%PDF-1.4", "application/octet-stream", "attachment"),
    ("audio/ogg", b"OggS", "audio/ogg", "inline"),
    ("image/png; charset=x", b"\x89PNG", "image/png", "inline"),
])
async def test_learner_media_is_an_attachment_unless_a_plain_image_audio_or_video(
    gateway: Gateway, console: httpx.AsyncClient, mime_type: str, body: bytes, served: str,  # noqa: F811
    disposition: str,
) -> None:
    await claimed_by_amal(gateway, console)
    gateway.bot_api.files["f1"] = (body, False)
    await gateway.telegram(document_update(2, "f1", mime_type))
    await gateway.settle()
    response = await console.get(f"/console/media/{await message_of(gateway, 'f1')}")
    assert response.status_code == 200 and response.content == body
    assert response.headers["content-type"].split(";")[0] == served
    assert response.headers["content-disposition"].startswith(disposition + ";")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"


async def test_media_past_the_size_cap_is_refused_or_cut_off(gateway: Gateway,
                                                            console: httpx.AsyncClient) -> None:  # noqa: F811
    gateway.services.settings = gateway.services.settings.replace(media_max_bytes=4096)
    await claimed_by_amal(gateway, console)
    big = b"\xff\xd8" + b"x" * 50_000
    gateway.bot_api.files["declared"] = (big, False)  # the provider says how big: refused before reading
    gateway.bot_api.files["chunked"] = (big, True)  # it does not: the relay stops at the cap
    await gateway.telegram(document_update(2, "declared", "image/jpeg", kind="video"))
    await gateway.telegram(document_update(3, "chunked", "image/jpeg", kind="video"))
    await gateway.settle()
    refused = await console.get(f"/console/media/{await message_of(gateway, 'declared')}")
    assert refused.status_code == 502
    received = bytearray()
    with pytest.raises(RuntimeError, match="MEDIA_MAX_BYTES"):
        async with console.stream("GET", f"/console/media/{await message_of(gateway, 'chunked')}") as streamed:
            assert streamed.status_code == 200
            async for chunk in streamed.aiter_bytes():
                received.extend(chunk)
    assert len(received) <= 4096


# --- item 3: the console's security headers -------------------------------------------

def assert_page_headers(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers.get("x-frame-options") == "DENY"
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("referrer-policy") == "no-referrer"


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


async def test_every_console_page_has_the_security_headers_and_no_inline_script(
    gateway: Gateway, console: httpx.AsyncClient  # noqa: F811
) -> None:
    login_page = await console.get("/console/login")
    assert_page_headers(login_page)
    handoff_id = await claimed_by_amal(gateway, console)
    pages = ["/console", "/console/queue", f"/console/h/{handoff_id}", f"/console/h/{handoff_id}/transcript",
             "/console/h/999999", "/console/static/console.js", "/console/login", "/chat"]
    for path in pages:
        response = await console.get(path)
        assert_page_headers(response)
        if response.headers.get("content-type", "").startswith("text/html"):
            assert not INLINE_SCRIPT.search(response.text), path
            assert not INLINE_HANDLER.search(response.text), path
    redirect = await console.post(f"/console/h/{handoff_id}/note", data={"csrf_token": "forged"})
    assert redirect.status_code == 403
    assert_page_headers(redirect)
