"""Who is on the other end of a request: the one place that computes the client's address.

A forwarded header (`Forwarded`, RFC 7239, else `X-Forwarded-For`) is anyone's to write,
so it is believed only when the peer that sent it is a proxy the operator named in
`PICASSE_TRUSTED_PROXIES` (none by default). Then the chain is read from the right, past
every trusted proxy, to the first address no trusted proxy stands for: what a client
writes further left is its own claim and is not believed.

`ClientAddressMiddleware` puts the result into the ASGI scope's `client`, so the login
throttle, the traffic record and everything else that asks `client_address` see the same
address. uvicorn's own proxy-header handling is off (`proxy_headers=False`): it would
believe X-Forwarded-For from 127.0.0.1 by default, which every local process can send.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from litestar.connection import ASGIConnection
from litestar.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"


def networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """The settings' `trusted_proxies` (written-out networks) as networks."""
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The client's address as `ClientAddressMiddleware` settled it."""
    client = connection.scope.get("client")
    return str(client[0]) if client else UNKNOWN


def resolve(peer: str, headers: Iterable[tuple[bytes, bytes]], trusted: Sequence[Network]) -> str:
    """The client's address, given the TCP peer's and the request's headers."""
    if not _is_trusted(peer, trusted):
        return peer
    hops = _forwarded_for(headers)
    address = peer
    for hop in reversed(hops):
        if _ip(hop) is None:
            break  # "unknown", an obfuscated name, garbage: the last proxy is all we know
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address


class ClientAddressMiddleware:
    """Outermost: settles `scope["client"]` once, before anything reads it."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            peer = str(client[0]) if client else UNKNOWN
            address = resolve(peer, scope.get("headers", ()), self.trusted)
            if address != peer:
                scope["client"] = (address, 0)
        await self.app(scope, receive, send)


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """The hops, nearest last: from `Forwarded` if the request has one, else X-Forwarded-For."""
    forwarded: list[str] = []
    x_forwarded_for: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"forwarded":
            forwarded += _rfc7239_for(value.decode("latin-1"))
        elif lower == b"x-forwarded-for":
            x_forwarded_for += [hop.strip() for hop in value.decode("latin-1").split(",")]
    return forwarded or x_forwarded_for


def _rfc7239_for(value: str) -> list[str]:
    """The `for=` of each element: `for=192.0.2.1;proto=https, for="[2001:db8::1]:4711"`."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, token = pair.strip().partition("=")
            if name.strip().lower() == "for":
                hops.append(_without_port(token.strip().strip('"')))
    return hops


def _without_port(node: str) -> str:
    if node.startswith("["):  # [v6]:port
        return node[1:].partition("]")[0]
    if node.count(":") == 1:  # v4:port
        return node.partition(":")[0]
    return node


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    ip = _ip(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in trusted)
