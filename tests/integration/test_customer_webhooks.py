"""Customers' webhooks for real: the API registers an endpoint, a message is delivered, the
relay publishes its status event, the sender posts it signed to an HTTP server in this
test, which checks it with the `standardwebhooks` package (an implementation of its own).
Failed posts come back on the scheduler's job as the clock moves; nobody sleeps for time."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from psycopg.conninfo import conninfo_to_dict
from standardwebhooks.webhooks import Webhook

from picasse.adapters.clock import ManualClock
from picasse.adapters.http.app import HttpDeps, create_app
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.worker import WorkerSettings
from picasse.adapters.postgres.webhook_log import WebhookLog, transaction_on
from picasse.adapters.providers.maildir import MaildirProvider
from picasse.adapters.webhook_posts import post_event
from picasse.domain.messaging import SendRequest
from picasse.runners.api import http_deps
from picasse.runners.scheduler import Scheduler
from picasse.runners.settings import Settings
from picasse.runners.webhook_retries import webhook_retry_job
from picasse.runners.worker import webhook_sender
from tests.integration.api_server import (
    Tenant,
    bearer,
    catch_up_views,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)
from tests.integration.inprocess import relay_and_worker
from tests.integration.platform_processes import wait_until

WAIT = 20.0  # seconds of wall time a step may take at most (never time the behaviour needs)


class Received(msgspec.Struct, frozen=True):
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A customer's HTTP endpoint: records every post and answers `status`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                receiver.received.append(
                    Received(headers={k.lower(): v for k, v in self.headers.items()}, body=body)
                )
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/picasse-events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Settings]:
    with module_settings(tmp_path_factory, database_url, "customer-webhooks") as settings:
        yield msgspec.structs.replace(
            settings,
            webhooks_allow_private=True,
            nats_namespace=f"wh{uuid.uuid4().hex[:10]}",
        )


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def deps(here: Settings, database_url: str, clock: ManualClock) -> Iterator[HttpDeps]:
    with http_deps(here, database_url, clock=clock) as opened:
        yield with_cheap_passwords(opened)


@pytest.fixture(scope="module")
def tenant(deps: HttpDeps, here: Settings, database_url: str) -> Tenant:
    made = make_tenant(deps, "Hooks")
    catch_up_views(here, database_url)  # the sender finds the admins to mail in the view
    return made


@pytest.fixture(scope="module")
def api(deps: HttpDeps, tenant: Tenant) -> Iterator[httpx.Client]:
    with (
        serving(create_app(deps)) as base_url,
        httpx.Client(
            base_url=base_url, headers=bearer(deps, tenant.admin_login), timeout=20
        ) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def maildir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webhook-maildir")


@pytest.fixture(scope="module")
def pipeline(
    deps: HttpDeps, here: Settings, nats_url: str, clock: ManualClock, maildir: Path
) -> Iterator[None]:
    """Relay, delivery worker and webhook sender in this process, as `picasse worker` wires them."""
    provider = MaildirProvider(maildir)
    with relay_and_worker(
        deps.messages,
        {"email": provider, "sms": provider, "voice": provider},
        nats_url,
        Topology(here.nats_namespace),
        settings=WorkerSettings(),
        also=lambda js: webhook_sender(here, deps.messages, js),
    ):
        yield


@pytest.fixture(scope="module")
def retries(here: Settings, database_url: str, nats_url: str, clock: ManualClock) -> Scheduler:
    """The scheduler with the webhook job alone, run by the test when it moves the clock."""
    return Scheduler([webhook_retry_job(here, database_url, nats_url)], clock)


def _register(api: httpx.Client, url: str, events: list[str]) -> dict[str, Any]:
    response = api.post("/v1/webhooks", json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _send(deps: HttpDeps, tenant: Tenant, to: str) -> uuid.UUID:
    return deps.messages.send(
        tenant.customer_id,
        SendRequest(channel="email", to=[to], body=f"Body of a test {uuid.uuid4()}", subject="Hi"),
        requested_by=tenant.user_id,
    )


def test_a_delivered_message_is_posted_signed_with_ids_statuses_and_times_only(
    api: httpx.Client, deps: HttpDeps, tenant: Tenant, pipeline: None
) -> None:
    with Receiver() as receiver:  # open until the end: a repeat may still come (at least once)
        created = _register(api, receiver.url, ["delivery.delivered"])
        recipient = "webhook.recipient@rcpt.example"
        message_id = _send(deps, tenant, recipient)

        wait_until(lambda: _about(receiver, message_id), WAIT, "the signed status event")

        post, *repeats = _about(receiver, message_id)
        verified = Webhook(created["secret"]).verify(post.body, post.headers)
        assert verified["type"] == "delivery.delivered"
        assert verified["data"]["status"] == "delivered"
        assert set(verified["data"]) == {"message_id", "delivery_id", "status", "occurred_at"}
        assert recipient.encode() not in post.body and b"Body of a test" not in post.body
        # A repeat is the same event: the receiver drops it by its webhook-id.
        assert all(r.headers["webhook-id"] == post.headers["webhook-id"] for r in repeats)
        assert created["secret"].startswith("whsec_")
        listed = api.get("/v1/webhooks").json()
        assert [w["id"] for w in listed] == [created["id"]] and "secret" not in listed[0]
        attempts = api.get(f"/v1/webhooks/{created['id']}/attempts").json()
        assert {(a["status_code"], a["outcome"]) for a in attempts} == {(204, "delivered")}
        assert api.delete(f"/v1/webhooks/{created['id']}").status_code == 204
    assert api.get(f"/v1/webhooks/{created['id']}").status_code == 404


def test_an_endpoint_answering_500_is_retried_until_disabled_after_24_hours_then_enabled_again(
    api: httpx.Client,
    deps: HttpDeps,
    tenant: Tenant,
    pipeline: None,
    retries: Scheduler,
    clock: ManualClock,
    maildir: Path,
    here: Settings,
    database_url: str,
) -> None:
    log = WebhookLog(transaction_on(dict(conninfo_to_dict(database_url))), here.database_schema)
    with Receiver() as receiver:
        receiver.status = 500
        created = _register(api, receiver.url, ["delivery.delivered", "delivery.failed"])
        endpoint = created["id"]
        started = clock.now()
        # Only this message's posts count: the customer's other mail (its users' invitations,
        # queued before the pipeline ran) may be posted to the endpoint too.
        sent = _send(deps, tenant, "retried.recipient@rcpt.example")
        wait_until(lambda: _about(receiver, sent), WAIT, "the first attempt")

        def disabled() -> bool:
            return bool(api.get(f"/v1/webhooks/{endpoint}").json()["disabled"])

        while True:
            wait_until(lambda: disabled() or _pending(log, endpoint, sent), WAIT, "the next try")
            if disabled():
                break
            seen = len(_about(receiver, sent))
            (due,) = _pending(log, endpoint, sent)
            clock.set(due)  # the clock, not the test, waits for the back-off
            retries.run_due()
            wait_until(lambda: len(_about(receiver, sent)) > seen, WAIT, "a retry")
            wait_until(
                lambda: len(_attempts(api, endpoint, _about(receiver, sent))) > seen,
                WAIT,
                "the attempt recorded",
            )
            assert seen < 30, "retried without end"

        posts = _about(receiver, sent)
        ids = {r.headers["webhook-id"] for r in posts}
        assert len(ids) == 1  # every retry is the same event: receivers drop repeats by its id
        for post in posts:  # each retry signed anew, for its own timestamp
            moment = datetime.fromtimestamp(int(post.headers["webhook-timestamp"]))
            expected = Webhook(created["secret"]).sign(
                post.headers["webhook-id"], moment, post.body.decode()
            )
            assert post.headers["webhook-signature"] == expected
        assert clock.now() - started >= timedelta(hours=24)
        assert clock.now() - started < timedelta(hours=25)
        attempts = _attempts(api, endpoint, posts)
        assert {a["status_code"] for a in attempts} == {500}
        assert len(attempts) == len(posts)
        admin_mail = f"{tenant.admin_login}@users.example"
        wait_until(lambda: _mails_to(maildir, admin_mail), WAIT, "the mail to the customer's admin")
        assert "disabled" in _mails_to(maildir, admin_mail)[0]["subject"]
        assert not _mails_to(maildir, f"{tenant.user_login}@users.example")  # admins only

        # An admin enables it again. Its next failure starts a new streak rather than
        # disabling it at once, and nothing of its disabled time is posted.
        enabled = api.post(f"/v1/webhooks/{endpoint}/enable")
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["disabled"] is False
        assert api.post(f"/v1/webhooks/{endpoint}/enable").status_code == 200  # idempotent
        later = _send(deps, tenant, "after.enabling@rcpt.example")
        wait_until(lambda: _pending(log, endpoint, later), WAIT, "the failed post's retry planned")
        assert not disabled()
        assert not _pending(log, endpoint, sent)
        (due,) = _pending(log, endpoint, later)
        receiver.status = 204
        clock.set(due)
        retries.run_due()
        wait_until(lambda: len(_about(receiver, later)) == 2, WAIT, "the retry after enabling")
        wait_until(lambda: not _pending(log, endpoint, later), WAIT, "the retry recorded")
        assert len(_about(receiver, sent)) == len(posts)


def _attempts(api: httpx.Client, endpoint_id: str, posts: list[Received]) -> list[dict[str, Any]]:
    """The endpoint's recorded attempts at posting the events of these posts."""
    events = {post.headers["webhook-id"] for post in posts}
    attempts: list[dict[str, Any]] = api.get(f"/v1/webhooks/{endpoint_id}/attempts").json()
    return [a for a in attempts if a["event_id"] in events]


