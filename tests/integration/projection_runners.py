"""Views built in the test's own process by the library's ProjectionRunner, for tests
that need views on a schema where no projector runs. They claim no role: the platform's
only way of advancing views is `picasse.runners.project` (roles, one writer per view)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from eventsourcing.projection import ProjectionRunner

from picasse.adapters.postgres.views import events_after
from picasse.runners.project import VIEWS, LogReader, ViewStatus, view_env
from picasse.runners.settings import Settings


@contextmanager
def running(
    settings: Settings, database_url: str, names: list[str]
) -> Iterator[dict[str, ProjectionRunner[Any, Any]]]:
    env = view_env(settings, database_url)
    with ExitStack() as stack:
        runners = {}
        for name in names:
            projection, view = VIEWS[name]
            runners[name] = stack.enter_context(
                ProjectionRunner(
                    application_class=LogReader,
                    projection_class=projection,
                    view_class=view,
                    env=env,
                )
            )
        yield runners


def statuses(runners: dict[str, ProjectionRunner[Any, Any]]) -> list[ViewStatus]:
    result = []
    for name, runner in runners.items():
        head = runner.app.recorder.max_notification_id() or 0
        position = runner.view.max_tracking_id(runner.app.name) or 0
        lag = events_after(runner.app.recorder, position, VIEWS[name][0].topics)
        result.append(ViewStatus(name, position, head, lag))
    return result


def caught_up(runners: dict[str, Any], timeout: float = 120) -> None:
    """Wait until these running projections hold the whole log (the timeout is a safety
    limit: thousands of events on a busy machine take a while)."""
    deadline = time.monotonic() + timeout
    while not all(s.lag == 0 for s in statuses(runners)):
        assert time.monotonic() < deadline, f"views did not catch up: {statuses(runners)}"
        for runner in runners.values():
            runner.run_forever(timeout=0)
        time.sleep(0.05)
