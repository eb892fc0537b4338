"""`picasse up` as a supervisor: how long a killed child takes to come back, and how long
`up` takes to stop, beside the bare child command started and stopped alone on the same
servers (the least a restart or a stop can cost)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
from rich.table import Table

START_TIMEOUT = 120.0


class BenchError(Exception):
    """The supervisor benchmark could not run."""


class Figures(msgspec.Struct, frozen=True):
    bare_start: float  # seconds from exec of `picasse worker` to its ready line
    restart: float  # seconds from kill -9 of up's worker to up's "restarted" line
    bare_stop: float  # seconds from SIGTERM to exit of a bare idle worker
    up_stop: float  # seconds from SIGTERM to exit of the whole of `up`
    up_start: float  # seconds from exec of `picasse up` to "picasse is up"


class _Lines:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.incoming: queue.Queue[str | None] = queue.Queue()
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.incoming.put(line.rstrip("\n"))
        self.incoming.put(None)

    def wait_for(self, prefix: str) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = self.incoming.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"no line {prefix!r} within {START_TIMEOUT:.0f}s") from None
            if line is None:
                raise BenchError(f"the process exited before printing {prefix!r}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line


def _command() -> list[str]:
    return [sys.executable, "-m", "picasse.runners.cli"]


def run() -> Figures:
    data_dir = Path(tempfile.mkdtemp(prefix="picasse-bench-up-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICASSE_")}
    env |= {
        "PICASSE_DATA_DIR": str(data_dir / "data"),
        "PICASSE_HTTP_PORT": "0",
        "PICASSE_DRAIN_SECONDS": "5",
    }
    started = time.monotonic()
    up = subprocess.Popen([*_command(), "up"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = _Lines(up)
        lines.wait_for("picasse is up")
        up_start = time.monotonic() - started
        database_url = next(
            line.split()[-1] for line in lines.lines if line.startswith("PostgreSQL")
        )
        nats_url = next(line.split()[-1] for line in lines.lines if line.startswith("NATS"))

        bare_env = env | {"PICASSE_DATABASE_URL": database_url, "PICASSE_NATS_URL": nats_url}
        started = time.monotonic()
        bare = subprocess.Popen(
            [*_command(), "worker"], stdout=subprocess.PIPE, text=True, env=bare_env
        )
        _Lines(bare).wait_for("worker running")
        bare_start = time.monotonic() - started
        started = time.monotonic()
        bare.send_signal(signal.SIGTERM)
        bare.wait(60)
        bare_stop = time.monotonic() - started

        state = msgspec.json.decode((data_dir / "data" / "up-state.json").read_bytes())
        detail = next(s["detail"] for s in state["services"] if s["name"] == "Worker 1")
        started = time.monotonic()
        os.kill(int(detail.rsplit("(pid ", 1)[1].rstrip(")")), signal.SIGKILL)
        lines.wait_for("Worker 1 restarted")
        restart = time.monotonic() - started

        started = time.monotonic()
        up.send_signal(signal.SIGTERM)
        up.wait(120)
        up_stop = time.monotonic() - started
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    return Figures(bare_start, restart, bare_stop, up_stop, up_start)


def table(figures: Figures) -> Table:
    result = Table(title="picasse up as a supervisor (seconds)")
    result.add_column("what")
    result.add_column("ours", justify="right")
    result.add_column("baseline", justify="right")
    result.add_row(
        "worker killed -9 → restarted and ready / bare `picasse worker` start",
        f"{figures.restart:.2f}",
        f"{figures.bare_start:.2f}",
    )
    result.add_row(
        "SIGTERM → all of `up` stopped / bare idle worker stopped",
        f"{figures.up_stop:.2f}",
        f"{figures.bare_stop:.2f}",
    )
    result.add_row(
        "`picasse up` start (embedded servers, first start)", f"{figures.up_start:.2f}", ""
    )
    return result