def _pending(log: WebhookLog, endpoint_id: str, message_id: uuid.UUID) -> list[datetime]:
    """When the endpoint's pending posts about this message are due."""
    far = datetime(9999, 1, 1, tzinfo=UTC)
    return [
        post.next_attempt_at
        for endpoint, event, _ in log.due(far)
        if str(endpoint) == endpoint_id
        and (post := log.post(endpoint, event)) is not None
        and post.next_attempt_at is not None
        and str(message_id).encode() in post.payload
    ]


def _about(receiver: Receiver, message_id: uuid.UUID) -> list[Received]:
    return [r for r in receiver.received if str(message_id).encode() in r.body]


def _mails_to(maildir: Path, address: str) -> list[email.message.Message]:
    """Mail delivered to `address`, in any channel's maildir. Only `new/` and `cur/`, as
    a Maildir reader does: a message is written in `tmp/` and then moved to `new/`, so a
    walk of the whole tree could meet it in neither place while it moves."""
    found = []
    for path in [*maildir.glob("*/new/*"), *maildir.glob("*/cur/*")]:
        if path.is_file():
            mail = email.message_from_bytes(path.read_bytes())
            if address in (mail.get("To") or ""):
                found.append(mail)
    return found


def test_a_webhook_url_on_127_0_0_1_is_refused_when_private_destinations_are_not_allowed(
    deps: HttpDeps, tenant: Tenant
) -> None:
    strict = create_app(dataclasses.replace(deps, webhooks_allow_private=False))
    with (
        serving(strict) as base_url,
        httpx.Client(
            base_url=base_url, headers=bearer(deps, tenant.admin_login), timeout=20
        ) as client,
    ):
        for url in ("http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://169.254.169.254/",
                    "http://10.1.2.3/hook", "http://localhost/hook"):  # fmt: skip
            refused = client.post("/v1/webhooks", json={"url": url, "events": ["delivery.failed"]})
            assert refused.status_code == 422, (url, refused.text)
            assert refused.json()["code"] == "webhook-destination-refused"
        for url in ("ftp://93.184.216.34/x", "http://user:pw@93.184.216.34/x"):
            refused = client.post("/v1/webhooks", json={"url": url, "events": ["delivery.failed"]})
            assert refused.status_code == 422 and refused.json()["field"] == "url"


def test_a_post_to_127_0_0_1_is_refused_and_recorded_so_when_private_destinations_are_not_allowed() -> (
    None
):
    async def attempt(url: str) -> Any:
        async with httpx.AsyncClient() as client:
            return await post_event(
                client, url, "whsec_" + "A" * 44, "evt_1", b"{}", at=datetime(2026, 1, 1, tzinfo=UTC),
                allow_private=False,
            )  # fmt: skip

    with Receiver() as receiver:
        result = asyncio.run(attempt(receiver.url))
    assert (result.succeeded, result.status_code, result.outcome) == (False, None, "refused")
    assert receiver.received == []


def test_only_the_customers_admins_manage_its_webhooks(deps: HttpDeps, tenant: Tenant) -> None:
    with (
        serving(create_app(deps)) as base_url,
        httpx.Client(
            base_url=base_url, headers=bearer(deps, tenant.user_login), timeout=20
        ) as user,
    ):
        assert user.get("/v1/webhooks").status_code == 403
        body = {"url": "https://93.184.216.34/x", "events": ["delivery.failed"]}
        assert user.post("/v1/webhooks", json=body).status_code == 403
