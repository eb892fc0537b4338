"""How `picasse up` starts, watches and stops the services later issues add to it."""

from __future__ import annotations

import os
import signal
import socket
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from picasse.adapters.clock import TEST_DATA_DIR_MARKER, move_file_clock
from picasse.runners import up
from picasse.runners.settings import Settings
from picasse.runners.signals import StopRequest


class RecordingService:
    """A service that writes what happens to it into a shared log."""

    def __init__(
        self,
        name: str,
        log: list[str],
        *,
        start_error: str | None = None,
        failure: str | None = None,
        on_watch: str | None = None,
        failures: int | None = None,  # fail this many times, then work (None: always)
        after: tuple[str, int] | None = None,  # on_watch only once this entry is logged n times
        clock_file: Path | None = None,  # `up`'s test clock: moved past each back-off
    ) -> None:
        self.clock_file = clock_file
        self.after = after
        self.name = name
        self.log = log
        self.start_error = start_error
        self.failure_reason = failure
        self.on_watch = on_watch
        self.failures_left = failures

    def start(self, stop: StopRequest) -> str:
        if self.start_error:
            raise RuntimeError(self.start_error)
        self.log.append(f"start {self.name}")
        return f"serving {self.name}"

    def failure(self) -> str | None:
        if self.failure_reason and self.failures_left != 0:
            if self.failures_left is not None:
                self.failures_left -= 1
            return self.failure_reason
        waiting = self.after is not None and self.log.count(self.after[0]) < self.after[1]
        if self.on_watch == "sigterm" and not waiting:
            os.kill(os.getpid(), signal.SIGTERM)
        return None

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.clock_file is not None:  # after a failure: its back-off passes, not waited for
            move_file_clock(self.clock_file, timedelta(seconds=up.MAX_BACKOFF))


@pytest.fixture
def up_settings(fresh_data_dir: Path, database_url: str, nats_url: str, schema: str) -> Settings:
    # The session's servers, given as configured ones, so `up` starts none of its own; a
    # schema of its own, since its data dir (and key files) are its own. On a test clock,
    # which the services that fail move past their back-offs.
    data_dir = fresh_data_dir / "data"
    data_dir.mkdir(mode=0o700, parents=True)
    (data_dir / TEST_DATA_DIR_MARKER).touch()
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        nats_url=nats_url,
        database_schema=schema,
        test_clock_file=data_dir / "test-clock",
    )


def run_up(settings: Settings, *services: RecordingService) -> int:
    def factory_for(service: RecordingService) -> up.ServiceFactory:
        return lambda _settings, _endpoints: service

    return up.main(settings, extra_services=[factory_for(s) for s in services])


def test_services_start_in_order_and_stop_in_reverse_order_on_sigterm(
    up_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    log: list[str] = []
    relay = RecordingService("Relay", log)
    workers = RecordingService("Workers", log, on_watch="sigterm")

    status = run_up(up_settings, relay, workers)

    assert status == 0
    assert log == ["start Relay", "start Workers", "stop Workers", "stop Relay"]
    assert "Workers     serving Workers" in capsys.readouterr().out


def test_a_service_that_fails_to_start_stops_those_started_before_it(
    up_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    log: list[str] = []
    relay = RecordingService("Relay", log)
    api = RecordingService("API", log, start_error="port 8000 is in use\nmore detail")
    workers = RecordingService("Workers", log)

    status = run_up(up_settings, relay, api, workers)

    assert status == 1
    assert log == ["start Relay", "stop Relay"]
    assert capsys.readouterr().err == "picasse up: API failed to start: port 8000 is in use\n"


def test_a_service_that_stops_working_is_restarted_and_the_rest_go_on(
    up_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    log: list[str] = []
    relay = RecordingService(
        "Relay",
        log,
        failure="exited with status 1",
        failures=1,
        clock_file=up_settings.test_clock_file,
    )
    workers = RecordingService("Workers", log, on_watch="sigterm", after=("start Relay", 2))

    status = run_up(up_settings, relay, workers)

    assert status == 0
    assert log == [
        "start Relay", "start Workers", "stop Relay", "start Relay", "stop Workers", "stop Relay"
    ]  # fmt: skip
    out = capsys.readouterr().out
    assert "Relay stopped: exited with status 1; restarting in 0.5 s" in out
    assert "Relay restarted: serving Relay" in out


def test_a_service_that_keeps_failing_stops_the_rest_and_up_exits_1_with_one_line(
    up_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    log: list[str] = []
    relay = RecordingService(
        "Relay", log, failure="lost its NATS connection", clock_file=up_settings.test_clock_file
    )
    workers = RecordingService("Workers", log)

    status = run_up(up_settings, relay, workers)

    assert status == 1
    restarts = ["stop Relay", "start Relay"] * (up.FAILURES_TO_GIVE_UP - 1)
    assert log == ["start Relay", "start Workers", *restarts, "stop Workers", "stop Relay"]
    assert capsys.readouterr().err == (
        "picasse up: Relay keeps failing (5 times in 2 minutes; last: lost its NATS"
        " connection); stopping the platform\n"
    )


def test_services_are_built_with_the_urls_the_servers_listen_on(
    up_settings: Settings, database_url: str, nats_url: str
) -> None:
    seen: list[up.Endpoints] = []

    def build(_settings: Settings, endpoints: up.Endpoints) -> RecordingService:
        seen.append(endpoints)
        return RecordingService("Probe", [], on_watch="sigterm")

    status = up.main(up_settings, extra_services=[build])

    assert status == 0
    assert seen == [up.Endpoints(database_url=database_url, nats_url=nats_url)]


def test_up_serving_http_on_any_port_binds_it_first_and_names_it_to_the_services(
    up_settings: Settings,
) -> None:
    seen: list[tuple[int, str, int, int]] = []

    def build(settings: Settings, endpoints: up.Endpoints) -> RecordingService:
        assert endpoints.http_listener is not None
        with socket.socket(fileno=os.dup(endpoints.http_listener)) as listener:
            listens = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            seen.append(
                (settings.http_port, settings.public_url, listener.getsockname()[1], listens)
            )
        return RecordingService("Probe", [], on_watch="sigterm")

    any_port = msgspec.structs.replace(up_settings, http_port=0)
    status = up.main(any_port, extra_services=[build], serve_http=True)

    assert status == 0
    [(port, public_url, listening_on, listens)] = seen
    assert port != 0 and listening_on == port and listens == 1
    assert public_url == f"http://127.0.0.1:{port}"


def test_up_puts_back_the_signal_handlers_it_found(up_settings: Settings) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    run_up(up_settings, RecordingService("Probe", [], on_watch="sigterm"))

    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
