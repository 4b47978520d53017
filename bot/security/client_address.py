"""The address a request came from, trusting `X-Forwarded-For` only from the configured proxies.

`FORWARDED_ALLOW_IPS` lists the proxies (addresses or networks; `*` trusts any peer, only for
a gateway no one can reach but its proxy). By default nothing is trusted: the header is
ignored and the peer's own address counts, so a client cannot pick its address to dodge a
limit. Behind trusted proxies the client is the right-most hop that is not a trusted proxy
(every proxy appends the address it saw; hops further left are whatever the client wrote).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from starlette.types import Scope

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def _networks(allowed: tuple[str, ...]) -> tuple[bool, tuple[IpNetwork, ...]]:
    """(trust every peer, the trusted networks) of a FORWARDED_ALLOW_IPS value."""
    return "*" in allowed, tuple(ipaddress.ip_network(entry, strict=False) for entry in allowed if entry != "*")


def _trusted(address: str, allowed: tuple[str, ...]) -> bool:
    any_peer, networks = _networks(allowed)
    if any_peer:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _hops(values: Iterable[str]) -> list[str]:
    hops: list[str] = []
    for value in values:
        hops.extend(part.strip() for part in value.split(",") if part.strip())
    return hops


def client_address(scope: Scope, allowed: tuple[str, ...]) -> str:
    """The client's address for limits and logs (see the module doc)."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not allowed or not _trusted(peer, allowed):
        return peer
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers", [])
                 if name.lower() == b"x-forwarded-for"]
    address = peer
    for hop in reversed(_hops(forwarded)):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage in the header: keep the last address a trusted hop vouched for
        address = hop
        if not _trusted(hop, allowed):
            break
    return address
