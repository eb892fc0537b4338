"""Twilio for SMS and voice, against a local server answering as Twilio's Messages and Calls
resources do: sending, error codes, failover across kinds, signed status callbacks and the
keypad acknowledgement, through our API under uvicorn on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import msgspec
import psycopg
import pytest

from picasse.adapters.http.app import create_app
from picasse.adapters.providers import (
    Delivery,
    DeliveryError,
    PermanentFailure,
    Provider,
    Sent,
    TemporaryFailure,
)
from picasse.adapters.providers.health import ProviderCounters, counted
from picasse.adapters.providers.sms import FailoverSms, HttpSmsGateway
from picasse.adapters.providers.twilio import (
    STATUS_PATH,
    TwilioCallbacks,
    TwilioClient,
    TwilioSms,
    TwilioVoice,
)
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.messages import Delivery as DeliveryAggregate
from picasse.domain.messages import DeliveryStatus, FailureReason, delivery_id
from picasse.domain.messaging import DeliveryDetails, Messages, SendRequest
from picasse.domain.values import Role
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings, SettingsError
from picasse.runners.wiring import provider_health_table, providers_from
from picasse.runners.worker import publish_provider_health
from tests.integration.api_server import (
    add_staff,
    logged_in,
    module_settings,
    serving,
    with_cheap_passwords,
)
from tests.integration.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.integration.gateway import FakeGateway, outcomes

PHONE = "+31612345678"
TEXT = "Fire in building B, leave by the north stairs"
SENDER = "+3197010203040"


class Api(msgspec.Struct, frozen=True):
    url: str
    messages: Messages
    accounts: Accounts
    staff: str  # a platform admin's login


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Settings]:
    with module_settings(tmp_path_factory, database_url, "twilio") as settings:
        yield settings


@pytest.fixture(scope="module")
def api(here: Settings, database_url: str) -> Iterator[Api]:
    """Our API, checking Twilio's signatures for the URL it is served on."""
    callbacks = TwilioCallbacks(AUTH_TOKEN, "http://placeholder.invalid")
    with http_deps(here, database_url) as deps:
        app = create_app(dataclasses.replace(deps, twilio_callbacks=callbacks))
        staff = add_staff(with_cheap_passwords(deps))[Role.PLATFORM_ADMIN]
        with serving(app) as base_url:
            callbacks.public_url = base_url  # what Twilio was told: the URL it signs
            yield Api(base_url, deps.messages, deps.accounts, staff)


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def sms_provider(twilio: FakeTwilio, public_url: str = "https://picasse.example", *,
                 sender: str = SENDER) -> TwilioSms:  # fmt: skip
    client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, base_url=twilio.url)
    return TwilioSms(client, sender=sender, public_url=public_url)


def voice_provider(twilio: FakeTwilio, public_url: str = "https://picasse.example") -> TwilioVoice:
    client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, base_url=twilio.url)
    return TwilioVoice(client, sender=SENDER, public_url=public_url)


def outcome(provider: Provider, delivery: Delivery) -> Sent | DeliveryError:
    (result,) = outcomes(provider, delivery)
    return result


def delivery(channel: str = "sms", reference: str = "ref-1") -> Delivery:
    return Delivery(reference=reference, channel=channel, to=PHONE, body=TEXT,  # type: ignore[arg-type]
                    acknowledgeable=True)  # fmt: skip


# Sending


def test_an_sms_goes_to_the_messages_resource_with_our_status_callback(twilio: FakeTwilio) -> None:
    sent = outcome(sms_provider(twilio), delivery(reference="d-1"))

    (created,) = twilio.created
    assert created.resource == "Messages"
    assert created.form == {
        "To": PHONE,
        "From": SENDER,
        "Body": TEXT,
        "StatusCallback": f"https://picasse.example{STATUS_PATH}?reference=d-1",
    }
    assert sent == Sent(provider="twilio", provider_reference=created.sid, final=False)


