"""`picasse up`: run the servers and services of one data dir until SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

import msgspec
from rich.console import Console

from picasse.runners import servers
from picasse.runners.settings import Settings
from picasse.runners.wiring import prepare

WATCH_INTERVAL = 0.2  # seconds between health checks; also how late a signal is noticed


class Service(Protocol):
    """A long-running part of `picasse up`: a server, a thread or a child process.

    Services start in order and stop in reverse order. `start` returns once the
    service works (cleaning up after itself if it raises); `failure` is polled
    while everything runs; `stop` is called once, for started services only.
    """

    name: str

    def start(self) -> str:
        """Start it; return one line saying where it listens or what it does."""
        ...

    def failure(self) -> str | None:
        """Why it stopped working on its own, or None while it is healthy."""
        ...

    def stop(self) -> None:
        """Stop it and wait until it has stopped."""
        ...


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    """Where the servers listen: known only once they run, so services are built from it."""

    database_url: str
    nats_url: str


ServiceFactory = Callable[[Settings, Endpoints], Service]


class DatabaseServer:
    """PostgreSQL: the embedded server under the data dir, or the configured one."""

    name = "PostgreSQL"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""

    def start(self) -> str:
        self.url = servers.postgres_url(self.settings)
        return f"{_origin(self.settings.database_url)}  {self.url}"

    def failure(self) -> str | None:
        return None if servers.postgres_is_running(self.settings) else "the server exited"

    def stop(self) -> None:
        servers.stop_postgres(self.settings)


class MessagingServer:
    """NATS with JetStream: the embedded server under the data dir, or the configured one."""

    name = "NATS"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""

    def start(self) -> str:
        self.url = servers.nats_url(self.settings)
        return f"{_origin(self.settings.nats_url)}  {self.url}"

    def failure(self) -> str | None:
        return None if servers.nats_is_running(self.settings) else "the server exited"

    def stop(self) -> None:
        servers.stop_nats(self.settings)


class _StartFailed(Exception):
    """A service could not start; the message names it."""


def main(settings: Settings, *, extra_services: Sequence[ServiceFactory] = ()) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or until something fails (exit 1, one-line reason)."""
    with contextlib.ExitStack() as held:
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
        stop = held.enter_context(_stop_request())
        return _run(settings, extra_services, stop)


def _run(settings: Settings, extra_services: Sequence[ServiceFactory], stop: _StopRequest) -> int:
    # Soft wrap keeps a long URL on one line; no markup, so a '[' in a URL prints as it is.
    out = Console(soft_wrap=True, highlight=False, markup=False)
    supervisor = _Supervisor(out)
    reason = None
    try:
        reason = _start_everything(settings, extra_services, supervisor, stop)
        if reason is None and not stop.requested:
            out.print(f"{'Data dir':<11} {settings.data_dir}")
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
    supervisor: _Supervisor,
    stop: _StopRequest,
) -> str | None:
    """Start servers, then prepare the store, then the services; the reason if one fails."""
    try:
        database = DatabaseServer(settings)
        supervisor.start(database)
        if stop.requested:
            return None
        try:
            prepare(settings, database.url)
        except Exception as error:
            raise _StartFailed(f"preparing the data store failed: {_one_line(error)}") from error
        messaging = MessagingServer(settings)
        supervisor.start(messaging)
        endpoints = Endpoints(database_url=database.url, nats_url=messaging.url)
        for factory in extra_services:
            if stop.requested:
                return None
            try:
                service = factory(settings, endpoints)
            except Exception as error:
                name = getattr(factory, "__name__", "a service")
                raise _StartFailed(f"{name} could not be built: {_one_line(error)}") from error
            supervisor.start(service)
    except _StartFailed as failure:
        return str(failure)
    return None


class _Supervisor:
    """Starts services in order, watches them, stops them in reverse order."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.running: list[Service] = []

    def start(self, service: Service) -> None:
        try:
            where = service.start()
        except Exception as error:
            raise _StartFailed(f"{service.name} failed to start: {_one_line(error)}") from error
        self.running.append(service)
        self.out.print(f"{service.name:<11} {where}")

    def watch(self, stop: _StopRequest) -> str | None:
        """Wait for a stop request (None) or a service failure (its reason)."""
        while not stop.requested:
            for service in self.running:
                try:
                    failure = service.failure()
                except Exception as error:
                    failure = f"its health check failed: {_one_line(error)}"
                if failure:
                    return f"{service.name} stopped: {failure}"
            # Sleep, not Event.wait: the signal handler must not take a lock the
            # interrupted main thread may be holding.
            time.sleep(WATCH_INTERVAL)
        return None

    def stop_all(self) -> list[str]:
        """Stop every started service, newest first; the reasons of those that failed."""
        failures = []
        while self.running:
            service = self.running.pop()
            try:
                service.stop()
            except Exception as error:
                failures.append(f"{service.name} failed to stop: {_one_line(error)}")
        return failures


class _StopRequest:
    """Set from a signal handler; read by the main loop."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


@contextlib.contextmanager
def _stop_request() -> Iterator[_StopRequest]:
    """SIGINT and SIGTERM request a clean stop while inside; the old handlers come back after."""
    stop = _StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def _origin(configured_url: str | None) -> str:
    return "external" if configured_url else "embedded"


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
