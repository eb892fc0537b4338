"""The one scheduler: runs periodic jobs (retention, the reconciler, …) on the one clock.

A job runs when the clock says it is due, so a test that moves the clock makes it run
without anyone sleeping. Each job is a role: only the process that claims it runs it.
A job that fails is logged (by error type) and retried at its next turn; it never stops
the scheduler or the other jobs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from picasse.adapters.postgres.roles import RoleClaims
from picasse.domain.clock import Clock

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often the clock is looked at; a moved clock is noticed this late


class PeriodicJob(Protocol):
    """Work that is due every so often."""

    name: str  # also the role claimed to run it: one process runs each job
    every: timedelta

    def run(self, now: datetime) -> str:
        """Do the work as of `now`; one line saying what was done."""
        ...


class JobState:
    """When a job ran last and how it went, for health reports."""

    def __init__(self) -> None:
        self.last_run: datetime | None = None
        self.last_result: str | None = None
        self.last_error: str | None = None  # the error's type, never its text
        self.failures = 0


class Scheduler:
    def __init__(
        self,
        jobs: Sequence[PeriodicJob],
        clock: Clock,
        claims: RoleClaims | None = None,
        report: Callable[[str, str], None] | None = None,
    ) -> None:
        self.jobs = list(jobs)
        self.clock = clock
        self.claims = claims
        self.report = report or self._log_changes
        self.state = {job.name: JobState() for job in self.jobs}
        self._due: dict[str, datetime] = {}
        self._logged: dict[str, str] = {}

    def _log_changes(self, name: str, line: str) -> None:
        """A job's report is logged when it differs from the one logged before it: on a
        quiet platform, "0 open deliveries checked" once, not every half minute."""
        if self._logged.get(name) != line:
            self._logged[name] = line
            log.info("%s: %s", name, line)

    def run_due(self) -> None:
        """Run every job that is due now (and whose role this process plays)."""
        now = self.clock.now()
        for job in self.jobs:
            due = self._due.get(job.name)
            if due is not None and now < due:
                continue
            if self.claims is not None and not self._claim(job.name):
                continue
            state = self.state[job.name]
            try:
                result = job.run(now)
            except Exception as error:
                state.failures += 1
                state.last_error = type(error).__name__
                # Back off: 1, 2, 4 … minutes of the clock, at most the job's own period.
                wait = min(timedelta(minutes=2 ** min(state.failures - 1, 10)), job.every)
                self._due[job.name] = now + wait
                log.warning("%s failed (%s); next try in %s", job.name, state.last_error, wait)
                continue
            state.failures, state.last_error = 0, None
            state.last_run, state.last_result = now, result
            self._due[job.name] = now + job.every
            self.report(job.name, result)

    def run_until(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_due()
            stop.wait(POLL_SECONDS)

    def _claim(self, role: str) -> bool:
        assert self.claims is not None
        try:
            return self.claims.claim(role)
        except Exception as error:
            log.warning("cannot claim %s (%s)", role, type(error).__name__)
            return False