def test_a_messaging_service_sender_is_sent_as_messaging_service_sid(twilio: FakeTwilio) -> None:
    outcome(sms_provider(twilio, sender="MG" + "1" * 32), delivery())

    (created,) = twilio.created
    assert created.form["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in created.form


def test_a_call_says_the_alert_and_gathers_one_key_for_our_route(twilio: FakeTwilio) -> None:
    sent = outcome(voice_provider(twilio), delivery("voice", "d-2"))

    (created,) = twilio.created
    assert created.resource == "Calls"
    assert (created.form["To"], created.form["From"]) == (PHONE, SENDER)
    twiml = created.form["Twiml"]
    assert f"<Say>{TEXT}</Say>" in twiml
    gather = re.search(r'<Gather numDigits="1" method="POST" action="([^"]+)">', twiml)
    assert gather and unescape(gather.group(1)) == (
        "https://picasse.example/v1/webhooks/twilio/gather?reference=d-2"
    )
    assert isinstance(sent, Sent) and sent.provider_reference == created.sid


def test_a_call_that_asks_for_no_acknowledgement_only_says_its_text(twilio: FakeTwilio) -> None:
    plain = msgspec.structs.replace(delivery("voice"), acknowledgeable=False)
    outcome(voice_provider(twilio), plain)

    (created,) = twilio.created
    assert created.form["Twiml"] == f"<Response><Say>{TEXT}</Say></Response>"


@pytest.mark.parametrize(
    ("status", "code", "kind", "reason"),
    [
        (400, 21211, PermanentFailure, FailureReason.INVALID_RECIPIENT),
        (400, 21610, PermanentFailure, FailureReason.REJECTED_BY_GATEWAY),
        (400, 21606, PermanentFailure, FailureReason.SENDER_REFUSED),
        (400, None, PermanentFailure, FailureReason.REJECTED_BY_GATEWAY),
        (401, 20003, PermanentFailure, FailureReason.CREDENTIALS_REFUSED),
        (429, 20429, TemporaryFailure, FailureReason.THROTTLED),
        (503, None, TemporaryFailure, FailureReason.PROVIDER_UNAVAILABLE),
    ],
)
def test_twilio_errors_become_reason_codes_without_its_words(
    twilio: FakeTwilio,
    status: int,
    code: int | None,
    kind: type[DeliveryError],
    reason: FailureReason,
) -> None:
    twilio.answer_next(status, code)

    failure = outcome(sms_provider(twilio), delivery())

    assert isinstance(failure, kind) and failure.reason is reason
    assert PHONE not in str(failure)


def test_twilio_down_fails_over_to_the_http_gateway(twilio: FakeTwilio) -> None:
    twilio.answer_next(503)
    with FakeGateway() as gateway:
        http = HttpSmsGateway(
            "sms-primary", gateway.url, gateway.token, callback_url="https://picasse.example/r"
        )
        sent = outcome(FailoverSms(sms_provider(twilio), http), delivery())

        assert isinstance(sent, Sent) and sent.provider == "sms-primary"
        assert len(gateway.submissions) == 1


def _settings(tmp_path: Path, **env: str) -> Settings:
    twilio = {
        "PICASSE_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "PICASSE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PICASSE_TWILIO_FROM": SENDER,
        "PICASSE_SMS_GATEWAY_URL": "http://127.0.0.1:9/gw",
        "PICASSE_SMS_GATEWAY_TOKEN": "gateway-token",
    }
    return Settings.from_environ({"PICASSE_DATA_DIR": str(tmp_path), **twilio, **env})


def _names(provider: Provider) -> list[str]:
    return (
        [p.name for p in provider.providers]
        if isinstance(provider, FailoverSms)
        else [provider.name]
    )


def test_the_failover_order_is_a_list_of_provider_kinds(tmp_path: Path) -> None:
    default = providers_from(_settings(tmp_path))
    chosen = providers_from(_settings(tmp_path, PICASSE_SMS_PROVIDERS="gateway, twilio"))

    assert _names(default["sms"]) == ["twilio", "sms-primary"]
    assert _names(chosen["sms"]) == ["sms-primary", "twilio"]
    assert _names(chosen["voice"]) == ["twilio"]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PICASSE_SMS_PROVIDERS": "twilio,carrier-pigeon"}, "unknown provider 'carrier-pigeon'"),
        ({"PICASSE_VOICE_PROVIDERS": "gateway"}, "'gateway', which is not configured"),
        ({"PICASSE_TWILIO_FROM": ""}, "Twilio needs"),
    ],
)
def test_provider_settings_that_cannot_work_are_refused_in_one_line(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)) as refused:
        providers_from(_settings(tmp_path, **env))
    assert "\n" not in str(refused.value)


# Callbacks through our API


class Handed(msgspec.Struct, frozen=True):
    customer_id: UUID
    message_id: UUID
    sid: str  # Twilio's MessageSid or CallSid
    form: dict[str, str]  # what Twilio was given


