"""Every picasse process logs to stderr in one form that names it; daemons log progress,
and the scheduler does not repeat a job's unchanged report."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from picasse.adapters.clock import ManualClock
from picasse.runners.logs import configure_logging
from picasse.runners.scheduler import Scheduler


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), logging.getLogger("picasse").level
    yield
    root.handlers[:] = handlers
    logging.getLogger("picasse").setLevel(level)


def test_a_daemon_names_itself_and_logs_its_progress_but_not_the_libraries_chatter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert configure_logging(["worker", "--concurrency", "3"]) == "worker"
    logging.getLogger("picasse.adapters.nats.worker").info("worker stops: 3 jobs handled")
    logging.getLogger("uvicorn.error").info("Started server process")  # a library's info: not shown
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    assert capsys.readouterr().err.splitlines() == [
        f"picasse worker[{os.getpid()}] INFO picasse.adapters.nats.worker: worker stops: 3 jobs handled",
        f"picasse worker[{os.getpid()}] WARNING uvicorn.error: Invalid HTTP request received.",
    ]


def test_a_command_logs_warnings_only_and_a_second_set_up_adds_no_second_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(["api"])
    assert configure_logging(["customers", "register", "--org", "Acme"]) == "customers register"
    log = logging.getLogger("picasse.runners.cli")
    log.info("not shown")
    log.warning("shown once")
    assert capsys.readouterr().err.splitlines() == [
        f"picasse customers register[{os.getpid()}] WARNING picasse.runners.cli: shown once"
    ]


class _Counting:
    """A periodic job whose report says how many things it found."""

    name = "counting"
    every = timedelta(minutes=1)

    def __init__(self) -> None:
        self.found = 0

    def run(self, now: datetime) -> str:
        return f"{self.found} found"


def test_the_scheduler_logs_a_jobs_report_when_it_differs_from_the_last_one_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    job = _Counting()
    scheduler = Scheduler([job], clock)
    with caplog.at_level(logging.INFO, logger="picasse.runners.scheduler"):
        for found in [0, 0, 0, 2, 2, 0]:
            job.found = found
            scheduler.run_due()
            clock.advance(job.every)
    assert [r.getMessage() for r in caplog.records] == [
        "counting: 0 found",
        "counting: 2 found",
        "counting: 0 found",
    ]
    assert scheduler.state["counting"].last_result == "0 found"  # every run is still recorded


def test_lines_go_to_the_stderr_of_the_moment_even_after_the_one_of_a_set_up_was_closed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    earlier = io.StringIO()
    monkeypatch.setattr(sys, "stderr", earlier)
    configure_logging(["relay"])  # as a caller of `main` with its own stderr would
    earlier.close()
    monkeypatch.undo()
    configure_logging(["relay"])
    logging.getLogger("picasse.adapters.nats.relay").info("relay resumes after notification 7")
    assert capsys.readouterr().err.splitlines() == [
        f"picasse relay[{os.getpid()}] INFO picasse.adapters.nats.relay: relay resumes after notification 7"
    ]
