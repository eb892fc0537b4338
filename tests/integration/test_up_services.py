"""How `picasse up` starts, watches and stops the services later issues add to it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from picasse.runners import up
from picasse.runners.settings import Settings


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
    ) -> None:
        self.name = name
        self.log = log
        self.start_error = start_error
        self.failure_reason = failure
        self.on_watch = on_watch

    def start(self) -> str:
        if self.start_error:
            raise RuntimeError(self.start_error)
        self.log.append(f"start {self.name}")
        return f"serving {self.name}"

    def failure(self) -> str | None:
        if self.on_watch == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        return self.failure_reason

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")


@pytest.fixture
def up_settings(fresh_data_dir: Path, database_url: str, nats_url: str) -> Settings:
    # The session's servers, given as configured ones, so `up` starts none of its own.
    return Settings(data_dir=fresh_data_dir / "data", database_url=database_url, nats_url=nats_url)


def run_up(settings: Settings, *services: RecordingService) -> int:
    return up.main(settings, extra_services=[lambda _s, _e, s=s: s for s in services])


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


def test_a_service_that_stops_working_stops_the_rest_and_up_exits_1(
    up_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    log: list[str] = []
    relay = RecordingService("Relay", log, failure="lost its NATS connection")
    workers = RecordingService("Workers", log)

    status = run_up(up_settings, relay, workers)

    assert status == 1
    assert log == ["start Relay", "start Workers", "stop Workers", "stop Relay"]
    assert capsys.readouterr().err == "picasse up: Relay stopped: lost its NATS connection\n"


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


def test_up_puts_back_the_signal_handlers_it_found(up_settings: Settings) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    run_up(up_settings, RecordingService("Probe", [], on_watch="sigterm"))

    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
