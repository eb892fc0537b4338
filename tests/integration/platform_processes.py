"""The platform's processes for integration tests: relay and workers as real child processes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import nats
import nats.js.errors

from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.status_events import WebhookTopology
from picasse.runners.settings import Settings


class Processes:
    """Starts `picasse relay` / `picasse worker` with one environment, stops them all."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[str]] = []

    def start(self, *command: str) -> subprocess.Popen[str]:
        log = open(self.log_dir / f"{command[0]}-{len(self.running)}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "picasse.runners.cli", *command],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)  # generous: a busy machine
        line = process.stdout.readline() if ready else ""
        if "running" not in line:
            process.kill()
            raise AssertionError(f"picasse {' '.join(command)} did not start: {self.logs()}")
        self.running.append(process)
        return process

    def kill(self, process: subprocess.Popen[str]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.log_dir.glob("*.log")))


@contextmanager
def processes(env: dict[str, str], log_dir: Path) -> Iterator[Processes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    group = Processes(env, log_dir)
    try:
        yield group
    finally:
        group.stop_all()


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def base_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICASSE_")}
    return env | settings


def platform_env(
    settings: Settings, database_url: str, nats_url: str, schema: str, **more: str
) -> dict[str, str]:
    """The processes' environment on a test's own schema and NATS namespace (`schema`)."""
    return base_env(
        PICASSE_DATA_DIR=str(settings.data_dir),
        PICASSE_MASTER_KEY_FILE=str(settings.master_key_path),
        PICASSE_DATABASE_URL=database_url,
        PICASSE_DATABASE_SCHEMA=schema,
        PICASSE_NATS_URL=nats_url,
        PICASSE_NATS_NAMESPACE=schema,
        **more,
    )


async def delete_streams(nats_url: str, namespace: str) -> None:
    """Deletes the JetStream streams of a namespace (jobs, webhooks), those that exist."""
    client = await nats.connect(nats_url)
    try:
        for stream in (Topology(namespace).stream, WebhookTopology(namespace).stream):
            with suppress(nats.js.errors.NotFoundError):
                await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


def jetstream_store_dir(nats_url: str, embedded: Any) -> Path:
    """Where the NATS server behind nats_url keeps its JetStream files."""
    port = nats_url.rsplit(":", 1)[1]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or not args[0].endswith(b"nats-server"):
            continue
        text = [a.decode() for a in args]
        ports = {text[i + 1] for i, a in enumerate(text[:-1]) if a in ("-p", "--port")}
        if port in ports or (embedded.nats_dir.as_posix() in " ".join(text)):
            for i, a in enumerate(text[:-1]):
                if a in ("-sd", "--store_dir"):
                    return Path(text[i + 1])
    raise AssertionError(f"no nats-server process found for {nats_url}")
