"""`picasse conferences schedule/list/cancel` as a process, acting as a customer's user."""

from __future__ import annotations

import json
from datetime import timedelta
from uuid import UUID

import pytest

from picasse.adapters.clock import SystemClock
from picasse.domain.access import Viewer
from picasse.domain.values import Role
from picasse.runners.settings import Settings
from picasse.runners.wiring import ensure_master_key, open_accounts, open_conferences, open_messages
from tests.e2e.conftest import Run, register_in_process
from tests.users import add_customer_user

PASSWORD = "correct horse battery staple"
NUMBER = "+31201234567"


@pytest.fixture
def host_login(cli_env: dict[str, str], database_url: str) -> str:
    """A subscribed customer with a dial-in number and a user who hosts; the user's login."""
    settings = Settings.from_environ(cli_env)
    ensure_master_key(settings)
    accounts = open_accounts(settings, database_url)
    messages = open_messages(settings, database_url)
    try:
        customer_id = accounts.register_customer(
            organisation="Talk BV", contact_name="Tess Talk", email="tess@talk.example",
            phone="+31 6 2222 4444", billing_address="Weg 4, Ede",
        )  # fmt: skip
        accounts.start_subscription(customer_id)
        add_customer_user(
            accounts, customer_id=customer_id, login="tess", role=Role.CUSTOMER_USER,
            password=PASSWORD,
        )  # fmt: skip
        open_conferences(settings, messages).add_dial_in_number(
            customer_id, NUMBER, Viewer(role=Role.SUPPORT, customer_id=None)
        )
    finally:
        messages.close()
        accounts.close()
    return "tess"


def test_a_user_schedules_lists_and_cancels_a_conference(picasse: Run, host_login: str) -> None:
    start = (SystemClock().now() + timedelta(days=2)).isoformat()  # the CLI's clock
    acting = ["--as", host_login, "--password-stdin"]
    scheduled = picasse(
        "conferences", "schedule", *acting, "--title", "Board call", "--start", start,
        "--duration", "30", "--participant", "guest@partner.example", "--json",
        stdin=PASSWORD + "\n", check=True,
    )  # fmt: skip
    made = json.loads(scheduled.stdout)
    conference_id = str(UUID(made["conference_id"]))
    assert made["number"] == NUMBER and made["participant_pin"].isdigit()
    listed = picasse("conferences", "list", *acting, "--json", stdin=PASSWORD + "\n", check=True)
    (shown,) = json.loads(listed.stdout)
    assert (shown["id"], shown["title"], shown["status"]) == (
        conference_id,
        "Board call",
        "scheduled",
    )
    assert [p["address"] for p in shown["participants"]] == ["guest@partner.example"]
    picasse("conferences", "cancel", *acting, conference_id, stdin=PASSWORD + "\n", check=True)
    again = picasse("conferences", "cancel", *acting, conference_id, stdin=PASSWORD + "\n")
    assert again.returncode == 1 and "cancelled" in again.stderr
    listed = picasse("conferences", "list", *acting, "--json", stdin=PASSWORD + "\n", check=True)
    assert json.loads(listed.stdout)[0]["status"] == "cancelled"


def test_a_wrong_password_schedules_nothing(picasse: Run, host_login: str) -> None:
    result = picasse(
        "conferences", "schedule", "--as", host_login, "--password-stdin", "--title", "x",
        "--start", "2030-01-01T10:00:00Z", "--duration", "5", stdin="wrong\n",
    )  # fmt: skip
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


def test_the_operator_keeps_a_customers_dial_in_pool(picasse: Run, cli_env: dict[str, str]) -> None:
    customer = register_in_process(
        cli_env, organisation="Pool BV", contact_name="Piet Pool", email="piet@pool.example",
        phone="+31 6 3333 5555", billing_address="Weg 5, Ede",
    )  # fmt: skip
    other = register_in_process(
        cli_env, organisation="Ander BV", contact_name="Ada Ander", email="ada@ander.example",
        phone="+31 6 3333 6666", billing_address="Weg 6, Ede",
    )  # fmt: skip
    added = picasse("conferences", "numbers", "add", "--customer", customer, "+31 20 123 4567")
    assert (added.returncode, added.stdout.strip()) == (0, NUMBER)
    again = picasse("conferences", "numbers", "add", "--customer", customer, NUMBER, check=True)
    assert again.stdout.strip() == NUMBER  # already there: nothing changes
    picasse("conferences", "numbers", "add", "--customer", customer, "+31201234568", check=True)
    taken = picasse("conferences", "numbers", "add", "--customer", other, NUMBER)
    assert taken.returncode == 1 and "another customer's pool" in taken.stderr
    listed = picasse("conferences", "numbers", "list", "--customer", customer, check=True)
    assert listed.stdout.split() == [NUMBER, "+31201234568"]
    picasse("conferences", "numbers", "remove", "+31 20 123 4568", check=True)
    pool = picasse("conferences", "numbers", "list", "--customer", customer, "--json", check=True)
    assert json.loads(pool.stdout) == [NUMBER]
    gone = picasse("conferences", "numbers", "remove", "+31201234568")
    assert gone.returncode == 1 and len(gone.stderr.strip().splitlines()) == 1
    bad = picasse("conferences", "numbers", "add", "--customer", customer, "020 123 4569")
    assert bad.returncode == 1 and "number" in bad.stderr
    assert (
        json.loads(picasse("conferences", "numbers", "list", "--customer", other, "--json").stdout)
        == []
    )
