"""What the API keeps between requests (NoticedCache: the callers of API keys, the customers
found sending) is forgotten at any change of a key, a user or a customer, in the process
that made it at once and in every other one when PostgreSQL delivers the notice. Real PostgreSQL; the API in this process, then as a process
of its own while this one plays another process that changes things."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from picasse.adapters.clock import ManualClock
from picasse.adapters.http.app import HttpDeps, create_app
from picasse.adapters.http.auth import CALLER_LIFETIME, _caller_from_key
from picasse.adapters.postgres.notices import ACCOUNTS_CHANGED
from picasse.adapters.postgres.store import recorder_of
from picasse.domain.access import Viewer
from picasse.domain.messages import delivery_id
from picasse.domain.messaging import Attempt, NothingToSend, SendRequest
from picasse.domain.values import Role
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_messages, remember_sending
from tests.integration.api_server import (
    Tenant,
    make_tenant,
    module_settings,
    serving,
    start_api_process,
    with_cheap_passwords,
)
from tests.integration.platform_processes import wait_until
from tests.ports import free_port

WAIT = 20.0  # seconds of wall time a notice may take at most on a busy machine


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Settings]:
    with module_settings(tmp_path_factory, database_url, "caller-cache") as settings:
        yield settings


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def deps(here: Settings, database_url: str, clock: ManualClock) -> Iterator[HttpDeps]:
    with http_deps(here, database_url, clock=clock) as opened:
        yield with_cheap_passwords(opened)


@pytest.fixture(scope="module")
def base_url(deps: HttpDeps) -> Iterator[str]:
    with serving(create_app(deps)) as url:
        yield url


@pytest.fixture(scope="module")
def acme(deps: HttpDeps) -> Tenant:
    return make_tenant(deps, "Acme")


def _key(deps: HttpDeps, login: str) -> tuple[str, Any]:
    user = deps.accounts.user_by_login(login)
    issued = deps.api_keys.issue(user_id=user.id, customer_id=user.customer_id)
    return issued.key, issued


def _channel(deps: HttpDeps) -> str:
    return recorder_of(deps.messages).keys.notices.channel


def test_a_key_seen_is_kept_until_any_notice_of_the_schema_or_its_lifetime_on_the_clock(
    deps: HttpDeps, base_url: str, acme: Tenant, clock: ManualClock, database_url: str
) -> None:
    key, _ = _key(deps, acme.user_login)
    program = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"})
    assert deps.callers.get(key) is None

    assert program.get(f"/v1/customers/{acme.customer_id}").status_code == 200
    kept = deps.callers.get(key)
    assert kept is not None and kept.user_id == acme.user_id and kept.via == "api-key"

    # Any notice on the schema's channel, from any connection: everything is forgotten.
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_notify(%s, %s)", (_channel(deps), "anything"))
    wait_until(lambda: deps.callers.get(key) is None, WAIT, "the caller forgotten")

    assert program.get(f"/v1/customers/{acme.customer_id}").status_code == 200
    assert deps.callers.get(key) is not None
    clock.advance(CALLER_LIFETIME)
    assert deps.callers.get(key) is None  # read again at the next request
    assert program.get(f"/v1/customers/{acme.customer_id}").status_code == 200
    assert deps.callers.get(key) is not None

    refused = httpx.get(f"{base_url}/v1/customers", headers={"Authorization": f"Bearer {key}x"})
    assert refused.status_code == 401
    assert deps.callers.get(key + "x") is None  # a key that fails is not kept


def test_a_caller_read_while_a_change_came_in_is_not_kept(deps: HttpDeps, acme: Tenant) -> None:
    key, _ = _key(deps, acme.admin_login)
    before = deps.callers.generation
    caller = deps.callers.get(key)
    assert caller is None
    recorder_of(deps.messages).keys.notices.tell(ACCOUNTS_CHANGED)
    read = _caller_from_key(deps, key)
    assert read is not None
    deps.callers.keep(key, read, before)  # read from before the change: dropped
    assert deps.callers.get(key) is None
    deps.callers.keep(key, read, deps.callers.generation)
    assert deps.callers.get(key) == read


def test_the_store_tells_of_changed_keys_users_and_customers_and_not_of_sends_or_new_ones(
    deps: HttpDeps, acme: Tenant, database_url: str
) -> None:
    admin = Viewer(role=Role.CUSTOMER_ADMIN, customer_id=acme.customer_id, user_id=acme.admin_id)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{_channel(deps)}"')
        deps.messages.send(
            acme.customer_id,
            SendRequest(channel="email", to=["one@rcpt.example"], body="Hi", subject="Hi"),
            requested_by=acme.user_id,
        )
        listener.execute("SELECT pg_notify(%s, %s)", (_channel(deps), "after the send"))
        # A new key and a new customer: nothing kept anywhere can be of them.
        _, issued = _key(deps, acme.admin_login)
        deps.accounts.register_customer(
            organisation="Newcomer B.V.",
            contact_name="New Comer",
            email="new@newcomer.example",
            phone="+31612345670",
            billing_address="Damrak 1, Amsterdam",
        )
        listener.execute("SELECT pg_notify(%s, %s)", (_channel(deps), "after the new ones"))
        deps.accounts.change_contact(acme.customer_id, billing_address="Herengracht 2, Amsterdam")
        deps.api_keys.revoke(issued.id, by=admin)
        told = [n.payload for n in _notices(listener, 4)]
    assert told == ["after the send", "after the new ones", ACCOUNTS_CHANGED, ACCOUNTS_CHANGED]


def _notices(conn: psycopg.Connection[Any], count: int) -> list[Any]:
    found: list[Any] = []
    for notice in conn.notifies(timeout=WAIT):
        found.append(notice)
        if len(found) == count:
            break
    return found


def test_a_key_revoked_or_a_user_disabled_by_another_process_is_refused_by_a_running_api(
    deps: HttpDeps, here: Settings, database_url: str, tmp_path: Path
) -> None:
    """The API runs as a process of its own and keeps the callers it has seen; this test's
    process revokes a key and disables a user, as a CLI or another API process would. Each
    is refused once the notice arrives there: without it, they would work for a minute."""
    tenant = make_tenant(deps, "Other")
    revoked_key, issued = _key(deps, tenant.admin_login)
    disabled_key, _ = _key(deps, tenant.user_login)
    with _api_process(here, database_url, tmp_path) as base:
        url = f"{base}/v1/customers/{tenant.customer_id}"

        def status(key: str) -> int:
            return httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code

        for key in (revoked_key, disabled_key, revoked_key, disabled_key):
            assert status(key) == 200  # the second time from what the API kept

        admin = Viewer(role=Role.CUSTOMER_ADMIN, customer_id=tenant.customer_id, user_id=tenant.admin_id)  # fmt: skip
        deps.api_keys.revoke(issued.id, by=admin)
        wait_until(lambda: status(revoked_key) == 401, WAIT, "the revoked key refused")
        assert status(disabled_key) == 200

        deps.accounts.disable_user(tenant.user_login)
        wait_until(lambda: status(disabled_key) == 401, WAIT, "the disabled user's key refused")


@contextmanager
def _api_process(here: Settings, database_url: str, tmp_path: Path) -> Iterator[str]:
    """`picasse api` as a process of its own on the module's schema: its base URL."""
    port = free_port()
    env = dict(os.environ) | {
        "PICASSE_DATA_DIR": str(here.data_dir),
        "PICASSE_DATABASE_URL": database_url,
        "PICASSE_DATABASE_SCHEMA": here.database_schema,
        "PICASSE_HTTP_PORT": str(port),
        "PICASSE_DB_CONNECTIONS": "7",
    }
    stderr_path = tmp_path / "stderr"
    process, line = start_api_process(env, stderr_path)
    try:
        assert line.startswith(b"api listening"), stderr_path.read_text(errors="replace")[-2000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_customer_found_sending_is_remembered_until_a_notice(
    deps: HttpDeps, acme: Tenant, database_url: str
) -> None:
    sending = deps.messages.sending
    assert sending is not None
    request = SendRequest(channel="email", to=["two@rcpt.example"], body="Hi", subject="Hi")
    deps.messages.send(acme.customer_id, request, requested_by=acme.user_id)
    assert sending.get(acme.customer_id) is True
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_notify(%s, %s)", (_channel(deps), "anything"))
    wait_until(lambda: sending.get(acme.customer_id) is None, WAIT, "the customer forgotten")


def test_a_customer_terminated_by_another_process_can_no_longer_send_through_a_running_api(
    deps: HttpDeps, here: Settings, database_url: str, tmp_path: Path
) -> None:
    """The API remembers that the customer may send; this test's process terminates it, as
    `picasse customers terminate` would. Sends are refused (409) once the notice arrives
    there: without it, they would be accepted for a minute."""
    tenant = make_tenant(deps, "Ending")
    key, _ = _key(deps, tenant.user_login)
    with _api_process(here, database_url, tmp_path) as base:
        send = {"channel": "sms", "to": ["+31612345670"], "body": "Gate 3 is open"}

        def status() -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.post(f"{base}/v1/messages", json=send, headers=headers).status_code

        assert [status(), status()] == [202, 202]  # the second from what the API kept
        deps.accounts.terminate_customer(tenant.customer_id)
        wait_until(lambda: status() == 409, WAIT, "sends of the terminated customer refused")


def test_a_worker_remembers_the_customers_sending_and_gives_up_their_deliveries_once_told_of_a_termination(
    deps: HttpDeps, here: Settings, database_url: str
) -> None:
    """A worker's Messages, wired as `picasse worker` wires it, reads the customers of a
    batch only when it does not remember them sending. A termination saved elsewhere (here,
    the API's Messages and store) reaches it by notice: the next batch gives the
    customer's deliveries up rather than send them."""
    tenant = make_tenant(deps, "Worked")
    request = SendRequest(channel="sms", to=["+31612345670"], body="Gate 3 is open")
    first, second = (
        deps.messages.send(tenant.customer_id, request, requested_by=tenant.user_id)
        for _ in range(2)
    )
    worker = open_messages(here, database_url)
    remember_sending(worker)
    try:
        notices = recorder_of(worker).keys.notices
        assert notices.listening.wait(WAIT), "the worker's notice listener did not start"
        sending = worker.sending
        assert sending is not None and sending.get(tenant.customer_id) is None
        (attempt,) = worker.start_attempts([delivery_id(first, 0)])
        assert isinstance(attempt, Attempt)
        assert sending.get(tenant.customer_id) is True  # the next batch reads no customer

        deps.accounts.terminate_customer(tenant.customer_id)
        wait_until(
            lambda: sending.get(tenant.customer_id) is None,
            WAIT,
            "the worker forgetting the customer",
        )
        assert worker.start_attempts([delivery_id(second, 0)]) == [NothingToSend.TERMINATED]
    finally:
        worker.close()
