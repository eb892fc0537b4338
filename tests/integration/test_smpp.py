"""SMS over SMPP against the SMSC simulator (tests/integration/smsc.py); the SMSC ids it
hands out are recorded in the real PostgreSQL (`picasse_smsc_ids`), as the workers do."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from picasse.adapters.postgres.smsc_ids import KEPT_FOR, SmscIdTable
from picasse.adapters.postgres.store import shredder_of
from picasse.adapters.providers import Delivery, PermanentFailure, Sent, TemporaryFailure
from picasse.adapters.providers import smpp_pdu as pdu
from picasse.adapters.providers.smpp import SessionReceipts, SmppProvider, SmppUrl
from picasse.domain.messages import DeliveryStatus, FailureReason, delivery_id
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.privacy import Privacy
from picasse.runners.retention import RetentionJob
from picasse.runners.settings import Settings, SettingsError
from picasse.runners.wiring import open_messages, providers_from, smsc_id_table
from picasse.runners.worker import receipt_recorder
from tests.integration.api_server import self_signed_certificate
from tests.integration.platform_processes import (
    delete_streams,
    platform_env,
    processes,
    wait_until,
)
from tests.integration.smsc import Smsc


@pytest.fixture
def smsc() -> Iterator[Smsc]:
    with Smsc() as server:
        yield server


@pytest.fixture
def messages(settings: Settings, database_url: str, schema: str) -> Iterator[Messages]:
    """On a pool of a few connections, as a worker's: the sessions' writes of SMSC ids and
    the receipts' reads of them go on side by side (on one, the 200 messages take 4 s)."""
    app = open_messages(settings, database_url, schema=schema, pool_size=4)
    yield app
    app.close()


@pytest.fixture
def ledger(messages: Messages) -> SmscIdTable:
    return smsc_id_table(messages, messages.clock)


class Receipts:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, str, FailureReason | None]] = []

    async def __call__(
        self, reference: str, provider: str, provider_reference: str, failure: FailureReason | None
    ) -> bool:
        self.got.append((reference, provider, provider_reference, failure))
        return True


def _provider(smsc: Smsc, receipts: SessionReceipts | None = None) -> SmppProvider:
    return SmppProvider(
        "sms-smpp",
        SmppUrl.parse(smsc.url),
        receipts=receipts,
        window=8,
        timeout=2.0,
        rebind_seconds=0.02,
        receipt_retry_seconds=0.02,
    )


def _sms(index: int, body: str) -> Delivery:
    return Delivery(reference=f"ref-{index}", channel="sms", to=f"+3161{index:07d}", body=body)


def _body(index: int) -> str:
    if index % 4 == 0:
        return f"Алерт {index}: " + "Ж" * 140  # UCS-2, three segments
    if index % 4 == 1:
        return f"Gate {index} is open; " + "long text " * 20  # GSM, two segments
    return f"Gate {index} is open"


async def _send_retrying(provider: SmppProvider, delivery: Delivery) -> Sent:
    """As the worker does: a temporary failure is tried again."""
    for _ in range(20):
        try:
            return await provider.send(delivery)
        except TemporaryFailure:
            await asyncio.sleep(0.02)
    raise AssertionError(f"{delivery.reference} never went")


def test_two_hundred_messages_with_an_unbind_and_a_drop_arrive_exactly_once_with_receipts(
    smsc: Smsc, ledger: SmscIdTable, raw: psycopg.Connection
) -> None:
    smsc.unbind_after = 90
    smsc.drop_after = 250
    receipts = Receipts()

    async def run() -> list[Sent]:
        provider = _provider(smsc, SessionReceipts(ledger, receipts))
        gate = asyncio.Semaphore(25)

        async def one(index: int) -> Sent:
            async with gate:
                return await _send_retrying(provider, _sms(index, _body(index)))

        try:
            sent = await asyncio.gather(*(one(i) for i in range(200)))
            for _ in range(200):
                if len(receipts.got) >= 200:
                    break
                await asyncio.sleep(0.02)
            return sent
        finally:
            await provider.close()

    sent = asyncio.run(run())
    arrived = smsc.messages()  # asserts every segment came once and none is missing
    assert arrived == {_sms(i, "").to[1:]: [_body(i)] for i in range(200)}
    assert smsc.binds >= 3  # the unbind and the drop were each followed by a new bind
    assert [s.segments for s in sent] == [
        3 if i % 4 == 0 else 2 if i % 4 == 1 else 1 for i in range(200)
    ]
    ucs2 = [s for s in smsc.taken if s.destination == _sms(0, "").to[1:]]
    assert {s.data_coding for s in ucs2} == {pdu.DATA_CODING_UCS2}
    assert sorted(s.concatenation[2] for s in ucs2 if s.concatenation) == [1, 2, 3]
    assert len({s.concatenation[0] for s in ucs2 if s.concatenation}) == 1
    # One receipt per delivery, delivered, for the id of its first segment, from this provider.
    assert sorted(r[0] for r in receipts.got) == sorted(f"ref-{i}" for i in range(200))
    assert {(r[1], r[3]) for r in receipts.got} == {("sms-smpp", None)}
    assert {r[0]: r[2] for r in receipts.got} == {
        f"ref-{i}": s.provider_reference for i, s in enumerate(sent)
    }
    # Settled deliveries leave no record of their SMSC ids behind.
    assert raw.execute("SELECT count(*) FROM picasse_smsc_ids").fetchone() == (0,)


