"""Issue 11, items 4 and 10: console sessions end on the server, and logins are throttled per
(account, address) with growing delays instead of locking the account; X-Forwarded-For counts only
from FORWARDED_ALLOW_IPS."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator

import httpx
import limits.aio.storage.memory
import pytest
from limits.aio.storage import MemoryStorage
from starlette.requests import Request

import bot.security.throttle
from bot.mentoring.accounts import add_mentor, deactivate_mentor, log_out_everywhere
from bot.security.client_address import client_address
from bot.web.console.auth import COOKIE_NAME, LOGIN_PER_ACCOUNT_ADDRESS, login_keys
from tests.conftest import Gateway, make_settings
from tests.test_console_web import PASSWORD, csrf, login, mentor


def browser(gw: Gateway, address: str = "192.0.2.10", headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """A browser at `address` (the peer address the gateway sees)."""
    transport = httpx.ASGITransport(app=gw.app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="https://testserver", headers=headers or {})


@pytest.fixture
async def amal(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    await mentor(gateway, "amal@example.org", "en")
    async with browser(gateway) as client:
        assert (await login(client, "amal@example.org")).status_code == 303
        yield client


async def still_signed_in(gw: Gateway, cookie: str) -> bool:
    """Does a browser that replays `cookie` get the console (not the login page)?"""
    async with browser(gw) as other:
        other.cookies.set(COOKIE_NAME, cookie)
        return (await other.get("/console")).status_code == 200


# --- item 4: sessions end on the server ----------------------------------------------------

async def test_a_cookie_saved_before_logout_no_longer_works(gateway: Gateway, amal: httpx.AsyncClient) -> None:
    saved = amal.cookies.get(COOKIE_NAME, path="/console")
    assert saved and await still_signed_in(gateway, saved)
    assert (await amal.post("/console/logout", data={"csrf_token": await csrf(amal)})).status_code == 303
    assert not await still_signed_in(gateway, saved)
    async with browser(gateway) as replay:
        replay.cookies.set(COOKIE_NAME, saved)
        assert (await replay.get("/console/events")).status_code == 401
        assert (await replay.post("/console/duty", data={"csrf_token": "x"})).headers["location"] == "/console/login"


async def test_log_out_everywhere_ends_the_other_sessions_too(gateway: Gateway, amal: httpx.AsyncClient) -> None:
    async with browser(gateway, "198.51.100.20") as phone:
        assert (await login(phone, "amal@example.org")).status_code == 303
        on_phone = phone.cookies.get(COOKIE_NAME, path="/console")
        on_laptop = amal.cookies.get(COOKIE_NAME, path="/console")
        assert on_phone and on_laptop and await still_signed_in(gateway, on_phone)
        done = await amal.post("/console/logout-everywhere", data={"csrf_token": await csrf(amal)})
        assert done.status_code == 303 and done.headers["location"] == "/console/login?notice=logged_out_everywhere"
        assert not await still_signed_in(gateway, on_phone)
        assert not await still_signed_in(gateway, on_laptop)
        assert "every device" in (await phone.get(done.headers["location"])).text


async def test_a_password_change_or_deactivation_ends_every_session(gateway: Gateway,
                                                                     amal: httpx.AsyncClient) -> None:
    before = amal.cookies.get(COOKIE_NAME, path="/console")
    assert before and await still_signed_in(gateway, before)
    async with gateway.services.db.session() as s:
        await add_mentor(s, "amal@example.org", "a brand new password", "en")
    assert not await still_signed_in(gateway, before)

    assert (await login(amal, "amal@example.org", "a brand new password")).status_code == 303
    again = amal.cookies.get(COOKIE_NAME, path="/console")
    assert again and await still_signed_in(gateway, again)
    async with gateway.services.db.session() as s:
        assert await log_out_everywhere(s, "amal@example.org") == 1  # `sanad mentor logout`
    assert not await still_signed_in(gateway, again)

    assert (await login(amal, "amal@example.org", "a brand new password")).status_code == 303
    last = amal.cookies.get(COOKIE_NAME, path="/console")
    assert last and await still_signed_in(gateway, last)
    async with gateway.services.db.session() as s:
        await deactivate_mentor(s, "amal@example.org")  # `sanad mentor deactivate`
    assert not await still_signed_in(gateway, last)
    assert (await login(amal, "amal@example.org", "a brand new password")).status_code == 401


# --- item 10: no lock-out, growing delays per (account, address) ----------------------------

async def test_wrong_passwords_from_one_address_do_not_lock_the_mentor_out_elsewhere(gateway: Gateway) -> None:
    await mentor(gateway, "amal@example.org", "en")
    async with browser(gateway, "203.0.113.66") as attacker:
        statuses = [(await login(attacker, "amal@example.org", f"guess number {n}")).status_code for n in range(9)]
        # nine wrong passwords from one address: the mentor, elsewhere, still gets in
        async with browser(gateway, "192.0.2.10") as mentor_at_home:
            assert (await login(mentor_at_home, "amal@example.org")).status_code == 303
        # while that address waits, growing delays rather than a lock: five tries, then 429
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
        assert (await login(attacker, "amal@example.org")).status_code == 429
        # the attacker's forged header changes nothing: no proxy is trusted by default
        spoofed = await attacker.post("/console/login", headers={"X-Forwarded-For": "192.0.2.99"}, data={
            "email": "amal@example.org", "password": PASSWORD,
            "csrf_token": csrf_of_login((await attacker.get("/console/login")).text)})
        assert spoofed.status_code == 429


def csrf_of_login(html: str) -> str:
    from tests.test_console_web import csrf_of

    return csrf_of(html)


async def test_the_wait_grows_with_the_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attacker who retries the moment they may: 5 tries in the first minute, 10 in a quarter of an
    hour, 20 in an hour, 50 in a day (a clock of our own drives the `limits` storage)."""
    clock = types.SimpleNamespace(now=1_000_000.0)
    fake_time = types.SimpleNamespace(time=lambda: clock.now)
    monkeypatch.setattr(limits.aio.storage.memory, "time", fake_time)
    monkeypatch.setattr(bot.security.throttle, "time", fake_time)
    storage = MemoryStorage()
    start, tries, waits = clock.now, [], []
    while clock.now - start < 2 * 86400:
        if await LOGIN_PER_ACCOUNT_ADDRESS.allowed(storage, "k"):
            await LOGIN_PER_ACCOUNT_ADDRESS.hit(storage, "k")
            tries.append(clock.now - start)
            clock.now += 1.0
            continue
        wait_s = await LOGIN_PER_ACCOUNT_ADDRESS.retry_after_s(storage, "k")
        waits.append(wait_s)
        clock.now += wait_s + 0.01

    def within(seconds: float) -> int:
        return sum(1 for t in tries if t < seconds)

    assert (within(60), within(900), within(3600), within(86400)) == (5, 10, 20, 50)
    assert waits[0] <= 60 and max(waits) > 20 * 3600


