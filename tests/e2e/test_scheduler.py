"""`picasse scheduler` under `picasse up`, and the test clock that moves a running platform."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from picasse.adapters.clock import TEST_DATA_DIR_MARKER, move_file_clock
from tests.e2e.platform import RunningUp, environment, on_test_clock, picasse_command

SEVEN_MONTHS = timedelta(days=7 * 31)
ERASED = {"type": "erased"}


def test_up_refuses_a_test_clock_on_a_data_dir_not_marked_as_a_test_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = environment(data_dir, PICASSE_TEST_CLOCK_FILE=str(tmp_path / "clock"))

    up = subprocess.run(
        [*picasse_command(), "up"], capture_output=True, text=True, env=env, timeout=60
    )

    assert up.returncode == 3
    assert up.stderr.count("\n") == 1 and TEST_DATA_DIR_MARKER in up.stderr
    assert not (data_dir / "postgres").exists()  # refused before starting anything


@pytest.mark.own_servers
@pytest.mark.slow
def test_moving_the_test_clock_seven_months_lets_the_scheduler_erase_that_months_traffic(
    fresh_data_dir: Path,
) -> None:
    data_dir = fresh_data_dir / "data"
    clock_file, clock_env = on_test_clock(data_dir)
    up = RunningUp(data_dir, **clock_env)
    try:
        up.wait_until_up()
        customer = up.cli(
            "customers", "register", "--org", "Klok BV", "--contact-name", "Kees Klok",
            "--email", "kees@klok.example", "--phone", "+31 6 1111 2222",
            "--billing-address", "Klokweg 1, Delft",
        ).strip()  # fmt: skip
        up.cli("customers", "subscribe", customer)
        sent = up.cli(
            "messages", "send", "--customer", customer, "--channel", "sms",
            "--to", "+31612340000", "--body", "Tick", "--json",
        )  # fmt: skip
        message_id = json.loads(sent)["id"]
        assert _recipients(up, message_id) == ["+31612340000"]

        move_file_clock(clock_file, SEVEN_MONTHS)

        # Only polling for the outcome: the scheduler notices the moved clock by itself.
        deadline = time.monotonic() + 90
        while _recipients(up, message_id) != [ERASED]:
            assert time.monotonic() < deadline, f"not erased; up said: {up.stderr()}"
            time.sleep(0.5)

        # The moved clock is the platform's one clock: what happens now is recorded as
        # happening seven months on, in its events and the views alike.
        later = json.loads(up.cli(
            "messages", "send", "--customer", customer, "--channel", "sms",
            "--to", "+31612340001", "--body", "Tock", "--json",
        ))["id"]  # fmt: skip
        assert _requested_at(up, later) - _requested_at(up, message_id) >= SEVEN_MONTHS
        assert up.process.poll() is None
    finally:
        up.terminate()


def _recipients(up: RunningUp, message_id: str) -> list[object]:
    shown = json.loads(up.cli("messages", "show", message_id, "--json"))
    return [delivery["to"] for delivery in shown["deliveries"]]


def _requested_at(up: RunningUp, message_id: str) -> datetime:
    return datetime.fromisoformat(
        json.loads(up.cli("messages", "show", message_id, "--json"))["requested_at"]
    )
