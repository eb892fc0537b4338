"""`picasse customers terminate`, `gdpr …` and `retention run` as processes."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from picasse.adapters.clock import TEST_DATA_DIR_MARKER
from tests.e2e.conftest import Run, cli_runner, register_in_process

CUSTOMER = [
    "customers", "register", "--org", "Leaving BV", "--contact-name", "Lea Leaving",
    "--email", "lea@leaving.example", "--phone", "+31 6 4444 5555", "--billing-address", "Dijk 9, Urk",
]  # fmt: skip


@pytest.fixture
def customer(cli_env: dict[str, str]) -> str:
    """A subscribed customer with one SMS sent, on the schema the test's commands use: made
    in this process (register_in_process), the commands under test run as processes."""
    return register_in_process(
        cli_env, sms_to="+31612345670", organisation="Leaving BV", contact_name="Lea Leaving",
        email="lea@leaving.example", phone="+31 6 4444 5555", billing_address="Dijk 9, Urk",
    )  # fmt: skip


def test_terminate_writes_export_and_a_statement_that_verifies(
    picasse: Run, customer: str, tmp_path: Path
) -> None:
    out = tmp_path / "leaving"
    result = picasse("customers", "terminate", customer, "--out", str(out), check=True)
    assert "terminated and erased" in result.stdout
    assert {p.name for p in out.iterdir()} == {"export.zip", "statement.json", "statement.html"}
    with zipfile.ZipFile(out / "export.zip") as archive:
        assert {"manifest.json", "customer.json", "customer.csv", "traffic.csv"} <= set(
            archive.namelist()
        )
        assert b"lea@leaving.example" in archive.read("customer.json")
    verified = picasse("gdpr", "verify-statement", str(out / "statement.json"), check=True)
    assert verified.stdout.startswith("ok:")
    shown = json.loads(picasse("customers", "show", customer, "--json", check=True).stdout)
    assert shown["organisation"] == {"type": "erased"} and shown["subscription"] == "terminated"
    assert (
        "Customer" not in (out / "statement.html").read_text()
        or "erasure" in (out / "statement.html").read_text()
    )


def test_a_changed_statement_fails_verification_with_one_line(
    picasse: Run, customer: str, tmp_path: Path
) -> None:
    picasse("customers", "terminate", customer, "--out", str(tmp_path), "--no-export", check=True)
    statement = json.loads((tmp_path / "statement.json").read_text())
    statement["document"]["unreadable_events"] += 1
    (tmp_path / "forged.json").write_text(json.dumps(statement))
    result = picasse("gdpr", "verify-statement", str(tmp_path / "forged.json"))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "does not verify" in line


def test_terminating_again_writes_the_stored_statement_and_changes_nothing(
    picasse: Run, customer: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    picasse("customers", "terminate", customer, "--out", str(tmp_path / "a"), check=True)
    head = _head(cli_env)
    again = picasse("customers", "terminate", customer, "--out", str(tmp_path / "b"), check=True)
    assert "already" in again.stdout
    for name in ("statement.json", "statement.html"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    assert _head(cli_env) == head
    assert "cannot be made again" in again.stderr  # b/ has no export.zip, and none can be made
    picasse("gdpr", "verify-statement", str(tmp_path / "b" / "statement.json"), check=True)


def test_export_and_disclosure_write_only_the_file_asked_for(
    picasse: Run, customer: str, tmp_path: Path
) -> None:
    picasse(
        "gdpr", "export", "--customer", customer, "--out", str(tmp_path / "mine.zip"), check=True
    )
    picasse(
        "gdpr", "disclose", "--customer", customer, "--from", "2026-01-01", "--to", "2027-12-31",
        "--authority", "Politie", "--legal-basis", "art. 126ng Sv", "--out", str(tmp_path / "politie.zip"), check=True,
    )  # fmt: skip
    assert {p.name for p in tmp_path.iterdir()} >= {"mine.zip", "politie.zip"}
    with zipfile.ZipFile(tmp_path / "politie.zip") as archive:
        assert b"+31612345670" in archive.read("traffic.json")
    bad = picasse("gdpr", "disclose", "--customer", customer, "--from", "2027-01-01", "--to", "2026-01-01",
                  "--authority", "X", "--legal-basis", "Y", "--out", str(tmp_path / "x.zip"))  # fmt: skip
    assert bad.returncode == 1 and not (tmp_path / "x.zip").exists()


def test_retention_dry_run_says_what_it_would_erase(picasse: Run, customer: str) -> None:
    from datetime import timedelta

    from picasse.adapters.clock import SystemClock

    later = (SystemClock().now() + timedelta(days=220)).isoformat()
    result = picasse("retention", "run", "--dry-run", "--as-of", later, check=True)
    assert "would erase" in result.stdout and customer in result.stdout
    shown = json.loads(
        picasse("messages", "show", _message_of(picasse, customer), "--json", check=True).stdout
    )
    assert shown["deliveries"][0]["to"] == "+31612345670"


def _message_of(picasse: Run, customer: str) -> str:
    return picasse("messages", "send", "--customer", customer, "--channel", "sms", "--to", "+31612345670",
                   "--body", "again", check=True).stdout.strip()  # fmt: skip


def test_a_user_can_be_erased_individually(picasse: Run, customer: str) -> None:
    picasse("users", "add", "--customer", customer, "--login", "lea", "--role", "customer_admin",
            "--email", "lea@lea.example", check=True)  # fmt: skip
    erased = picasse("gdpr", "erase", "--login", "lea", check=True)
    assert erased.stdout.startswith("erased user/")
    # Lea was the customer's only admin: the operator is told, and may add a new one.
    assert f"customer {customer} has no admin who can log in now" in erased.stdout
    picasse("users", "add", "--customer", customer, "--login", "noor", "--role",
            "customer_admin", "--email", "noor@lea.example", check=True)  # fmt: skip
    refused = picasse("users", "add", "--customer", customer, "--login", "otto", "--role",
                      "customer_admin", "--email", "otto@lea.example")  # fmt: skip
    assert refused.returncode == 1 and "its admins add its users" in refused.stderr
    # The login names nobody now, and the next user given it claims it again.
    shown = picasse("users", "show", "lea", "--json")
    assert shown.returncode != 0 and "no user with login 'lea'" in shown.stderr
    elsewhere = picasse(*CUSTOMER, check=True).stdout.strip()
    picasse("users", "add", "--customer", elsewhere, "--login", "lea", "--role", "customer_admin",
            "--email", "lea@new.example", check=True)  # fmt: skip
    again = json.loads(picasse("users", "show", "lea", "--json", check=True).stdout)
    assert again["login"] == "lea" and again["customer_id"] == elsewhere
    assert f"user/{again['id']}" not in erased.stdout


def _head(env: dict[str, str]) -> int:
    """The log's last notification id in this test's schema."""
    return _number(env, "SELECT coalesce(max(notification_id), 0) FROM {}.picasse_events")


def _statements(env: dict[str, str]) -> int:
    """Statements of erasure signed, as the log records them (this test's schema only)."""
    return _number(
        env,
        "SELECT count(*) FROM {}.picasse_events WHERE topic LIKE '%Termination.StatementSigned'",
    )


def _number(env: dict[str, str], query: str) -> int:
    schema = sql.Identifier(env["PICASSE_DATABASE_SCHEMA"])
    with psycopg.connect(env["PICASSE_DATABASE_URL"]) as conn:
        row = conn.execute(sql.SQL(query).format(schema)).fetchone()
    assert row is not None and isinstance(row[0], int), row
    return row[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("step", ["export", "subscription", "keys", "views", "statement"])
def test_a_termination_killed_after_any_step_ends_with_one_statement_that_verifies(
    picasse: Run, customer: str, tmp_path: Path, cli_env: dict[str, str], step: str
) -> None:
    data_dir = Path(cli_env["PICASSE_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / TEST_DATA_DIR_MARKER).touch()
    out = tmp_path / "leaving"
    killed = cli_runner(cli_env | {"PICASSE_FAULT_AFTER_STEP": step})
    first = killed("customers", "terminate", customer, "--out", str(out))
    assert first.returncode == -9, first.stderr
    rerun = picasse("customers", "terminate", customer, "--out", str(out), check=True)
    assert "terminated and erased" in rerun.stdout
    assert _statements(cli_env) == 1
    picasse("gdpr", "verify-statement", str(out / "statement.json"), check=True)
    document = json.loads((out / "statement.json").read_text())["document"]
    assert document["export_sha256"] == _sha256(out / "export.zip")
    assert sorted(p.name for p in out.iterdir()) == [
        "export.zip",
        "statement.html",
        "statement.json",
    ]


def test_the_kill_switch_is_ignored_outside_a_test_data_dir(
    customer: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    run = cli_runner(cli_env | {"PICASSE_FAULT_AFTER_STEP": "keys"})
    run("customers", "terminate", customer, "--out", str(tmp_path), "--no-export", check=True)


def test_an_export_lost_after_the_keys_went_is_named_as_impossible_to_make_again(
    picasse: Run, customer: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    data_dir = Path(cli_env["PICASSE_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / TEST_DATA_DIR_MARKER).touch()
    killed = cli_runner(cli_env | {"PICASSE_FAULT_AFTER_STEP": "keys"})
    assert killed("customers", "terminate", customer, "--out", str(tmp_path)).returncode == -9
    (tmp_path / "export.zip").unlink()
    rerun = picasse("customers", "terminate", customer, "--out", str(tmp_path), check=True)
    (line,) = rerun.stderr.strip().splitlines()
    assert "export.zip is missing" in line and "cannot be made again" in line
    picasse("gdpr", "verify-statement", str(tmp_path / "statement.json"), check=True)


def test_a_foreign_file_in_the_termination_dir_is_refused_unless_forced(
    picasse: Run, customer: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    (tmp_path / "export.zip").write_bytes(b"someone else's")
    head = _head(cli_env)
    refused = picasse("customers", "terminate", customer, "--out", str(tmp_path))
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "export.zip" in line and "--force" in line
    assert _head(cli_env) == head  # nothing was recorded: the customer is as it was
    picasse("customers", "terminate", customer, "--out", str(tmp_path), "--force", check=True)
    picasse("gdpr", "verify-statement", str(tmp_path / "statement.json"), check=True)
    with zipfile.ZipFile(tmp_path / "export.zip") as archive:
        assert "manifest.json" in archive.namelist()


def test_a_leftover_partial_file_is_replaced(picasse: Run, customer: str, tmp_path: Path) -> None:
    (tmp_path / ".export.zip.partial").write_bytes(b"half an archive")
    picasse("customers", "terminate", customer, "--out", str(tmp_path), check=True)
    assert not (tmp_path / ".export.zip.partial").exists()
    with zipfile.ZipFile(tmp_path / "export.zip") as archive:
        assert "manifest.json" in archive.namelist()


def test_an_export_never_follows_a_symlink_planted_at_its_partial_file(
    picasse: Run, customer: str, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / ".mine.zip.partial").symlink_to(victim)
    picasse(
        "gdpr", "export", "--customer", customer, "--out", str(tmp_path / "mine.zip"), check=True
    )
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "mine.zip").is_symlink()
    with zipfile.ZipFile(tmp_path / "mine.zip") as archive:
        assert "manifest.json" in archive.namelist()


def test_an_export_never_replaces_a_file_unless_forced(
    picasse: Run, customer: str, tmp_path: Path
) -> None:
    target = tmp_path / "mine.zip"
    target.write_text("precious")
    refused = picasse("gdpr", "export", "--customer", customer, "--out", str(target))
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "exists" in refused.stderr and target.read_text() == "precious"
    link = tmp_path / "link.zip"
    link.symlink_to(tmp_path / "elsewhere.zip")
    assert picasse("gdpr", "export", "--customer", customer, "--out", str(link)).returncode == 1
    assert not (tmp_path / "elsewhere.zip").exists()
    picasse("gdpr", "export", "--customer", customer, "--out", str(target), "--force", check=True)
    assert zipfile.is_zipfile(target)


def test_an_export_into_a_missing_directory_fails_with_one_line(
    picasse: Run, customer: str, tmp_path: Path
) -> None:
    result = picasse(
        "gdpr", "export", "--customer", customer, "--out", str(tmp_path / "nowhere" / "x.zip")
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "does not exist" in line and "Traceback" not in result.stderr


def test_with_the_database_unreachable_the_cli_says_so_in_one_line_and_exits_3(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    run = cli_runner(
        cli_env | {"PICASSE_DATABASE_URL": "postgresql://someone:s3cret-pw@127.0.0.1:9/nodb"}
    )
    # A refused connection answers at once; one that is never answered is given up after
    # the probe's DATABASE_PROBE_SECONDS (the runner's own timeout stops a hang).
    result = run("customers", "show", "00000000-0000-0000-0000-000000000001")
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "cannot reach the database at 127.0.0.1:9/nodb" in line
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_retention_as_of_a_future_time_is_refused_without_dry_run(
    picasse: Run, customer: str
) -> None:
    from datetime import timedelta

    from picasse.adapters.clock import SystemClock

    later = (SystemClock().now() + timedelta(days=220)).isoformat()
    result = picasse("retention", "run", "--as-of", later)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "future" in line and "--dry-run" in line
    shown = json.loads(
        picasse("messages", "show", _message_of(picasse, customer), "--json", check=True).stdout
    )
    assert shown["deliveries"][0]["to"] == "+31612345670"
