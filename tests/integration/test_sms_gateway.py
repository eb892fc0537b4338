"""SMS and voice providers against a real HTTP gateway: submits, failover, refusals, receipts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from picasse.adapters.providers import (
    Delivery,
    DeliveryError,
    PermanentFailure,
    Provider,
    Sent,
    TemporaryFailure,
)
from picasse.adapters.providers.receipts import (
    ForgedReceipt,
    MalformedReceipt,
    ReadReceipt,
    verify_receipt,
)
from picasse.adapters.providers.sms import FailoverSms, HttpSmsGateway, sms_from_settings
from picasse.adapters.providers.voice import HttpVoiceGateway
from picasse.domain.messages import FailureReason
from tests.integration.gateway import FakeGateway, ReceiptSink, outcomes

NUMBER = "+31612345678"
BODY = "Evacuation drill at 14:30, meet at the north entrance"
CALLBACK = "https://picasse.example/webhooks/receipts"
SHORT_TIMEOUT = 0.3


def sms(to: str = NUMBER, body: str = BODY, reference: str = "msg-1:0") -> Delivery:
    return Delivery(reference=reference, channel="sms", to=to, body=body)


def send(provider: Provider, delivery: Delivery) -> Sent:
    (result,) = outcomes(provider, delivery)
    if isinstance(result, DeliveryError):
        raise result
    return result


def gateway_provider(
    name: str, gateway: FakeGateway, *, callback_url: str = CALLBACK, timeout: float = 5.0
) -> HttpSmsGateway:
    return HttpSmsGateway(
        name, gateway.url, gateway.token, callback_url=callback_url, timeout=timeout
    )


def pair(primary: FakeGateway, failover: FakeGateway, *, timeout: float = 5.0) -> FailoverSms:
    return FailoverSms(
        gateway_provider("sms-primary", primary, timeout=timeout),
        gateway_provider("sms-failover", failover, timeout=timeout),
    )


def assert_keeps_personal_data_out(reason: str) -> None:
    for secret in (NUMBER, NUMBER.lstrip("+"), "612345678", BODY, "Evacuation", "north entrance"):
        assert secret not in reason


@pytest.fixture
def primary() -> Iterator[FakeGateway]:
    with FakeGateway(token="primary-token") as gateway:
        yield gateway


@pytest.fixture
def failover() -> Iterator[FakeGateway]:
    with FakeGateway(token="failover-token") as gateway:
        yield gateway


@pytest.fixture
def sink() -> Iterator[ReceiptSink]:
    with ReceiptSink() as receipts:
        yield receipts


@pytest.fixture
def dead_url() -> str:
    """A local port nobody listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- submitting


def test_a_submitted_sms_reaches_the_gateway_with_our_token_json_and_callback_url(
    primary: FakeGateway,
) -> None:
    sent = send(gateway_provider("sms-primary", primary), sms())

    (submission,) = primary.wait_for(1)
    assert submission.authorization == "Bearer primary-token"
    assert submission.payload == {
        "to": NUMBER,
        "body": BODY,
        "reference": "msg-1:0",
        "callback_url": CALLBACK,
    }
    assert sent == Sent(provider="sms-primary", provider_reference=submission.id, final=False)


def test_a_gateway_503_is_temporary_and_the_callers_retry_goes_through(
    primary: FakeGateway,
) -> None:
    primary.fail_next(1, status=503)

    first, retry = outcomes(gateway_provider("sms-primary", primary), sms(), sms())

    assert isinstance(first, TemporaryFailure)
    assert isinstance(retry, Sent)
    assert [s.id for s in primary.submissions] == [retry.provider_reference]


def test_a_gateway_429_is_temporary(primary: FakeGateway) -> None:
    primary.fail_next(1, status=429)

    with pytest.raises(TemporaryFailure) as failure:
        send(gateway_provider("sms-primary", primary), sms())
    assert failure.value.reason is FailureReason.THROTTLED


def test_a_gateway_that_does_not_answer_in_time_is_a_temporary_failure(
    primary: FakeGateway,
) -> None:
    primary.hang_next(1)

    with pytest.raises(TemporaryFailure) as failure:
        send(gateway_provider("sms-primary", primary, timeout=SHORT_TIMEOUT), sms())
    assert failure.value.reason is FailureReason.TIMED_OUT


def test_a_gateway_nobody_listens_on_is_a_temporary_failure(dead_url: str) -> None:
    provider = HttpSmsGateway("sms-primary", dead_url, "t", callback_url=CALLBACK)

    with pytest.raises(TemporaryFailure) as failure:
        send(provider, sms())
    assert failure.value.reason is FailureReason.UNREACHABLE


