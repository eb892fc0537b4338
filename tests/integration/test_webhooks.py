"""Receipts and ack links over real HTTP: the API under uvicorn, the event store on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import msgspec
import psycopg
import pytest
import uvicorn
from psycopg import sql

from picasse.adapters.http.acklinks import AckLinks, ack_links_from
from picasse.adapters.http.app import create_app
from picasse.adapters.master_key import create_master_key, read_master_key
from picasse.adapters.postgres.store import recorder_of
from picasse.adapters.providers import Delivery as ProviderDelivery
from picasse.adapters.providers import Sent
from picasse.adapters.providers.receipts import SIGNATURE_HEADER, sign_receipt
from picasse.adapters.providers.voice import HttpVoiceGateway
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.messages import DeliveryStatus, FailureReason, delivery_id
from picasse.domain.messaging import DeliveryDetails, Messages, SendRequest
from picasse.domain.values import Role
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts, open_messages
from tests.integration.api_server import PASSWORD, logged_in, start_api_process
from tests.integration.gateway import FakeGateway
from tests.ports import free_port
from tests.users import add_customer_user

TOKENS = {"sms-primary": "primary-token", "sms-failover": "failover-token", "voice": "voice-token"}
RECEIPTS = "/v1/webhooks/receipts"
PHONE = "+31612345678"


class Alert(msgspec.Struct, frozen=True):
    customer_id: UUID
    message_id: UUID
    delivery_id: UUID


# One store and one server for the whole module (opening and closing them is what takes
# time); each test makes its own alert, so no test sees another's delivery.


@pytest.fixture(scope="module")
def module_schema(database_url: str) -> Iterator[str]:
    name = f"t_{uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Settings:
    data_dir = tmp_path_factory.mktemp("webhooks") / "data"
    settings = Settings(data_dir=data_dir, database_url=database_url)
    create_master_key(settings.master_key_path)
    return settings


@pytest.fixture(scope="module")
def customers(
    module_settings: Settings, database_url: str, module_schema: str
) -> Iterator[Accounts]:
    accounts = open_accounts(module_settings, database_url, schema=module_schema)
    yield accounts
    accounts.close()


@pytest.fixture(scope="module")
def messages(
    module_settings: Settings, database_url: str, module_schema: str
) -> Iterator[Messages]:
    messages = open_messages(module_settings, database_url, schema=module_schema)
    yield messages
    messages.close()


@pytest.fixture(scope="module")
def api(
    module_settings: Settings, module_schema: str, database_url: str, messages: Messages
) -> Iterator[httpx.Client]:
    """The app under uvicorn on a free port, in a thread; a client for its base URL."""
    here = msgspec.structs.replace(module_settings, database_schema=module_schema)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with http_deps(here, database_url) as deps:
        app = create_app(
            dataclasses.replace(
                deps,
                messages=messages,
                receipt_tokens=TOKENS,
                ack_links=ack_links_from(
                    read_master_key(module_settings.master_key_path), base_url
                ),
            )
        )
        server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.01)
        with httpx.Client(base_url=base_url, timeout=10) as client:
            yield client
        server.should_exit = True
        thread.join(10)
        listener.close()


@pytest.fixture
def links(module_settings: Settings, api: httpx.Client) -> AckLinks:
    """Links as the platform mints them for this server."""
    return ack_links_from(read_master_key(module_settings.master_key_path), str(api.base_url))


@pytest.fixture
def alert(customers: Accounts, messages: Messages) -> Alert:
    return _new_alert(customers, messages)


def _customer(customers: Accounts) -> UUID:
    customer_id = customers.register_customer(
        organisation="Acme", contact_name="Bob", email="bob@example.com",
        phone="+31612345670", billing_address="Street 1",
    )  # fmt: skip
    customers.start_subscription(customer_id)
    return customer_id


def _new_alert(customers: Accounts, messages: Messages, *, handed_over: bool = True) -> Alert:
    """An SMS alert handed to a gateway, its delivery awaiting the network's receipt (or,
    `handed_over=False`, still with the worker)."""
    customer_id = _customer(customers)
    message_id = messages.send(
        customer_id,
        SendRequest(
            channel="sms", to=[PHONE], body="Fire drill at 10:00", priority="alert",
            ack_within_minutes=5,
        ),
    )  # fmt: skip
    delivery = delivery_id(message_id, 0)
    assert messages.start_attempt(delivery) is not None
    if handed_over:
        messages.record_sent(delivery, "sms-primary", "gw-1", final=False)
    return Alert(customer_id, message_id, delivery)


def _receipt(reference: object, status: str = "delivered", reason: str | None = None) -> bytes:
    fields = {"id": "gw-1", "reference": str(reference), "status": status}
    if reason is not None:
        fields["reason"] = reason
    return msgspec.json.encode(fields)


def _post_receipt(
    client: httpx.Client, body: bytes, token: str | None = TOKENS["sms-primary"]
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers[SIGNATURE_HEADER] = sign_receipt(body, token)
    return client.post(RECEIPTS, content=body, headers=headers)


def _delivery(messages: Messages, alert: Alert) -> DeliveryDetails:
    viewer = Viewer(role=Role.CUSTOMER_USER, customer_id=alert.customer_id)
    (delivery,) = messages.message(alert.message_id, viewer).deliveries
    return delivery


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["title"] and problem["detail"] and problem["type"]


# Receipts


def test_a_signed_delivered_receipt_marks_the_delivery_delivered_by_the_signing_gateway(
    api: httpx.Client, messages: Messages, alert: Alert
) -> None:
    response = _post_receipt(api, _receipt(alert.delivery_id), TOKENS["sms-primary"])

    assert response.status_code == 204
    delivery = _delivery(messages, alert)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.provider == "sms-primary"


@pytest.mark.parametrize("gateway", ["sms-failover", "voice"])
def test_a_receipt_from_another_gateway_than_the_one_handed_to_is_forbidden(
    api: httpx.Client, messages: Messages, alert: Alert, gateway: str
) -> None:
    before = messages.recorder.max_notification_id()

    response = _post_receipt(api, _receipt(alert.delivery_id), TOKENS[gateway])

    _assert_problem(response, 403, "forbidden")
    assert messages.recorder.max_notification_id() == before
    delivery = _delivery(messages, alert)
    assert delivery.status is DeliveryStatus.SENDING
    assert delivery.provider == "sms-primary"


def test_a_receipt_for_another_reference_of_the_same_gateway_is_forbidden(
    api: httpx.Client, messages: Messages, alert: Alert
) -> None:
    before = messages.recorder.max_notification_id()
    body = msgspec.json.encode(
        {"id": "gw-someone-else", "reference": str(alert.delivery_id), "status": "delivered"}
    )

    _assert_problem(_post_receipt(api, body), 403, "forbidden")
    assert messages.recorder.max_notification_id() == before
    assert _delivery(messages, alert).status is DeliveryStatus.SENDING


def test_a_receipt_before_the_hand_over_is_recorded_is_a_conflict_the_gateway_retries(
    api: httpx.Client, customers: Accounts, messages: Messages
) -> None:
    alert = _new_alert(customers, messages, handed_over=False)
    before = messages.recorder.max_notification_id()

    _assert_problem(_post_receipt(api, _receipt(alert.delivery_id)), 409, "conflict")
    assert messages.recorder.max_notification_id() == before

    messages.record_sent(alert.delivery_id, "sms-primary", "gw-1", final=False)
    assert _post_receipt(api, _receipt(alert.delivery_id)).status_code == 204
    assert _delivery(messages, alert).status is DeliveryStatus.DELIVERED


def test_the_voice_gateway_cannot_mark_an_email_delivered(
    api: httpx.Client, customers: Accounts, messages: Messages
) -> None:
    """The finding, through the real gateway peer: the voice gateway posts a receipt, signed
    with its own token, naming an e-mail delivery of another customer."""
    customer_id = _customer(customers)
    message_id = messages.send(
        customer_id, SendRequest(channel="email", to=["ann@example.com"], body="Invoice")
    )
    email = delivery_id(message_id, 0)
    assert messages.start_attempt(email) is not None
    messages.record_sent(email, "smtp", None, final=False)  # awaiting, as a gateway would be
    before = messages.recorder.max_notification_id()
    with FakeGateway(token=TOKENS["voice"]) as voice:
        provider = HttpVoiceGateway(
            "voice", voice.url, voice.token, callback_url=f"{api.base_url}{RECEIPTS}"
        )
        call = ProviderDelivery(reference=str(email), channel="voice", to=PHONE, body="Hi")
        sent = asyncio.run(_send_and_close(provider, call))
        assert sent.provider_reference is not None

        for status in ("delivered", "failed"):
            assert voice.send_receipt(sent.provider_reference, status) == 403

    assert messages.recorder.max_notification_id() == before
    viewer = Viewer(role=Role.CUSTOMER_USER, customer_id=customer_id)
    (delivery,) = messages.message(message_id, viewer).deliveries
    assert (delivery.status, delivery.provider) == (DeliveryStatus.SENDING, "smtp")


async def _send_and_close(provider: HttpVoiceGateway, call: ProviderDelivery) -> Sent:
    try:
        return await provider.send(call)
    finally:
        await provider.close()


def test_a_repeated_receipt_is_accepted_and_records_nothing_more(
    api: httpx.Client, messages: Messages, alert: Alert
) -> None:
    body = _receipt(alert.delivery_id)
    assert _post_receipt(api, body).status_code == 204
    recorded = messages.recorder.max_notification_id()

    again = _post_receipt(api, body)

    assert again.status_code == 200
    assert again.json()["recorded"] is False
    assert messages.recorder.max_notification_id() == recorded
    assert _delivery(messages, alert).status is DeliveryStatus.DELIVERED


def test_a_late_failure_receipt_after_the_final_one_records_nothing(
    api: httpx.Client, messages: Messages, alert: Alert
) -> None:
    assert _post_receipt(api, _receipt(alert.delivery_id)).status_code == 204
    recorded = messages.recorder.max_notification_id()

    late = _post_receipt(api, _receipt(alert.delivery_id, "failed", "absent subscriber"))

    assert late.status_code == 200
    assert messages.recorder.max_notification_id() == recorded
    delivery = _delivery(messages, alert)
    assert (delivery.status, delivery.reason) == (DeliveryStatus.DELIVERED, None)


@pytest.mark.parametrize(
    ("status", "reason", "recorded_reason"),
    [
        ("failed", "absent subscriber", FailureReason.RECIPIENT_UNREACHABLE),
        ("undelivered", "network timeout", FailureReason.TIMED_OUT),
        ("busy", None, FailureReason.BUSY),
        ("failed", None, FailureReason.UNKNOWN),
    ],
)
def test_a_failure_receipt_marks_the_delivery_failed_with_the_reason(
    api: httpx.Client,
    messages: Messages,
    alert: Alert,
    status: str,
    reason: str | None,
    recorded_reason: FailureReason,
) -> None:
    response = _post_receipt(api, _receipt(alert.delivery_id, status, reason))

    assert response.status_code == 204
    delivery = _delivery(messages, alert)
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.reason is recorded_reason


def test_a_receipt_quoting_a_number_and_an_address_leaves_only_its_code(
    api: httpx.Client, customers: Accounts, messages: Messages, alert: Alert, database_url: str
) -> None:
    words = "rejected: unknown subscriber +31 6 4417 2093 to annabel.x9q2@example.nl"
    assert _post_receipt(api, _receipt(alert.delivery_id, "failed", words)).status_code == 204
    login = f"user-{uuid4().hex[:8]}"
    add_customer_user(
        customers,
        customer_id=alert.customer_id,
        login=login,
        role=Role.CUSTOMER_USER,
        password=PASSWORD,
    )
    client = logged_in(str(api.base_url), login)
    try:
        answer = client.get(f"/v1/messages/{alert.message_id}")
    finally:
        client.close()

    assert answer.status_code == 200, answer.text
    (delivery,) = answer.json()["deliveries"]
    assert delivery["reason"] == FailureReason.INVALID_RECIPIENT.value
    stored = _stored_events(messages, database_url)
    assert FailureReason.INVALID_RECIPIENT.value.encode() in stored  # the search finds
    # Whole forms only: short digit runs also occur in timestamps, stored as text.
    number_forms = ("+31 6 4417 2093", "+31644172093", "644172093", "4417 2093")
    for fragment in (*number_forms, "annabel", "x9q2", "subscriber", "rejected:"):
        assert fragment not in answer.text
        assert fragment.encode() not in stored


def _stored_events(messages: Messages, database_url: str) -> bytes:
    """Topics and states of every event in the store's table, as PostgreSQL holds them."""
    recorder = recorder_of(messages)
    statement = sql.SQL("SELECT topic, state FROM {}.{}").format(
        sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name)
    )
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(statement).fetchall()
    return b"".join(topic.encode() + bytes(state) for topic, state in rows)


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "sha256=" + "0" * 64,
        sign_receipt(b"another body", TOKENS["sms-primary"]),
        "md5=abc",
    ],
    ids=["missing", "made-up", "for-another-body", "not-sha256"],
)
def test_a_receipt_not_signed_by_our_gateways_is_refused_and_records_nothing(
    api: httpx.Client, messages: Messages, alert: Alert, signature: str | None
) -> None:
    before = messages.recorder.max_notification_id()
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature

    response = api.post(RECEIPTS, content=_receipt(alert.delivery_id), headers=headers)

    _assert_problem(response, 401, "forged-receipt")
    assert messages.recorder.max_notification_id() == before
    assert _delivery(messages, alert).status is DeliveryStatus.SENDING


