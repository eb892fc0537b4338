"""`python -m bench`: each benchmark prints ours beside its baseline, on the same servers.

The event store beside the plain eventsourcing library, then messaging beside raw
JetStream; `--only` picks one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from importlib.metadata import version as installed_version
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from eventsourcing.persistence import PersistenceError
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

from bench import audit_replay, event_store, messaging, pings, supervisor, views
from picasse.runners import servers
from picasse.runners.settings import Settings, nats_servers


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


BENCHES = ("event-store", "messaging", "audit", "supervisor", "pings", "views")


def positive_number(text: str) -> float:
    number = float(text)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return number


def worker_counts(text: str) -> tuple[int, ...]:
    counts = tuple(positive(part) for part in text.split(","))
    if list(counts) != sorted(set(counts)):
        raise argparse.ArgumentTypeError(f"rising worker counts, as 1,2,4, not {text}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = event_store.Config()
    messaging_defaults = messaging.Config()
    audit_defaults = audit_replay.Config()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmarks that print ours beside a baseline, in one run on the same servers:"
            " PICASSE_DATABASE_URL and PICASSE_NATS_URL if set, else embedded servers started"
            " for the run. Each side gets a fresh schema (and NATS namespace), removed afterwards."
        ),
    )
    parser.add_argument(
        "--only", choices=BENCHES, help="run one benchmark (default: all, one after the other)"
    )
    store = parser.add_argument_group(
        "event-store",
        "events/s of Picasse's event store (sealed fields, hash chain, key store) beside the"
        " plain eventsourcing library with its whole-event cipher. The saves: the two sides"
        " take turns in one run, every turn timed, a side's rate over all its turns; the"
        " replay: a side at a time, the median of the runs",
    )
    store.add_argument(
        "--calls",
        type=positive,
        default=defaults.calls,
        help="saves of one aggregate, each side (workload 1; default %(default)s)",
    )
    store.add_argument(
        "--batches",
        type=positive,
        default=defaults.batches,
        help="saves of a batch, each side (workload 2; default %(default)s)",
    )
    store.add_argument(
        "--batch-size", type=positive, default=defaults.batch_size, help="aggregates per batch"
    )
    store.add_argument(
        "--turn",
        type=positive,
        default=defaults.turn,
        help=(
            "aggregates a side saves (at least one call) before the other side's turn; the"
            " sides take turns in one run, so both meet the same machine (default %(default)s)"
        ),
    )
    store.add_argument(
        "--repeats",
        type=positive,
        default=defaults.repeats,
        help="replay runs, each side; the median counts (default %(default)s)",
    )
    store.add_argument(
        "--baseline-cipher",
        choices=sorted(event_store.BASELINE_CIPHERS),
        default=defaults.baseline_cipher,
        help="crypto package under the library's AESCipher (pycryptodome must be installed)",
    )
    sending = parser.add_argument_group(
        "messaging",
        "deliveries/s and latency of POST /v1/messages → relay → worker → Delivered, with a"
        " provider that accepts at once, beside raw nats-py JetStream publish+pull+ack",
    )
    sending.add_argument(
        "--messages",
        type=positive,
        default=messaging_defaults.messages,
        help="messages of the throughput run (default %(default)s)",
    )
    sending.add_argument(
        "--rate",
        type=positive_number,
        default=messaging_defaults.rate,
        help="offered load of the latency run, messages/s (default: half our peak throughput)",
    )
    sending.add_argument(
        "--seconds",
        type=positive_number,
        default=messaging_defaults.seconds,
        help="how long the latency run offers that load (default %(default)s)",
    )
    sending.add_argument(
        "--senders",
        type=positive,
        default=messaging_defaults.senders,
        help="processes holding the HTTP clients (default %(default)s)",
    )
    sending.add_argument(
        "--clients",
        type=positive,
        default=messaging_defaults.clients,
        help="keep-alive HTTP clients calling POST /v1/messages (default %(default)s)",
    )
    sending.add_argument(
        "--workers",
        type=worker_counts,
        default=messaging_defaults.workers,
        help="worker processes of the throughput runs (default: 1,2,4)",
    )
    sending.add_argument(
        "--fanout",
        type=positive,
        default=messaging_defaults.fanout,
        help="recipients of the one alert of the fan-out run (default %(default)s)",
    )
    sending.add_argument(
        "--concurrency",
        type=positive,
        default=messaging_defaults.concurrency,
        help="the worker's --concurrency, and the baseline's fetch batch (default %(default)s)",
    )
    sending.add_argument(
        "--baseline-messages",
        type=positive,
        default=messaging_defaults.baseline_messages,
        help="messages of the raw JetStream baseline (default %(default)s)",
    )
    audit = parser.add_argument_group(
        "audit",
        "events/s of `picasse audit replay` beside the library's own replay of as many events,"
        " and the time to terminate and erase a customer with a small and a large history",
    )
    audit.add_argument(
        "--small-history",
        type=positive,
        default=audit_defaults.small,
        help="events of the small customer (default %(default)s)",
    )
    audit.add_argument(
        "--large-history",
        type=positive,
        default=audit_defaults.large,
        help="events of the large customer (default %(default)s)",
    )
    parser.add_argument_group(
        "views",
        "pages and list routes at 2M deliveries and 100k customers; the live projector's"
        " intake on a backlog beside a rebuild's; rebuild rate beside the audit replay's",
    ).add_argument(
        "--scale",
        type=positive_number,
        default=views.Config().scale,
        help="of 2M deliveries and 100k customers (default %(default)s)",
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
    chosen = [args.only] if args.only else list(BENCHES)
    store_config = event_store.Config(
        calls=args.calls,
        batches=args.batches,
        batch_size=args.batch_size,
        turn=args.turn,
        repeats=args.repeats,
        baseline_cipher=args.baseline_cipher,
    )
    messaging_config = messaging.Config(
        messages=args.messages,
        rate=args.rate,
        seconds=args.seconds,
        senders=args.senders,
        clients=args.clients,
        workers=args.workers,
        fanout=args.fanout,
        concurrency=args.concurrency,
        baseline_messages=args.baseline_messages,
    )
    audit_config = audit_replay.Config(small=args.small_history, large=args.large_history)
    console = Console()
    if "event-store" in chosen:
        try:
            event_store.baseline_cipher_class(store_config.baseline_cipher)  # before any server
        except event_store.BenchError as error:
            console.print(f"[red]bench: {error}")
            return 2
    started = time.monotonic()
    # Only the server URLs come from the environment: keys and any embedded server live
    # in a data dir of the run's own, removed at the end.
    data_dir = Path(tempfile.mkdtemp(prefix="picasse-bench-"))
    environ = Settings.from_environ()
    settings = Settings(
        data_dir=data_dir, database_url=environ.database_url, nats_url=environ.nats_url
    )
    try:
        database_url = start_postgres(console, settings)
        nats_url = start_nats(console, settings) if "messaging" in chosen else None
        for name in chosen:
            if name == "event-store":
                run_event_store(console, settings, database_url, store_config)
            elif name == "messaging" and nats_url is not None:
                run_messaging(console, settings, database_url, nats_url, messaging_config)
            elif name == "audit":
                run_audit(console, settings, database_url, audit_config)
            elif name == "pings":
                console.rule("location pings")
                console.print(
                    pings.table(
                        pings.run(settings, database_url, pings.Config(), console), pings.Config()
                    )
                )
            elif name == "views":
                console.rule("views at scale")
                with progress_bar(console) as progress:
                    found = views.run(settings, database_url, views.Config(args.scale), progress)
                for table in views.tables(found):
                    console.print(table)
            elif name == "supervisor":
                with console.status("picasse up: start, kill a worker, stop"):
                    console.print(supervisor.table(supervisor.run()))
    except (
        event_store.BenchError,
        messaging.BenchError,
        audit_replay.BenchError,
        supervisor.BenchError,
        views.BenchError,
        servers.ServerError,
    ) as error:
        console.print(f"[red]bench: {error}")
        return 1
    except (psycopg.Error, PersistenceError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        console.print(f"[red]bench: database: {first_line}")
        return 1
    finally:
        servers.stop_nats(settings)
        servers.stop_postgres(settings)
        shutil.rmtree(data_dir, ignore_errors=True)
    console.print(f"took {time.monotonic() - started:.0f}s")
    return 0


def start_postgres(console: Console, settings: Settings) -> str:
    embedded = settings.database_url is None
    with console.status("starting the embedded PostgreSQL" if embedded else "connecting"):
        database_url = servers.postgres_url(settings)
        server = server_version(database_url)
    console.print(
        f"PostgreSQL {server}, {'embedded' if embedded else 'external'} server"
        f" ({describe(database_url)})"
    )
    return database_url


def start_nats(console: Console, settings: Settings) -> str:
    embedded = settings.nats_url is None
    with console.status("starting the embedded NATS server" if embedded else "connecting"):
        nats_url = servers.nats_url(settings)
    console.print(f"NATS, {'embedded' if embedded else 'external'} server ({hosts(nats_url)})")
    return nats_url


def hosts(nats_url: str) -> str:
    """Each node of a NATS URL without its user and password (the embedded server's are
    its own secret, and a token is a password too)."""
    return ",".join(
        urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        for parts in map(urlsplit, nats_servers(nats_url))
    )


def progress_bar(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def run_event_store(
    console: Console, settings: Settings, database_url: str, config: event_store.Config
) -> None:
    console.rule("event store")
    console.print(
        f"baseline: eventsourcing {installed_version('eventsourcing')} Application,"
        f" {event_store.BASELINE_CIPHERS[config.baseline_cipher]};"
        " ours: Accounts with the sealing event store"
    )
    with progress_bar(console) as progress:
        results = event_store.run(settings, database_url, config, progress)
    console.print(event_store.table(results))


def run_messaging(
    console: Console,
    settings: Settings,
    database_url: str,
    nats_url: str,
    config: messaging.Config,
) -> None:
    console.rule("messaging")
    console.print(
        f"baseline: nats-py {installed_version('nats-py')} on a stream configured as ours;"
        f" ours: {config.clients} HTTP clients → picasse api → picasse relay → picasse"
        " worker(s), each its own process as in production; the worker is its own runner"
        " with the providers swapped for one that accepts at once (the default Maildir"
        " would measure file writes)"
    )
    with progress_bar(console) as progress:
        results = messaging.run(settings, database_url, nats_url, config, progress)
    console.print(messaging.table(results, config))
    console.print(messaging.cpu_table(results))
    runs = [run for run in (results.latency, results.fanout) if run is not None]
    if runs:
        console.print(messaging.stages_table(runs))
    if results.fanout is not None:
        console.print(messaging.fanout_table(results.fanout))
    for line in messaging.summary(results):
        console.print(f"note: {line}")


def run_audit(
    console: Console, settings: Settings, database_url: str, config: audit_replay.Config
) -> None:
    console.rule("audit replay and erasure")
    console.print(
        f"baseline: eventsourcing {installed_version('eventsourcing')} Application replay,"
        f" {event_store.BASELINE_CIPHERS['cryptography']}; ours: picasse audit replay"
        " (decode, project into scratch views, compare with the live views)"
    )
    with progress_bar(console) as progress:
        results = audit_replay.run(settings, database_url, config, progress)
    for table in audit_replay.tables(results):
        console.print(table)


if __name__ == "__main__":
    sys.exit(main())
