"""Failure reasons: what a gateway or mail server says becomes one code of a fixed
vocabulary, and its own words (which quote numbers, addresses and bodies) are dropped."""

from __future__ import annotations

import re

import aiosmtplib
import pytest

from picasse.adapters.providers import PermanentFailure, TemporaryFailure
from picasse.adapters.providers.sms import reason_from_words
from picasse.adapters.providers.smtp import failure_for
from picasse.domain.messages import FailureReason

ADDRESS = "annabel.q7zk@example.nl"


def test_every_reason_code_is_a_short_word_with_a_text_for_people() -> None:
    for reason in FailureReason:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", reason.value)
        assert reason.text.strip()


def test_customer_terminated_is_one_of_the_codes() -> None:
    assert FailureReason("customer-terminated").text == "customer terminated"


def test_text_stored_before_reasons_were_codes_reads_as_unknown() -> None:
    assert FailureReason.read("gave up after 3 attempts: SMTP 451") is FailureReason.UNKNOWN
    assert FailureReason.read("mailbox-full") is FailureReason.MAILBOX_FULL


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(550, f"<{ADDRESS}>: no such user", ADDRESS)]
            ),
            PermanentFailure,
            FailureReason.INVALID_RECIPIENT,
        ),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(552, f"{ADDRESS} over quota", ADDRESS)]
            ),
            PermanentFailure,
            FailureReason.MAILBOX_FULL,
        ),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(450, f"{ADDRESS} greylisted", ADDRESS)]
            ),
            TemporaryFailure,
            FailureReason.PROVIDER_UNAVAILABLE,
        ),
        (
            aiosmtplib.SMTPSenderRefused(553, "sender refused", "noreply@example.com"),
            PermanentFailure,
            FailureReason.SENDER_REFUSED,
        ),
        (
            aiosmtplib.SMTPDataError(554, f"spam to {ADDRESS}"),
            PermanentFailure,
            FailureReason.CONTENT_REFUSED,
        ),
        (
            aiosmtplib.SMTPAuthenticationError(535, "bad credentials"),
            PermanentFailure,
            FailureReason.CREDENTIALS_REFUSED,
        ),
        (
            aiosmtplib.SMTPResponseException(421, "closing"),
            TemporaryFailure,
            FailureReason.PROVIDER_UNAVAILABLE,
        ),
        (TimeoutError(), TemporaryFailure, FailureReason.TIMED_OUT),
        (ConnectionResetError(), TemporaryFailure, FailureReason.CONNECTION_LOST),
        (ValueError(ADDRESS), TemporaryFailure, FailureReason.PROVIDER_ERROR),
    ],
)
def test_an_smtp_answer_maps_to_its_code_and_drops_the_servers_words(
    error: BaseException, kind: type[Exception], reason: FailureReason
) -> None:
    failure = failure_for(error)

    assert type(failure) is kind
    assert failure.reason is reason
    assert str(failure) == reason.value
    assert ADDRESS not in repr(failure)


@pytest.mark.parametrize(
    ("words", "reason"),
    [
        (f"mailbox full for {ADDRESS}", FailureReason.MAILBOX_FULL),
        ("+31 6 1234 5678 is an invalid number", FailureReason.INVALID_RECIPIENT),
        ("Absent subscriber +31612345678", FailureReason.RECIPIENT_UNREACHABLE),
        ("message expired", FailureReason.TIMED_OUT),
        ("rate limit exceeded", FailureReason.THROTTLED),
        ("sender id not allowed", FailureReason.SENDER_REFUSED),
        ("rejected by carrier", FailureReason.REJECTED_BY_GATEWAY),
        ("x" * 5000 + " invalid", None),  # only the first part of long words is read
        ("lorem ipsum", None),
    ],
)
def test_a_gateways_words_name_a_code_or_none(words: str, reason: FailureReason | None) -> None:
    assert reason_from_words(words) is reason
