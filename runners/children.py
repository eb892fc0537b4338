"""Child processes as services of `picasse up`: the relay, projections, workers,
scheduler and API.

The one way Picasse runs a child process: `ChildProcess`. Every child dies with its
parent, even when the parent is killed with SIGKILL (the kernel sends it SIGTERM:
PR_SET_PDEATHSIG), and is given its share of the connection budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable

from picasse.runners.settings import Settings, SettingsError
from picasse.runners.signals import StopRequest
from picasse.runners.up import Endpoints, ServiceFactory

READY_TIMEOUT = 60.0
EXTRA_STOP_SECONDS = 5.0  # beyond the drain time, before a child that lingers is killed
PR_SET_PDEATHSIG = 1

# PostgreSQL connections per role under `up` (PICASSE_DB_CONNECTIONS is the total), as
# measured in pg_stat_activity at their peak; the API takes what the others leave, and
# needs at least MIN_API. Each child reads its share as its own PICASSE_DB_CONNECTIONS.
# relay: log reader, LISTEN for new events, role claim; projections: log reader and views,
# notice listener, role claims, one spare for the views' datastore; scheduler: retention's
# store and notice listener, role claims, the reconciler's run; worker: store, notice listener.
CONNECTIONS = {"relay": 3, "projections": 4, "scheduler": 4, "worker": 2}
# The API's least: a messages pool of 5 (views, accounts and API keys share it), the
# sessions' connection, a notice listener.
MIN_API = 7


def connection_shares(total: int, workers: int) -> dict[str, int]:
    """The budget split by role; the API gets the rest. Refused if it cannot fit."""
    others = sum(n for role, n in CONNECTIONS.items() if role != "worker")
    api = total - others - CONNECTIONS["worker"] * workers
    if api < MIN_API:
        raise SettingsError(
            f"PICASSE_DB_CONNECTIONS={total} is too few for {workers} worker(s):"
            f" give at least {total - api + MIN_API}"
        )
    return {**CONNECTIONS, "api": api}


def die_with_parent(parent: int) -> Callable[[], None]:
    """For the child, before exec: the kernel sends it SIGTERM when `parent` dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def arrange() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: follow it now
            os._exit(1)

    return arrange


