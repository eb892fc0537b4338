"""SMS and voice through Twilio's REST API (and the providers that copy it).

- SMS: ``POST {base}/2010-04-01/Accounts/{sid}/Messages.json``, form-encoded ``To``,
  ``From`` (or ``MessagingServiceSid`` when our sender is a messaging service, "MG…"),
  ``Body`` and ``StatusCallback``; HTTP basic auth with the account SID and auth token.
- Voice: ``POST …/Calls.json`` with ``To``, ``From``, ``StatusCallback`` and inline
  ``Twiml``: the text in ``<Say>``; for an alert asking for acknowledgement, inside a
  ``<Gather numDigits="1">`` whose ``action`` is our keypad route. Pressing 1
  acknowledges the alert.
- 200/201 with ``{"sid": …}``: Twilio took it; its outcome arrives at ``StatusCallback``
  (``Sent.final`` is False). Error answers carry ``{"code": <Twilio error code>, …}``:
  the code is mapped to a `FailureReason`; the ``message`` (which may quote the number)
  is never read.

Our reference (the delivery id) rides in the callback URLs' query, so a callback names
its delivery; Twilio signs the full URL with the form (``X-Twilio-Signature``), checked
with the Twilio SDK's `RequestValidator` (`TwilioCallbacks.verify`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import httpx
import msgspec
from twilio.request_validator import RequestValidator

from picasse.adapters.providers import (
    Delivery,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from picasse.adapters.providers.receipts import ReceiptRejected
from picasse.adapters.providers.sms import RefusedCredentials
from picasse.domain.messages import FailureReason

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"
SIGNATURE_HEADER = "X-Twilio-Signature"
# Where Twilio calls us: status callbacks of messages and calls, and the keypad's answer.
STATUS_PATH = "/v1/webhooks/twilio/status"
GATHER_PATH = "/v1/webhooks/twilio/gather"
PROVIDER_NAME = "twilio"  # what `Sent.provider` says; a callback must come for this name
ACK_DIGIT = "1"

# Twilio's REST error codes (https://www.twilio.com/docs/api/errors) and the codes of its
# status callbacks' ErrorCode, as our reason codes. Codes not named here fall back on
# the HTTP status (REST) or `unknown` (callbacks).
_ERROR_CODES: dict[int, FailureReason] = {
    20003: FailureReason.CREDENTIALS_REFUSED,  # authentication failed
    20429: FailureReason.THROTTLED,  # too many requests
    21211: FailureReason.INVALID_RECIPIENT,  # invalid 'To' number
    21217: FailureReason.INVALID_RECIPIENT,  # phone number does not appear to be valid
    21614: FailureReason.INVALID_RECIPIENT,  # 'To' is not a mobile number
    21214: FailureReason.RECIPIENT_UNREACHABLE,  # 'To' cannot be reached
    21408: FailureReason.REJECTED_BY_GATEWAY,  # no permission for the region
    21610: FailureReason.REJECTED_BY_GATEWAY,  # the recipient unsubscribed (STOP)
    21612: FailureReason.REJECTED_BY_GATEWAY,  # cannot route to this number
    21210: FailureReason.SENDER_REFUSED,  # 'From' not verified
    21212: FailureReason.SENDER_REFUSED,  # invalid 'From'
    21606: FailureReason.SENDER_REFUSED,  # 'From' is not a valid sender for this account
    21659: FailureReason.SENDER_REFUSED,  # 'From' is not a Twilio number
    21602: FailureReason.CONTENT_REFUSED,  # body required
    21617: FailureReason.CONTENT_REFUSED,  # body too long
    30001: FailureReason.THROTTLED,  # queue overflow
    30002: FailureReason.CREDENTIALS_REFUSED,  # account suspended
    30003: FailureReason.RECIPIENT_UNREACHABLE,  # unreachable handset
    30004: FailureReason.REJECTED_BY_GATEWAY,  # message blocked
    30005: FailureReason.INVALID_RECIPIENT,  # unknown destination handset
    30006: FailureReason.INVALID_RECIPIENT,  # landline or unreachable carrier
    30007: FailureReason.CONTENT_REFUSED,  # carrier filtering
    30008: FailureReason.UNKNOWN,  # unknown error
    30032: FailureReason.SENDER_REFUSED,  # toll-free number not verified
    30034: FailureReason.SENDER_REFUSED,  # unregistered 10DLC sender
}


def reason_of_code(code: int | str | None) -> FailureReason | None:
    """The reason code a Twilio error code names, or None for one we do not know."""
    if code is None:
        return None
    try:
        return _ERROR_CODES.get(int(code))
    except ValueError:  # "" or not a number
        return None


class TwilioAccepted(msgspec.Struct, frozen=True):
    sid: str


class TwilioError(msgspec.Struct, frozen=True):
    code: int | None = None  # the message is not read: it may quote the number


class TwilioClient:
    """The REST half: one account, form posts under basic auth, answers as reason codes."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.base_url = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._timeout = httpx.Timeout(timeout)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    def __repr__(self) -> str:  # the auth token stays out of every log line
        return f"TwilioClient(base_url={self.base_url!r}, account_sid={self.account_sid!r})"

    async def create(self, resource: str, form: Mapping[str, str]) -> str:
        """POSTs a Messages or Calls resource; returns its SID or raises a DeliveryError."""
        url = f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/{resource}.json"
        try:
            response = await self._client.post(
                url, data=dict(form), auth=self._auth, timeout=self._timeout
            )
        except httpx.TimeoutException:
            raise TemporaryFailure(FailureReason.TIMED_OUT) from None
        except httpx.RequestError:
            raise TemporaryFailure(FailureReason.UNREACHABLE) from None
        status = response.status_code
        if status in (200, 201):
            try:
                return msgspec.json.decode(response.content, type=TwilioAccepted).sid
            except msgspec.DecodeError:
                # Taken, but without a SID no callback can ever be bound to it: calling it
                # sent would leave the delivery waiting for ever; it is the provider's fault.
                log.warning("%s answered %s without a readable sid", self.base_url, status)
                raise TemporaryFailure(FailureReason.PROVIDER_ERROR) from None
        named = _error_code(response)
        if status in (401, 403) or named is FailureReason.CREDENTIALS_REFUSED:
            raise RefusedCredentials()
        if status == 429 or named is FailureReason.THROTTLED:
            raise TemporaryFailure(FailureReason.THROTTLED)
        if 400 <= status < 500:
            raise PermanentFailure(named or FailureReason.REJECTED_BY_GATEWAY)
        raise TemporaryFailure(FailureReason.PROVIDER_UNAVAILABLE)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _error_code(response: httpx.Response) -> FailureReason | None:
    try:
        return reason_of_code(msgspec.json.decode(response.content, type=TwilioError).code)
    except msgspec.DecodeError:
        return None


