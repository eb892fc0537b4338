"""The clocks: the system's, a movable one for tests in one process, and a file-driven one
that lets tests move the clock of a whole running platform.

This is the only module that reads the wall clock (ruff's TID251 bans it elsewhere).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# A data dir holding this file may run on a test clock; a deployment never has it.
TEST_DATA_DIR_MARKER = "picasse-test-data-dir"


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """Stands still until moved; for tests that drive parts of the platform in one process."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.now().timestamp()  # it moves only when moved

    def advance(self, by: timedelta) -> None:
        with self._lock:
            self._now += by

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment


class FileClock:
    """The real time plus an offset (in seconds) read from a file, so a test can move the
    clock of every process of a running platform at once by rewriting one file.

    The file is re-read only when it changes; a missing or unreadable file means no offset.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset()

    def monotonic(self) -> float:
        """The system's steady count plus the offset: moved by tests as `now` is."""
        return time.monotonic() + self.offset().total_seconds()

    def offset(self) -> timedelta:
        try:
            stat = os.stat(self.path)
        except OSError:
            return timedelta()
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if seen != self._seen:
                try:
                    self._offset = timedelta(seconds=float(self.path.read_text().strip() or 0))
                except (OSError, ValueError):
                    self._offset = timedelta()
                self._seen = seen
            return self._offset


def move_file_clock(path: Path, by: timedelta) -> None:
    """Moves a FileClock forward by `by` (tests); the rename makes every reader see it whole."""
    current = FileClock(path).offset()
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{(current + by).total_seconds()}\n")
    os.replace(partial, path)