def _handed_to_twilio(api: Api, twilio: FakeTwilio, channel: str) -> Handed:
    """An alert to PHONE on `channel`, sent through the fake Twilio as the worker would."""
    messages = api.messages
    customer_id = api.accounts.register_customer(
        organisation="Acme", contact_name="Bob", email="bob@example.com",
        phone="+31612345670", billing_address="Street 1",
    )  # fmt: skip
    api.accounts.start_subscription(customer_id)
    message_id = messages.send(
        customer_id,
        SendRequest(channel=channel, to=[PHONE], body=TEXT, priority="alert",
                    ack_within_minutes=5),
    )  # fmt: skip
    ident = delivery_id(message_id, 0)
    assert messages.start_attempt(ident) is not None
    provider = (
        sms_provider(twilio, api.url) if channel == "sms" else voice_provider(twilio, api.url)
    )
    sent = outcome(provider, delivery(channel, str(ident)))
    assert isinstance(sent, Sent)
    messages.record_sent(ident, sent.provider, sent.provider_reference, final=sent.final)
    return Handed(customer_id, message_id, twilio.created[-1].sid, twilio.created[-1].form)


def _delivery(api: Api, handed: Handed) -> DeliveryDetails:
    viewer = Viewer(role=Role.CUSTOMER_USER, customer_id=handed.customer_id)
    (details,) = api.messages.message(handed.message_id, viewer).deliveries
    return details


def _status_url(form: dict[str, str]) -> str:
    return form["StatusCallback"]


def _gather_url(form: dict[str, str]) -> str:
    found = re.search(r'action="([^"]+)"', form["Twiml"])
    assert found
    return unescape(found.group(1))


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_signed_status_callbacks_are_accepted_and_mark_the_sms_delivered(
    api: Api, twilio: FakeTwilio
) -> None:
    handed = _handed_to_twilio(api, twilio, "sms")
    form, sid = handed.form, handed.sid

    sent = twilio.callback(_status_url(form), {"MessageSid": sid, "MessageStatus": "sent"})
    assert sent.status_code == 200 and sent.json()["recorded"] is False
    assert _delivery(api, handed).status is DeliveryStatus.SENDING

    delivered = twilio.callback(
        _status_url(form), {"MessageSid": sid, "MessageStatus": "delivered"}
    )
    assert delivered.status_code == 204
    details = _delivery(api, handed)
    assert details.status is DeliveryStatus.DELIVERED and details.provider == "twilio"


