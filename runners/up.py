"""`picasse up`: run the servers and services of one data dir until SIGINT or SIGTERM.

`up` is the platform's supervisor: a service that stops on its own is restarted with a
back-off, and only one that keeps failing (FAILURES_TO_GIVE_UP times within
FAILURE_WINDOW seconds) stops the platform, with a one-line reason. What it does is
written to `data_dir/up-state.json` (names, pids, restart counts: no personal data),
(adapters/up_state.py), which the API shows on `/health` and the dashboard.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import msgspec
from rich.console import Console

from picasse.adapters.up_state import ServiceState, UpState, forget_state, write_state
from picasse.domain.clock import Clock
from picasse.runners import listening, servers
from picasse.runners.settings import Settings, SettingsError, nats_servers
from picasse.runners.signals import StopRequest, stop_requested
from picasse.runners.wiring import clock_from, prepare

WATCH_INTERVAL = 0.2  # seconds of real time between health checks
# The rest are seconds on the platform's clock (its steady reading, `Clock.monotonic`):
# the system's in production, so setting the system time moves no back-off; a test's
# PICASSE_TEST_CLOCK_FILE on a test platform, so tests move it instead of waiting.
FAILURES_TO_GIVE_UP = 5  # a service failing this often within FAILURE_WINDOW stops `up`
FAILURE_WINDOW = 120.0
FIRST_BACKOFF = 0.5  # before the first restart; doubles with each failure
MAX_BACKOFF = 15.0
# Children fail while a server is down; those failures are not held against them.
SERVER_GRACE = 30.0  # after a server failed


class Service(Protocol):
    """A long-running part of `picasse up`: a server or a child process.

    Services start in order and stop in reverse order. `start` returns once the
    service works (cleaning up after itself if it raises) and gives up early once
    `stop` is requested; `failure` is polled while everything runs; `stop` is called
    after a failure (before the restart) and at the end, and may be called twice.
    """

    name: str

    def start(self, stop: StopRequest) -> str:
        """Start it; return one line saying where it listens or what it does."""
        ...

    def failure(self) -> str | None:
        """Why it stopped working on its own, or None while it is healthy."""
        ...

    def stop(self) -> None:
        """Stop it and wait until it has stopped."""
        ...


@runtime_checkable
class Launchable(Service, Protocol):
    """A service whose start can begin before `start` waits for it (a child process)."""

    def launch(self) -> None:
        """Begin starting it; `start` then waits until it works."""
        ...


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    """Where the servers listen: known only once they run, so services are built from it."""

    database_url: str
    nats_url: str
    # The descriptor of the API's listening socket, which `up` binds and holds (None when
    # it runs no API): each API child it starts is handed this one (runners/listening.py).
    http_listener: int | None = None


ServiceFactory = Callable[[Settings, Endpoints], Service]


class DatabaseServer:
    """PostgreSQL: the embedded server under the data dir, or the configured one."""

    name = "PostgreSQL"
    is_server = True  # restarted before the services that need it

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""

    def start(self, stop: StopRequest) -> str:
        self.url = servers.postgres_url(self.settings)
        return f"{_origin(self.settings.database_url)}  {_without_password(self.url)}"

    def failure(self) -> str | None:
        return None if servers.postgres_is_running(self.settings) else "the server exited"

    def stop(self) -> None:
        servers.stop_postgres(self.settings)


class MessagingServer:
    """NATS with JetStream: the embedded server under the data dir, or the configured one."""

    name = "NATS"
    is_server = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""

    def start(self, stop: StopRequest) -> str:
        # A restart listens where the last server did, so clients reconnect by themselves.
        self.url = servers.nats_url(self.settings, prefer=self.url)
        # The embedded server's credentials are in its directory, not on the screen.
        # A user without a password is a token (nats://TOKEN@host): not shown either.
        # A cluster's nodes are a comma-separated list: each shown alike.
        shown = ",".join(
            _without_password(url)
            if self.settings.nats_url and urlsplit(url).password is not None
            else _bare(url)
            for url in nats_servers(self.url)
        )
        return f"{_origin(self.settings.nats_url)}  {shown}"

    def failure(self) -> str | None:
        return None if servers.nats_is_running(self.settings) else "the server exited"

    def stop(self) -> None:
        servers.stop_nats(self.settings)


class _StartFailed(Exception):
    """A service could not start; the message names it."""


def main(
    settings: Settings, *, extra_services: Sequence[ServiceFactory] = (), serve_http: bool = False
) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or until something fails (exit 1, one-line reason).

    `serve_http`: bind the API's socket (http_host, http_port) before anything starts and
    hold it until the end, for the API children (`Endpoints.http_listener`).
    """
    with contextlib.ExitStack() as held:
        # First of all: a SIGTERM at any moment of the start-up is a clean stop.
        stop = held.enter_context(stop_requested(deadline=None))
        try:
            _make_data_dir(settings.data_dir)
            running_pid = held.enter_context(_only_up_on(settings.data_dir))
        except OSError as error:
            print(f"picasse up: cannot use {settings.data_dir}: {error.strerror}", file=sys.stderr)
            return 1
        if running_pid is not None:
            print(
                f"picasse is already running on {settings.data_dir} (pid {running_pid})",
                file=sys.stderr,
            )
            return 1
        if settings.database_url is None or settings.nats_url is None:
            held.enter_context(servers.released_when_orphaned(settings))
        listener = None
        if serve_http:
            try:
                listener = held.enter_context(
                    listening.bind(settings.http_host, settings.http_port)
                )
            except SettingsError as error:  # a busy port: before any server starts
                print(f"picasse up: {error}", file=sys.stderr)
                return 1
            settings = _on_its_port(settings, listening.port_of(listener))
        return _run(settings, extra_services, stop, None if listener is None else listener.fileno())


