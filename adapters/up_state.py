"""The state file `picasse up` keeps in its data dir: which services run, how often they
restarted. Written by the supervisor, read by the API for `/health` and the dashboard.

It holds names, pids, exit statuses, times and the public URL only: no personal data.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

STATE_FILE = "up-state.json"


class ServiceState(msgspec.Struct, frozen=True, kw_only=True):
    """One service as the supervisor last saw it."""

    name: str
    state: str  # "running" or "restarting"
    detail: str = ""  # where it listens, or its pid
    restarts: int = 0
    last_failure: str | None = None  # why it stopped last (an exit status, never output)
    last_restart_at: datetime | None = None


class UpState(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    services: list[ServiceState]
    public_url: str | None = None  # where the world reaches this platform's API and pages
    stopping: str | None = None  # set when `up` gives up on a service that keeps failing


def write_state(data_dir: Path, state: UpState) -> None:
    """Write then rename: a reader never sees half a file."""
    path = data_dir / STATE_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(msgspec.json.encode(state))
    partial.replace(path)


def read_state(data_dir: Path) -> UpState | None:
    """What the `up` of this data dir last wrote; None if none runs (or it wrote nothing)."""
    try:
        return msgspec.json.decode((data_dir / STATE_FILE).read_bytes(), type=UpState)
    except (OSError, msgspec.DecodeError):
        return None


def forget_state(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)
