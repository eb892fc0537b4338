"""Receipt signatures: what a gateway signs verifies, and no changed byte gets through."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from picasse.adapters.providers.receipts import (
    ForgedReceipt,
    MalformedReceipt,
    ReadReceipt,
    Receipt,
    ReceiptRejected,
    receipt_failure,
    sign_receipt,
    verify_receipt,
)
from picasse.domain.messages import FailureReason

TOKENS = {"sms-primary": "primary-token", "sms-failover": "failover-token"}

receipts = st.builds(
    Receipt,
    id=st.text(max_size=40),
    reference=st.text(max_size=40),
    status=st.sampled_from(["delivered", "failed", "undelivered", "answered", "no-answer", "busy"]),
    reason=st.none()
    | st.text(alphabet=st.characters(categories=["L"], include_characters=" "), max_size=60),
)


@given(receipts, st.sampled_from(sorted(TOKENS)))
def test_a_signed_receipt_verifies_as_itself_from_the_gateway_that_signed_it(
    receipt: Receipt, gateway: str
) -> None:
    body = msgspec.json.encode(receipt)

    name, verified = verify_receipt(body, sign_receipt(body, TOKENS[gateway]), TOKENS)

    assert name == gateway
    assert verified == ReadReceipt(
        id=receipt.id,
        reference=receipt.reference,
        status=receipt.status,
        failure=receipt_failure(receipt.status, receipt.reason),
    )


@given(st.binary(max_size=300))
def test_any_signed_body_passes_the_signature_check(body: bytes) -> None:
    # Signed by a gateway we know, so only "not a receipt" may stop it, never "forged".
    with contextlib.suppress(MalformedReceipt):
        verify_receipt(body, sign_receipt(body, "primary-token"), TOKENS)


@given(st.binary(min_size=1, max_size=300), st.data())
def test_any_single_byte_change_makes_the_body_forged(body: bytes, data: st.DataObject) -> None:
    signature = sign_receipt(body, "primary-token")
    position = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != body[position]))
    tampered = body[:position] + bytes([replacement]) + body[position + 1 :]

    with pytest.raises(ForgedReceipt):
        verify_receipt(tampered, signature, TOKENS)


@given(st.binary(max_size=300), st.data())
def test_any_single_changed_hex_digit_makes_the_signature_forged(
    body: bytes, data: st.DataObject
) -> None:
    signature = sign_receipt(body, "primary-token")
    prefix, digest = signature.split("=")
    position = data.draw(st.integers(0, len(digest) - 1))
    digit = data.draw(st.sampled_from("0123456789abcdef").filter(lambda d: d != digest[position]))
    forged = f"{prefix}={digest[:position]}{digit}{digest[position + 1 :]}"

    with pytest.raises(ForgedReceipt):
        verify_receipt(body, forged, TOKENS)


@given(st.binary(max_size=300), st.text(min_size=1, max_size=30))
def test_a_body_signed_with_a_token_we_do_not_hold_is_forged(body: bytes, token: str) -> None:
    if token in TOKENS.values():
        return

    with pytest.raises(ForgedReceipt):
        verify_receipt(body, sign_receipt(body, token), TOKENS)


def test_the_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    # Known answer, so a gateway implementer can check theirs against ours.
    assert (
        sign_receipt(b'{"id":"1"}', "key")
        == "sha256=77cb8fd154ecfa2865657b2915c997c624ee47fe122e8a8bb91b10a09b47fb3c"
    )


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=", "sha1=abc", "sha256=zz", "primary-token", "sha256=" + "0" * 63],
)
def test_a_missing_or_misshapen_signature_header_is_forged(header: str | None) -> None:
    body = msgspec.json.encode(Receipt(id="1", reference="r", status="delivered"))

    with pytest.raises(ForgedReceipt):
        verify_receipt(body, header, TOKENS)


def test_a_signature_in_upper_case_hex_still_verifies() -> None:
    body = msgspec.json.encode(Receipt(id="1", reference="r", status="delivered"))
    prefix, digest = sign_receipt(body, "primary-token").split("=")

    assert verify_receipt(body, f"{prefix}={digest.upper()}", TOKENS)[0] == "sms-primary"


def test_no_receipt_verifies_when_we_hold_no_tokens_or_only_empty_ones() -> None:
    body = msgspec.json.encode(Receipt(id="1", reference="r", status="delivered"))

    for tokens in ({}, {"sms-primary": ""}):
        with pytest.raises(ForgedReceipt):
            verify_receipt(body, sign_receipt(body, ""), tokens)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"id": "1", "reference": "r"}',
        b'{"id":1,"reference":"r","status":"delivered"}',
    ],
)
def test_a_signed_body_that_is_not_a_receipt_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedReceipt) as rejected:
        verify_receipt(body, sign_receipt(body, "primary-token"), TOKENS)

    assert isinstance(rejected.value, ReceiptRejected)
    assert "sms-primary" in str(rejected.value)


def test_a_receipt_reason_becomes_a_code_and_its_words_are_dropped() -> None:
    words = "rejected: unknown subscriber +31 6 1234 5678 to annabel@example.nl"
    receipt = Receipt(id="1", reference="r", status="failed", reason=words)
    body = msgspec.json.encode(receipt)

    _, verified = verify_receipt(body, sign_receipt(body, "primary-token"), TOKENS)

    assert verified.failure is FailureReason.INVALID_RECIPIENT
    kept = msgspec.json.encode(verified) + repr(verified).encode()
    for fragment in (b"5678", b"annabel", b"example.nl", b"subscriber", b"rejected:"):
        assert fragment not in kept


@pytest.mark.parametrize(
    ("status", "reason", "failure"),
    [
        ("delivered", None, None),
        ("answered", "picked up after 3 rings", None),
        ("busy", None, FailureReason.BUSY),
        ("no-answer", "rang 30 s", FailureReason.NO_ANSWER),
        ("failed", "absent subscriber", FailureReason.RECIPIENT_UNREACHABLE),
        ("failed", "handset +31612345678 off", FailureReason.RECIPIENT_UNREACHABLE),
        ("failed", "Unknown subscriber", FailureReason.INVALID_RECIPIENT),
        ("failed", "ERR_LANDLINE", FailureReason.INVALID_RECIPIENT),
        ("undelivered", "network timeout", FailureReason.TIMED_OUT),
        ("undelivered", "validity period expired", FailureReason.TIMED_OUT),
        ("failed", "memory full", FailureReason.MAILBOX_FULL),
        ("failed", "blocked by operator", FailureReason.REJECTED_BY_GATEWAY),
        ("failed", "spam filtered", FailureReason.CONTENT_REFUSED),
        ("failed", "throttled", FailureReason.THROTTLED),
        ("failed", "gobbledygook 42", FailureReason.UNKNOWN),
        ("undelivered", None, FailureReason.UNKNOWN),
    ],
)
def test_a_receipt_maps_to_its_reason_code(
    status: str, reason: str | None, failure: FailureReason | None
) -> None:
    assert receipt_failure(status, reason) is failure  # type: ignore[arg-type]


@pytest.mark.parametrize(("duration", "seconds"), [(125, 125), (0, None), (-5, None), (None, None)])
def test_an_answered_calls_duration_is_read_for_billing(
    duration: int | None, seconds: int | None
) -> None:
    body = msgspec.json.encode(
        Receipt(id="c1", reference="r", status="answered", duration=duration)
    )
    _, read = verify_receipt(body, sign_receipt(body, TOKENS["sms-primary"]), TOKENS)
    assert read.call_seconds == seconds and read.failure is None