def test_a_receipt_signed_with_a_token_we_do_not_hold_is_refused(
    api: httpx.Client, messages: Messages, alert: Alert
) -> None:
    response = _post_receipt(api, _receipt(alert.delivery_id), token="someone-elses-token")

    _assert_problem(response, 401, "forged-receipt")
    assert _delivery(messages, alert).status is DeliveryStatus.SENDING


@pytest.mark.parametrize("reference", [uuid4(), "not-a-uuid", ""], ids=["unknown", "text", "empty"])
def test_a_signed_receipt_naming_no_delivery_of_ours_is_not_found_and_records_nothing(
    api: httpx.Client, messages: Messages, alert: Alert, reference: object
) -> None:
    before = messages.recorder.max_notification_id()

    response = _post_receipt(api, _receipt(reference))

    _assert_problem(response, 404, "not-found")
    assert messages.recorder.max_notification_id() == before


def test_a_receipt_for_another_kind_of_aggregate_is_not_found(
    api: httpx.Client, messages: Messages, alert: Alert
) -> None:
    response = _post_receipt(api, _receipt(alert.message_id))

    _assert_problem(response, 404, "not-found")


@pytest.mark.parametrize(
    "body", [b"not json", b"{}", b'{"id": "1", "reference": "x", "status": "lost"}']
)
def test_a_signed_body_that_is_not_a_receipt_is_a_bad_request(
    api: httpx.Client, alert: Alert, body: bytes
) -> None:
    _assert_problem(_post_receipt(api, body), 400, "malformed-receipt")


