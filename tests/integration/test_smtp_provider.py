"""The SMTP provider against a real SMTP server: what arrives, over what, and how failures read."""

from __future__ import annotations

import asyncio
import socket
import ssl
import traceback
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from picasse.adapters.providers import (
    Delivery,
    DeliveryError,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from picasse.adapters.providers.smtp import SmtpProvider
from picasse.domain.messages import FailureReason
from tests.integration.smtp_server import RecordingSmtpServer, TlsContexts, make_tls_contexts

SENDER = "Picasse <noreply@picasse.example>"
RECIPIENT = "alice@customer.example"
BODY = "Fire drill at 14:00 — meet at the south gate. Grüße!"
USER, PASSWORD = "relay-user@picasse.example", "p@ss:w/rd#1?"

T = TypeVar("T")


HANDED_OVER_AT = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def delivery(number: int = 0, **changes: Any) -> Delivery:
    fields: dict[str, Any] = {
        "reference": f"0b7c3f52-9a54-4c38-9d43-5d3c1d9a1e2f:{number}",
        "channel": "email",
        "to": RECIPIENT,
        "body": BODY,
        "subject": "Fire drill",
        "handed_over_at": HANDED_OVER_AT,
    }
    fields.update(changes)
    return Delivery(**fields)


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[SmtpProvider]:
    options.setdefault("timeout", 5)
    provider = SmtpProvider.from_url(url, sender=SENDER, **options)
    try:
        yield provider
    finally:
        await provider.close()


async def send(url: str, *deliveries: Delivery, **options: Any) -> list[Sent]:
    async with opened(url, **options) as provider:
        return [await provider.send(one) for one in deliveries]


def failure_of(url: str, one: Delivery, **options: Any) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        run(send(url, one, **options))
    return caught.value


def assert_tells_nothing_personal(error: BaseException) -> None:
    """Neither the reason nor anything a logged traceback would show names the recipient or the body."""
    assert error.__cause__ is None and error.__context__ is None  # no server reply hides there
    shown = "".join(traceback.format_exception(error))
    assert RECIPIENT not in shown
    assert "alice" not in shown
    assert BODY not in shown


@pytest.fixture(scope="module")
def tls() -> TlsContexts:
    return make_tls_contexts()


@pytest.fixture
def server() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer() as running:
        yield running


# -- what arrives ---------------------------------------------------------------------


def test_a_message_arrives_with_its_sender_recipient_subject_and_body(
    server: RecordingSmtpServer,
) -> None:
    run(send(server.url, delivery()))

    [received] = server.wait_for(1)
    message = received.message()
    assert received.mail_from == "noreply@picasse.example"
    assert received.rcpt_tos == (RECIPIENT,)
    assert message["From"] == SENDER
    assert message["To"] == RECIPIENT
    assert message["Subject"] == "Fire drill"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content().rstrip("\n") == BODY
    assert message["Date"] == "Mon, 04 May 2026 12:00:00 +0000"  # the worker's clock


def test_the_message_id_is_derived_from_the_reference_and_returned_as_provider_reference(
    server: RecordingSmtpServer,
) -> None:
    first, again, other = run(send(server.url, delivery(1), delivery(1), delivery(2)))

    received = [one.message()["Message-ID"] for one in server.wait_for(3)]
    assert received == [
        first.provider_reference,
        again.provider_reference,
        other.provider_reference,
    ]
    assert received[0] == received[1]  # a resend can be de-duplicated by the recipient
    assert received[0] != received[2]
    assert received[0].startswith("<") and received[0].endswith("@picasse.example>")
    assert first == Sent(provider="smtp", provider_reference=received[0], final=True)


def test_a_delivery_without_a_subject_gets_the_default_subject(server: RecordingSmtpServer) -> None:
    run(send(server.url, delivery(subject=None)))

    assert server.wait_for(1)[0].message()["Subject"] == "Message"


def test_a_subject_with_line_breaks_cannot_inject_headers(server: RecordingSmtpServer) -> None:
    run(send(server.url, delivery(subject="Hello\r\nBcc: mallory@evil.example")))

    [received] = server.wait_for(1)
    assert received.rcpt_tos == (RECIPIENT,)
    assert received.message()["Bcc"] is None
    assert received.message()["Subject"] == "Hello Bcc: mallory@evil.example"


# Subjects that decode to line breaks (issue 11, finding 2): quoted-printable and base64
# encoded words, CRLF and LF alone, one word or several across a folded line, and one
# that would open an HTML part.
ENCODED_INJECTIONS = [
    "=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?=",
    "=?utf-8?b?SW52b2ljZQ0KUmVwbHktVG86IHhAZXZpbC5leGFtcGxl?=",
    "=?utf-8?q?Invoice=0AReply-To:_x@evil.example?=",
    "=?UTF-8?Q?Invoice=0D=0A?= =?utf-8?b?UmVwbHktVG86IHhAZXZpbC5leGFtcGxl?=",
    "Invoice =?utf-8?q?=0D=0A=0D=0A--x=0D=0AContent-Type:_text/html?= <b>pay</b>",
    "Invoice=?iso-8859-1?q?=0D=0ABcc:_x@evil.example?=",
]


@pytest.mark.parametrize("subject", ENCODED_INJECTIONS)
def test_a_subject_whose_encoded_words_decode_to_line_breaks_sends_nothing(
    server: RecordingSmtpServer, subject: str
) -> None:
    """A subject stored before the API refused these is refused by the provider too."""
    error = failure_of(server.url, delivery(subject=subject))
    assert isinstance(error, PermanentFailure)
    assert error.reason is FailureReason.CONTENT_REFUSED

    run(send(server.url, delivery(1)))  # the next delivery goes out as usual

    [received] = server.wait_for(1)
    assert b"evil" not in received.content and b"text/html" not in received.content
    message = received.message()
    assert message["Subject"] == "Fire drill"
    assert [name for name, _ in message.items()].count("Subject") == 1
    assert not message.is_multipart()


def test_an_encoded_word_without_line_breaks_arrives_as_one_subject_header(
    server: RecordingSmtpServer,
) -> None:
    run(send(server.url, delivery(subject="=?utf-8?q?Caf=C3=A9_=E2=98=95?= at ten")))

    [received] = server.wait_for(1)
    message = received.message()
    assert message["Subject"] == "Café ☕ at ten"
    assert sorted(name for name, _ in message.items()) == sorted(
        ["From", "To", "Subject", "Date", "Message-ID", "Content-Type",
         "Content-Transfer-Encoding", "MIME-Version"]
    )  # fmt: skip
    assert not message.is_multipart()


def test_a_customer_sender_is_the_author_and_the_platform_the_sender(
    server: RecordingSmtpServer,
) -> None:
    run(send(server.url, delivery(sender="facilities@customer.example")))

    [received] = server.wait_for(1)
    assert received.message()["From"] == "facilities@customer.example"
    assert received.message()["Sender"] == SENDER
    assert received.mail_from == "noreply@picasse.example"  # bounces come back to us


def test_fifty_concurrent_sends_all_arrive_exactly_once_over_a_few_connections(
    server: RecordingSmtpServer,
) -> None:
    async def scenario() -> list[Sent]:
        async with opened(server.url, max_connections=4) as provider:
            return await asyncio.gather(*(provider.send(delivery(n)) for n in range(50)))

    sent = run(scenario())

    received = server.wait_for(50)
    ids = {one.message()["Message-ID"] for one in received}
    assert len(server.received) == 50
    assert ids == {one.provider_reference for one in sent}
    assert len(ids) == 50
    assert 1 <= server.connections <= 4


def test_sequential_sends_reuse_one_connection(server: RecordingSmtpServer) -> None:
    run(send(server.url, *(delivery(n) for n in range(5))))

    assert len(server.wait_for(5)) == 5
    assert server.connections == 1


def test_a_connection_the_server_dropped_is_replaced_without_a_failure() -> None:
    first = RecordingSmtpServer().start()

    async def scenario() -> tuple[Sent, list[str]]:
        async with opened(first.url) as provider:
            await provider.send(delivery(1))
            first.stop()  # drops every connection, as a restarting relay would
            with RecordingSmtpServer(first.port) as second:
                sent = await provider.send(delivery(2))
                return sent, [one.message()["Message-ID"] for one in second.wait_for(1)]

    try:
        sent, arrived = run(scenario())
    finally:
        first.stop()

    assert arrived == [sent.provider_reference]


# -- TLS and credentials ----------------------------------------------------------------


def test_starttls_is_used_when_the_server_offers_it(tls: TlsContexts) -> None:
    with RecordingSmtpServer(tls_context=tls.server, require_starttls=True) as server:
        run(send(server.url, delivery(), tls_context=tls.client))

        [received] = server.wait_for(1)
    assert received.over_tls


def test_credentials_log_in_over_starttls(tls: TlsContexts) -> None:
    with RecordingSmtpServer(tls_context=tls.server, auth={USER: PASSWORD}) as server:
        run(send(server.url_with(USER, PASSWORD), delivery(), tls_context=tls.client))

        [received] = server.wait_for(1)
    assert received.over_tls
    assert received.login == USER  # percent-decoded from the URL


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_credentials_are_never_sent_to_a_server_without_starttls() -> None:
    # The server offers AUTH in the clear: exactly what the provider must not take up.
    with RecordingSmtpServer(auth={USER: PASSWORD}, auth_require_tls=False) as server:
        error = failure_of(server.url_with(USER, PASSWORD), delivery())

        assert isinstance(error, PermanentFailure)
        assert error.reason is FailureReason.TLS_FAILED
        assert server.auth_attempts == 0
        assert server.received == []


def test_a_wrong_password_is_a_permanent_failure(tls: TlsContexts) -> None:
    with RecordingSmtpServer(tls_context=tls.server, auth={USER: PASSWORD}) as server:
        error = failure_of(server.url_with(USER, "wrong"), delivery(), tls_context=tls.client)

        assert isinstance(error, PermanentFailure)
        assert error.reason is FailureReason.CREDENTIALS_REFUSED
        assert server.received == []


def test_an_untrusted_certificate_fails_and_nothing_goes_out_in_the_clear(
    tls: TlsContexts,
) -> None:
    with RecordingSmtpServer(tls_context=tls.server) as server:
        error = failure_of(server.url, delivery(), tls_context=ssl.create_default_context())

        assert isinstance(error, TemporaryFailure)
        assert error.reason is FailureReason.TLS_FAILED
        assert server.received == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_an_smtps_url_sends_over_implicit_tls(tls: TlsContexts) -> None:
    with RecordingSmtpServer(implicit_tls_context=tls.server, auth={USER: PASSWORD}) as server:
        assert server.url.startswith("smtps://")
        run(send(server.url_with(USER, PASSWORD), delivery(), tls_context=tls.client))

        [received] = server.wait_for(1)
    assert received.over_tls
    assert received.login == USER


# -- failures ---------------------------------------------------------------------------


def test_a_recipient_the_server_rejects_is_a_permanent_failure_that_names_no_one() -> None:
    with RecordingSmtpServer(reject={RECIPIENT}) as server:
        error = failure_of(server.url, delivery())

        assert isinstance(error, PermanentFailure)
        assert error.reason is FailureReason.INVALID_RECIPIENT
        assert_tells_nothing_personal(error)
        assert server.received == []


def test_a_451_reply_is_a_temporary_failure_and_the_next_attempt_goes_through() -> None:
    with RecordingSmtpServer(fail_first_n=1) as server:

        async def scenario() -> tuple[DeliveryError, Sent]:
            async with opened(server.url) as provider:
                with pytest.raises(DeliveryError) as caught:
                    await provider.send(delivery())
                return caught.value, await provider.send(delivery())

        error, sent = run(scenario())

        assert isinstance(error, TemporaryFailure)
        assert error.reason is FailureReason.PROVIDER_UNAVAILABLE
        assert_tells_nothing_personal(error)
        assert [m.message()["Message-ID"] for m in server.wait_for(1)] == [sent.provider_reference]
        assert server.connections == 1  # the refused transaction did not cost the connection


def test_a_closed_port_is_a_temporary_failure() -> None:
    with socket.socket() as bound_but_not_listening:
        bound_but_not_listening.bind(("127.0.0.1", 0))
        port = bound_but_not_listening.getsockname()[1]

        error = failure_of(f"smtp://127.0.0.1:{port}", delivery())

    assert isinstance(error, TemporaryFailure)
    assert error.reason is FailureReason.UNREACHABLE
    assert_tells_nothing_personal(error)


def test_a_server_that_never_greets_is_a_temporary_failure() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]

        error = failure_of(f"smtp://127.0.0.1:{port}", delivery(), timeout=0.3)

    assert isinstance(error, TemporaryFailure)
    assert error.reason is FailureReason.TIMED_OUT