def callback_url(public_url: str, path: str, reference: str) -> str:
    """Our URL Twilio calls back for one delivery: its reference in the query."""
    return f"{public_url.rstrip('/')}{path}?{urlencode({'reference': reference})}"


class TwilioProvider:
    """What Twilio's SMS and voice share: the account, our sender, our public URL."""

    def __init__(
        self,
        client: TwilioClient,
        *,
        sender: str,
        public_url: str,
        name: str = PROVIDER_NAME,
    ) -> None:
        self.name = name
        self.client = client
        self.sender = sender
        self.public_url = public_url.rstrip("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, client={self.client!r})"

    def _from(self) -> dict[str, str]:
        if self.sender.startswith("MG"):
            return {"MessagingServiceSid": self.sender}
        return {"From": self.sender}

    async def close(self) -> None:
        await self.client.close()


class TwilioSms(TwilioProvider):
    async def send(self, delivery: Delivery) -> Sent:
        form = {
            "To": delivery.to,
            **self._from(),
            "Body": delivery.body,
            "StatusCallback": callback_url(self.public_url, STATUS_PATH, delivery.reference),
        }
        sid = await self.client.create("Messages", form)
        return Sent(provider=self.name, provider_reference=sid, final=False)


def call_twiml(text: str, gather_url: str | None) -> str:
    """The call's script: say the alert; for an alert asking for acknowledgement
    (`gather_url`), then ask for 1 to acknowledge it."""
    said = f"<Say>{xml_escape(text)}</Say>"
    if gather_url is None:
        return f"<Response>{said}</Response>"
    return (
        "<Response>"
        f'<Gather numDigits="1" method="POST" action={quoteattr(gather_url)}>'
        f"{said}<Say>Press 1 to acknowledge this alert.</Say>"
        "</Gather>"
        "<Say>Nothing was pressed: the alert is not acknowledged. Goodbye.</Say>"
        "</Response>"
    )


class TwilioVoice(TwilioProvider):
    async def send(self, delivery: Delivery) -> Sent:
        gather_url = (
            callback_url(self.public_url, GATHER_PATH, delivery.reference)
            if delivery.acknowledgeable
            else None
        )
        form = {
            "To": delivery.to,
            "From": self.sender,
            "Twiml": call_twiml(delivery.body, gather_url),
            "StatusCallback": callback_url(self.public_url, STATUS_PATH, delivery.reference),
        }
        sid = await self.client.create("Calls", form)
        return Sent(provider=self.name, provider_reference=sid, final=False)


# --- callbacks -------------------------------------------------------------------------


class ForgedCallback(ReceiptRejected):
    """The X-Twilio-Signature is missing or not made with our auth token over this request."""


class MalformedCallback(ReceiptRejected):
    """Signed by Twilio, but not a callback we can read (no SID or no status)."""


# What a callback's status says. None: not final yet (queued, sent, ringing…): nothing
# to record. Otherwise (delivered?, reason when not).
_DELIVERED = frozenset({"delivered", "read", "completed"})
_FAILED = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled"})


class TwilioCallback(msgspec.Struct, frozen=True, kw_only=True):
    """A verified status callback as we keep it: Twilio's words replaced by a reason code."""

    sid: str  # the MessageSid or CallSid
    final: bool  # False: an interim status (queued, sent, ringing…): nothing to record
    failure: FailureReason | None  # None when final: delivered or answered
    call_seconds: int | None = None  # a completed call's CallDuration: what is billed


def callback_failure(status: str, error_code: str | None) -> FailureReason:
    if status == "busy":
        return FailureReason.BUSY
    if status == "no-answer":
        return FailureReason.NO_ANSWER
    return reason_of_code(error_code) or FailureReason.UNKNOWN


class TwilioCallbacks:
    """Checks that Twilio signed a request to us, with the SDK's RequestValidator."""

    def __init__(self, auth_token: str, public_url: str) -> None:
        self._validator = RequestValidator(auth_token)
        self.public_url = public_url.rstrip("/")

    def __repr__(self) -> str:  # the auth token stays out of every log line
        return f"TwilioCallbacks(public_url={self.public_url!r})"

    def verify(self, path: str, query: str, body: bytes, signature: str | None) -> dict[str, str]:
        """The form of a request Twilio signed for our public URL (path and query as
        requested); ForgedCallback otherwise."""
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        url = f"{self.public_url}{path}" + (f"?{query}" if query else "")
        if not signature or not self._validator.validate(url, form, signature):
            raise ForgedCallback("callback not signed with our Twilio auth token")
        return form

    def status(self, path: str, query: str, body: bytes, signature: str | None) -> TwilioCallback:
        """A status callback of a message or a call, verified and read."""
        form = self.verify(path, query, body, signature)
        sid = form.get("MessageSid") or form.get("CallSid")
        status = form.get("MessageStatus") or form.get("CallStatus")
        if not sid or not status:
            raise MalformedCallback("a Twilio status callback without a SID or a status")
        if status in _DELIVERED:
            duration = form.get("CallDuration", "")
            seconds = int(duration) if duration.isascii() and duration.isdigit() else None
            return TwilioCallback(sid=sid, final=True, failure=None, call_seconds=seconds)
        if status in _FAILED:
            failure = callback_failure(status, form.get("ErrorCode"))
            return TwilioCallback(sid=sid, final=True, failure=failure)
        return TwilioCallback(sid=sid, final=False, failure=None)
