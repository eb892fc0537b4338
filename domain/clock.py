"""The shape of the one clock: whatever decides by time is handed one, never reads its own."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """Tells the time (timezone-aware, UTC). Tests and test platforms move it; nothing sleeps."""

    def now(self) -> datetime: ...
