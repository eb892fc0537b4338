"""SMS through an HTTP gateway speaking our gateway protocol, with failover to a second one.

The gateway protocol (ours; the voice and receipt modules speak the rest of it):

- Submit: ``POST {base_url}/messages`` with ``Authorization: Bearer {token}`` and the
  JSON object ``{"to": "+316…", "body": "…", "reference": "<our reference>",
  "callback_url": "<our receipt webhook URL>"}``.
- 200, 201 or 202 with ``{"id": "<gateway id>"}``: the gateway took the message; the
  outcome arrives later as a signed receipt (see ``receipts``), so ``Sent.final`` is False.
- 400, 404, 422: the gateway refused this message for good → ``PermanentFailure``:
  404 is ``invalid-recipient``; for 400 and 422 the gateway's ``{"error": "…"}`` text is
  read for a reason code (``reason_from_words``), else ``rejected-by-gateway``. The text
  itself is dropped: it quotes numbers and bodies.
- 401, 403: ``PermanentFailure`` ``credentials-refused`` (``RefusedCredentials``).
- 429 → ``TemporaryFailure`` ``throttled``; 5xx and any other status ``provider-unavailable``;
  timeouts ``timed-out``; connection errors ``unreachable``.

A delivery may reach a gateway twice (a timeout after the gateway took it, then a
retry or the failover); ``reference`` is stable across attempts so a gateway can
drop the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

import httpx
import msgspec

from picasse.adapters.providers import (
    Delivery,
    PermanentFailure,
    Provider,
    Sent,
    TemporaryFailure,
)
from picasse.domain.messages import FailureReason

log = logging.getLogger(__name__)

ACCEPTED = frozenset({200, 201, 202})
REFUSED_MESSAGE = frozenset({400, 404, 422})
REFUSED_CREDENTIALS = frozenset({401, 403})


class RefusedCredentials(PermanentFailure):
    """The gateway refused our token: nothing about the message, so another gateway may take it."""

    def __init__(self) -> None:
        super().__init__(FailureReason.CREDENTIALS_REFUSED)


class SmsSubmission(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    body: str
    reference: str
    callback_url: str


class GatewayAccepted(msgspec.Struct, frozen=True):
    id: str


class GatewayRefusal(msgspec.Struct, frozen=True):
    error: str


# What a gateway's words may say, most specific first: the first that matches names the
# reason code. The words themselves are dropped once read (they quote numbers and bodies).
_WORDS: tuple[tuple[re.Pattern[str], FailureReason], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (
            r"mailbox\W+full|quota|over\W*capacity|memory\W+(?:full|exceeded)",
            FailureReason.MAILBOX_FULL,
        ),
        (
            r"invalid|unknown\W+(?:subscriber|number|recipient|user)|no\W+such|not\W+exist"
            r"|unallocated|landline|not\W+(?:a\W+)?mobile|bad\W+number|unassigned",
            FailureReason.INVALID_RECIPIENT,
        ),
        (
            r"absent|unreachable|not\W+reachable|switched\W+off|\boff\b|out\W+of\W+(?:coverage|range)"
            r"|roaming",
            FailureReason.RECIPIENT_UNREACHABLE,
        ),
        (r"expired|time\W*out|timed\W+out|validity", FailureReason.TIMED_OUT),
        (r"throttl|rate\W+limit|too\W+many", FailureReason.THROTTLED),
        (r"spam|content|filtered|body", FailureReason.CONTENT_REFUSED),
        (r"sender|originator", FailureReason.SENDER_REFUSED),
        (r"\bbusy\b", FailureReason.BUSY),
        (r"no\W+answer|not\W+answered", FailureReason.NO_ANSWER),
        (
            r"block|barred|reject|refus|blacklist|denied|forbidden",
            FailureReason.REJECTED_BY_GATEWAY,
        ),
    )
)
_READ_AT_MOST = 1000  # characters of a gateway's words worth reading


def reason_from_words(text: str) -> FailureReason | None:
    """The reason code a gateway's words name, or None when they name none we know.

    Only the code leaves this function: the words are neither returned nor logged.
    """
    text = text[:_READ_AT_MOST]
    for pattern, reason in _WORDS:
        if pattern.search(text):
            return reason
    return None


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

    async def submit(self, path: str, submission: msgspec.Struct) -> str | None:
        """Hands one submission over; returns the gateway's id, or raises a DeliveryError."""
        try:
            response = await self._client.post(
                self.base_url + path,
                content=msgspec.json.encode(submission),
                headers=self._headers,
                timeout=self._timeout,
            )
        except httpx.TimeoutException:
            raise TemporaryFailure(FailureReason.TIMED_OUT) from None
        except httpx.RequestError:
            raise TemporaryFailure(FailureReason.UNREACHABLE) from None
        status = response.status_code
        if status in ACCEPTED:
            return self._gateway_id(response)
        if status in REFUSED_CREDENTIALS:
            raise RefusedCredentials()
        if status in REFUSED_MESSAGE:
            raise PermanentFailure(_refusal(response))
        if status == 429:
            raise TemporaryFailure(FailureReason.THROTTLED)
        # 5xx, and statuses the protocol does not name: retrying later cannot lose the
        # message, while calling it permanent could drop one the gateway would take.
        raise TemporaryFailure(FailureReason.PROVIDER_UNAVAILABLE)

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


