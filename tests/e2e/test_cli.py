"""The `picasse` CLI as a process: customers, users, audit, and clear refusals."""

from __future__ import annotations

import json
from uuid import UUID

import pytest

from tests.e2e.conftest import Run

CUSTOMER = [
    "customers", "register",
    "--org", "Bakkerij De Vries",
    "--contact-name", "Anna de Vries",
    "--email", "anna@bakkerij.example",
    "--phone", "+31 6 1234 5678",
    "--billing-address", "Dorpsstraat 1, Urk",
]  # fmt: skip


def _event_count(picasse: Run) -> int:
    report = json.loads(picasse("audit", "verify", "--json", check=True).stdout)
    return report["events"]


def test_help_explains_every_command(picasse: Run) -> None:
    result = picasse("--help")
    assert result.returncode == 0
    for command in ("up", "customers", "users", "audit"):
        assert command in result.stdout
    register = picasse("customers", "register", "--help").stdout
    assert "--billing-address" in register and "international" in register


def test_a_registered_customer_is_shown_with_its_personal_data_opened(picasse: Run) -> None:
    registered = picasse(*CUSTOMER, "--json", check=True)
    customer_id = json.loads(registered.stdout)["id"]
    shown = json.loads(picasse("customers", "show", customer_id, "--json", check=True).stdout)
    assert shown["organisation"] == "Bakkerij De Vries"
    assert shown["contact"] == {
        "name": "Anna de Vries",
        "email": "anna@bakkerij.example",
        "phone": "+31612345678",
    }
    assert shown["billing_address"] == "Dorpsstraat 1, Urk"
    assert shown["subscription"] == "registered"
    table = picasse("customers", "show", customer_id, check=True).stdout
    assert "Anna de Vries" in table and "+31612345678" in table


def test_register_without_json_prints_just_the_id(picasse: Run) -> None:
    out = picasse(*CUSTOMER, check=True).stdout.strip()
    assert str(UUID(out)) == out


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--phone", "0612345678", "phone"),
        ("--email", "anna@", "email"),
        ("--org", "   ", "organisation"),
    ],
)
def test_bad_input_is_refused_with_one_line_and_nothing_is_recorded(
    picasse: Run, option: str, value: str, reason: str
) -> None:
    picasse(*CUSTOMER, check=True)
    before = _event_count(picasse)
    args = list(CUSTOMER)
    args[args.index(option) + 1] = value
    result = picasse(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0]
    assert _event_count(picasse) == before


def test_an_unknown_customer_is_a_one_line_refusal(picasse: Run) -> None:
    result = picasse("customers", "show", "00000000-0000-0000-0000-00000000abcd")
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "picasse: customer 00000000-0000-0000-0000-00000000abcd not found"
    )


def test_a_malformed_command_line_exits_2(picasse: Run) -> None:
    assert picasse("customers", "show", "not-an-id").returncode == 2
    assert picasse("users", "add", "--login", "x", "--role", "root").returncode == 2


def test_users_are_added_with_a_password_from_stdin_and_can_change_it(picasse: Run) -> None:
    customer_id = picasse(*CUSTOMER, check=True).stdout.strip()
    added = picasse(
        "users", "add", "--customer", customer_id, "--login", "Anna@Bakkerij.example",
        "--role", "customer_admin", "--password-stdin", "--json",
        stdin="correct horse battery\n", check=True,
    )  # fmt: skip
    user = json.loads(added.stdout)
    assert user["login"] == "anna@bakkerij.example" and user["role"] == "customer_admin"
    shown = json.loads(
        picasse("users", "show", "anna@bakkerij.example", "--json", check=True).stdout
    )
    assert shown["customer_id"] == customer_id and shown["disabled"] is False
    assert (
        picasse(
            "users",
            "passwd",
            "anna@bakkerij.example",
            "--password-stdin",
            stdin="another good one\n",
        ).returncode
        == 0
    )
    short = picasse("users", "passwd", "anna@bakkerij.example", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "password" in short.stderr


def test_a_login_cannot_be_added_twice(picasse: Run) -> None:
    customer_id = picasse(*CUSTOMER, check=True).stdout.strip()
    args = [
        "users",
        "add",
        "--customer",
        customer_id,
        "--login",
        "piet",
        "--role",
        "customer_user",
        "--password-stdin",
    ]
    picasse(*args, stdin="a fine password\n", check=True)
    again = picasse(*args, stdin="a fine password\n")
    assert again.returncode == 1 and "already taken" in again.stderr


def test_staff_accounts_take_no_customer(picasse: Run) -> None:
    staff = picasse(
        "users",
        "add",
        "--login",
        "admin",
        "--role",
        "platform_admin",
        "--password-stdin",
        stdin="an admin password\n",
    )
    assert staff.returncode == 0
    user = picasse(
        "users",
        "add",
        "--login",
        "nobody",
        "--role",
        "customer_user",
        "--password-stdin",
        stdin="a fine password\n",
    )
    assert user.returncode == 1 and "needs a customer" in user.stderr


def test_audit_verify_reports_an_intact_log(picasse: Run) -> None:
    picasse(*CUSTOMER, check=True)
    result = picasse("audit", "verify", check=True)
    assert result.stdout.startswith("ok: 1 events in 1 aggregates")