def test_a_failed_callback_records_the_reason_code_of_its_error_code(
    api: Api, twilio: FakeTwilio
) -> None:
    handed = _handed_to_twilio(api, twilio, "sms")
    form, sid = handed.form, handed.sid

    response = twilio.callback(
        _status_url(form), {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30005"}
    )

    assert response.status_code == 204
    details = _delivery(api, handed)
    assert details.status is DeliveryStatus.FAILED
    assert details.reason is FailureReason.INVALID_RECIPIENT


@pytest.mark.parametrize("forgery", ["wrong token", "no signature", "changed form"])
def test_a_wrongly_signed_callback_is_refused_and_records_nothing(
    api: Api, twilio: FakeTwilio, forgery: str
) -> None:
    handed = _handed_to_twilio(api, twilio, "sms")
    form = handed.form
    fields = {"MessageSid": handed.sid, "MessageStatus": "delivered"}
    before = api.messages.recorder.max_notification_id()

    if forgery == "wrong token":
        response = twilio.callback(_status_url(form), fields, token="not-our-token")
    elif forgery == "no signature":
        response = httpx.post(_status_url(form), data=fields)
    else:  # the signature of these fields, over other fields
        response = httpx.post(
            _status_url(form),
            data={**fields, "MessageStatus": "failed"},
            headers={"X-Twilio-Signature": twilio.signature(_status_url(form), fields)},
        )

    _problem(response, 403, "forged-callback")
    assert api.messages.recorder.max_notification_id() == before
    assert _delivery(api, handed).status is DeliveryStatus.SENDING


def test_a_signed_callback_for_another_sid_is_forbidden(api: Api, twilio: FakeTwilio) -> None:
    handed = _handed_to_twilio(api, twilio, "sms")
    form = handed.form
    before = api.messages.recorder.max_notification_id()

    response = twilio.callback(
        _status_url(form), {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered"}
    )

    _problem(response, 403, "forbidden")
    assert api.messages.recorder.max_notification_id() == before
    assert _delivery(api, handed).status is DeliveryStatus.SENDING


def test_pressing_1_on_the_call_acknowledges_the_alert(api: Api, twilio: FakeTwilio) -> None:
    handed = _handed_to_twilio(api, twilio, "voice")
    form, call_sid = handed.form, handed.sid
    gather = _gather_url(form)

    other_key = twilio.callback(gather, {"CallSid": call_sid, "Digits": "7"})
    assert other_key.status_code == 200 and "not acknowledged" in other_key.text
    assert _delivery(api, handed).acknowledged is False

    forged = twilio.callback(gather, {"CallSid": call_sid, "Digits": "1"}, token="not-ours")
    _problem(forged, 403, "forged-callback")
    assert _delivery(api, handed).acknowledged is False

    pressed = twilio.callback(gather, {"CallSid": call_sid, "Digits": "1"})
    assert pressed.status_code == 200
    assert pressed.headers["content-type"].startswith("application/xml")
    assert "acknowledged" in pressed.text and "not acknowledged" not in pressed.text
    assert _delivery(api, handed).acknowledged is True

    completed = twilio.callback(
        _status_url(form), {"CallSid": call_sid, "CallStatus": "completed", "CallDuration": "61"}
    )
    assert completed.status_code == 204
    assert _delivery(api, handed).status is DeliveryStatus.DELIVERED
    call: DeliveryAggregate = api.messages.repository.get(delivery_id(handed.message_id, 0))
    assert call.minutes == 2  # billed: every minute begun


def test_a_keypad_press_on_another_call_acknowledges_nothing(api: Api, twilio: FakeTwilio) -> None:
    handed = _handed_to_twilio(api, twilio, "voice")
    form = handed.form
    before = api.messages.recorder.max_notification_id()

    response = twilio.callback(_gather_url(form), {"CallSid": "CA" + "e" * 32, "Digits": "1"})

    _problem(response, 403, "forbidden")
    assert api.messages.recorder.max_notification_id() == before
    assert _delivery(api, handed).acknowledged is False


# Provider health on the overview


class _Session:
    """A provider keeping a session (as SMPP does): it says whether it is bound."""

    name = "session"
    bound = False

    async def send(self, delivery: Delivery) -> Sent:
        raise TemporaryFailure(FailureReason.UNREACHABLE)

    async def close(self) -> None:
        pass


def test_the_health_publisher_outlives_a_failed_write_and_writes_once_more_as_it_stops(
    api: Api,
) -> None:
    class Quiet(_Session):
        name = "quiet-session"

    counters = ProviderCounters(api.messages.clock)
    counters.watch(Quiet(), "sms")
    table = provider_health_table(api.messages)
    attempts: list[str] = []

    class FirstWriteFails:
        """The table, with the database away for the first write."""

        def publish(self, worker: str, snapshots: Any, now: Any) -> None:
            attempts.append(worker)
            if len(attempts) == 1:
                raise psycopg.OperationalError("the server closed the connection")
            table.publish(worker, snapshots, now)

    async def run() -> None:
        stop = asyncio.Event()
        publisher = asyncio.create_task(
            publish_provider_health(FirstWriteFails(), counters, stop)  # type: ignore[arg-type]
        )
        while not attempts:  # the first write (it fails; the publisher goes on)
            await asyncio.sleep(0.01)
        counters.count("quiet-session", "sms", sent=True, reachable=True)
        stop.set()  # long before the next round: only the write on stopping can follow
        await publisher

    asyncio.run(run())
    assert len(attempts) == 2 and attempts[0] == attempts[1]  # one worker's rows
    (row,) = [h for h in table.read(api.messages.clock.now()) if h.provider == "quiet-session"]
    assert (row.state, row.sent_per_minute, row.errors) == ("unbound", 0.2, 0)


def test_the_overview_shows_each_providers_state_throughput_and_errors(
    api: Api, twilio: FakeTwilio
) -> None:
    counters = ProviderCounters(api.messages.clock)
    chain = counted(FailoverSms(sms_provider(twilio), _Session()), counters, "sms")
    twilio.answer_next(503)  # Twilio fails over to the session, which is not bound
    results = outcomes(chain, *(delivery(reference=f"h-{n}") for n in range(3)))
    assert [type(o).__name__ for o in results] == ["TemporaryFailure", "Sent", "Sent"]
    voice = counted(voice_provider(twilio), counters, "voice")
    twilio.answer_next(400, 21211)
    outcome(voice, delivery("voice"))

    stopped = asyncio.Event()
    stopped.set()  # the worker's publisher writes once as it stops
    asyncio.run(publish_provider_health(provider_health_table(api.messages), counters, stopped))

    staff = logged_in(api.url, api.staff)
    try:
        page = staff.get("/admin").text
    finally:
        staff.close()
    rows = dict(re.findall(r'<tr data-part="provider-([^"]+)">(.*?)</tr>', page, re.S))
    assert "reachable" in rows["sms-twilio"] and "0.4 per minute" in rows["sms-twilio"]
    assert "1 error " in rows["sms-twilio"]
    assert "unbound" in rows["sms-session"] and "1 error " in rows["sms-session"]
    # A refused number is an error, but Twilio answered: it is reachable.
    assert "reachable" in rows["voice-twilio"] and "1 error " in rows["voice-twilio"]
    assert PHONE not in page and TEXT not in page
