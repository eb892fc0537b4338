"""A clock's steady count (`monotonic`): what `up` times its back-offs with."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from picasse.adapters.clock import FileClock, ManualClock, SystemClock, move_file_clock


def test_the_test_clocks_steady_count_moves_when_a_test_moves_the_clock(tmp_path: Path) -> None:
    clock = FileClock(tmp_path / "test-clock")
    before = clock.monotonic()

    move_file_clock(clock.path, timedelta(minutes=2))

    assert clock.monotonic() - before >= 120


def test_a_manual_clocks_steady_count_moves_by_what_it_is_moved() -> None:
    clock = ManualClock()
    before = clock.monotonic()

    clock.advance(timedelta(seconds=15))

    assert clock.monotonic() - before == 15


def test_the_system_clocks_steady_count_never_goes_back() -> None:
    clock = SystemClock()
    readings = [clock.monotonic() for _ in range(1000)]

    assert readings == sorted(readings)