def _on_its_port(settings: Settings, port: int) -> Settings:
    """PICASSE_HTTP_PORT=0 asks for any free port: the kernel picked one when `up` bound
    the API's socket, which `up` holds and hands to every API it starts, so the API keeps
    the port when it is restarted and the public URL (the links in every child's mails)
    names it. A port of up's own choosing, not an ephemeral one, was needed only while the
    API bound it a moment after the choice: another process could take it in between."""
    return settings if settings.http_port != 0 else settings.on_port(port)


def _run(
    settings: Settings,
    extra_services: Sequence[ServiceFactory],
    stop: StopRequest,
    http_listener: int | None,
) -> int:
    # Soft wrap keeps a long URL on one line; no markup, so a '[' in a URL prints as it is.
    out = Console(soft_wrap=True, highlight=False, markup=False)
    supervisor = Supervisor(out, settings.data_dir, clock_from(settings), settings.public_url)
    reason = None
    try:
        reason = _start_everything(settings, extra_services, supervisor, stop, http_listener)
        if reason is None and not stop.requested:
            out.print(f"{'Data dir':<11} {settings.data_dir}")
            out.print(f"{'Public URL':<11} {settings.public_url}")
            out.print("picasse is up; Ctrl-C or SIGTERM stops it")
            reason = supervisor.watch(stop)
    finally:
        stop_failures = supervisor.stop_all()
    for line in ([reason] if reason else []) + stop_failures:
        print(f"picasse up: {line}", file=sys.stderr)
    if reason or stop_failures:
        return 1
    out.print("picasse stopped")
    return 0


