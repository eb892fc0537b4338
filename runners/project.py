"""`picasse project`: keeps the views up to date with the log; rebuilds one on request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import msgspec
from eventsourcing.projection import Projection, ProjectionRunner
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from picasse.adapters.postgres.views import (
    PostgresAccountsView,
    PostgresLedgerView,
    PostgresTrafficView,
    events_after,
)
from picasse.domain.application import PicasseApplication
from picasse.projections.accounts import AccountsProjection
from picasse.projections.ledger import LedgerProjection
from picasse.projections.traffic import TrafficProjection
from picasse.runners import servers
from picasse.runners.settings import Settings, SettingsError
from picasse.runners.signals import StopRequest, stop_requested
from picasse.runners.wiring import ensure_master_key, eventsourcing_env

VIEWS: dict[str, tuple[type[Projection[Any]], type[Any]]] = {
    "accounts": (AccountsProjection, PostgresAccountsView),
    "traffic": (TrafficProjection, PostgresTrafficView),
    "ledger": (LedgerProjection, PostgresLedgerView),
}


class LogReader(PicasseApplication):
    """Reads the one event log; the projections' window onto it."""


class ViewStatus(msgspec.Struct, frozen=True):
    view: str
    position: int  # the last notification the view has taken in
    head: int  # the log's last notification
    lag: int  # events for this view still to take in


def view_env(settings: Settings, database_url: str) -> dict[str, str]:
    env = eventsourcing_env(database_url, settings.master_key_path, schema=settings.database_schema)
    # A projection reads and writes from one thread: a small pool is plenty.
    env["POSTGRES_POOL_SIZE"] = "1"
    env["POSTGRES_MAX_OVERFLOW"] = "2"  # readers in other threads (LiveViews) share it
    return env


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


def main(settings: Settings, *, rebuild: str | None = None, once: bool = False) -> int:
    database_url = servers.postgres_url(settings)
    ensure_master_key(settings)
    if rebuild is not None and rebuild not in VIEWS:
        raise SettingsError(f"no view {rebuild!r}; views: {', '.join(VIEWS)}")
    names = [rebuild] if rebuild else list(VIEWS)
    if rebuild:
        _reset(settings, database_url, rebuild)
    console = Console(stderr=True)
    with stop_requested() as stop, running(settings, database_url, names) as runners:
        if rebuild or once:
            _catch_up(runners, console, stop)
            for status in statuses(runners):
                print(f"{status.view}: at {status.position} of {status.head} (lag {status.lag})")
            return 0
        print("projections running", flush=True)
        while not stop.wait(1.0):
            for runner in runners.values():
                runner.run_forever(timeout=0)  # re-raises a projection's error here
    return 0


def _reset(settings: Settings, database_url: str, name: str) -> None:
    from eventsourcing.persistence import InfrastructureFactory

    projection, view_class = VIEWS[name]
    env = view_env(settings, database_url)
    factory = InfrastructureFactory.construct(
        env=ProjectionRunner._construct_env(projection.name, env)
    )
    view = factory.tracking_recorder(view_class)
    view.reset()
    factory.close()


def _catch_up(
    runners: dict[str, ProjectionRunner[Any, Any]], console: Console, stop: StopRequest
) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {name: progress.add_task(f"view {name}", total=None) for name in runners}
        while not stop.is_set():
            current = statuses(runners)
            for status in current:
                recorder = runners[status.view].app.recorder
                total = events_after(recorder, 0, VIEWS[status.view][0].topics)
                progress.update(tasks[status.view], completed=total - status.lag, total=total)
            if all(status.lag == 0 for status in current):
                return
            for runner in runners.values():
                runner.run_forever(timeout=0)  # re-raises a projection's error here
            stop.wait(0.2)


class LiveViews:
    """The views, followed in this process, for commands that must read their own writes."""

    def __init__(self, runners: dict[str, ProjectionRunner[Any, Any]]) -> None:
        self.runners = runners

    def view(self, name: str) -> Any:
        return self.runners[name].view

    def catch_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for runner in self.runners.values():
                runner.run_forever(timeout=0)  # re-raises a projection's error here
            if all(status.lag == 0 for status in statuses(self.runners)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the views did not catch up with the log in time")
            time.sleep(0.05)


@contextmanager
def live_views(settings: Settings, database_url: str) -> Iterator[LiveViews]:
    with running(settings, database_url, list(VIEWS)) as runners:
        views = LiveViews(runners)
        views.catch_up()
        yield views
