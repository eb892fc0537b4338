"""`picasse messages …` and `picasse groups …` as a process: sends, refusals, idempotency."""

from __future__ import annotations

import json

import msgspec
import pytest

from picasse.adapters.postgres.audit import ChainReport
from tests.e2e.conftest import Run, register_in_process


@pytest.fixture
def customer(cli_env: dict[str, str]) -> str:
    """A subscribed customer on the schema the test's commands use, made in this process
    (register_in_process): the `messages` and `groups` commands under test run as processes."""
    return register_in_process(
        cli_env, organisation="Sender BV", contact_name="Sam Sender",
        email="sam@sender.example", phone="+31 6 2222 3333", billing_address="Weg 3, Ede",
    )  # fmt: skip


def _events(picasse: Run) -> int:
    out = picasse("audit", "verify", "--json", check=True).stdout
    return msgspec.json.decode(out, type=ChainReport).events


def test_a_sent_message_is_queued_per_recipient_and_shown_without_its_body(
    picasse: Run, customer: str
) -> None:
    sent = picasse(
        "messages", "send", "--customer", customer, "--channel", "email",
        "--to", "ann@rcpt.example", "--to", "bob@rcpt.example", "--body", "Secret body text", "--json", check=True,
    )  # fmt: skip
    message_id = json.loads(sent.stdout)["id"]
    shown = json.loads(picasse("messages", "show", message_id, "--json", check=True).stdout)
    assert [d["to"] for d in shown["deliveries"]] == ["ann@rcpt.example", "bob@rcpt.example"]
    assert {d["status"] for d in shown["deliveries"]} == {"queued"}
    assert shown["body"] is None
    assert "Secret body text" not in picasse("messages", "show", message_id, check=True).stdout


def test_the_same_idempotency_key_returns_the_first_message_and_sends_nothing_more(
    picasse: Run, customer: str
) -> None:
    args = ["messages", "send", "--customer", customer, "--channel", "sms", "--to", "+31612345678",
            "--body", "Once", "--idempotency-key", "order-42"]  # fmt: skip
    first = picasse(*args, check=True).stdout.strip()
    before = _events(picasse)
    assert picasse(*args, check=True).stdout.strip() == first
    assert _events(picasse) == before


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--channel", "sms", "--to", "0612", "--body", "x"], "to"),
        (["--channel", "email", "--to", "not-an-address", "--body", "x"], "to"),
        (["--channel", "sms", "--to", "+31612345678", "--body", "   "], "body: must not be empty"),
        (["--channel", "sms", "--to", "+31612345678", "--body", "x" * 1601], "at most 1600"),
        (["--channel", "sms", "--group", "no such group", "--body", "x"], "no group"),
        (["--channel", "email", "--body", "x"], "at least one recipient"),
    ],
)
def test_bad_messages_are_refused_with_one_line_and_record_nothing(
    picasse: Run, customer: str, args: list[str], reason: str
) -> None:
    before = _events(picasse)
    result = picasse("messages", "send", "--customer", customer, *args)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert reason in line
    assert _events(picasse) == before


def test_too_many_recipients_are_refused(picasse: Run, customer: str) -> None:
    many = [arg for i in range(1001) for arg in ("--to", f"p{i}@rcpt.example")]
    result = picasse(
        "messages", "send", "--customer", customer, "--channel", "email", "--body", "x", *many
    )
    assert result.returncode == 1 and "at most 1000" in result.stderr


def test_a_group_can_be_messaged_by_name(picasse: Run, customer: str) -> None:
    picasse("groups", "set", "--customer", customer, "--name", "Night shift",
            "--member", "+31612340001", "--member", "+31612340002", check=True)  # fmt: skip
    message_id = picasse(
        "messages", "send", "--customer", customer, "--channel", "sms", "--group", "night shift", "--body", "Hi",
        check=True,
    ).stdout.strip()  # fmt: skip
    shown = json.loads(picasse("messages", "show", message_id, "--json", check=True).stdout)
    assert [d["to"] for d in shown["deliveries"]] == ["+31612340001", "+31612340002"]


def test_groups_are_listed_shown_and_deleted_by_name(picasse: Run, customer: str) -> None:
    group_id = picasse("groups", "set", "--customer", customer, "--name", "Day shift",
                       "--member", "+31612340003", check=True).stdout.strip()  # fmt: skip

    listed = json.loads(picasse("groups", "list", "--customer", customer, "--json").stdout)
    shown = json.loads(
        picasse("groups", "show", "--customer", customer, "day shift", "--json").stdout
    )
    picasse("groups", "delete", "--customer", customer, group_id, check=True)
    gone = picasse("groups", "show", "--customer", customer, "Day shift")

    assert listed == [{"id": group_id, "name": "Day shift", "member_count": 1}]
    assert shown["members"] == ["+31612340003"]
    assert gone.returncode == 1 and len(gone.stderr.strip().splitlines()) == 1


def test_content_is_revealed_only_to_the_customers_own_user(
    picasse: Run, customer: str, cli_env: dict[str, str]
) -> None:
    message_id = picasse(
        "messages", "send", "--customer", customer, "--channel", "sms", "--to", "+31612345678", "--body", "Hush",
        check=True,
    ).stdout.strip()  # fmt: skip
    picasse("users", "add", "--customer", customer, "--login", "sam", "--role", "customer_admin",
            "--email", "sam@sam.example", check=True)  # fmt: skip
    _follow_a_new_link(cli_env, "sam", "sam's password")
    picasse("users", "add", "--login", "boss", "--role", "platform_admin", "--password-stdin",
            stdin="boss's password\n", check=True)  # fmt: skip
    own = picasse("messages", "show", message_id, "--reveal-content", "--as", "sam", "--password-stdin",
                  "--json", stdin="sam's password\n", check=True)  # fmt: skip
    assert json.loads(own.stdout)["body"] == "Hush"
    staff = picasse("messages", "show", message_id, "--reveal-content", "--as", "boss", "--password-stdin",
                    stdin="boss's password\n")  # fmt: skip
    assert staff.returncode == 1 and "R7" in staff.stderr and "Hush" not in staff.stdout
    assert picasse("messages", "show", message_id, "--reveal-content").returncode == 1


def _follow_a_new_link(env: dict[str, str], login: str, password: str) -> None:
    """Plays the user who follows their set-password link (the CLI mails it; here the
    test takes a new link's token from the command that makes it)."""
    from picasse.runners.settings import Settings
    from picasse.runners.wiring import open_accounts

    settings = Settings.from_environ(env)
    accounts = open_accounts(settings, str(settings.database_url))
    try:
        accounts.set_password_with_link(accounts.reset_password(login).token, password)
    finally:
        accounts.close()
