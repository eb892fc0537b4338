"""Integration fixtures: each test gets its own schema on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from picasse.adapters.master_key import create_master_key
from picasse.domain.accounts import Accounts
from picasse.domain.messaging import Messages
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts, open_messages


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    create_master_key(settings.master_key_path)
    return settings


@pytest.fixture
def open_store(
    settings: Settings, database_url: str, schema: str
) -> Iterator[Callable[[], Accounts]]:
    """Opens another Accounts application on the same schema, as another process would."""
    opened: list[Accounts] = []

    def open_one() -> Accounts:
        accounts = open_accounts(settings, database_url, schema=schema)
        opened.append(accounts)
        return accounts

    yield open_one
    for accounts in opened:
        accounts.close()


@pytest.fixture
def accounts(open_store: Callable[[], Accounts]) -> Accounts:
    return open_store()


@pytest.fixture
def messages(settings: Settings, database_url: str, schema: str) -> Iterator[Messages]:
    app = open_messages(settings, database_url, schema=schema)
    yield app
    app.close()


@pytest.fixture
def customer(accounts: Accounts) -> UUID:
    """A subscribed customer."""
    customer_id = accounts.register_customer(
        organisation="Acme", contact_name="Bob", email="bob@example.com",
        phone="+31612345670", billing_address="Street 1",
    )  # fmt: skip
    accounts.start_subscription(customer_id)
    return customer_id


@pytest.fixture
def raw(database_url: str, schema: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain connection for looking at the bytes as stored, bypassing the mapper."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        yield conn