def _start_everything(
    settings: Settings,
    extra_services: Sequence[ServiceFactory],
    supervisor: Supervisor,
    stop: StopRequest,
    http_listener: int | None,
) -> str | None:
    """Start servers, then prepare the store, then the services; the reason if one fails."""
    try:
        database = DatabaseServer(settings)
        supervisor.start(database, stop)
        if stop.requested:
            return None
        try:
            prepare(settings, database.url)
        except Exception as error:
            raise _StartFailed(f"preparing the data store failed: {_one_line(error)}") from error
        messaging = MessagingServer(settings)
        supervisor.start(messaging, stop)
        endpoints = Endpoints(
            database_url=database.url, nats_url=messaging.url, http_listener=http_listener
        )
        services = []
        for factory in extra_services:
            try:
                services.append(factory(settings, endpoints))
            except Exception as error:
                name = getattr(factory, "__name__", "a service")
                raise _StartFailed(f"{name} could not be built: {_one_line(error)}") from error
        # Child processes are launched together, so their start-ups overlap, and then
        # waited for in order: the output, the state and the stopping order stay in order.
        launched = [s for s in services if isinstance(s, Launchable)]
        try:
            for child in launched:
                child.launch()
            for service in services:
                if stop.requested:
                    return None
                supervisor.start(service, stop)
        finally:
            for child in launched:
                if child not in supervisor.services():
                    child.stop()  # launched, but never started: not left behind
    except _StartFailed as failure:
        return str(failure)
    return None


class _Watched:
    """A started service and its record of failures."""

    def __init__(self, service: Service, detail: str) -> None:
        self.service = service
        self.detail = detail
        self.failures: list[float] = []  # clock.monotonic() of each failure in the window
        self.restart_at: float | None = None  # clock.monotonic(), while it waits for it
        self.restarts = 0
        self.last_failure: str | None = None
        self.last_restart_at: datetime | None = None  # on the platform clock


