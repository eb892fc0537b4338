"""SMS through an HTTP gateway speaking our gateway protocol, with failover to a second one.

The gateway protocol (ours; the voice and receipt modules speak the rest of it):

- Submit: ``POST {base_url}/messages`` with ``Authorization: Bearer {token}`` and the
  JSON object ``{"to": "+316…", "body": "…", "reference": "<our reference>",
  "callback_url": "<our receipt webhook URL>"}``.
- 200, 201 or 202 with ``{"id": "<gateway id>"}``: the gateway took the message; the
  outcome arrives later as a signed receipt (see ``receipts``), so ``Sent.final`` is False.
- 400, 404, 422: the gateway refused this message for good → ``PermanentFailure``,
  whose reason is the gateway's ``{"error": "…"}`` text, truncated and stripped of the
  number and the body.
- 401, 403: ``PermanentFailure`` "gateway refused our credentials" (``RefusedCredentials``).
- 429, 5xx, any other status, timeouts and connection errors → ``TemporaryFailure``.

A delivery may reach a gateway twice (a timeout after the gateway took it, then a
retry or the failover); ``reference`` is stable across attempts so a gateway can
drop the repeat.
"""

from __future__ import annotations

import difflib
import logging
import re

import httpx
import msgspec

from picasse.adapters.providers import (
    Delivery,
    PermanentFailure,
    Provider,
    Sent,
    TemporaryFailure,
)

log = logging.getLogger(__name__)

ACCEPTED = frozenset({200, 201, 202})
REFUSED_MESSAGE = frozenset({400, 404, 422})
REFUSED_CREDENTIALS = frozenset({401, 403})

REASON_LIMIT = 80
# Gateways quote the number back in many spellings ("+31 6 1234 5678", "0612345678"),
# so any run of five or more digits with separators is treated as a number.
_NUMBER_LIKE = re.compile(r"\+?\d[\d\s().\-/]{3,}\d")
# A shorter common run between an error and the body is too likely to be chance
# ("the", "sms"); a longer one is content the gateway quoted.
_SHORTEST_QUOTED_FRAGMENT = 6


class RefusedCredentials(PermanentFailure):
    """The gateway refused our token: nothing about the message, so another gateway may take it."""