def _refusal(response: httpx.Response) -> FailureReason:
    """Why the gateway refused a message for good: 404 is no such recipient; otherwise
    what its `error` names, read and dropped, or just "refused"."""
    if response.status_code == 404:
        return FailureReason.INVALID_RECIPIENT
    try:
        error = msgspec.json.decode(response.content, type=GatewayRefusal).error
    except msgspec.DecodeError:
        return FailureReason.REJECTED_BY_GATEWAY
    return reason_from_words(error) or FailureReason.REJECTED_BY_GATEWAY


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
        gateway_id = await self._gateway.submit("/messages", submission)
        return Sent(provider=self.name, provider_reference=gateway_id, final=False)


class FailoverSms:
    """Providers of any kind (an SMPP session, Twilio, our HTTP gateway…) in order: each
    takes a message the ones before it cannot take now.

    A message a provider refused stays refused: a bad number is bad everywhere, and
    trying elsewhere would only pay twice for the same answer. Refused credentials are
    the exception, since they say nothing about the message. Used for voice as well.
    """

    def __init__(self, *providers: Provider, name: str = "sms") -> None:
        if len(providers) < 2:
            raise ValueError("a failover needs two providers or more")
        self.name = name
        self.providers = providers

    def __repr__(self) -> str:
        return f"FailoverSms(providers={self.providers!r})"

    async def send(self, delivery: Delivery) -> Sent:
        failures: list[str] = []
        *before_last, last = self.providers
        for provider in before_last:
            try:
                return await provider.send(delivery)
            except (TemporaryFailure, RefusedCredentials) as failure:
                failures.append(f"{provider.name}: {failure.reason}")
        try:
            return await last.send(delivery)
        except TemporaryFailure as last_failure:
            log.warning("%s; %s: %s", "; ".join(failures), last.name, last_failure.reason)
            raise TemporaryFailure(last_failure.reason) from last_failure

    def start(self) -> None:
        start_session(*self.providers)

    async def close(self) -> None:
        results = await asyncio.gather(
            *(provider.close() for provider in self.providers), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def start_session(*providers: Provider) -> None:
    """Starts the session of each provider that keeps one (it has a `start`, as SMPP's
    has) without waiting for a message to send; the others need nothing started."""
    for provider in providers:
        start = getattr(provider, "start", None)
        if start is not None:
            start()


def in_order(providers: Sequence[Provider], *, name: str) -> Provider | None:
    """One provider for a channel from those configured, in failover order."""
    if not providers:
        return None
    if len(providers) == 1:
        return providers[0]
    return FailoverSms(*providers, name=name)


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
