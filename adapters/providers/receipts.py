"""Delivery receipts from the gateways: check who signed one, then read it.

The receipt half of the gateway protocol: a gateway POSTs to the callback URL it was
given (``callback_url`` for SMS, ``status_callback`` for calls) the JSON object
``{"id": "<gateway id>", "reference": "<our reference>", "status": "delivered" |
"failed" | "undelivered" | "answered" | "no-answer" | "busy", "reason": "…"}``
(``reason`` optional; ``"duration": <seconds>`` for an answered call, which bills its
minutes) with the header ``X-Picasse-Signature: sha256=<hex>``, the hex
HMAC-SHA256 of the raw body keyed with that gateway's token. The signature is checked
over the bytes as received, before anything reads them.

What the network says (``status`` and ``reason``) becomes a reason code
(``receipt_failure``); the reason's words are dropped there and never recorded or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Literal

import msgspec

from picasse.adapters.providers.sms import reason_from_words
from picasse.domain.messages import FailureReason

SIGNATURE_HEADER = "X-Picasse-Signature"
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")

ReceiptStatus = Literal["delivered", "failed", "undelivered", "answered", "no-answer", "busy"]


# Where gateways post receipts to us (our HTTP API serves it; providers announce it).
RECEIPTS_PATH = "/v1/webhooks/receipts"


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """A receipt as a gateway posts it."""

    id: str  # the gateway's id, as it answered our submission
    reference: str  # ours, as we submitted it
    status: ReceiptStatus
    reason: str | None = None  # the network's words: read for a code, then dropped
    duration: int | None = None  # an answered call's length in seconds: what is billed


class ReadReceipt(msgspec.Struct, frozen=True, kw_only=True):
    """A verified receipt as we keep it: the network's words replaced by a reason code."""

    id: str
    reference: str
    status: ReceiptStatus
    failure: FailureReason | None  # None: delivered (or the call answered)
    call_seconds: int | None = None  # an answered call's duration, for billing


def receipt_failure(status: ReceiptStatus, reason: str | None) -> FailureReason | None:
    """The reason code of a receipt: None when it reports delivery; a busy line or an
    unanswered call by its status; otherwise what the words name, or `unknown`."""
    if status in ("delivered", "answered"):
        return None
    if status == "busy":
        return FailureReason.BUSY
    if status == "no-answer":
        return FailureReason.NO_ANSWER
    named = reason_from_words(reason) if reason else None
    return named or FailureReason.UNKNOWN


class ReceiptRejected(Exception):
    """A receipt we will not act on; the message names no number and quotes no body."""


class ForgedReceipt(ReceiptRejected):
    """The signature is missing, malformed, or made with none of our gateways' tokens."""


class MalformedReceipt(ReceiptRejected):
    """A gateway signed it, but it is not a receipt."""


def sign_receipt(raw_body: bytes, token: str) -> str:
    """The `X-Picasse-Signature` value a gateway holding `token` sends with `raw_body`."""
    return "sha256=" + _digest(raw_body, token).hex()


def verified_signer(
    raw_body: bytes, signature_header: str | None, tokens: Mapping[str, str]
) -> str:
    """The name of the one of `tokens` (name → token) that signed `raw_body`; else
    ForgedReceipt. The one check of our providers' signed posts: gateways' receipts and
    the telephony provider's reports."""
    if signature_header is None:
        raise ForgedReceipt("receipt without a signature")
    presented = _SIGNATURE.fullmatch(signature_header.strip())
    if presented is None:
        raise ForgedReceipt("receipt signature is not sha256=<hex>")
    presented_digest = bytes.fromhex(presented.group(1))
    signer: str | None = None
    for name, token in tokens.items():
        # An empty token is a key everyone knows: such a gateway signs nothing.
        if token and hmac.compare_digest(_digest(raw_body, token), presented_digest):
            signer = name
    if signer is None:
        raise ForgedReceipt("receipt not signed by any of our gateways")
    return signer


def verify_receipt(
    raw_body: bytes, signature_header: str | None, tokens: Mapping[str, str]
) -> tuple[str, ReadReceipt]:
    """(gateway name, receipt) when one of `tokens` (gateway name → token) signed `raw_body`."""
    signer = verified_signer(raw_body, signature_header, tokens)
    try:
        receipt = msgspec.json.decode(raw_body, type=Receipt)
    except msgspec.DecodeError:
        raise MalformedReceipt(f"receipt from {signer} is not a receipt") from None
    # Gateways like to quote the number in their words: only the code goes on.
    return signer, ReadReceipt(
        id=receipt.id,
        reference=receipt.reference,
        status=receipt.status,
        failure=receipt_failure(receipt.status, receipt.reason),
        call_seconds=receipt.duration if receipt.duration and receipt.duration > 0 else None,
    )


def _digest(raw_body: bytes, token: str) -> bytes:
    return hmac.new(token.encode(), raw_body, hashlib.sha256).digest()