def test_a_throttled_or_queue_full_answer_is_temporary_and_the_retry_goes(smsc: Smsc) -> None:
    smsc.answer_next(1, pdu.ESME_RTHROTTLED)
    smsc.answer_next(1, pdu.ESME_RMSGQFUL)

    async def run() -> tuple[list[FailureReason], Sent]:
        provider = _provider(smsc)
        reasons = []
        try:
            for _ in range(2):
                with pytest.raises(TemporaryFailure) as failure:
                    await provider.send(_sms(1, "Gate 1 is open"))
                reasons.append(failure.value.reason)
            return reasons, await provider.send(_sms(1, "Gate 1 is open"))
        finally:
            await provider.close()

    reasons, sent = asyncio.run(run())
    assert reasons == [FailureReason.THROTTLED, FailureReason.THROTTLED]
    assert sent.provider == "sms-smpp" and sent.final is False
    assert smsc.messages() == {"31610000001": ["Gate 1 is open"]}


def test_an_invalid_number_is_a_permanent_failure_with_its_reason_code(smsc: Smsc) -> None:
    smsc.refuse("+31610000002")

    async def run() -> PermanentFailure:
        provider = _provider(smsc)
        try:
            with pytest.raises(PermanentFailure) as failure:
                await provider.send(_sms(2, "Gate 2 is open"))
            return failure.value
        finally:
            await provider.close()

    failure = asyncio.run(run())
    assert failure.reason is FailureReason.INVALID_RECIPIENT
    assert "3161" not in str(failure)


def test_wrong_credentials_are_refused_credentials() -> None:
    with Smsc(password="other") as smsc:
        url = smsc.url.replace(":other@", ":wrong@")

        async def run() -> None:
            provider = SmppProvider(
                "sms-smpp", SmppUrl.parse(url), timeout=0.5, rebind_seconds=0.02
            )
            try:
                with pytest.raises(PermanentFailure) as failure:
                    await provider.send(_sms(3, "x"))
                assert failure.value.reason is FailureReason.CREDENTIALS_REFUSED
            finally:
                await provider.close()

        asyncio.run(run())