def test_a_recipient_that_is_not_an_address_is_a_permanent_failure(
    server: RecordingSmtpServer,
) -> None:
    error = failure_of(server.url, delivery(to="alice at customer.example"))

    assert isinstance(error, PermanentFailure)
    assert_tells_nothing_personal(error)
    assert server.received == []


def test_an_sms_is_refused_by_the_smtp_provider(server: RecordingSmtpServer) -> None:
    error = failure_of(server.url, delivery(channel="sms", to="+31612345678"))

    assert isinstance(error, PermanentFailure)
    assert server.received == []


# -- the URL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2secret@mail.example:25",
        "smtp://user:hunter2secret@:25",
        "smtp://user:hunter2secret@mail.example:notaport",
        "smtp://user:hunter2secret@mail.example:99999",
        "smtp://user:hunter2secret@mail.example/path",
        "smtp://user:hunter2#secret@mail.example:25",
        "smtp://user:hunter2?secret@mail.example:25",
        "smtp://:hunter2secret@mail.example:25",
        "smtp://[::1:hunter2secret@mail.example",
    ],
)
def test_an_invalid_url_is_a_value_error_that_never_shows_the_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        SmtpProvider.from_url(url, sender=SENDER)

    assert caught.value.__context__ is None
    assert "hunter2" not in "".join(traceback.format_exception(caught.value))
    assert "\n" not in str(caught.value)


def test_the_url_gives_host_port_tls_and_decoded_credentials() -> None:
    plain = SmtpProvider.from_url("smtp://mail.example", sender=SENDER)
    implicit = SmtpProvider.from_url(
        "smtps://relay%40picasse.example:p%40ss@Mail.Example", sender=SENDER
    )
    custom = SmtpProvider.from_url("smtp://127.0.0.1:2525", sender=SENDER)

    assert (plain.host, plain.port, plain.implicit_tls, plain.username) == (
        "mail.example",
        25,
        False,
        None,
    )
    assert (implicit.host, implicit.port, implicit.implicit_tls) == ("mail.example", 465, True)
    assert implicit.username == "relay@picasse.example"
    assert (custom.host, custom.port) == ("127.0.0.1", 2525)


def test_the_password_stays_out_of_the_providers_repr() -> None:
    provider = SmtpProvider.from_url("smtp://ops:hunter2secret@mail.example", sender=SENDER)

    assert "hunter2" not in repr(provider)
    assert "hunter2" not in str(provider)


def test_a_sender_that_is_not_an_address_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        SmtpProvider.from_url("smtp://mail.example", sender="Picasse")
