"""`picasse billing plan/run/pay/invoices` as processes: the operator's monthly invoicing.

The customer is made in-process; every billing command runs as a process, on a test clock
that the test moves past the end of the month, so that the month can be invoiced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from picasse.adapters.clock import TEST_DATA_DIR_MARKER, FileClock, move_file_clock
from tests.e2e.conftest import Run, cli_runner, register_in_process

PLAN = [
    "--monthly-fee", "19.95", "--per-sms-segment", "0.075", "--per-email", "0.002",
    "--per-voice-minute", "0.13", "--per-conference-minute", "0.04", "--vat-percent", "21",
]  # fmt: skip
TOTAL = "EUR 24.14"  # 19.95 and 21 % VAT (4.19), nothing sent


@pytest.fixture
def clock_file(cli_env: dict[str, str]) -> Iterator[Path]:
    """A test clock for every command of this test (its data dir marked as a test's)."""
    data_dir = Path(cli_env["PICASSE_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / TEST_DATA_DIR_MARKER).touch()
    path = data_dir.parent / "clock"
    cli_env["PICASSE_TEST_CLOCK_FILE"] = str(path)
    yield path


def _next_month(path: Path) -> str:
    """Moves the test clock to the 2nd of next month; the month that is over now."""
    now = FileClock(path).now()
    start = datetime(now.year + now.month // 12, now.month % 12 + 1, 2, tzinfo=UTC)
    move_file_clock(path, start - now)
    return f"{now:%Y-%m}"


def test_a_month_is_invoiced_once_and_paid_in_parts(
    picasse: Run, cli_env: dict[str, str], clock_file: Path
) -> None:
    customer = register_in_process(
        cli_env, organisation="Fee BV", contact_name="Fay Fee", email="fay@fee.example",
        phone="+31 6 4444 7777", billing_address="Laan 7, Zeist",
    )  # fmt: skip
    planned = picasse("billing", "plan", customer, *PLAN, check=True)
    assert customer in planned.stdout
    this_month = f"{FileClock(clock_file).now():%Y-%m}"
    early = picasse("billing", "run", "--month", this_month)
    assert early.returncode == 1 and "not over yet" in early.stderr
    month = _next_month(clock_file)
    assert month == this_month

    dry = picasse("billing", "run", "--month", month, "--dry-run", check=True)
    assert "dry run: nothing issued" in dry.stdout and customer in dry.stdout
    assert json.loads(picasse("billing", "invoices", "--json", check=True).stdout) == []

    run = json.loads(picasse("billing", "run", "--month", month, "--json", check=True).stdout)
    (line,) = [line for line in run if line["customer_id"] == customer]
    assert (line["issued"], line["total_cents"], line["number"]) == (True, 2414, 1)
    again = picasse("billing", "run", "--month", month, check=True).stdout
    assert "issued before" in again and "0 invoice(s) issued" in again

    # Piped with no COLUMNS, as a script reads it: ids whole, so they can be used next.
    piped = cli_runner({k: v for k, v in cli_env.items() if k != "COLUMNS"})
    listed = piped("billing", "invoices", "--customer", customer, check=True).stdout
    (invoice,) = json.loads(
        picasse("billing", "invoices", "--customer", customer, "--json", check=True).stdout
    )
    invoice_id = str(UUID(invoice["id"]))
    assert invoice_id in listed and customer in listed and TOTAL in listed

    part = picasse("billing", "pay", invoice_id, "--amount", "10", check=True).stdout
    assert f"paid EUR 10.00 of {TOTAL}" in part
    rest = picasse("billing", "pay", invoice_id, "--amount", "14.14", check=True).stdout
    assert f"paid {TOTAL} of {TOTAL} (paid)" in rest
    (paid,) = json.loads(picasse("billing", "invoices", "--json", check=True).stdout)
    assert (paid["paid_cents"], paid["status"]) == (2414, "paid")


@pytest.mark.parametrize(
    ("args", "code", "reason"),
    [
        (["run", "--month", "2026-13"], 1, "month"),
        (["pay", "00000000-0000-4000-8000-000000000000", "--amount", "1.001"], 2, "two decimals"),
        (["pay", "00000000-0000-4000-8000-000000000000", "--amount", "5"], 1, "not found"),
        (["plan", "00000000-0000-4000-8000-000000000000", *PLAN], 1, "not found"),
    ],
)
def test_bad_billing_commands_are_refused_in_one_line(
    picasse: Run, clock_file: Path, args: list[str], code: int, reason: str
) -> None:
    result = picasse("billing", *args)
    assert result.returncode == code, result.stderr
    assert reason in result.stderr
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(picasse("billing", "invoices", "--json", check=True).stdout) == []