def test_over_smpps_with_picasse_sms_smpp_ca_the_session_is_tls_and_an_unknown_smsc_gets_nothing(
    tmp_path: Path, ledger: SmscIdTable
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    with Smsc(tls=served) as smsc:
        assert smsc.url.startswith("smpps://")
        settings = Settings.from_environ(
            {
                "PICASSE_DATA_DIR": str(tmp_path),
                "PICASSE_SMS_SMPP_URL": smsc.url,
                "PICASSE_SMS_SMPP_CA": str(cert),  # the SMSC's self-signed certificate
            }
        )

        async def run() -> None:
            receipts = Receipts()
            provider = providers_from(settings, receipts=SessionReceipts(ledger, receipts))["sms"]
            assert isinstance(provider, SmppProvider)
            try:
                sent = await provider.send(_sms(5, "Gate 5 is open"))
                assert sent.segments == 1
                for _ in range(500):  # the receipt comes back on the same TLS session
                    if receipts.got:
                        break
                    await asyncio.sleep(0.01)
                assert receipts.got == [("ref-5", "sms-smpp", sent.provider_reference, None)]
            finally:
                await provider.close()
            # Without the setting, the system's trust store knows no such certificate: no
            # bind, nothing sent.
            url = SmppUrl.parse(smsc.url)
            untrusting = SmppProvider("sms-smpp", url, timeout=0.5, rebind_seconds=0.02)
            try:
                with pytest.raises(TemporaryFailure):
                    await untrusting.send(_sms(6, "Gate 6 is open"))
            finally:
                await untrusting.close()

        asyncio.run(run())
        assert smsc.binds == 1 and smsc.messages() == {"31610000005": ["Gate 5 is open"]}


@pytest.mark.parametrize(
    ("url", "ca", "says"),
    [
        ("smpps://p:s@127.0.0.1:3550", "missing.pem", "cannot load"),
        ("smpps://p:s@127.0.0.1:3550", "not-pem.pem", "cannot load"),
        ("smpp://p:s@127.0.0.1:2775", "ca.pem", "is for smpps:// URLs"),
        ("", "ca.pem", "PICASSE_SMS_SMPP_URL is not"),
    ],
)
def test_an_smpp_ca_that_cannot_work_is_refused_in_one_line(
    tmp_path: Path, url: str, ca: str, says: str
) -> None:
    cert, _ = self_signed_certificate(tmp_path)
    (tmp_path / "ca.pem").write_bytes(cert.read_bytes())
    (tmp_path / "not-pem.pem").write_text("not a certificate")
    env = {"PICASSE_DATA_DIR": str(tmp_path), "PICASSE_SMS_SMPP_CA": str(tmp_path / ca)}
    with pytest.raises(SettingsError, match=re.escape(says)) as refused:
        providers_from(Settings.from_environ(env | {"PICASSE_SMS_SMPP_URL": url}))
    assert "\n" not in str(refused.value)


def test_an_smpp_url_names_no_password_in_its_repr_or_errors() -> None:
    url = SmppUrl.parse("smpps://picasse:s3cret@smsc.example:3550?source=Picasse")
    assert (url.tls, url.port, url.system_id, url.source) == (True, 3550, "picasse", "Picasse")
    assert "s3cret" not in repr(url)
    with pytest.raises(ValueError) as error:
        SmppUrl.parse("http://picasse:s3cret@smsc.example")
    assert "s3cret" not in str(error.value)


# Receipts after a restart: the SMSC ids are recorded in PostgreSQL

DELIVERED = "picasse.domain.messages:Delivery.Delivered"
UCS2_THREE_SEGMENTS = "Пожар в здании B: " + "Ж" * 140


def _handed_over(messages: Messages, customer: UUID, body: str, phone: str) -> UUID:
    """An SMS the worker has started: its delivery, ready to be handed to SMPP."""
    message_id = messages.send(customer, SendRequest(channel="sms", to=[phone], body=body))
    ident = delivery_id(message_id, 0)
    assert messages.start_attempt(ident) is not None
    return ident


def _send_then_restart(
    smsc: Smsc, messages: Messages, ledger: SmscIdTable, ident: UUID, phone: str
) -> Sent:
    """Sends on one provider (a worker), records the hand-over, drops that provider, and
    binds a new one (the restarted worker), on whose session the held receipts come."""
    receipts = SessionReceipts(ledger, receipt_recorder(messages))
    smsc.hold_receipts = True

    async def run() -> Sent:
        first = _provider(smsc, receipts)
        try:
            sent = await first.send(
                Delivery(reference=str(ident), channel="sms", to=phone, body=UCS2_THREE_SEGMENTS)
            )
        finally:
            await first.close()
        await asyncio.to_thread(
            messages.record_sent, ident, sent.provider, sent.provider_reference, final=False
        )
        restarted = _provider(smsc, receipts)
        try:
            restarted.start()  # as the worker does when it starts: no message to send
            for _ in range(500):
                if restarted.bound:
                    break
                await asyncio.sleep(0.01)
            smsc.release_receipts()
            for _ in range(1000):  # every segment's receipt answered, the outcome recorded
                status = await asyncio.to_thread(messages.delivery_status, ident)
                if status.final and len(smsc.receipt_answers) >= 3:
                    break
                await asyncio.sleep(0.01)
        finally:
            await restarted.close()
        return sent

    return asyncio.run(run())


def test_a_receipt_on_a_restarted_workers_session_marks_the_delivery_delivered_once(
    smsc: Smsc,
    messages: Messages,
    ledger: SmscIdTable,
    customer: UUID,
    raw: psycopg.Connection,
) -> None:
    ident = _handed_over(messages, customer, UCS2_THREE_SEGMENTS, "+31610000007")
    sent = _send_then_restart(smsc, messages, ledger, ident, "+31610000007")

    assert sent.segments == 3 and smsc.binds == 2
    assert messages.delivery_status(ident) is DeliveryStatus.DELIVERED
    assert raw.execute(
        "SELECT count(*) FROM picasse_events WHERE topic = %s AND originator_id = %s",
        (DELIVERED, ident),
    ).fetchone() == (1,)
    assert smsc.receipt_answers == [pdu.ESME_ROK] * 3  # each segment's receipt taken once
    assert raw.execute("SELECT count(*) FROM picasse_smsc_ids").fetchone() == (0,)


def test_one_failed_segment_fails_the_delivery_with_its_reason(
    smsc: Smsc,
    messages: Messages,
    ledger: SmscIdTable,
    customer: UUID,
    raw: psycopg.Connection,
) -> None:
    smsc.receipt_state["31610000008"] = "UNDELIV"
    ident = _handed_over(messages, customer, UCS2_THREE_SEGMENTS, "+31610000008")
    _send_then_restart(smsc, messages, ledger, ident, "+31610000008")

    assert messages.delivery_status(ident) is DeliveryStatus.FAILED
    assert messages.repository.get(ident).reason is FailureReason.RECIPIENT_UNREACHABLE
    assert raw.execute(
        "SELECT count(*) FROM picasse_events WHERE originator_id = %s AND topic = %s",
        (ident, "picasse.domain.messages:Delivery.Failed"),
    ).fetchone() == (1,)
    assert raw.execute("SELECT count(*) FROM picasse_smsc_ids").fetchone() == (0,)


def test_retention_removes_smsc_ids_whose_receipt_never_came(
    messages: Messages, ledger: SmscIdTable, raw: psycopg.Connection
) -> None:
    ledger.taken("sms-smpp", "S1", reference="r", first_id="S1", segment=1, segments=2)
    taken_at = messages.clock.now()
    job = RetentionJob(Privacy(shredder=shredder_of, sharing=messages), [], smsc_ids=ledger)

    assert job.run(taken_at + KEPT_FOR - KEPT_FOR / 2) == (
        "removed 0 SMSC id record(s) older than 7 days"
    )
    assert job.run(taken_at + KEPT_FOR + KEPT_FOR / 2).startswith("removed 1 SMSC id")
    assert raw.execute("SELECT count(*) FROM picasse_smsc_ids").fetchone() == (0,)


# Through the platform: relay, JetStream, `picasse worker` processes, PostgreSQL


def test_sms_over_smpp_through_relay_and_workers_is_delivered_or_undelivered_across_a_restart(
    smsc: Smsc,
    messages: Messages,
    customer: UUID,
    settings: Settings,
    database_url: str,
    nats_url: str,
    schema: str,
    tmp_path: Path,
    raw: psycopg.Connection,
) -> None:
    smsc.refuse("+31610000021")
    smsc.hold_receipts = True  # until the worker that sent has been killed
    env = platform_env(
        settings, database_url, nats_url, schema,
        PICASSE_SMS_SMPP_URL=smsc.url, PICASSE_SMS_PROVIDERS="smpp",
    )  # fmt: skip
    try:
        with processes(env, tmp_path / "logs") as platform:
            platform.start("relay")
            first = platform.start("worker")
            long = messages.send(
                customer,
                SendRequest(channel="sms", to=["+31610000020"], body=UCS2_THREE_SEGMENTS),
            )
            bad = messages.send(
                customer, SendRequest(channel="sms", to=["+31610000021"], body="Gate 21")
            )
            accepted, refused = delivery_id(long, 0), delivery_id(bad, 0)
            wait_until(
                lambda: messages.repository.get(accepted).provider == "sms-smpp"
                and messages.delivery_status(refused).final,
                60, "the worker to hand one SMS over and give the other up",
            )  # fmt: skip
            platform.kill(first)
            platform.start("worker")
            wait_until(lambda: smsc.binds >= 2, 30, "the new worker to bind with nothing to send")
            smsc.release_receipts()
            wait_until(
                lambda: messages.delivery_status(accepted) is DeliveryStatus.DELIVERED,
                30, "the receipts to reach the new worker",
            )  # fmt: skip
    finally:
        asyncio.run(delete_streams(nats_url, schema))

    assert messages.repository.get(accepted).segments == 3  # billed: three short messages
    assert smsc.messages() == {"31610000020": [UCS2_THREE_SEGMENTS]}  # once, in order
    assert raw.execute(
        "SELECT count(*) FROM picasse_events WHERE topic = %s AND originator_id = %s",
        (DELIVERED, accepted),
    ).fetchone() == (1,)
    assert messages.delivery_status(refused) is DeliveryStatus.UNDELIVERED
    assert messages.repository.get(refused).reason is FailureReason.INVALID_RECIPIENT
    assert raw.execute("SELECT count(*) FROM picasse_smsc_ids").fetchone() == (0,)
