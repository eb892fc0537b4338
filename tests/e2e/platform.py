"""`picasse up` as a process, as a user runs it: the one platform fixture of e2e tests.

Tests that claim a behaviour of the platform start it with `RunningUp` (or the
`running_up` fixtures built on it) rather than assembling its parts in one process.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from picasse.adapters.clock import TEST_DATA_DIR_MARKER

START_TIMEOUT = 90.0  # a first start runs initdb; two cores under load can be slow
STOP_TIMEOUT = 60.0  # a safety limit, not a goal: a loaded machine stops servers slowly
READY_LINE = "picasse is up"
MAIL_TIMEOUT = 120.0  # a mail goes through the relay, NATS and a worker
# Debian's Chromium (tests/e2e/ensure_chromium.sh): playwright never downloads a browser.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def picasse_command() -> list[str]:
    """The console script installed beside this Python, else the module."""
    script = Path(sys.executable).parent / "picasse"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "picasse.runners.cli"]


def environment(data_dir: Path, **overrides: str) -> dict[str, str]:
    """This environment without configured servers, so `up` starts embedded ones."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PICASSE_DATABASE_URL", "PICASSE_NATS_URL"}
    }
    env["PICASSE_DATA_DIR"] = str(data_dir)
    env["PICASSE_HTTP_PORT"] = "0"  # any free port: tests may run beside a real platform
    env.update(overrides)
    return env


class RunningUp:
    """A `picasse up` process whose standard output is read line by line as it comes."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = environment(data_dir, **env)
        self.stderr_path = data_dir.parent / f"{data_dir.name}.up-stderr"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [*picasse_command(), "up"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=self.env,
            )
        self.lines: list[str] = []
        self._incoming: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._incoming.put(line.rstrip("\n"))
        self._incoming.put(None)

    def wait_until_up(self) -> list[str]:
        while True:
            try:
                line = self._incoming.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"picasse up printed nothing new for {START_TIMEOUT:.0f}s")
            if line is None:
                pytest.fail(f"picasse up exited while starting: {self.stderr()}")
            self.lines.append(line)
            if line.startswith(READY_LINE):
                return self.lines

    def wait_for_line(self, prefix: str, timeout: float = START_TIMEOUT) -> str:
        """The next line of up's output that starts with `prefix` (later lines are kept)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._incoming.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"picasse up printed no line {prefix!r} within {timeout:.0f}s")
            if line is None:
                pytest.fail(f"picasse up exited while waiting for {prefix!r}: {self.stderr()}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def pid_of(self, service: str) -> int:
        """The pid of one of up's services, as its state file says (servers: their own files)."""
        if service == "PostgreSQL":
            return int((self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        if service == "NATS":
            return int(json.loads((self.data_dir / "nats" / "server.json").read_text())["pid"])
        state = json.loads((self.data_dir / "up-state.json").read_text())
        for entry in state["services"]:
            if entry["name"] == service:
                return int(entry["detail"].rsplit("(pid ", 1)[1].rstrip(")"))
        raise AssertionError(f"no service {service} in {state}")

    def url_of(self, server: str) -> str:
        for line in self.lines:
            if line.startswith(server):
                return line.split()[-1]
        raise AssertionError(f"no line for {server} in {self.lines}")

    def api_url(self) -> str:
        """Where the API listens now (the latest line that says so)."""
        for line in reversed(self.lines):
            if "api listening on " in line:
                return line.split("api listening on ")[1].split()[0]
        raise AssertionError(f"no API line in {self.lines}")

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def report(self) -> str:
        """What a test that waited in vain shows of this `up`: what it printed since the
        test last read it (restarts, failures), its services' state and its stderr's end."""
        while True:
            try:
                line = self._incoming.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        try:
            state = (self.data_dir / "up-state.json").read_text()
        except OSError as error:
            state = f"(no state file: {error})"
        return (
            "\n--- up printed:\n"
            + "\n".join(self.lines[-40:])
            + f"\n--- up-state.json:\n{state}\n--- up's stderr (end):\n{self.stderr()[-6000:]}"
        )

    def cli(self, *args: str, stdin: str = "") -> str:
        """`picasse ARGS` beside this `up`, as a user runs it (same environment); its stdout."""
        result = subprocess.run(
            [*picasse_command(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        assert result.returncode == 0, f"picasse {' '.join(args)}: {result.stderr}"
        return result.stdout


def on_test_clock(data_dir: Path) -> tuple[Path, dict[str, str]]:
    """Marks `data_dir` as a test one; the test clock's file and the environment that puts
    every process of a `RunningUp` on it (move it with `move_file_clock`)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / TEST_DATA_DIR_MARKER).touch()
    clock_file = data_dir / "test-clock"
    return clock_file, {"PICASSE_TEST_CLOCK_FILE": str(clock_file)}


def processes_using(data_dir: Path) -> list[str]:
    """Command lines of live processes that name the data dir in their command line or
    environment (`up`'s children get it as PICASSE_DATA_DIR) (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            # Any bytes: a process beside the suite (the CLI's undecodable-argument test)
            # may hold some that are no UTF-8.
            raw = (entry / "cmdline").read_bytes()
            command = raw.replace(b"\0", b" ").decode(errors="backslashreplace")
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[:1]
        except OSError:
            continue  # gone meanwhile
        if state == ["Z"]:
            continue  # dead, waiting to be reaped
        named = f"PICASSE_DATA_DIR={data_dir}".encode() in environ
        if str(data_dir) in command or named:
            found.append(command)
    return found


def wait_until_none_use(data_dir: Path, timeout: float) -> list[str]:
    """Wait for every process using the data dir to end; those left after `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := processes_using(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def links_mailed_to(up: RunningUp, address: str) -> list[str]:
    """The set-password links in the development Maildir's mails to `address`."""
    found = []
    inbox = up.data_dir / "maildir" / "email"
    for sub in ("new", "cur"):
        for path in sorted((inbox / sub).glob("*")):
            try:
                mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            except FileNotFoundError:
                continue
            if address not in str(mail["To"]):
                continue
            body = mail.get_body(("plain",))
            assert body is not None, f"{path.name} has no plain text part"
            found += re.findall(r"http\S+/set-password/[A-Za-z0-9_-]+", body.get_content())
    return found


def wait_for_links(up: RunningUp, address: str, count: int) -> list[str]:
    """The first `count` set-password links mailed to `address`, once they have come."""
    deadline = time.monotonic() + MAIL_TIMEOUT
    while len(links := links_mailed_to(up, address)) < count:
        assert time.monotonic() < deadline, f"{len(links)} link(s) for {address}{up.report()}"
        time.sleep(0.5)
    return links