def test_a_gateway_refusing_our_token_is_a_permanent_failure_saying_so(
    primary: FakeGateway,
) -> None:
    provider = HttpSmsGateway("sms-primary", primary.url, "stale-token", callback_url=CALLBACK)

    with pytest.raises(PermanentFailure) as failure:
        send(provider, sms())
    assert failure.value.reason is FailureReason.CREDENTIALS_REFUSED
    assert primary.submissions == []


def test_closing_the_provider_leaves_a_client_it_was_given_open(primary: FakeGateway) -> None:
    async def send_twice_on_one_client() -> list[Sent]:
        async with httpx.AsyncClient() as client:
            results = []
            for name in ("first", "second"):
                provider = HttpSmsGateway(
                    name, primary.url, primary.token, callback_url=CALLBACK, client=client
                )
                results.append(await provider.send(sms()))
                await provider.close()
            return results

    first, second = asyncio.run(send_twice_on_one_client())

    assert (first.provider, second.provider) == ("first", "second")


# -- failover


def test_the_primary_takes_messages_while_it_is_up(
    primary: FakeGateway, failover: FakeGateway
) -> None:
    sent = send(pair(primary, failover), sms())

    assert sent.provider == "sms-primary"
    assert len(primary.submissions) == 1
    assert failover.attempts == []


def test_the_failover_takes_a_message_the_primary_answers_with_503(
    primary: FakeGateway, failover: FakeGateway
) -> None:
    primary.fail_next(1, status=503)

    sent = send(pair(primary, failover), sms())

    (submission,) = failover.wait_for(1)
    assert sent == Sent(provider="sms-failover", provider_reference=submission.id, final=False)
    assert submission.authorization == "Bearer failover-token"
    assert primary.submissions == []


def test_the_failover_takes_a_message_when_the_primary_times_out(
    primary: FakeGateway, failover: FakeGateway
) -> None:
    primary.hang_next(1)

    sent = send(pair(primary, failover, timeout=SHORT_TIMEOUT), sms())

    assert sent.provider == "sms-failover"
    assert [a.outcome for a in primary.attempts] == ["hung"]
    assert len(failover.submissions) == 1


def test_the_failover_takes_a_message_when_the_primary_is_unreachable(
    dead_url: str, failover: FakeGateway
) -> None:
    provider = FailoverSms(
        HttpSmsGateway("sms-primary", dead_url, "t", callback_url=CALLBACK),
        gateway_provider("sms-failover", failover),
    )

    assert send(provider, sms()).provider == "sms-failover"


def test_both_gateways_down_is_a_temporary_failure_with_the_failovers_reason(
    primary: FakeGateway, dead_url: str
) -> None:
    primary.fail_next(1, status=503)
    provider = FailoverSms(
        gateway_provider("sms-primary", primary),
        HttpSmsGateway("sms-failover", dead_url, "t", callback_url=CALLBACK),
    )

    with pytest.raises(TemporaryFailure) as failure:
        send(provider, sms())

    assert failure.value.reason is FailureReason.UNREACHABLE


def test_a_number_the_primary_refuses_fails_permanently_and_the_failover_is_not_tried(
    primary: FakeGateway, failover: FakeGateway
) -> None:
    primary.refuse(NUMBER)

    with pytest.raises(PermanentFailure) as failure:
        send(pair(primary, failover), sms())

    assert failure.value.reason is FailureReason.INVALID_RECIPIENT
    assert [a.outcome for a in primary.attempts] == ["refused"]
    assert failover.attempts == []


def test_the_failover_takes_over_when_the_primary_refuses_our_credentials(
    primary: FakeGateway, failover: FakeGateway
) -> None:
    provider = FailoverSms(
        HttpSmsGateway("sms-primary", primary.url, "revoked", callback_url=CALLBACK),
        gateway_provider("sms-failover", failover),
    )

    assert send(provider, sms()).provider == "sms-failover"


def test_a_number_the_failover_refuses_fails_permanently(
    primary: FakeGateway, failover: FakeGateway
) -> None:
    primary.fail_next(1)
    failover.refuse(NUMBER)

    with pytest.raises(PermanentFailure):
        send(pair(primary, failover), sms())


