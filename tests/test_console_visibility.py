"""Issue 11, item 1: a mentor's view of a conversation follows the hand-off's life.

While assigned the mentor reads it live; after it ends, only what was said up to its end, and
only for HANDOFF_REVIEW_WINDOW_S; leads keep access; media and the export follow the same rule;
every read is in the audit log."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from bot.storage.models import AuditEntry, Handoff, InboundMessage
from tests.conftest import Gateway
from tests.test_console_web import console, csrf, login, mentor, tg_update  # noqa: F401  (fixture)

CHAT = 424242


def photo_update(update_id: int, file_id: str) -> dict[str, Any]:
    update = tg_update(update_id, "")
    message = update["message"]
    del message["text"]
    message["photo"] = [{"file_id": file_id, "file_unique_id": file_id, "width": 90, "height": 90, "file_size": 3}]
    return update


async def handoffs(gw: Gateway) -> list[Handoff]:
    async with gw.services.db.session() as s:
        return list((await s.execute(select(Handoff).order_by(Handoff.id))).scalars())


async def media_id(gw: Gateway, file_id: str) -> int:
    async with gw.services.db.session() as s:
        return int((await s.execute(select(InboundMessage.id).where(InboundMessage.media_ref == file_id))).scalar_one())


async def as_mentor(gw: Gateway, email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="https://testserver")
    assert (await login(client, email)).status_code == 303
    return client


async def test_a_mentor_reads_an_ended_handoff_only_up_to_its_end_and_only_for_the_review_window(
    gateway: Gateway, console: httpx.AsyncClient  # noqa: F811
) -> None:
    await mentor(gateway, "amal@example.org", "en")
    await mentor(gateway, "omar@example.org", "en")
    await mentor(gateway, "lead@example.org", "de", role="lead")
    gateway.bot_api.files = {"early-photo": (b"\xff\xd8early", False), "late-photo": (b"\xff\xd8late", False)}

    # hand-off 1: Amal has it, the learner sends a photo and a message, Amal resolves it
    await gateway.telegram(tg_update(1, "I want a human please"))
    await gateway.settle()
    amal = await as_mentor(gateway, "amal@example.org")
    token = await csrf(amal)
    h1 = (await handoffs(gateway))[0]
    assert (await amal.post(f"/console/h/{h1.id}/claim", data={"csrf_token": token})).status_code == 303
    await amal.post(f"/console/h/{h1.id}/reply", data={"csrf_token": token, "text": "Amal here, how can I help?"})
    await gateway.telegram(photo_update(2, "early-photo"))
    await gateway.telegram(tg_update(3, "said while Amal had it"))
    await gateway.settle()
    assert (await amal.post(f"/console/h/{h1.id}/resolve", data={"csrf_token": token})).status_code == 303
    early = await media_id(gateway, "early-photo")

    # within the review window Amal rereads it, up to its end
    page = await amal.get(f"/console/h/{h1.id}")
    assert page.status_code == 200 and "said while Amal had it" in page.text
    assert (await amal.get(f"/console/media/{early}")).status_code == 200

    # later: the learner talks to the bot, then hand-off 2 goes to Omar, who replies; a new photo comes
    await gateway.telegram(tg_update(4, "a later private matter"))
    await gateway.telegram(tg_update(5, "now I need a person again"))
    await gateway.settle()
    h2 = (await handoffs(gateway))[1]
    omar = await as_mentor(gateway, "omar@example.org")
    omar_token = await csrf(omar)
    assert (await omar.post(f"/console/h/{h2.id}/claim", data={"csrf_token": omar_token})).status_code == 303
    await omar.post(f"/console/h/{h2.id}/reply", data={"csrf_token": omar_token, "text": "Omar answering here"})
    await gateway.telegram(photo_update(6, "late-photo"))
    await gateway.settle()
    late = await media_id(gateway, "late-photo")

    for path in (f"/console/h/{h1.id}", f"/console/h/{h1.id}/transcript"):
        seen = await amal.get(path)
        assert seen.status_code == 200
        assert "said while Amal had it" in seen.text
        assert "a later private matter" not in seen.text and "Omar answering here" not in seen.text
        assert f"/console/media/{late}" not in seen.text
    assert (await amal.get(f"/console/media/{late}")).status_code == 403
    assert (await amal.get(f"/console/h/{h1.id}/export")).status_code == 403  # the export holds later messages
    assert (await amal.get(f"/console/h/{h2.id}")).status_code == 403

    # the review window passes (here: it is shortened to nothing): nothing of hand-off 1 any more
    gateway.services.settings = gateway.services.settings.replace(handoff_review_window_s=0)
    for path in (f"/console/h/{h1.id}", f"/console/h/{h1.id}/transcript", f"/console/media/{early}"):
        assert (await amal.get(path)).status_code == 403, path

    # a lead keeps access: hand-off 1 up to its end, the open hand-off 2 live
    lead = await as_mentor(gateway, "lead@example.org")
    old = await lead.get(f"/console/h/{h1.id}")
    assert old.status_code == 200 and "said while Amal had it" in old.text and "a later private matter" not in old.text
    current = await lead.get(f"/console/h/{h2.id}")
    assert current.status_code == 200 and "a later private matter" in current.text
    assert (await lead.get(f"/console/media/{early}")).status_code == 200
    assert (await lead.get(f"/console/h/{h1.id}/export")).status_code == 200

    # every read, by anyone, is in the audit log
    async with gateway.services.db.session() as s:
        reads = [(e.actor, e.action, (e.detail or {}).get("handoff_id"), (e.detail or {}).get("message_id"))
                 for e in (await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()]
    amal_actor, lead_actor = "mentor:1", "mentor:3"
    assert (amal_actor, "conversation.read", h1.id, None) in reads
    assert (amal_actor, "media.read", None, early) in reads
    # her three successful reads of hand-off 1 (the page twice, the transcript once); refusals read nothing
    assert sum(1 for r in reads if r[0] == amal_actor and r[1] == "conversation.read" and r[2] == h1.id) == 3
    assert (lead_actor, "conversation.read", h1.id, None) in reads
    assert (lead_actor, "conversation.read", h2.id, None) in reads
    assert (lead_actor, "media.read", None, early) in reads
    assert (lead_actor, "export.download", h1.id, None) in reads
    for client in (amal, omar, lead):
        await client.aclose()


async def test_a_waiting_handoff_is_visible_only_in_the_mentors_languages_and_leaves_with_a_claim(
    gateway: Gateway, console: httpx.AsyncClient  # noqa: F811
) -> None:
    await mentor(gateway, "amal@example.org", "en")
    await mentor(gateway, "omar@example.org", "en")
    await mentor(gateway, "farid@example.org", "fa")
    await gateway.telegram(tg_update(1, "I want a human please"))
    await gateway.settle()
    h = (await handoffs(gateway))[0]
    amal, omar, farid = [await as_mentor(gateway, f"{n}@example.org") for n in ("amal", "omar", "farid")]
    assert (await omar.get(f"/console/h/{h.id}")).status_code == 200  # waiting, in his language
    assert (await farid.get(f"/console/h/{h.id}")).status_code == 403
    await amal.post(f"/console/h/{h.id}/claim", data={"csrf_token": await csrf(amal)})
    assert (await omar.get(f"/console/h/{h.id}")).status_code == 403  # Amal's now
    assert (await omar.get(f"/console/h/{h.id}/export")).status_code == 403
    assert (await amal.get(f"/console/h/{h.id}/export")).status_code == 200
    for client in (amal, omar, farid):
        await client.aclose()
