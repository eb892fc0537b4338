"""Scheduled sends, alert escalation and per-customer rate limits, with the worker's clock moved."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from picasse.adapters.clock import ManualClock
from picasse.adapters.http.acklinks import AckLinks
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.worker import RateLimiter, WorkerSettings
from picasse.adapters.providers.maildir import MaildirProvider
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.errors import NotFound
from picasse.domain.messages import DeliveryStatus, delivery_id
from picasse.domain.messaging import MAX_RECIPIENTS, Messages, SendRequest
from picasse.domain.values import Role
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_messages
from tests.integration.inprocess import relay_and_worker
from tests.integration.platform_processes import wait_until


def _customer(accounts: Accounts, name: str) -> UUID:
    customer_id = accounts.register_customer(
        organisation=name, contact_name="Dana Dispatch", email="dana@example.org",
        phone="+31 6 4444 0000", billing_address="Plein 2, Gouda",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    return customer_id


@pytest.fixture
def messages(settings: Settings, database_url: str, schema: str) -> Iterator[Messages]:
    app = open_messages(settings, database_url, schema=schema, pool_size=8)
    yield app
    app.close()


@pytest.fixture
def maildir(tmp_path: Path) -> MaildirProvider:
    return MaildirProvider(tmp_path / "inboxes")


def _channels(provider: MaildirProvider) -> dict[str, MaildirProvider]:
    return {"sms": provider, "email": provider, "voice": provider}


def _status(messages: Messages, message_id: UUID, index: int = 0) -> DeliveryStatus | None:
    """The delivery's status, or None while it does not exist (yet)."""
    try:
        return messages.delivery_status(delivery_id(message_id, index))
    except NotFound:
        return None


def test_a_scheduled_message_waits_until_its_time(
    messages: Messages, accounts: Accounts, maildir: MaildirProvider, nats_url: str, schema: str
) -> None:
    customer = _customer(accounts, "Scheduled BV")
    clock = ManualClock()
    message_id = messages.send(
        customer,
        SendRequest(
            channel="sms",
            to=["+31612300001"],
            body="Shift starts",
            schedule_at=clock.now() + timedelta(hours=2),
        ),
    )
    settings = WorkerSettings(concurrency=4, recheck_seconds=0.5)
    with relay_and_worker(
        messages, _channels(maildir), nats_url, Topology(schema), settings=settings, clock=clock
    ) as worker:
        # The worker has looked at the job twice and put it back both times: not yet due.
        wait_until(lambda: worker.not_yet_due >= 2, 20, "the worker to defer the job")
        assert _status(messages, message_id) is DeliveryStatus.QUEUED
        clock.advance(timedelta(hours=2, seconds=1))
        wait_until(
            lambda: _status(messages, message_id) is DeliveryStatus.DELIVERED,
            20,
            "the scheduled send",
        )


def test_unacknowledged_alert_recipients_bring_in_the_next_group(
    messages: Messages, accounts: Accounts, maildir: MaildirProvider, nats_url: str, schema: str
) -> None:
    customer = _customer(accounts, "Escalation BV")
    messages.create_group(customer, "night shift", ["+31612300011", "+31612300012"])
    messages.create_group(customer, "managers", ["+31612300019"])
    clock = ManualClock()
    links = AckLinks(b"s" * 32, "https://picasse.example")
    message_id = messages.send(
        customer,
        SendRequest(
            channel="sms", group="night shift", body="Alarm at gate 2", priority="alert",
            ack_within_minutes=5, escalation_groups=["managers"],
        ),
    )  # fmt: skip
    settings = WorkerSettings(concurrency=4, recheck_seconds=0.5)
    with relay_and_worker(
        messages,
        _channels(maildir),
        nats_url,
        Topology(schema),
        settings=settings,
        clock=clock,
        ack_links=links,
    ) as worker:
        wait_until(
            lambda: (
                {_status(messages, message_id, i) for i in (0, 1)} == {DeliveryStatus.DELIVERED}
            ),
            20,
            "the first group",
        )
        # The first recipient follows the link in the alert it received.
        first = next(m for m in maildir_messages(maildir, "sms") if m["To"] == "+31612300011")
        found = re.search(r"Acknowledge: (\S+)", first.get_payload(decode=True).decode())
        assert found is not None, "the alert holds no acknowledgement link"
        link = found.group(1)
        messages.acknowledge(links.verify(link.rsplit("/", 1)[1]), "link")
        # The check of acknowledgements is looked at and put back: not before the deadline.
        deferred = worker.not_yet_due
        wait_until(lambda: worker.not_yet_due >= deferred + 2, 20, "the check to be deferred")
        assert _status(messages, message_id, 2) is None
        # The deadline counts from the request's event time; a margin covers the send itself.
        clock.advance(timedelta(minutes=5, seconds=30))
        wait_until(
            lambda: _status(messages, message_id, 2) is DeliveryStatus.DELIVERED, 30, "the managers"
        )
    phones = [m["To"] for m in maildir_messages(maildir, "sms")]
    assert sorted(phones) == ["+31612300011", "+31612300012", "+31612300019"]
    details = messages.message(message_id, Viewer(role=Role.SUPPORT, customer_id=None))
    assert [d.acknowledged for d in details.deliveries] == [True, False, False]