class Supervisor:
    """Starts services in order, restarts those that fail, stops them in reverse order."""

    def __init__(self, out: Console, data_dir: Path, clock: Clock, public_url: str) -> None:
        self.out = out
        self.data_dir = data_dir
        self.clock = clock
        self.public_url = public_url
        self.running: list[_Watched] = []
        self.stopping: str | None = None
        self.server_failed_at: float | None = None  # clock.monotonic() of the last one

    def start(self, service: Service, stop: StopRequest) -> None:
        try:
            where = service.start(stop)
        except Exception as error:
            raise _StartFailed(f"{service.name} failed to start: {_one_line(error)}") from error
        self.running.append(_Watched(service, where))
        self._write_state()  # first: who reads the line finds the state file saying so too
        self.out.print(f"{service.name:<11} {where}")

    def watch(self, stop: StopRequest) -> str | None:
        """Restart what fails until a stop request (None) or a service keeps failing (why)."""
        while not stop.requested:
            servers_up = True
            for watched in self.running:  # the servers come first in the list
                server = _is_server(watched.service)
                if watched.restart_at is None:
                    reason = self._failure_of(watched.service)
                    if reason is not None:
                        given_up = self._failed(watched, reason)
                        if given_up:
                            return given_up
                elif self.clock.monotonic() >= watched.restart_at and (server or servers_up):
                    self._restart(watched, stop)
                if server and watched.restart_at is not None:
                    servers_up = False  # a child would only fail again without it
                if stop.requested:
                    return None
            stop.wait(WATCH_INTERVAL)
        return None

    def _failure_of(self, service: Service) -> str | None:
        try:
            return service.failure()
        except Exception as error:
            return f"its health check failed: {_one_line(error)}"

    def _failed(self, watched: _Watched, reason: str) -> str | None:
        now = self.clock.monotonic()
        watched.failures = [at for at in watched.failures if now - at < FAILURE_WINDOW]
        if _is_server(watched.service):
            self.server_failed_at = now
        if (
            _is_server(watched.service)
            or self.server_failed_at is None
            or now - self.server_failed_at > SERVER_GRACE
        ):
            watched.failures.append(now)
        watched.last_failure = reason
        name = watched.service.name
        if len(watched.failures) >= FAILURES_TO_GIVE_UP:
            self.stopping = (
                f"{name} keeps failing ({len(watched.failures)} times in"
                f" {FAILURE_WINDOW / 60:.0f} minutes; last: {reason}); stopping the platform"
            )
            self._write_state()
            return self.stopping
        backoff = min(FIRST_BACKOFF * 2 ** max(len(watched.failures) - 1, 0), MAX_BACKOFF)
        watched.restart_at = now + backoff
        self.out.print(f"{name} stopped: {reason}; restarting in {backoff:.1f} s")
        with contextlib.suppress(Exception):
            watched.service.stop()  # let go of what is left of it (a handle, a zombie)
        self._write_state()
        return None

    def _restart(self, watched: _Watched, stop: StopRequest) -> None:
        service = watched.service
        watched.restarts += 1
        watched.last_restart_at = self.clock.now()
        try:
            watched.detail = service.start(stop)
        except Exception as error:  # it cleaned up after itself
            watched.restart_at = None
            # Counted like any failure: the next check sees it stopped.
            self._failed(watched, f"restart failed: {_one_line(error)}")
            return
        watched.restart_at = None
        self._write_state()  # first: who reads the line finds the state file saying so too
        self.out.print(f"{service.name} restarted: {watched.detail}")

    def services(self) -> list[Service]:
        """The services started so far, in their order."""
        return [watched.service for watched in self.running]

    def stop_all(self) -> list[str]:
        """Stop every started service, newest first; the reasons of those that failed.

        Children are told to stop all at once, so the whole stop takes one drain time,
        not one per child; then each is waited for, the servers last.
        """
        failures = []
        for watched in reversed(self.running):
            ask = getattr(watched.service, "ask_to_stop", None)
            if ask is not None:
                with contextlib.suppress(Exception):
                    ask()
        while self.running:
            watched = self.running.pop()
            try:
                watched.service.stop()
            except Exception as error:
                failures.append(f"{watched.service.name} failed to stop: {_one_line(error)}")
        with contextlib.suppress(OSError):
            forget_state(self.data_dir)
        return failures

    def state(self) -> UpState:
        return UpState(
            pid=os.getpid(),
            public_url=self.public_url,
            stopping=self.stopping,
            services=[
                ServiceState(
                    name=watched.service.name,
                    state="running" if watched.restart_at is None else "restarting",
                    detail=watched.detail,
                    restarts=watched.restarts,
                    last_failure=watched.last_failure,
                    last_restart_at=watched.last_restart_at,
                )
                for watched in self.running
            ],
        )

    def _write_state(self) -> None:
        try:
            write_state(self.data_dir, self.state())
        except OSError as error:
            self.out.print(f"cannot write the state file: {error.strerror}")


@contextlib.contextmanager
def _only_up_on(data_dir: Path) -> Iterator[int | None]:
    """Hold `data_dir/up.lock` while inside; yields None, or the pid of the `up` holding it.

    An flock dies with its process, so a crashed `up` never leaves a stale lock behind.
    """
    # No O_TRUNC: the pid inside belongs to the holder until we hold the lock ourselves.
    fd = os.open(data_dir / "up.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield _pid_in(fd)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield None
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int:
    # The holder writes its pid just after taking the lock: give it a moment.
    deadline = time.monotonic() + 1.0
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit() or time.monotonic() > deadline:
            return int(text) if text.isdigit() else 0
        time.sleep(0.02)


def _make_data_dir(data_dir: Path) -> None:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        data_dir.mkdir(mode=0o700)
        data_dir.chmod(0o700)  # mkdir's mode passes through the umask


def _is_server(service: Service) -> bool:
    return bool(getattr(service, "is_server", False))


def _without_password(url: str) -> str:
    """A server's URL as it may be printed and kept in the state file: no password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _bare(url: str) -> str:
    """A URL without its user and password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _origin(configured_url: str | None) -> str:
    return "external" if configured_url else "embedded"


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
