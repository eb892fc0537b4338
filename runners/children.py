"""Child processes as services of `picasse up`: the relay, the workers, the scheduler."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

from picasse.runners.settings import Settings
from picasse.runners.up import Endpoints, ServiceFactory

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0  # a worker finishes the jobs in hand first


class ChildProcess:
    """`picasse <command>` as a child of `picasse up`, on the same servers."""

    def __init__(
        self, name: str, command: list[str], settings: Settings, endpoints: Endpoints
    ) -> None:
        self.name = name
        self.command = command
        self.env = dict(os.environ)
        self.env |= {
            "PICASSE_DATA_DIR": str(settings.data_dir),
            "PICASSE_DATABASE_URL": endpoints.database_url,
            "PICASSE_NATS_URL": endpoints.nats_url,
            "PICASSE_MASTER_KEY_FILE": str(settings.master_key_path),
        }
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "picasse.runners.cli", *self.command],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        # The child prints one line ("… running") once it works, and nothing after.
        ready, _, _ = select.select([self.process.stdout], [], [], READY_TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"{self.name} was not ready within {READY_TIMEOUT:.0f} s")
        return f"{line.strip()} (pid {self.process.pid})"

    def failure(self) -> str | None:
        if self.process is None:
            return None
        code = self.process.poll()
        return None if code is None else f"exited with status {code}"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def api(settings: Settings, endpoints: Endpoints) -> ChildProcess:
    return ChildProcess("API", ["api"], settings, endpoints)


def relay(settings: Settings, endpoints: Endpoints) -> ChildProcess:
    return ChildProcess("Relay", ["relay"], settings, endpoints)


def worker(number: int) -> ServiceFactory:
    def make(settings: Settings, endpoints: Endpoints) -> ChildProcess:
        return ChildProcess(f"Worker {number}", ["worker"], settings, endpoints)

    return make


def projections(settings: Settings, endpoints: Endpoints) -> ChildProcess:
    return ChildProcess("Projections", ["project"], settings, endpoints)


def scheduler(settings: Settings, endpoints: Endpoints) -> ChildProcess:
    return ChildProcess("Scheduler", ["scheduler"], settings, endpoints)


class FirstAdministrator:
    """Not a process: on a platform without staff, says how to create the first administrator."""

    name = "Admin"

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints

    def start(self) -> str:
        from picasse.adapters.postgres.keystore import tenant_has_keys
        from picasse.domain.users import PLATFORM_TENANT

        schema = self.settings.database_schema
        if tenant_has_keys(self.endpoints.database_url, schema, PLATFORM_TENANT):
            return f"log in at http://{self.settings.http_host}:{self.settings.http_port}/login"
        return (
            "no administrator yet; create one with: echo 'a long password' |"
            " .venv/bin/picasse users add --login admin --role platform_admin --password-stdin"
        )

    def failure(self) -> str | None:
        return None

    def stop(self) -> None:
        pass


def first_administrator(settings: Settings, endpoints: Endpoints) -> FirstAdministrator:
    return FirstAdministrator(settings, endpoints)