class SmsSubmission(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    body: str
    reference: str
    callback_url: str


class GatewayAccepted(msgspec.Struct, frozen=True):
    id: str


class GatewayRefusal(msgspec.Struct, frozen=True):
    error: str


def gateway_reason(text: str, *, secrets: tuple[str, ...] = ()) -> str:
    """A gateway's words made fit for an event or a log line: no number, no content, short.

    Reasons are stored unsealed in delivery events, so whatever a gateway quotes back
    (the recipient, the message) is cut out here, erring towards cutting too much.
    """
    text = text[: REASON_LIMIT * 8]
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "…")
        for fragment in _shared_fragments(text, secret):
            text = text.replace(fragment, "…")
    text = _NUMBER_LIKE.sub("[number]", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text[:REASON_LIMIT]


def _shared_fragments(text: str, secret: str) -> list[str]:
    """Stretches of `secret` that appear in `text` (a gateway quoting part of a message)."""
    fragments: list[str] = []
    rest = text
    while rest:
        match = difflib.SequenceMatcher(None, rest, secret, autojunk=False).find_longest_match()
        if match.size < _SHORTEST_QUOTED_FRAGMENT:
            break
        fragments.append(rest[match.a : match.a + match.size])
        rest = rest[: match.a] + "\0" + rest[match.a + match.size :]
    return fragments


class GatewayClient:
    """The HTTP half of the gateway protocol, shared by the SMS and voice providers."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._timeout = httpx.Timeout(timeout)
        # A client handed in belongs to the caller, who may share it: we only close our own.
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    def __repr__(self) -> str:  # the token stays out of every log line
        return f"GatewayClient(base_url={self.base_url!r})"

    async def submit(self, path: str, submission: msgspec.Struct, delivery: Delivery) -> str | None:
        """Hands one submission over; returns the gateway's id, or raises a DeliveryError."""
        try:
            response = await self._client.post(
                self.base_url + path,
                content=msgspec.json.encode(submission),
                headers=self._headers,
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise TemporaryFailure("gateway timed out") from exc
        except httpx.RequestError as exc:
            raise TemporaryFailure("gateway unreachable") from exc
        status = response.status_code
        if status in ACCEPTED:
            return self._gateway_id(response)
        if status in REFUSED_CREDENTIALS:
            raise RefusedCredentials("gateway refused our credentials")
        if status in REFUSED_MESSAGE:
            raise PermanentFailure(_refusal(response, delivery))
        if status == 429:
            raise TemporaryFailure("gateway busy (HTTP 429)")
        # 5xx, and statuses the protocol does not name: retrying later cannot lose the
        # message, while calling it permanent could drop one the gateway would take.
        raise TemporaryFailure(f"gateway unavailable (HTTP {status})")

    def _gateway_id(self, response: httpx.Response) -> str | None:
        try:
            return msgspec.json.decode(response.content, type=GatewayAccepted).id
        except msgspec.DecodeError:
            # The gateway said it took the message: sending it again would reach the
            # person twice. The receipt still carries our reference to match it by.
            log.warning("gateway %s accepted a message without a readable id", self.base_url)
            return None

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _refusal(response: httpx.Response, delivery: Delivery) -> str:
    status = response.status_code
    try:
        error = msgspec.json.decode(response.content, type=GatewayRefusal).error
    except msgspec.DecodeError:
        return f"gateway refused the message (HTTP {status})"
    reason = gateway_reason(error, secrets=(delivery.to, delivery.to.lstrip("+"), delivery.body))
    return f"gateway refused the message (HTTP {status}): {reason}"


class HttpGateway:
    """What the SMS and voice gateways share: a name, a callback URL, an HTTP client."""

    def __init__(
        self,
        name: str,
        base_url: str,
        token: str,
        *,
        callback_url: str,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.callback_url = callback_url
        self._gateway = GatewayClient(base_url, token, timeout=timeout, client=client)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self._gateway.base_url!r})"

    async def close(self) -> None:
        await self._gateway.close()


class HttpSmsGateway(HttpGateway):
    """One SMS gateway; `name` ("sms-primary", "sms-failover") is what `Sent.provider` says."""

    async def send(self, delivery: Delivery) -> Sent:
        submission = SmsSubmission(
            to=delivery.to,
            body=delivery.body,
            reference=delivery.reference,
            callback_url=self.callback_url,
        )
        gateway_id = await self._gateway.submit("/messages", submission, delivery)
        return Sent(provider=self.name, provider_reference=gateway_id, final=False)


class FailoverSms:
    """The primary gateway, and the failover when the primary cannot take a message now.

    A message the primary refused stays refused: a bad number is bad everywhere, and
    trying elsewhere would only pay twice for the same answer. Refused credentials are
    the exception, since they say nothing about the message.
    """

    def __init__(self, primary: Provider, failover: Provider, *, name: str = "sms") -> None:
        self.name = name
        self.primary = primary
        self.failover = failover

    def __repr__(self) -> str:
        return f"FailoverSms(primary={self.primary!r}, failover={self.failover!r})"

    async def send(self, delivery: Delivery) -> Sent:
        try:
            return await self.primary.send(delivery)
        except (TemporaryFailure, RefusedCredentials) as primary_failure:
            first = primary_failure
        try:
            return await self.failover.send(delivery)
        except TemporaryFailure as failover_failure:
            raise TemporaryFailure(
                f"{self.primary.name}: {first}; {self.failover.name}: {failover_failure}"
            ) from failover_failure

    async def close(self) -> None:
        try:
            await self.primary.close()
        finally:
            await self.failover.close()


def sms_from_settings(
    gateway_url: str | None,
    token: str | None,
    failover_url: str | None,
    failover_token: str | None,
    callback_url: str | None,
    *,
    timeout: float = 5.0,
) -> Provider | None:
    """The SMS provider the settings describe, or None when no gateway is configured."""
    if not gateway_url:
        if failover_url:
            raise ValueError("an SMS failover gateway is configured without a primary one")
        return None
    if not token:
        raise ValueError("the SMS gateway needs a token")
    if not callback_url:
        raise ValueError("the SMS gateway needs the URL of our receipt webhook")
    primary = HttpSmsGateway(
        "sms-primary", gateway_url, token, callback_url=callback_url, timeout=timeout
    )
    if not failover_url:
        return primary
    if not failover_token:
        raise ValueError("the SMS failover gateway needs a token")
    failover = HttpSmsGateway(
        "sms-failover", failover_url, failover_token, callback_url=callback_url, timeout=timeout
    )
    return FailoverSms(primary, failover)
