"""A bad value never gets in through the `picasse` CLI: a control character, a line break in
a one-line field, or undecodable bytes in a text flag is a one-line refusal (exit 1) that
names the field, and nothing is recorded."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from picasse.runners.cli import main
from tests.e2e.conftest import Run
from tests.e2e.test_cli import CUSTOMER


def _event_count(env: dict[str, str]) -> int:
    table = sql.Identifier(env["PICASSE_DATABASE_SCHEMA"], "picasse_events")
    with psycopg.connect(env["PICASSE_DATABASE_URL"]) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def _with(args: list[str], option: str, value: str) -> list[str]:
    changed = list(args)
    changed[changed.index(option) + 1] = value
    return changed


def _exit_code_of_main(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """`main` in this process with this standard input; the exit code a process would have.
    (A process gets its argument bytes decoded exactly as the strings given here.)"""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        return main(argv)
    except SystemExit as exited:
        code = exited.code
        return code if isinstance(code, int) else (0 if code is None else 1)


def test_control_characters_in_text_flags_are_refused_with_one_line_naming_the_field(
    picasse: Run,
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The first case runs as a `picasse` process, the rest through the same `main` in this
    process (a process each would add a second of start-up apiece and show nothing more)."""
    customer = json.loads(picasse(*CUSTOMER, "--json", check=True).stdout)["id"]
    picasse("customers", "subscribe", customer, check=True)
    send = ["messages", "send", "--customer", customer, "--channel", "email",
            "--to", "one@rcpt.example", "--subject", "Drill", "--body", "Fire drill"]  # fmt: skip
    sms = ["messages", "send", "--customer", customer, "--channel", "sms",
           "--to", "+31612345678", "--body", "Fire drill"]  # fmt: skip
    add_user = ["users", "add", "--customer", customer, "--login", "anna",
                "--role", "customer_admin", "--email", "anna@bakkerij.example"]  # fmt: skip
    add_staff = ["users", "add", "--login", "ops", "--role", "support", "--password-stdin"]
    group = ["groups", "set", "--customer", customer, "--name", "night shift",
             "--member", "+31612345679"]  # fmt: skip
    disclose = ["gdpr", "disclose", "--customer", customer, "--from", "2026-01-01",
                "--to", "2026-01-31", "--authority", "Police", "--legal-basis", "Art. 126nc Sv",
                "--out", str(tmp_path / "disclosure.zip")]  # fmt: skip
    change = ["customers", "change-contact", customer, "--contact-name", "Anna"]
    undecodable = b"Anna\xff".decode("utf-8", "surrogateescape")  # bytes that are no UTF-8
    cases: list[tuple[list[str], str, str]] = [
        # First, so it is the one run as a process: bytes that are no UTF-8 in argv.
        (_with(CUSTOMER, "--contact-name", undecodable), "", "contact_name"),
        (_with(CUSTOMER, "--contact-name", "Anna\rde Vries"), "", "contact_name"),
        (_with(CUSTOMER, "--org", "Bakkerij\x1b[31m"), "", "organisation"),
        (_with(change, "--contact-name", "Mallory\x07"), "", "contact_name"),
        (_with(add_user, "--login", "anna\r"), "", "login"),
        (_with(add_user, "--email", "anna\r@bakkerij.example"), "", "email"),
        (add_staff, "a long\x1benough password\n", "password"),
        (_with(group, "--name", "night\rshift"), "", "name"),
        (_with(send, "--subject", "Drill\r\nBcc: everyone@example.com"), "", "subject"),
        (_with(send, "--body", "Fire\x7f drill"), "", "body"),
        (_with(disclose, "--authority", "Police\x1b"), "", "authority"),
        # Issue 11, findings 2 and 9: line breaks in encoded words, lax phone numbers.
        (_with(send, "--subject", "=?utf-8?q?Drill=0D=0ABcc:_x@evil.example?="), "", "subject"),
        (_with(send, "--to", "=?utf-8?q?x=0ABcc:_y?=@rcpt.example"), "", "to"),
        (_with(CUSTOMER, "--phone", "tel:+31612345678"), "", "phone"),
        (
            _with(
                CUSTOMER,
                "--phone",
                "\uff0b\uff13\uff11\uff16\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",
            ),
            "",
            "phone",
        ),
        (_with(group, "--member", "+1 900 555 0123"), "", "members"),
        (_with(sms, "--to", "+44 871 234 5678"), "", "to"),
    ]
    before = _event_count(cli_env)
    problems = []
    (first, stdin, field), *rest = cases
    result = picasse(*first, stdin=stdin)
    if _refusal_problem(result.returncode, result.stderr, field):
        problems.append(f"{first}: exit {result.returncode}, {result.stderr!r}")
    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    for args, stdin, field in rest:
        code = _exit_code_of_main(args, stdin, monkeypatch)
        stderr = capsys.readouterr().err
        if _refusal_problem(code, stderr, field):
            problems.append(f"{args}: exit {code}, {stderr!r}")

    assert not problems, "\n".join(problems)
    assert _event_count(cli_env) == before
    assert not (tmp_path / "disclosure.zip").exists()


def _refusal_problem(code: int, stderr: str, field: str) -> bool:
    lines = stderr.strip().splitlines()
    return code != 1 or len(lines) != 1 or f"picasse: {field}: " not in lines[0]


def test_a_nul_in_a_text_flag_is_refused_like_any_control_character(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No process can be given a NUL in its arguments; a caller of `main` (or a shell
    quirk) can, so it is tried in this process."""
    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    assert main(CUSTOMER) == 0
    before = _event_count(cli_env)

    with pytest.raises(SystemExit) as exited:
        main(_with(CUSTOMER, "--contact-name", "Anna\x00"))

    assert exited.value.code == 1
    assert capsys.readouterr().err.startswith("picasse: contact_name: holds a control character")
    assert _event_count(cli_env) == before


def test_an_unknown_login_is_named_as_typed(picasse: Run) -> None:
    result = picasse("users", "show", "Nobody-Here")

    assert result.returncode == 1
    assert result.stderr.strip() == "picasse: no user with login 'Nobody-Here'"
