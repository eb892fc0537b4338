"""`python -m bench`: our event store beside the plain eventsourcing library, on one PostgreSQL."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from importlib.metadata import version as installed_version
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench import event_store
from picasse.runners import servers
from picasse.runners.settings import Settings


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = event_store.Config()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Measure events/s of Picasse's event store (sealed fields, hash chain, key store)"
            " beside the plain eventsourcing library with its whole-event cipher, in one run"
            " on the same PostgreSQL: PICASSE_DATABASE_URL if set, else an embedded server"
            " started for the run. Each side gets a fresh schema, dropped afterwards."
        ),
    )
    parser.add_argument(
        "--calls", type=positive, default=defaults.calls, help="saves of one aggregate (workload 1)"
    )
    parser.add_argument(
        "--batches", type=positive, default=defaults.batches, help="saves of a batch (workload 2)"
    )
    parser.add_argument(
        "--batch-size", type=positive, default=defaults.batch_size, help="aggregates per batch"
    )
    parser.add_argument(
        "--repeats",
        type=positive,
        default=defaults.repeats,
        help="runs per workload; the median counts",
    )
    parser.add_argument(
        "--baseline-cipher",
        choices=sorted(event_store.BASELINE_CIPHERS),
        default=defaults.baseline_cipher,
        help="crypto package under the library's AESCipher (pycryptodome must be installed)",
    )
    return parser.parse_args(argv)


def describe(database_url: str) -> str:
    """Where the server is, without the password."""
    params = conninfo_to_dict(database_url)
    host = str(params.get("host") or "localhost")
    database = params.get("dbname") or "postgres"
    if host.startswith("/"):
        return f"unix socket, database {database}"
    return f"{host}:{params.get('port') or 5432}/{database}"


def server_version(database_url: str) -> str:
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = event_store.Config(
        calls=args.calls,
        batches=args.batches,
        batch_size=args.batch_size,
        repeats=args.repeats,
        baseline_cipher=args.baseline_cipher,
    )
    console = Console()
    try:
        event_store.baseline_cipher_class(config.baseline_cipher)  # before starting a server
    except event_store.BenchError as error:
        console.print(f"[red]bench: {error}")
        return 2
    started = time.monotonic()
    # Only the database URL comes from the environment: keys and any embedded server
    # live in a data dir of the run's own, removed at the end.
    data_dir = Path(tempfile.mkdtemp(prefix="picasse-bench-"))
    settings = Settings(data_dir=data_dir, database_url=Settings.from_environ().database_url)
    embedded = settings.database_url is None
    try:
        with console.status("starting the embedded PostgreSQL" if embedded else "connecting"):
            database_url = servers.postgres_url(settings)
            server = server_version(database_url)
        console.print(
            f"PostgreSQL {server}, {'embedded' if embedded else 'external'} server"
            f" ({describe(database_url)})"
        )
        console.print(
            f"baseline: eventsourcing {installed_version('eventsourcing')} Application,"
            f" {event_store.BASELINE_CIPHERS[config.baseline_cipher]};"
            " ours: Accounts with the sealing event store"
        )
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            results = event_store.run(settings, database_url, config, progress)
    except event_store.BenchError as error:
        console.print(f"[red]bench: {error}")
        return 1
    finally:
        servers.stop_postgres(settings)
        shutil.rmtree(data_dir, ignore_errors=True)
    console.print(event_store.table(results))
    console.print(f"took {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
