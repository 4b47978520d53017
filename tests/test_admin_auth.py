"""Issue 11, items 6 and 11: `/metrics` answers only a scraper with METRICS_TOKEN; every admin endpoint
checks its bearer token with one constant-time helper, with case and spaces handled the same."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Route

from bot.security.bearer import bearer_of, token_matches
from tests.conftest import Gateway

TOKEN = "admin-secret-token"
# (method, path, JSON body) of every admin endpoint on the gateway today
ADMIN_ENDPOINTS = [
    ("POST", "/api/link-tokens", {"learner_id": "L1001"}),
    ("GET", "/api/broadcasts", None),
    ("POST", "/api/broadcasts", {"texts": {"en": "Hello"}}),
    ("POST", "/api/broadcasts/preview", {}),
    ("GET", "/api/broadcasts/1", None),
    ("POST", "/api/broadcasts/1/cancel", None),
]
ACCEPTED = [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer   {TOKEN}  ", f"Bearer\t{TOKEN}"]
REFUSED: list[str | bytes | None] = [
    None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", "Bearer ",
    f"Bearer {TOKEN.upper()}", "Bearer é-not-ascii-ü".encode("latin-1"), f"Token {TOKEN}", f"Bearer {TOKEN} {TOKEN}",
]


async def call(gw: Gateway, method: str, path: str, body: object, authorization: str | bytes | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return await gw.client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ENDPOINTS)
async def test_every_admin_endpoint_reads_the_bearer_the_same_way(
    gateway: Gateway, method: str, path: str, body: object
) -> None:
    assert (await call(gateway, method, path, body, f"Bearer {TOKEN}")).status_code == 404  # admin API off
    gateway.services.settings = gateway.services.settings.replace(admin_api_token=TOKEN)
    for authorization in ACCEPTED:
        response = await call(gateway, method, path, body, authorization)
        assert response.status_code not in (401, 403, 500), (authorization, response.status_code)
    for authorization in REFUSED:
        response = await call(gateway, method, path, body, authorization)
        assert response.status_code == 401, (authorization, response.status_code)
        assert response.headers["www-authenticate"] == "Bearer"


async def test_no_admin_route_is_left_unprotected(gateway: Gateway) -> None:
    """Every `/api/…` route of the app (analytics and later ones too) refuses a request without the token."""
    gateway.services.settings = gateway.services.settings.replace(admin_api_token=TOKEN)
    api_routes = [r for r in gateway.app.routes if isinstance(r, Route) and r.path.startswith("/api/")]
    assert len(api_routes) >= 5
    for route in api_routes:
        path = route.path.replace("{broadcast_id:int}", "1").replace("{", "").replace("}", "")
        for method in sorted((route.methods or set()) - {"HEAD"}):
            response = await gateway.client.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert response.status_code == 401, (method, path, response.status_code)


def test_the_bearer_helper() -> None:
    assert bearer_of("Bearer  abc ") == "abc" and bearer_of("bearer\tabc") == "abc"
    assert bearer_of("bEaReR abc") == "abc" and bearer_of("Basic abc") is None and bearer_of(None) is None
    assert token_matches("abc", "abc") and not token_matches("abd", "abc") and not token_matches(None, "abc")
    assert not token_matches("\udcff", "abc")  # a lone surrogate is compared, never raised on
    assert not token_matches("abc", "")


async def test_metrics_are_off_without_a_token_and_need_it_when_set(gateway: Gateway) -> None:
    assert (await gateway.client.get("/metrics")).status_code == 404
    gateway.services.settings = gateway.services.settings.replace(metrics_token="scrape-me")
    assert (await gateway.client.get("/metrics")).status_code == 401
    assert (await gateway.client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    # the admin token is not the metrics token
    gateway.services.settings = gateway.services.settings.replace(admin_api_token=TOKEN)
    assert (await gateway.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 401
    scraped = await gateway.client.get("/metrics", headers={"Authorization": "bearer  scrape-me"})
    assert scraped.status_code == 200 and "sanad_webhook_seconds" in scraped.text