# -- what failure reasons say


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (422, None, FailureReason.INVALID_RECIPIENT),  # the fake's default quotes the number
        (
            422,
            f"number {NUMBER[:3]} {NUMBER[3:4]} {NUMBER[4:8]} {NUMBER[8:]} unknown",
            FailureReason.REJECTED_BY_GATEWAY,
        ),
        (400, f"0{NUMBER[3:]} is not a mobile number", FailureReason.INVALID_RECIPIENT),
        (400, f"content refused: {BODY}", FailureReason.CONTENT_REFUSED),
        (404, f"no route for '{BODY[:25]}' to {NUMBER}", FailureReason.INVALID_RECIPIENT),
        (422, "ERR_LANDLINE", FailureReason.INVALID_RECIPIENT),
    ],
)
def test_a_refusal_is_a_reason_code_and_the_gateways_words_are_dropped(
    primary: FakeGateway, status: int, error: str | None, code: FailureReason
) -> None:
    primary.refuse(NUMBER, status=status, error=error)

    with pytest.raises(PermanentFailure) as failure:
        send(gateway_provider("sms-primary", primary), sms())

    assert failure.value.reason is code
    assert str(failure.value) == code.value
    assert failure.value.__cause__ is None and failure.value.__context__ is None


def test_temporary_failure_reasons_never_contain_the_number_or_body(
    primary: FakeGateway, failover: FakeGateway
) -> None:
    primary.hang_next(1)
    failover.fail_next(1)

    with pytest.raises(TemporaryFailure) as failure:
        send(pair(primary, failover, timeout=SHORT_TIMEOUT), sms())

    assert_keeps_personal_data_out(str(failure.value))


# -- voice


def test_a_voice_call_reaches_the_gateway_with_its_text_and_status_callback(
    primary: FakeGateway,
) -> None:
    provider = HttpVoiceGateway("voice", primary.url, primary.token, callback_url=CALLBACK)
    call = Delivery(reference="msg-2:1", channel="voice", to=NUMBER, body=BODY)

    sent = send(provider, call)

    (submission,) = primary.wait_for(1)
    assert submission.kind == "voice"
    assert submission.authorization == "Bearer primary-token"
    assert submission.payload == {
        "to": NUMBER,
        "text": BODY,
        "reference": "msg-2:1",
        "status_callback": CALLBACK,
    }
    assert sent == Sent(provider="voice", provider_reference=submission.id, final=False)


def test_a_call_to_a_refused_number_is_a_permanent_failure_without_the_number(
    primary: FakeGateway,
) -> None:
    primary.refuse(NUMBER)
    provider = HttpVoiceGateway("voice", primary.url, primary.token, callback_url=CALLBACK)

    with pytest.raises(PermanentFailure) as failure:
        send(provider, Delivery(reference="msg-2:1", channel="voice", to=NUMBER, body=BODY))

    assert_keeps_personal_data_out(str(failure.value))


# -- receipts


def test_a_receipt_the_gateway_posts_verifies_and_names_the_gateway(
    primary: FakeGateway, sink: ReceiptSink
) -> None:
    sent = send(gateway_provider("sms-primary", primary, callback_url=sink.url), sms())
    assert sent.provider_reference is not None

    assert primary.send_receipt(sent.provider_reference, "delivered") == 204

    (post,) = sink.wait_for(1)
    assert verify_receipt(post.body, post.signature, {"sms-primary": "primary-token"}) == (
        "sms-primary",
        ReadReceipt(
            id=sent.provider_reference, reference="msg-1:0", status="delivered", failure=None
        ),
    )


def test_the_gateway_posts_receipts_by_itself_when_told_to(sink: ReceiptSink) -> None:
    with FakeGateway(token="auto-token", auto_receipts="undelivered") as gateway:
        sent = send(gateway_provider("sms-primary", gateway, callback_url=sink.url), sms())

        (post,) = sink.wait_for(1)

    name, receipt = verify_receipt(
        post.body, post.signature, {"sms-failover": "other-token", "sms-primary": "auto-token"}
    )
    assert name == "sms-primary"
    assert (receipt.id, receipt.status) == (sent.provider_reference, "undelivered")


def test_a_call_receipt_verifies_with_its_status(primary: FakeGateway, sink: ReceiptSink) -> None:
    provider = HttpVoiceGateway("voice", primary.url, primary.token, callback_url=sink.url)
    sent = send(provider, Delivery(reference="msg-2:1", channel="voice", to=NUMBER, body=BODY))
    assert sent.provider_reference is not None

    primary.send_receipt(sent.provider_reference, "no-answer", reason="rang 30 s")

    (post,) = sink.wait_for(1)
    _, receipt = verify_receipt(post.body, post.signature, {"voice": "primary-token"})
    assert (receipt.reference, receipt.status, receipt.failure) == (
        "msg-2:1",
        "no-answer",
        FailureReason.NO_ANSWER,
    )


