"""Delivery providers: how one delivery reaches a phone or an inbox.

A provider gets a `Delivery` (held in memory only, never logged or stored) and
either returns a `Sent` or raises `TemporaryFailure` (worth retrying, perhaps on a
failover) or `PermanentFailure` (retrying cannot help: the number or address is bad),
each holding a `FailureReason` code and nothing of the provider's own words.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

import msgspec

from picasse.domain.messages import FailureReason

ChannelName = Literal["sms", "email", "voice"]


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    reference: str  # ours, unique per delivery attempt series: "<message id>:<recipient index>"
    channel: ChannelName
    to: str  # E.164 number or e-mail address
    body: str
    subject: str | None = None  # e-mail only
    sender: str | None = None  # e-mail From / SMS sender id, when the customer has one
    handed_over_at: datetime | None = None  # the worker's clock: the message's Date header
    # An alert asking for acknowledgement: a call offers the keypad for it (Twilio).
    acknowledgeable: bool = False
    qr_code: str | None = None  # e-mail: sent along as a QR code image (PNG)

    def __repr__(self) -> str:  # personal data and content stay out of every log line
        return f"Delivery(reference={self.reference!r}, channel={self.channel!r})"

    __str__ = __repr__


class Sent(msgspec.Struct, frozen=True, kw_only=True):
    provider: str  # which provider took it, e.g. "smtp", "sms-primary", "sms-failover"
    provider_reference: str | None = None  # the provider's id, to match delivery receipts
    # True when handing over is delivery (SMTP accepted it, the dev Maildir stored it);
    # False when the network reports the outcome later through a receipt webhook.
    final: bool = True
    # Short messages it took to send (SMPP's concatenated segments): what is billed.
    segments: int | None = None


class DeliveryError(Exception):
    """Why a delivery did not go through, as a reason code.

    Only the code is carried: what the gateway or server said (which may quote the
    number, the address or the body) is dropped where the answer is read, so it can
    reach no event and no log line.
    """

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class TemporaryFailure(DeliveryError):
    """Retry later: the provider was down, busy, or timed out."""


class PermanentFailure(DeliveryError):
    """Retrying will not help: rejected recipient, invalid number, refused content."""


class Provider(Protocol):
    name: str

    async def send(self, delivery: Delivery) -> Sent: ...

    async def close(self) -> None: ...
