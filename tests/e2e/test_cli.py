"""The `picasse` CLI as a process: customers, users, audit, and clear refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import msgspec
import pytest

from picasse.adapters.postgres.audit import ChainReport
from picasse.domain.accounts import Accounts
from picasse.domain.personal import Trigger
from picasse.domain.privacy import Privacy
from picasse.domain.values import Role
from tests.e2e.conftest import Run, cli_runner, register_in_process

CUSTOMER = [
    "customers", "register",
    "--org", "Bakkerij De Vries",
    "--contact-name", "Anna de Vries",
    "--email", "anna@bakkerij.example",
    "--phone", "+31 6 1234 5678",
    "--billing-address", "Dorpsstraat 1, Urk",
]  # fmt: skip


def _event_count(picasse: Run) -> int:
    out = picasse("audit", "verify", "--json", check=True).stdout
    return msgspec.json.decode(out, type=ChainReport).events


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


def test_subscribing_again_is_no_change_and_another_plan_is_refused(picasse: Run) -> None:
    customer_id = picasse(*CUSTOMER, check=True).stdout.strip()
    picasse("customers", "subscribe", customer_id, check=True)
    before = _event_count(picasse)
    assert picasse("customers", "subscribe", customer_id).returncode == 0
    assert _event_count(picasse) == before
    other = picasse("customers", "subscribe", customer_id, "--plan", "premium")
    assert other.returncode == 1
    assert other.stderr == (
        f"picasse: customer {customer_id} already has an active subscription (plan standard)\n"
    )
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


def test_a_customers_user_gets_a_link_and_staff_set_only_staff_passwords(picasse: Run) -> None:
    customer_id = picasse(*CUSTOMER, check=True).stdout.strip()
    user_args = ["users", "add", "--customer", customer_id, "--login", "Anna@Bakkerij.example",
                 "--role", "customer_admin"]  # fmt: skip
    with_password = picasse(*user_args, "--email", "anna@bakkerij.example", "--password-stdin",
                            stdin="correct horse battery\n")  # fmt: skip
    assert with_password.returncode == 1 and "staff accounts only" in with_password.stderr
    assert len(with_password.stderr.strip().splitlines()) == 1
    no_email = picasse(*user_args)
    assert no_email.returncode == 1 and "--email" in no_email.stderr
    added = picasse(*user_args, "--email", "anna@bakkerij.example", "--json", check=True)
    user = json.loads(added.stdout)
    assert user["login"] == "anna@bakkerij.example" and user["role"] == "customer_admin"
    shown = json.loads(
        picasse("users", "show", "anna@bakkerij.example", "--json", check=True).stdout
    )
    assert shown["customer_id"] == customer_id and shown["disabled"] is False
    reset = picasse("users", "passwd", "anna@bakkerij.example", check=True)
    assert "link was sent" in reset.stdout
    refused = picasse("users", "passwd", "anna@bakkerij.example", "--password-stdin",
                      stdin="another good one\n")  # fmt: skip
    assert refused.returncode == 1 and "staff accounts only" in refused.stderr
    staff = ["users", "add", "--login", "ops", "--role", "support", "--password-stdin"]
    assert picasse(*staff, stdin="tulip harbour quietly\n").returncode == 0
    changed = picasse("users", "passwd", "ops", "--password-stdin", stdin="another harbour tulip\n")
    assert changed.returncode == 0 and "API keys stay valid" in changed.stdout
    weak = picasse("users", "passwd", "ops", "--password-stdin", stdin="password1234\n")
    assert weak.returncode == 1 and "too easy to guess" in weak.stderr


def test_staff_add_a_customers_first_admin_only(picasse: Run) -> None:
    customer_id = picasse(*CUSTOMER, check=True).stdout.strip()
    args = ["users", "add", "--customer", customer_id, "--email", "x@bakkerij.example"]
    picasse(*args, "--login", "first", "--role", "customer_admin", check=True)
    for role in ("customer_admin", "customer_user"):
        again = picasse(*args, "--login", f"second-{role}", "--role", role)
        assert again.returncode == 1 and "only while it has none" in again.stderr


def test_a_refused_login_says_the_same_whatever_the_reason(picasse: Run) -> None:
    first, second = (picasse(*CUSTOMER, check=True).stdout.strip() for _ in range(2))
    admin = ["users", "add", "--role", "customer_admin", "--email", "p@bakkerij.example"]
    picasse(*admin, "--customer", first, "--login", "piet", check=True)
    picasse("users", "add", "--login", "staffer", "--role", "auditor", "--password-stdin",
            stdin="tulip harbour quietly\n", check=True)  # fmt: skip
    answers = set()
    for login in ("piet", "staffer", "no"):
        again = picasse(*admin, "--customer", second, "--login", login)
        assert again.returncode == 1 and "cannot be used" in again.stderr
        answers.add(again.stderr)
    assert len(answers) == 1


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
        "users", "add", "--login", "nobody", "--role", "customer_user", "--email", "n@x.example"
    )
    assert user.returncode == 1 and "needs a customer" in user.stderr


def test_audit_verify_reports_an_intact_log(picasse: Run) -> None:
    picasse(*CUSTOMER, check=True)
    result = picasse("audit", "verify", check=True)
    assert result.stdout.startswith("ok: 1 events in 1 aggregates")


def test_users_are_disabled_and_enabled_again_but_a_customers_last_admin_stays(
    picasse: Run,
) -> None:
    customer_id = picasse(*CUSTOMER, check=True).stdout.strip()
    picasse("users", "add", "--customer", customer_id, "--email", "solo@bakkerij.example",
            "--login", "solo", "--role", "customer_admin", check=True)  # fmt: skip
    last = picasse("users", "disable", "solo")
    assert last.returncode == 1 and "last active admin" in last.stderr
    assert len(last.stderr.strip().splitlines()) == 1
    staff = ["users", "add", "--login", "ops-off", "--role", "support", "--password-stdin"]
    picasse(*staff, stdin="tulip harbour quietly\n", check=True)
    assert "session(s) ended" in picasse("users", "disable", "ops-off", check=True).stdout
    assert picasse("users", "enable", "ops-off", check=True).returncode == 0
    again = picasse("users", "enable", "ops-off")
    assert again.returncode == 1 and "not disabled" in again.stderr


@contextmanager
def _accounts_and_privacy(env: dict[str, str]) -> Iterator[tuple[Accounts, Privacy]]:
    """This process's Accounts and Privacy on the schema of `env`, for a test's set-up."""
    from picasse.runners.settings import Settings
    from picasse.runners.wiring import open_accounts, open_privacy

    settings = Settings.from_environ(env)
    assert settings.database_url is not None
    accounts = open_accounts(settings, settings.database_url)
    privacy = open_privacy(settings, settings.database_url)
    try:
        yield accounts, privacy
    finally:
        privacy.close()
        accounts.close()


def test_customers_are_listed_whole_when_piped_and_erased_ones_only_with_all(
    cli_env: dict[str, str],
) -> None:
    kept, gone = (
        register_in_process(
            cli_env,
            organisation=organisation,
            contact_name="Anna de Vries",
            email="anna@bakkerij.example",
            phone="+31 6 1234 5678",
            billing_address="Dorpsstraat 1, Urk",
        )
        for organisation in ("Bakkerij De Vries", "Slagerij Gesloten")
    )
    with _accounts_and_privacy(cli_env) as (accounts, privacy):
        accounts.terminate_customer(UUID(gone))
        privacy.erase_tenant(UUID(gone), "termination (test)")
    # Piped, as a script reads it, with no COLUMNS set: no id or name is cut short.
    piped = cli_runner({k: v for k, v in cli_env.items() if k != "COLUMNS"})
    listed = piped("customers", "list", check=True).stdout
    assert kept in listed and "Bakkerij De Vries" in listed and "active" in listed
    assert gone not in listed
    everyone = json.loads(piped("customers", "list", "--all", "--json", check=True).stdout)
    assert [(c["id"], c["organisation"], c["erased"]) for c in everyone] == [
        (kept, "Bakkerij De Vries", False),
        (gone, None, True),
    ]


def test_values_are_printed_as_given_never_read_as_markup(cli_env: dict[str, str]) -> None:
    """Rich reads `[…]` as markup: `[/]` in a name crashed `customers show`, and every
    `[erased]` vanished from the tables."""
    from tests.users import add_customer_user

    customer = register_in_process(
        cli_env, organisation="Acme [/] BV", contact_name="[bold]Rob[/bold]",
        email="rob@acme.example", phone="+31 6 5555 3434", billing_address="Weg [3]",
    )  # fmt: skip
    with _accounts_and_privacy(cli_env) as (accounts, privacy):
        for login in ("rob", "gone"):
            add_customer_user(
                accounts, customer_id=UUID(customer), login=login, role=Role.CUSTOMER_ADMIN,
                password="a long password",
            )  # fmt: skip
        gone = accounts.user_by_login("gone").id
        privacy.erase_subject(UUID(customer), f"user/{gone}", "asked", trigger=Trigger.REQUEST)
    picasse = cli_runner(cli_env)
    shown = picasse("customers", "show", customer, check=True).stdout
    assert "Acme [/] BV" in shown and "[bold]Rob[/bold]" in shown and "Weg [3]" in shown
    assert "Acme [/] BV" in picasse("customers", "list", check=True).stdout
    users = picasse("users", "list", "--customer", customer, check=True).stdout
    assert "rob" in users and "[erased]" in users and str(gone) in users
    listed = json.loads(picasse("users", "list", "--customer", customer, "--json").stdout)
    assert [(u["login"], u["role"]) for u in listed] == [
        ("rob", "customer_admin"),
        (None, "customer_admin"),
    ]
