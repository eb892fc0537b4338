"""`picasse customers terminate`, `gdpr …` and `retention run` as processes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import Run

CUSTOMER = [
    "customers", "register", "--org", "Leaving BV", "--contact-name", "Lea Leaving",
    "--email", "lea@leaving.example", "--phone", "+31 6 4444 5555", "--billing-address", "Dijk 9, Urk",
]  # fmt: skip


@pytest.fixture
def customer(picasse: Run) -> str:
    customer_id = picasse(*CUSTOMER, check=True).stdout.strip()
    picasse("customers", "subscribe", customer_id, check=True)
    picasse("messages", "send", "--customer", customer_id, "--channel", "sms", "--to", "+31612345670",
            "--body", "Bye", check=True)  # fmt: skip
    return customer_id


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


def test_terminating_twice_is_refused(picasse: Run, customer: str, tmp_path: Path) -> None:
    picasse(
        "customers", "terminate", customer, "--out", str(tmp_path / "a"), "--no-export", check=True
    )
    again = picasse("customers", "terminate", customer, "--out", str(tmp_path / "b"), "--no-export")
    assert again.returncode == 1 and "already" in again.stderr


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
    picasse("users", "add", "--customer", customer, "--login", "lea", "--role", "customer_user",
            "--password-stdin", stdin="lea's password\n", check=True)  # fmt: skip
    picasse("gdpr", "erase", "--login", "lea", check=True)
    shown = picasse("users", "show", "lea", "--json")
    assert json.loads(shown.stdout)["login"] == {"type": "erased"}