def maildir_messages(provider: MaildirProvider, channel: str) -> list:  # type: ignore[type-arg]
    import mailbox

    return list(mailbox.Maildir(provider.path_for(channel), create=False))  # type: ignore[arg-type]


def test_one_customers_burst_does_not_starve_another_customer(
    messages: Messages, accounts: Accounts, maildir: MaildirProvider, nats_url: str, schema: str
) -> None:
    noisy, quiet = _customer(accounts, "Noisy BV"), _customer(accounts, "Quiet BV")
    burst = messages.send(
        noisy, SendRequest(channel="sms", to=[f"+3161235{i:04d}" for i in range(200)], body="burst")
    )
    settings = WorkerSettings(
        concurrency=16, rate_per_customer=20.0, burst_per_customer=20.0, backoff_seconds=0.1
    )
    with relay_and_worker(
        messages,
        _channels(maildir),
        nats_url,
        Topology(schema),
        settings=settings,
        clock=ManualClock(),
    ) as worker:
        # The limiter's time stands still: after its first 20 tokens the burst can go no
        # further, however slow or fast the machine, while the quiet customer has its own.
        worker.limiter = RateLimiter(settings.rate_per_customer, clock=lambda: 0.0)
        wait_until(
            lambda: _status(messages, burst, 0) is DeliveryStatus.DELIVERED,
            20,
            "the burst to start",
        )
        single = messages.send(
            quiet, SendRequest(channel="sms", to=["+31612399999"], body="urgent")
        )
        wait_until(
            lambda: _status(messages, single) is DeliveryStatus.DELIVERED,
            60,
            "the quiet customer's message",
        )
        delivered_of_burst = sum(
            _status(messages, burst, i) is DeliveryStatus.DELIVERED for i in range(200)
        )
    # The quiet customer's message went out while the throttled burst was held back: it
    # did not queue behind it.
    assert delivered_of_burst <= 40  # at most two buckets: the first limiter, then this one


def test_one_alert_to_the_most_recipients_goes_at_once_and_then_the_rate_applies() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=100.0, clock=lambda: now[0], burst=float(MAX_RECIPIENTS))
    customer = UUID(int=1)
    assert all(limiter.wait_needed(customer) == 0.0 for _ in range(MAX_RECIPIENTS))
    assert limiter.wait_needed(customer) == pytest.approx(0.01)  # then 100 a second
    now[0] += 1.0
    assert sum(limiter.wait_needed(customer) == 0.0 for _ in range(MAX_RECIPIENTS)) == 100


def test_a_worker_lets_a_customer_send_one_full_message_at_once_by_default() -> None:
    assert WorkerSettings().burst_per_customer == MAX_RECIPIENTS


def test_the_rate_limiter_allows_the_rate_and_says_how_long_to_wait() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=5.0, clock=lambda: now[0])
    customer = UUID(int=1)
    assert [limiter.wait_needed(customer) for _ in range(5)] == [0.0] * 5
    assert limiter.wait_needed(customer) == pytest.approx(0.2)
    assert limiter.wait_needed(UUID(int=2)) == 0.0  # another customer has its own bucket
    now[0] += 0.2
    assert limiter.wait_needed(customer) == 0.0
