"""Our event store against the eventsourcing library's contract: its own application test
cases, a bank-accounts application with an upcast event class, and each library setting
the store does not honour refused at start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event  # noqa: TID251  (the library itself is tested)
from eventsourcing.persistence import StoredEvent
from eventsourcing.tests.application import ApplicationTestCase
from eventsourcing.tests.application import BankAccounts as LibraryBankAccounts
from eventsourcing.utils import get_topic

from picasse.adapters.crypto import EventNotStorable
from picasse.adapters.postgres.store import Factory, StoreSettingRefused
from picasse.domain.personal import Personal
from picasse.runners import cli
from picasse.runners.settings import Settings
from picasse.runners.wiring import eventsourcing_env


@pytest.fixture
def env(database_url: str, settings: Settings, schema: str) -> dict[str, str]:
    return eventsourcing_env(database_url, settings.master_key_path, schema=schema)


def _tables(raw: psycopg.Connection[Any]) -> list[str]:
    rows = raw.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    ).fetchall()
    return sorted(str(row[0]) for row in rows)


# Settings the store does not honour are refused before anything is made.

REFUSED = {
    "CIPHER_TOPIC": "eventsourcing.cipher:AESCipher",
    "CIPHER_KEY": "dGhpcyBpcyBub3QgYSByZWFsIGtleSBhdCBhbGwhIQ==",
    "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
    "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
    "IS_SNAPSHOTTING_ENABLED": "y",
    "MAPPER_TOPIC": "eventsourcing.persistence:Mapper",
    "TRANSCODER_TOPIC": "eventsourcing.persistence:JSONTranscoder",
    "APPLICATION_RECORDER_TOPIC": "eventsourcing.postgres:PostgresApplicationRecorder",
    "PROCESS_RECORDER_TOPIC": "eventsourcing.postgres:PostgresProcessRecorder",
    "ORIGINATOR_ID_TYPE": "text",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_setting_the_store_does_not_honour_is_refused_at_start_with_its_name(
    name: str, env: dict[str, str], raw: psycopg.Connection[Any]
) -> None:
    with pytest.raises(StoreSettingRefused) as refused:
        Application(env={**env, name: REFUSED[name]})
    message = str(refused.value)
    assert name in message and "\n" not in message
    assert _tables(raw) == []  # refused before any table was made


def test_a_setting_that_is_switched_off_or_at_the_one_value_honoured_is_accepted(
    env: dict[str, str],
) -> None:
    settings = {"POSTGRES_ENABLE_DB_FUNCTIONS": "n", "ORIGINATOR_ID_TYPE": "UUID"}
    with Application[UUID](env={**env, **settings}) as app:
        assert app.save(Aggregate())[0].notification.id == 1


def test_process_and_aggregate_recorders_are_refused(env: dict[str, str]) -> None:
    factory = Factory(env)
    try:
        with pytest.raises(StoreSettingRefused, match="process recorder"):
            factory.process_recorder()
        with pytest.raises(StoreSettingRefused, match="aggregate recorder"):
            factory.aggregate_recorder(purpose="snapshots")
    finally:
        factory.close()


def test_the_cli_refuses_a_cipher_setting_with_exit_code_3_and_one_line(
    database_url: str,
    settings: Settings,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PICASSE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("PICASSE_DATABASE_URL", database_url)
    monkeypatch.setenv("PICASSE_DATABASE_SCHEMA", schema)
    monkeypatch.setenv("CIPHER_KEY", REFUSED["CIPHER_KEY"])
    with pytest.raises(SystemExit) as exited:
        cli.main(["customers", "show", "00000000-0000-0000-0000-000000000001"])
    assert exited.value.code == 3
    stderr = capsys.readouterr().err
    assert stderr.startswith("picasse: CIPHER_KEY is set") and stderr.count("\n") == 1


# The library's own application test cases, on our store.


class TestLibraryApplicationCasesOnOurStore(ApplicationTestCase):
    @pytest.fixture(autouse=True)
    def _our_store(self, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        # The library's cases build applications from os.environ, as a deployment does.
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("POSTGRES_POOL_SIZE", "5")
        monkeypatch.setenv("POSTGRES_MAX_OVERFLOW", "10")
        assert os.environ["PERSISTENCE_MODULE"] == "picasse.adapters.postgres.store:Factory"
        yield

    def test_these_cases_run_on_our_store(self) -> None:
        with Application[UUID]() as app:
            assert isinstance(app.factory, Factory)


def test_the_library_bank_accounts_example_is_refused_for_its_snapshots(
    env: dict[str, str],
) -> None:
    with pytest.raises(StoreSettingRefused, match="IS_SNAPSHOTTING_ENABLED"):
        LibraryBankAccounts(env=env)


class LibraryBankAccountsWithoutSnapshots(LibraryBankAccounts):
    is_snapshotting_enabled = False


def test_the_library_bank_account_event_holding_another_type_than_annotated_is_not_written(
    env: dict[str, str], raw: psycopg.Connection[Any]
) -> None:
    # Its Opened event annotates email_address as str but holds an EmailAddress object.
    with LibraryBankAccountsWithoutSnapshots(env=env) as app:
        with pytest.raises(EventNotStorable, match=r"BankAccount\.Opened"):
            app.open_account(full_name="Alice", email_address="alice@example.com")
        assert app.recorder.max_notification_id() in (None, 0)
    assert raw.execute(
        "SELECT count(*) FROM librarybankaccountswithoutsnapshots_events"
    ).fetchone() == (0,)


# A bank-accounts application written for our store: the library's example, annotated.


@dataclass(frozen=True)
class EmailAddress:
    address: str


class BankAccount(Aggregate):
    @event("Opened")
    def __init__(
        self,
        full_name: Annotated[str, Personal("contact")],
        email_address: Annotated[EmailAddress, Personal("contact")],
        opened_at: datetime,
    ) -> None:
        self.full_name = full_name
        self.email_address = email_address
        self.opened_at = opened_at
        self.balance = Decimal("0.00")
        self.currency = "EUR"

    class TransactionAppended(Aggregate.Event):
        """Version 2 names the currency; version 1 events were all in euros."""

        class_version = 2
        amount: Decimal
        currency: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["currency"] = "EUR"

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, BankAccount)
            aggregate.balance += self.amount
            aggregate.currency = self.currency

    def append_transaction(self, amount: Decimal, currency: str = "EUR") -> None:
        self.trigger_event(self.TransactionAppended, amount=amount, currency=currency)


class OldBankAccount(Aggregate):
    class TransactionAppended(Aggregate.Event):
        """How version 1 of the event was written."""

        amount: Decimal


class BankAccounts(Application[UUID]):
    def open_account(self, full_name: str, email_address: str, opened_at: datetime) -> UUID:
        account = BankAccount(full_name, EmailAddress(email_address), opened_at)
        self.save(account)
        return account.id

    def credit_account(self, account_id: UUID, amount: Decimal) -> None:
        account: BankAccount = self.repository.get(account_id)
        account.append_transaction(amount)
        self.save(account)

    def account(self, account_id: UUID) -> BankAccount:
        account: BankAccount = self.repository.get(account_id)
        return account


AMSTERDAM_SUMMER = timezone(timedelta(hours=2))


@pytest.fixture
def bank(env: dict[str, str]) -> Iterator[BankAccounts]:
    with BankAccounts(env=env) as app:
        yield app


def test_bank_accounts_open_credit_and_replay_on_our_store(
    bank: BankAccounts, env: dict[str, str], raw: psycopg.Connection[Any]
) -> None:
    opened_at = datetime(2031, 7, 1, 9, 30, tzinfo=AMSTERDAM_SUMMER)
    account_id = bank.open_account("Alicefullname Q", "alice.q@example.com", opened_at)
    for amount in ("10.00", "25.00", "30.00"):
        bank.credit_account(account_id, Decimal(amount))
    assert len(bank.notification_log["1,10"].items) == 4
    with BankAccounts(env=env) as reopened:
        account = reopened.account(account_id)
    assert account.balance == Decimal("65.00") and account.version == 4
    assert account.full_name == "Alicefullname Q"
    assert account.email_address == EmailAddress("alice.q@example.com")
    assert account.opened_at == opened_at
    assert account.opened_at.utcoffset() == timedelta(hours=2)
    stored = b"".join(bytes(row[0]) for row in raw.execute("SELECT state FROM bankaccounts_events"))
    assert b"Alicefullname" not in stored and b"alice.q@example.com" not in stored


def test_a_version_1_event_in_the_store_is_upcast_when_the_account_is_read(
    bank: BankAccounts,
) -> None:
    opened_at = datetime(2031, 7, 1, 9, 30, tzinfo=AMSTERDAM_SUMMER)
    account_id = bank.open_account("Bob", "bob@example.com", opened_at)
    # A credit as the first version of the class wrote it (no currency).
    # The library makes each event class a dataclass when it is defined: mypy sees only
    # the base class's fields, not `amount`.
    old = OldBankAccount.TransactionAppended(  # type: ignore[call-arg]
        originator_id=account_id,
        originator_version=2,
        timestamp=opened_at,
        amount=Decimal("12.50"),
    )
    stored = bank.mapper.to_stored_event(old)
    bank.recorder.insert_events(
        [
            StoredEvent(
                stored.originator_id,
                stored.originator_version,
                get_topic(BankAccount.TransactionAppended),
                stored.state,
            )
        ]
    )
    bank.credit_account(account_id, Decimal("1.00"))  # a version 2 event after it
    account = bank.account(account_id)
    assert (account.balance, account.currency, account.version) == (Decimal("13.50"), "EUR", 3)


class Loosely(Aggregate):
    @event("Made")
    def __init__(self, anything: Any) -> None:
        self.anything = anything


def test_an_event_with_an_any_field_is_refused_before_anything_is_written(
    bank: BankAccounts, raw: psycopg.Connection[Any]
) -> None:
    account_id = bank.open_account(
        "Carol", "carol@example.com", datetime(2031, 1, 1, tzinfo=AMSTERDAM_SUMMER)
    )
    with pytest.raises(EventNotStorable, match=r"Loosely\.Made\.anything is typed Any"):
        bank.save(Loosely(anything={"a": 1}))
    rows = raw.execute("SELECT originator_id FROM bankaccounts_events").fetchall()
    assert rows == [(account_id,)]
