"""Posting one status event to one customer endpoint: where it may go, how it is signed.

Signatures follow Standard Webhooks: `webhook-id` (the event's id, the same on every retry,
so receivers can drop repeats), `webhook-timestamp` (seconds, the attempt's time on the
platform's clock) and `webhook-signature`: `v1,` and the base64 HMAC-SHA256, under the
endpoint's secret (`whsec_` and base64 of its bytes), of `id.timestamp.body`.

Destinations: a URL whose host is, or resolves to, a loopback, private, link-local or
otherwise non-public address is refused when it is registered and again at each post (a
name can change where it points), unless the operator allows private destinations
(PICASSE_WEBHOOKS_ALLOW_PRIVATE, for tests and private deployments). Redirects are not
followed: a redirect could point anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import socket
from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import msgspec

from picasse.domain.webhooks import SECRET_PREFIX, DestinationRefused, parse_webhook_url

POST_TIMEOUT_SECONDS = 10.0
USER_AGENT = "Picasse-Webhooks/1"


class StatusData(msgspec.Struct, frozen=True, omit_defaults=True):
    """What happened, by ids, status and time."""

    message_id: UUID
    occurred_at: datetime
    delivery_id: UUID | None = None
    status: str | None = None
    escalation_level: int | None = None


class Payload(msgspec.Struct, frozen=True):
    """The body of every post (Standard Webhooks' shape): never recipients or content."""

    type: str
    timestamp: datetime
    data: StatusData


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, at: datetime, body: bytes) -> dict[str, str]:
    timestamp = int(at.timestamp())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_destination(url: str, *, allow_private: bool) -> None:
    """DestinationRefused unless every address the URL's host resolves to is public."""
    url = parse_webhook_url(url)
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise DestinationRefused(
            f"url: the host {host!r} cannot be resolved", field="url"
        ) from None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(_is_public(address) for address in addresses):
        raise DestinationRefused(
            "url: the host is or resolves to a loopback, private or link-local address",
            field="url",
        )


class PostResult(msgspec.Struct, frozen=True):
    succeeded: bool
    status_code: int | None
    outcome: str  # delivered, failed (an answer other than 2xx), refused, unreachable, timed-out


async def post_event(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    webhook_id: str,
    body: bytes,
    *,
    at: datetime,
    allow_private: bool,
) -> PostResult:
    """One attempt; never raises for what the endpoint (or the network) does."""
    try:
        await check_destination(url, allow_private=allow_private)
    except DestinationRefused:
        return PostResult(succeeded=False, status_code=None, outcome="refused")
    try:
        response = await client.post(
            url,
            content=body,
            headers=signed_headers(secret, webhook_id, at, body),
            timeout=POST_TIMEOUT_SECONDS,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        return PostResult(succeeded=False, status_code=None, outcome="timed-out")
    except httpx.HTTPError:
        return PostResult(succeeded=False, status_code=None, outcome="unreachable")
    ok = 200 <= response.status_code < 300
    return PostResult(
        succeeded=ok, status_code=response.status_code, outcome="delivered" if ok else "failed"
    )