def test_an_oversized_receipt_is_refused_before_it_is_read(api: httpx.Client) -> None:
    _assert_problem(_post_receipt(api, b" " * 100_000), 413, "too-large")


def test_receipts_arriving_at_once_are_all_accepted_and_deliver_once(
    api: httpx.Client, customers: Accounts, messages: Messages
) -> None:
    # Those that lose the race to save retry on the fresh state; a few rounds make a race
    # all but certain (without the retry, this fails nearly every run).
    for _ in range(4):
        alert = _new_alert(customers, messages)
        body = _receipt(alert.delivery_id)
        before = messages.recorder.max_notification_id() or 0

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: _post_receipt(api, body).status_code, range(16)))

        # One records the receipt; the rest find it recorded: nothing more to record.
        assert sorted(statuses) == [200] * 15 + [204]
        assert messages.recorder.max_notification_id() == before + 1
        assert _delivery(messages, alert).status is DeliveryStatus.DELIVERED


# Acknowledgement links


def test_opening_an_ack_link_asks_for_confirmation_and_acknowledges_nothing(
    api: httpx.Client, links: AckLinks, messages: Messages, alert: Alert
) -> None:
    """Issue 11, finding 12: a mail scanner that follows the link acknowledges nothing."""
    before = messages.recorder.max_notification_id()

    responses = [httpx.get(links.link(alert.delivery_id)) for _ in range(2)]

    for response in responses:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-store"
        assert "Acknowledge this alert" in response.text
        action = f'action="/v1/ack/{links.token(alert.delivery_id)}"'
        assert '<form method="post" ' + action in response.text
        assert "Thank you" not in response.text
        assert PHONE not in response.text
    assert not _delivery(messages, alert).acknowledged
    assert messages.recorder.max_notification_id() == before