# --- FORWARDED_ALLOW_IPS ----------------------------------------------------------------------

def scope(peer: str, forwarded: str | None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"type": "http", "client": (peer, 1234), "headers": headers}


def test_forwarded_for_is_trusted_only_from_configured_proxies() -> None:
    assert client_address(scope("10.0.0.5", "203.0.113.7"), ()) == "10.0.0.5"
    assert client_address(scope("10.0.0.5", "203.0.113.7"), ("10.0.0.0/8",)) == "203.0.113.7"
    # what the client wrote left of the proxy's entry is not believed
    assert client_address(scope("10.0.0.5", "192.0.2.1, 203.0.113.7"), ("10.0.0.0/8",)) == "203.0.113.7"
    # a chain of trusted proxies is walked back to the first untrusted hop
    assert client_address(scope("10.0.0.5", "203.0.113.7, 10.0.0.9"), ("10.0.0.0/8",)) == "203.0.113.7"
    assert client_address(scope("198.51.100.1", "203.0.113.7"), ("10.0.0.0/8",)) == "198.51.100.1"
    assert client_address(scope("10.0.0.5", "not-an-address"), ("10.0.0.0/8",)) == "10.0.0.5"
    assert client_address(scope("::1", "2001:db8::7"), ("::1",)) == "2001:db8::7"


def test_forwarded_allow_ips_are_validated(tmp_path: object) -> None:
    from pathlib import Path

    settings = make_settings(Path(str(tmp_path)), FORWARDED_ALLOW_IPS="10.0.0.0/8, 127.0.0.1")
    assert settings.forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.1")
    with pytest.raises(ValueError, match="not an address"):
        make_settings(Path(str(tmp_path)), FORWARDED_ALLOW_IPS="10.0.0.0/8,proxy.local")


async def test_login_throttle_keys_hold_no_address_or_email(gateway: Gateway) -> None:
    request = Request({"type": "http", "client": ("203.0.113.66", 1), "headers": [], "app": gateway.app})
    keys = login_keys(request, gateway.services.settings, "Amal@Example.org")
    assert "203.0.113" not in "".join(keys) and "amal" not in "".join(keys).lower()
    assert keys == login_keys(request, gateway.services.settings, "amal@example.org ")