def test_a_receipt_reason_quoting_the_number_becomes_a_code_without_it(
    primary: FakeGateway, sink: ReceiptSink
) -> None:
    sent = send(gateway_provider("sms-primary", primary, callback_url=sink.url), sms())
    assert sent.provider_reference is not None

    primary.send_receipt(sent.provider_reference, "failed", reason=f"handset {NUMBER} off")

    (post,) = sink.wait_for(1)
    _, receipt = verify_receipt(post.body, post.signature, {"sms-primary": "primary-token"})
    assert receipt.failure is FailureReason.RECIPIENT_UNREACHABLE
    assert "612345678" not in repr(receipt)


@pytest.fixture
def posted_receipt(primary: FakeGateway, sink: ReceiptSink) -> tuple[bytes, str]:
    """A receipt as the sink received it: raw body and signature header."""
    sent = send(gateway_provider("sms-primary", primary, callback_url=sink.url), sms())
    assert sent.provider_reference is not None
    primary.send_receipt(sent.provider_reference, "delivered")
    (post,) = sink.wait_for(1)
    assert post.signature is not None
    return post.body, post.signature


def test_a_receipt_with_one_changed_byte_is_forged(posted_receipt: tuple[bytes, str]) -> None:
    body, signature = posted_receipt
    tampered = body.replace(b"delivered", b"delivereD")
    assert len(tampered) == len(body)
    assert tampered != body

    with pytest.raises(ForgedReceipt):
        verify_receipt(tampered, signature, {"sms-primary": "primary-token"})


def test_a_receipt_checked_against_another_token_is_forged(
    posted_receipt: tuple[bytes, str],
) -> None:
    body, signature = posted_receipt

    with pytest.raises(ForgedReceipt):
        verify_receipt(body, signature, {"sms-primary": "not-the-primary-token"})


def test_a_receipt_signed_with_a_token_we_do_not_hold_is_forged(
    primary: FakeGateway, sink: ReceiptSink
) -> None:
    sent = send(gateway_provider("sms-primary", primary, callback_url=sink.url), sms())
    assert sent.provider_reference is not None

    primary.send_receipt(sent.provider_reference, "delivered", token="attacker-token")

    (post,) = sink.wait_for(1)
    with pytest.raises(ForgedReceipt):
        verify_receipt(post.body, post.signature, {"sms-primary": "primary-token"})


def test_a_receipt_without_a_signature_is_forged(posted_receipt: tuple[bytes, str]) -> None:
    body, _ = posted_receipt

    with pytest.raises(ForgedReceipt):
        verify_receipt(body, None, {"sms-primary": "primary-token"})


def test_a_signed_receipt_with_an_unknown_status_is_malformed(
    primary: FakeGateway, sink: ReceiptSink
) -> None:
    sent = send(gateway_provider("sms-primary", primary, callback_url=sink.url), sms())
    assert sent.provider_reference is not None

    primary.send_receipt(sent.provider_reference, "teleported")

    (post,) = sink.wait_for(1)
    with pytest.raises(MalformedReceipt):
        verify_receipt(post.body, post.signature, {"sms-primary": "primary-token"})


# -- settings


def test_no_gateway_url_means_no_sms_provider() -> None:
    assert sms_from_settings(None, None, None, None, CALLBACK) is None


def test_one_gateway_url_gives_the_primary_alone() -> None:
    provider = sms_from_settings("http://gw.example", "t", None, None, CALLBACK)

    assert isinstance(provider, HttpSmsGateway)
    assert provider.name == "sms-primary"
    asyncio.run(provider.close())


def test_a_failover_url_gives_a_failover_pair(primary: FakeGateway, failover: FakeGateway) -> None:
    primary.fail_next(1)
    provider = sms_from_settings(primary.url, primary.token, failover.url, failover.token, CALLBACK)
    assert isinstance(provider, FailoverSms)

    assert send(provider, sms()).provider == "sms-failover"


@pytest.mark.parametrize(
    "settings",
    [
        ("http://gw.example", None, None, None, CALLBACK),
        ("http://gw.example", "t", None, None, None),
        ("http://gw.example", "t", "http://failover.example", None, CALLBACK),
        (None, None, "http://failover.example", "t", CALLBACK),
    ],
)
def test_incomplete_gateway_settings_are_refused(
    settings: tuple[str | None, str | None, str | None, str | None, str | None],
) -> None:
    with pytest.raises(ValueError):
        sms_from_settings(*settings)


def test_a_provider_repr_shows_no_token(primary: FakeGateway) -> None:
    provider = pair(primary, primary)

    assert "primary-token" not in repr(provider)
    asyncio.run(provider.close())