def test_the_confirmation_pages_post_acknowledges_the_alert_and_thanks_the_recipient(
    api: httpx.Client, links: AckLinks, messages: Messages, alert: Alert
) -> None:
    response = httpx.post(links.link(alert.delivery_id))  # no login, no cookie, no form field

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Thank you, acknowledged" in response.text
    assert PHONE not in response.text
    assert _delivery(messages, alert).acknowledged


def test_posting_again_shows_the_same_page_and_records_nothing_more(
    api: httpx.Client, links: AckLinks, messages: Messages, alert: Alert
) -> None:
    assert httpx.post(links.link(alert.delivery_id)).status_code == 200
    recorded = messages.recorder.max_notification_id()

    again = httpx.post(links.link(alert.delivery_id))

    assert again.status_code == 200
    assert "Thank you, acknowledged" in again.text
    assert messages.recorder.max_notification_id() == recorded


def test_a_cross_site_post_of_a_link_is_refused(
    api: httpx.Client, links: AckLinks, messages: Messages, alert: Alert
) -> None:
    """Knowing the token is what acknowledges; a page elsewhere posting it is still refused,
    as every changing request from another site is."""
    response = httpx.post(
        links.link(alert.delivery_id),
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )

    assert response.status_code == 403
    assert not _delivery(messages, alert).acknowledged