class ChildProcess:
    """`picasse <command>` as a child of `picasse up`, on the same servers."""

    def __init__(
        self,
        name: str,
        command: list[str],
        settings: Settings,
        endpoints: Endpoints,
        *,
        connections: int,
        listener: int | None = None,
    ) -> None:
        """`listener`: the descriptor of a listening socket `up` holds, passed to this
        child alone (at each start) as PICASSE_HTTP_LISTEN_FD: the API's."""
        self.name = name
        self.listener = listener
        self.command = command
        self.stop_timeout = settings.drain_seconds + EXTRA_STOP_SECONDS
        self.env = dict(os.environ)
        self.env |= {
            "PICASSE_DATA_DIR": str(settings.data_dir),
            "PICASSE_DATABASE_URL": endpoints.database_url,
            "PICASSE_NATS_URL": endpoints.nats_url,
            "PICASSE_MASTER_KEY_FILE": str(settings.master_key_path),
            "PICASSE_DB_CONNECTIONS": str(connections),
            # up's own: a port it picked for PICASSE_HTTP_PORT=0 is every child's.
            "PICASSE_HTTP_PORT": str(settings.http_port),
            "PICASSE_PUBLIC_URL": settings.public_url,
            # Names its connections in pg_stat_activity.
            "PGAPPNAME": f"picasse {name.lower()}",
        }
        self.env.pop("PICASSE_HTTP_LISTEN_FD", None)  # a descriptor of up's, if any: not theirs
        if listener is not None:
            self.env["PICASSE_HTTP_LISTEN_FD"] = str(listener)
        self.process: subprocess.Popen[str] | None = None
        self.launched = False  # launched, and its start not yet waited for

    def launch(self) -> None:
        """Start the process without waiting for it: `up` launches every child at once,
        then waits for each in order (`start`), so their start-ups overlap."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "picasse.runners.cli", *self.command],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
            # `up` starts children from its main thread only: the death signal is tied
            # to the thread that forked.
            preexec_fn=die_with_parent(os.getpid()),
            # The one descriptor of up's a child gets (the rest are closed at exec).
            pass_fds=() if self.listener is None else (self.listener,),
        )
        self.launched = True

    def start(self, stop: StopRequest) -> str:
        if not self.launched:  # not launched beforehand, or a restart
            self.launch()
        self.launched = False  # the next start is a restart
        assert self.process is not None and self.process.stdout is not None
        # The child prints one line ("… running") once it works, and nothing after.
        line = ""
        waited = 0.0
        while not stop.requested and waited < READY_TIMEOUT:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            waited += 0.2
            if ready:
                line = self.process.stdout.readline()
                break
        if not line:
            try:  # it closed its output: it is exiting
                code = self.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            if stop.requested:
                return "stopped while starting"
            if code is not None:
                raise RuntimeError(f"{self.name} exited with status {code} while starting")
            if waited < READY_TIMEOUT:
                raise RuntimeError(f"{self.name} closed its output while starting")
            raise RuntimeError(f"{self.name} was not ready within {READY_TIMEOUT:.0f} s")
        return f"{line.strip()} (pid {self.process.pid})"

    def failure(self) -> str | None:
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            return None
        return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def ask_to_stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _child(
    name: str, role: str, command: list[str], *, serves_http: bool = False
) -> ServiceFactory:
    def make(settings: Settings, endpoints: Endpoints) -> ChildProcess:
        shares = connection_shares(settings.db_connections, settings.workers)
        listener = endpoints.http_listener if serves_http else None
        return ChildProcess(
            name, command, settings, endpoints, connections=shares[role], listener=listener
        )

    make.__name__ = name
    return make


api = _child("API", "api", ["api"], serves_http=True)
relay = _child("Relay", "relay", ["relay"])
projections = _child("Projections", "projections", ["project"])
scheduler = _child("Scheduler", "scheduler", ["scheduler"])


def worker(number: int) -> ServiceFactory:
    return _child(f"Worker {number}", "worker", ["worker"])


class FirstAdministrator:
    """Not a process: on a platform without staff, says how to create the first administrator."""

    name = "Admin"

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints

    def start(self, stop: StopRequest) -> str:
        from picasse.adapters.postgres.keystore import tenant_has_keys
        from picasse.domain.users import PLATFORM_TENANT

        schema = self.settings.database_schema
        if tenant_has_keys(self.endpoints.database_url, schema, PLATFORM_TENANT):
            return f"log in at {self.settings.public_url}/login"  # https when TLS is on
        return (
            "no administrator yet; create one with: echo 'a long password' |"
            f" {this_picasse()} users add --login admin --role platform_admin --password-stdin"
        )

    def failure(self) -> str | None:
        return None

    def stop(self) -> None:
        pass


def this_picasse(script: str | None = None, cwd: str | None = None) -> str:
    """The picasse that runs now, as the user would type it where they started it:
    `picasse` when that is the one on the PATH (or it was not started from its console
    script), `.venv/bin/picasse` in the repository (as `make up` runs it), else its path."""
    here = os.path.abspath(cwd if cwd is not None else os.getcwd())
    path = os.path.normpath(os.path.join(here, script if script is not None else sys.argv[0]))
    on_path = shutil.which("picasse")
    if os.path.basename(path) != "picasse" or (on_path and os.path.abspath(on_path) == path):
        return "picasse"
    if os.path.commonpath([here, path]) == here:
        return os.path.relpath(path, here)
    return path


def first_administrator(settings: Settings, endpoints: Endpoints) -> FirstAdministrator:
    return FirstAdministrator(settings, endpoints)