def test_a_tampered_ack_link_is_not_found_and_acknowledges_nothing(
    api: httpx.Client, links: AckLinks, messages: Messages, alert: Alert
) -> None:
    token = links.token(alert.delivery_id)
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]

    for method in ("GET", "POST"):
        response = api.request(method, f"/v1/ack/{tampered}")

        _assert_problem(response, 404, "invalid-ack-link")
    assert not _delivery(messages, alert).acknowledged


def test_an_ack_link_minted_with_another_key_is_not_found(
    api: httpx.Client, messages: Messages, alert: Alert
) -> None:
    foreign = ack_links_from(b"x" * 32, str(api.base_url))

    for method in ("GET", "POST"):
        response = api.request(method, f"/v1/ack/{foreign.token(alert.delivery_id)}")
        _assert_problem(response, 404, "invalid-ack-link")
    assert not _delivery(messages, alert).acknowledged


# The app itself


def test_health_says_ok(api: httpx.Client) -> None:
    response = api.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_openapi_document_describes_the_webhook_and_the_ack_link(api: httpx.Client) -> None:
    response = api.get("/schema/openapi.json")

    assert response.status_code == 200
    document = response.json()
    receipts = document["paths"][RECEIPTS]["post"]
    assert receipts["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "id",
        "reference",
        "status",
    ]
    assert "application/problem+json" in receipts["responses"]["401"]["content"]
    assert "/v1/ack/{token}" in document["paths"]


def test_an_unknown_path_and_a_wrong_method_answer_with_problem_json(api: httpx.Client) -> None:
    _assert_problem(api.get("/v1/nothing-here"), 404, "not-found")
    wrong_method = api.get(RECEIPTS)
    _assert_problem(wrong_method, 405, "method-not-allowed")
    assert "POST" in wrong_method.headers["allow"]


# The process


def test_the_api_process_says_where_it_listens_logs_no_bodies_and_stops_cleanly_on_sigterm(
    module_settings: Settings, database_url: str, module_schema: str, tmp_path: Path
) -> None:
    port = free_port()
    env = dict(os.environ) | {
        "PICASSE_DATA_DIR": str(module_settings.data_dir),
        "PICASSE_DATABASE_URL": database_url,
        "PICASSE_DATABASE_SCHEMA": module_schema,
        "PICASSE_HTTP_PORT": str(port),
        "PICASSE_SMS_GATEWAY_TOKEN": TOKENS["sms-primary"],
        # The least an API needs: the module's own apps hold connections of the same server.
        "PICASSE_DB_CONNECTIONS": "7",
    }
    stderr_path = tmp_path / "stderr"
    process, line = start_api_process(env, stderr_path)
    try:
        assert process.stdout is not None
        assert line == f"api listening on http://127.0.0.1:{port}\n".encode(), (
            stderr_path.read_text(errors="replace")[-2000:]
        )

        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        forged = _receipt(uuid4(), "failed", f"no such number {PHONE}")
        refused = httpx.post(f"http://127.0.0.1:{port}{RECEIPTS}", content=forged)
        assert refused.status_code == 401

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stdout.read() == b""
    assert PHONE.encode() not in stderr_path.read_bytes()
