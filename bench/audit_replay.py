"""Audit replay rate beside the plain library's replay, and erasure cost against history size.

Two customers get a history of their own, written in big batches of aggregates per save:
a small one (1,000 events) and a large one (100,000 events), with users and messages whose
deliveries were attempted and delivered. The live views are built from the log with the
projection classes, synchronously. Then:

1. replay rate: `audit replay` over the whole log (decode, project into scratch views,
   compare) in events/s, beside the plain eventsourcing library replaying as many events
   the way bench/event_store.py measures it, and beside our own decode-only replay;
2. erasure cost: Accounts.terminate_customer + Privacy.erase_tenant + the live views taking
   in those two events the way the projection runner does (one event, one transaction),
   timed until the views hold no plaintext of the customer, for the small and the large
   customer in the same run. Goal: large/small ≤ 1.5 and the large under 1 s.

Run alone with `python -m bench.audit_replay` (PICASSE_DATABASE_URL, else an embedded server).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bench import event_store
from picasse.adapters.clock import SystemClock
from picasse.adapters.master_key import create_master_key
from picasse.adapters.postgres.audit import (
    ReplayReport,
    audit_replay,
    live_tracking_table,
    replay_into_views,
    view_keys,
)
from picasse.adapters.postgres.store import factory_of
from picasse.adapters.postgres.views import page_batched
from picasse.domain.aggregates import Aggregate
from picasse.domain.customers import Contact, Customer
from picasse.domain.messages import Channel, Delivery, Message, Priority, delivery_id, traffic_month
from picasse.domain.personal import view_columns
from picasse.domain.users import User
from picasse.domain.values import EmailAddress, PhoneNumber, Role
from picasse.runners import servers
from picasse.runners.project import VIEWS, LogReader, view_env
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts, open_messages, open_privacy

RATIO_GOAL = 1.5  # erasure of the large history / of the small one
LARGE_GOAL_SECONDS = 1.0
EVENTS_PER_USER = 1  # User.Added
EVENTS_OF_CUSTOMER = 2  # Registered, SubscriptionStarted
WARM_UP_EVENTS = 400  # a customer erased first, so neither measured one pays for first use


class BenchError(Exception):
    """The benchmark could not measure what it claims to measure."""


@dataclass(frozen=True)
class Config:
    small: int = 1_000  # events of the small customer's history
    large: int = 100_000  # events of the large customer's history
    recipients: int = 100  # deliveries per message; each delivery is queued, attempted, delivered
    # Events per save when building histories. Not more: a save of some 2,000 events hangs
    # in psycopg's pipeline over the embedded server's Unix socket (psycopg issue #685).
    events_per_save: int = 1_000


@dataclass
class Erasure:
    label: str
    events: int  # events holding the customer's data
    terminate: float = 0.0  # seconds: Accounts.terminate_customer
    erase: float = 0.0  # Privacy.erase_tenant: the keys destroyed
    purge: float = 0.0  # the live views taking in both events
    check: float = 0.0  # finding that the views hold no plaintext of the customer any more

    @property
    def total(self) -> float:
        """The erasure itself; the check is the bench's own verification (a scan of the
        customer's rows, shown beside it), not part of terminating a customer."""
        return self.terminate + self.erase + self.purge


@dataclass
class Results:
    events: int = 0  # events in our log when replayed
    baseline_rate: float = 0.0  # the library: select + decode
    decode_rate: float = 0.0  # ours: select + decode, no views
    report: ReplayReport | None = None  # ours: audit replay
    audit_seconds: float = 0.0  # the whole audit: snapshot, scratch views, replay, compare
    erasures: list[Erasure] = field(default_factory=list)


# Building a history fast: aggregates made directly, saved many per call


def _phone(n: int) -> str:
    return f"+316{n % 100_000_000:08d}"


def _new_customer(n: int) -> Customer:
    customer = Customer(
        organisation=f"Bench {n} B.V.",
        contact=Contact(
            name=f"Contact Person {n}",
            email=EmailAddress(f"contact{n}@bench.example"),
            phone=PhoneNumber(_phone(n)),
        ),
        billing_address=f"Keizersgracht {n}, Amsterdam",
    )
    customer.start_subscription("standard")
    return customer


def _message(customer_id: UUID, month: str, recipients: int, serial: int) -> list[Aggregate]:
    message = Message(
        tenant_id=customer_id, month=month, channel=Channel.SMS, priority=Priority.NORMAL,
        body=f"Gate {serial % 9} is open again; trucks may use it from now on. Ref {serial:06d}",
        subject=None, recipient_count=recipients, group_id=None, not_before=None,
        requested_by=None, client_ip="192.0.2.10", ack=None,
    )  # fmt: skip
    aggregates: list[Aggregate] = [message]
    for index in range(recipients):
        delivery = Delivery(
            id=delivery_id(message.id, index), tenant_id=customer_id, month=month,
            message_id=message.id, index=index, channel=Channel.SMS,
            to=_phone(serial * recipients + index), not_before=None, escalation_level=0,
        )  # fmt: skip
        delivery.attempt()
        delivery.deliver("bench", None)
        aggregates.append(delivery)
    return aggregates


def write_history(app: Any, n: int, events: int, config: Config, progress: Progress) -> UUID:
    """A customer whose data fills exactly `events` events: itself, a user, messages with
    `config.recipients` deliveries each, and billing address changes for the rest."""
    customer = _new_customer(n)
    user = User(
        tenant_id=customer.id, login=f"user{n}", role=Role.CUSTOMER_ADMIN,
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$bench$bench",
    )  # fmt: skip
    app.save(customer, user)
    written = EVENTS_OF_CUSTOMER + EVENTS_PER_USER
    per_message = 1 + 3 * config.recipients
    month = traffic_month(SystemClock().now())
    task = progress.add_task(f"writing a history of {events:,} events", total=events)
    pending: list[Aggregate] = []
    pending_events = serial = 0
    while written + per_message <= events:
        pending += _message(customer.id, month, config.recipients, serial)
        serial += 1
        pending_events += per_message
        written += per_message
        if pending_events >= config.events_per_save:
            app.save(*pending)
            progress.update(task, completed=written)
            pending, pending_events = [], 0
    if pending:
        app.save(*pending)
    while written < events:  # fill up to the exact count
        customer.change_billing_address(f"Herengracht {written}, Amsterdam")
        written += 1
    app.save(customer)
    progress.update(task, completed=written)
    progress.remove_task(task)
    return customer.id


def build_live_views(reader: LogReader, progress: Progress) -> None:
    """The live views from the whole log, synchronously, a page of writes per transaction."""
    datastore = factory_of(reader).datastore
    head = reader.recorder.max_notification_id() or 0
    targets = {}
    for name, (projection_class, view_class) in VIEWS.items():
        view = page_batched(view_class)(
            datastore,
            tracking_table_name=live_tracking_table(projection_class),
            **view_keys(view_class, factory_of(reader).keys),
        )
        view.create_table()
        targets[name] = (projection_class(view), head)
    task = progress.add_task("building the live views", total=None)
    replay_into_views(
        reader.recorder,
        reader.mapper,
        reader.name,
        targets,
        progress=lambda done, total: progress.update(task, completed=done, total=total),
    )
    progress.remove_task(task)


# Erasure


def views_purge(reader: LogReader) -> None:
    """Each live view takes in the events of its topics after its position, one event per
    transaction, as its projection runner has it do."""
    datastore = factory_of(reader).datastore
    head = reader.recorder.max_notification_id() or 0
    for name, (projection_class, view_class) in VIEWS.items():
        view = view_class(
            datastore,
            tracking_table_name=live_tracking_table(projection_class),
            **view_keys(view_class, factory_of(reader).keys),
        )
        target = {name: (projection_class(view), head)}
        replay_into_views(reader.recorder, reader.mapper, reader.name, target, only_topics=True)


def readable_left(reader: LogReader, customer_id: UUID) -> int:
    """Personal values of the customer the live views hold that still open: the views hold
    only ciphertext, so a value is readable exactly while the key it names is live. Counted
    per distinct key (a handful), so the check costs one index scan per column."""
    datastore = factory_of(reader).datastore
    keys = factory_of(reader).keys
    key_ids: dict[bytes, int] = {}
    with datastore.get_connection() as conn:
        for projection_class, view_class in VIEWS.values():
            prefix = live_tracking_table(projection_class).removesuffix("_tracking")
            for table, columns in view_columns().items():
                tenant = getattr(view_class, "tenant_columns", {}).get(table)
                if tenant is None:
                    continue
                for column in sorted(columns):
                    statement = sql.SQL(
                        "SELECT substring({c} from 1 for 16) AS k, count(*) AS n FROM {t}"
                        " WHERE {tenant} = %s AND {c} IS NOT NULL GROUP BY 1"
                    ).format(
                        c=sql.Identifier(column),
                        t=sql.Identifier(datastore.schema, f"{prefix}_{table}"),
                        tenant=sql.Identifier(tenant),
                    )
                    for row in conn.execute(statement, (customer_id,)).fetchall():
                        raw = bytes(row["k"])
                        key_ids[raw] = key_ids.get(raw, 0) + int(row["n"])
    return sum(n for raw, n in key_ids.items() if keys.opening_key(raw) is not None)


def terminate(
    accounts: Any, privacy: Any, reader: LogReader, customer_id: UUID, erasure: Erasure
) -> None:
    if readable_left(reader, customer_id) == 0:
        raise BenchError(f"the views hold nothing readable of the {erasure.label} customer")
    started = time.perf_counter()
    accounts.terminate_customer(customer_id)
    terminated = time.perf_counter()
    privacy.erase_tenant(customer_id, "termination (benchmark)")
    erased = time.perf_counter()
    views_purge(reader)
    purged = time.perf_counter()
    left = readable_left(reader, customer_id)
    checked = time.perf_counter()
    if left:
        raise BenchError(
            f"the views still hold {left} readable values of the {erasure.label} customer"
        )
    erasure.terminate = terminated - started
    erasure.erase = erased - terminated
    erasure.purge = purged - erased
    erasure.check = checked - purged


# The run


def run(settings: Settings, database_url: str, config: Config, progress: Progress) -> Results:
    create_master_key(settings.master_key_path)
    results = Results()
    with ExitStack() as stack:
        ours = stack.enter_context(event_store.fresh_schema(database_url, "audit"))
        here = Settings(
            data_dir=settings.data_dir, database_url=database_url, database_schema=ours,
            master_key_file=settings.master_key_path,
        )  # fmt: skip
        messages = open_messages(here, database_url, schema=ours)
        stack.callback(messages.close)
        started = time.perf_counter()
        warm_up = write_history(messages, 0, WARM_UP_EVENTS, config, progress)
        small = write_history(messages, 1, config.small, config, progress)
        large = write_history(messages, 2, config.large, config, progress)
        results.events = messages.recorder.max_notification_id() or 0
        progress.console.print(f"   wrote {results.events:,} events in {_since(started)}")
        reader = stack.enter_context(_closing(LogReader(view_env(here, database_url))))
        started = time.perf_counter()
        build_live_views(reader, progress)
        progress.console.print(f"   built the live views in {_since(started)}")

        # 1. Replay rates, on a log whose every value still opens.
        progress.console.print(f"[bold]1. replaying {results.events:,} events")
        with _closing(LogReader(view_env(here, database_url))) as fresh:  # no key cache
            task = progress.add_task("audit replay", total=None)
            started = time.perf_counter()
            report = audit_replay(
                fresh.recorder, fresh.mapper, fresh.name, VIEWS,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )  # fmt: skip
            results.audit_seconds = time.perf_counter() - started
            progress.remove_task(task)
        if not report.ok or report.events != results.events:
            raise BenchError(f"the audit replay found {report.mismatch_count} mismatches")
        results.report = report
        side = event_store.Side("ours", lambda: LogReader(view_env(here, database_url)), _never)
        side.written = results.events
        results.decode_rate = event_store.replay(side)
        started = time.perf_counter()
        results.baseline_rate = _baseline_replay(settings, database_url, results.events, stack)
        progress.console.print(
            f"   audit replay {results.audit_seconds:.1f}s; the library wrote and replayed as many"
            f" events in {_since(started)}"
        )

        # 2. Erasure cost: a warm-up customer (not counted), the small one, the large one.
        progress.console.print("[bold]2. terminating and erasing each customer")
        accounts = stack.enter_context(_closing(open_accounts(here, database_url)))
        privacy = stack.enter_context(_closing(open_privacy(here, database_url)))
        sizes = [("warm-up", warm_up, WARM_UP_EVENTS), ("small", small, config.small)]
        for label, customer, events in [*sizes, ("large", large, config.large)]:
            erasure = Erasure(label, events)
            terminate(accounts, privacy, reader, customer, erasure)
            if label != "warm-up":
                results.erasures.append(erasure)
            progress.console.print(
                f"   {label:<7} {events:>9,} events: {erasure.total * 1000:,.0f} ms"
            )
        started = time.perf_counter()
        after = audit_replay(reader.recorder, reader.mapper, reader.name, VIEWS)
        if not after.ok:
            raise BenchError(
                f"after the erasures, audit replay found {after.mismatch_count} mismatches"
            )
        progress.console.print(
            f"   audit replay after the erasures: ok ({after.erased_values:,} values read as erased,"
            f" {after.erased_columns:,} personal fields erased in the views; {_since(started)})"
        )
    return results


def _since(started: float) -> str:
    return f"{time.perf_counter() - started:.1f}s"


def _never(n: int) -> Aggregate:
    raise BenchError("the replay side writes nothing")


def _baseline_replay(settings: Settings, database_url: str, events: int, stack: ExitStack) -> float:
    """The library's own replay of as many events (its four-event customers, AES-GCM over
    whole events), measured exactly as bench/event_store.py measures its baseline."""
    schema = stack.enter_context(event_store.fresh_schema(database_url, "audit_baseline"))
    env = event_store.baseline_env(settings, database_url, schema, "cryptography")
    side = event_store.Side(
        "baseline", lambda: event_store.BaselineApplication(env), event_store.baseline_customer
    )
    side.writer = side.open_app()
    try:
        per_call = 250
        customers = -(-events // event_store.EVENTS_PER_AGGREGATE)
        while customers > 0:
            batch = min(per_call, customers)
            event_store.save_aggregates(side, calls=1, per_call=batch)
            customers -= batch
    finally:
        side.writer.close()
    return event_store.replay(side)


@contextmanager
def _closing(app: Any) -> Iterator[Any]:
    try:
        yield app
    finally:
        app.close()


# Reporting


def tables(results: Results) -> list[Table]:
    report = results.report
    replay = Table(
        title="Replay rate (one run)",
        caption="library: select + decode, measured as bench/event_store.py measures it",
    )
    for column in ("replay", "events", "seconds", "events/s", "vs library"):
        replay.add_column(column, justify="left" if column == "replay" else "right", no_wrap=True)
    base = results.baseline_rate
    rows: list[tuple[str, int, float]] = [
        ("library replay", results.events, results.events / base),
        ("ours: decode only", results.events, results.events / results.decode_rate),
    ]
    if report is not None:
        rows += [
            ("ours: audit replay", report.events, report.replay_seconds),
            ("ours: whole audit", report.events, results.audit_seconds),
        ]
    for label, events, seconds in rows:
        rate = events / seconds
        replay.add_row(label, f"{events:,}", f"{seconds:.2f}", f"{rate:,.0f}", f"{rate / base:.2f}")

    erasure = Table(
        title="Erasure cost against history (ms)",
        caption="terminate: Accounts.terminate_customer; keys: Privacy.erase_tenant; purge: the"
        " live views take in both events (no personal row is updated: the values read as"
        " erased once their keys are gone); total: those three. check (shown, not in the total):"
        " no value of the customer in the views opens any more; the small customer is the"
        " baseline."
        f" Goal: large/small ≤ {RATIO_GOAL} and large < {LARGE_GOAL_SECONDS:.0f} s",
    )
    for column in ("customer", "events", "terminate", "keys", "purge", "check", "total"):
        erasure.add_column(column, justify="left" if column == "customer" else "right")
    for e in results.erasures:
        erasure.add_row(
            e.label, f"{e.events:,}", f"{e.terminate * 1000:,.1f}", f"{e.erase * 1000:,.1f}",
            f"{e.purge * 1000:,.1f}", f"{e.check * 1000:,.1f}", f"{e.total * 1000:,.1f}",
        )  # fmt: skip
    if len(results.erasures) == 2:
        small, large = results.erasures
        ratio = large.total / small.total
        erasure.add_section()
        erasure.add_row(
            "ratio", "", _ratio(large.terminate, small.terminate),
            _ratio(large.erase, small.erase), _ratio(large.purge, small.purge),
            _ratio(large.check, small.check),
            _verdict(ratio <= RATIO_GOAL, f"{ratio:.2f}"),
        )  # fmt: skip
        erasure.add_row(
            "large", "", "", "", "", "", _verdict(large.total < LARGE_GOAL_SECONDS, f"{large.total:.2f} s")
        )  # fmt: skip
    return [replay, erasure]


def _ratio(large: float, small: float) -> str:
    return f"{large / small:.2f}" if small else "-"


def _verdict(met: bool, figure: str) -> str:
    return f"[green]{figure} met" if met else f"[red]{figure} not met"


# Alone: `python -m bench.audit_replay`


def progress_bar(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m bench.audit_replay", description=__doc__)
    parser.add_argument(
        "--small", type=int, default=defaults.small, help="events of the small history"
    )
    parser.add_argument(
        "--large", type=int, default=defaults.large, help="events of the large history"
    )
    args = parser.parse_args(argv)
    config = Config(small=args.small, large=args.large)
    return standalone(lambda settings, url, progress: tables(run(settings, url, config, progress)))


def standalone(
    tables_of: Callable[[Settings, str, Progress], list[Table]],
    *errors: type[Exception],
    data_dir: Path | None = None,
) -> int:
    """A bench run on its own (`python -m bench.<name>`): an embedded PostgreSQL unless
    PICASSE_DATABASE_URL names one, a progress bar, the tables printed; `errors` (beside
    the store's and the servers') end it with one line. In `data_dir` if given (its
    embedded server's data and master key are left there), else in a temporary one."""
    console = Console()
    kept = data_dir is not None
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="picasse-bench-"))
    settings = Settings(data_dir=data_dir, database_url=Settings.from_environ().database_url)
    ending: tuple[type[Exception], ...] = (
        BenchError,
        event_store.BenchError,
        servers.ServerError,
        psycopg.Error,
        *errors,
    )
    started = time.monotonic()
    try:
        with console.status("starting PostgreSQL"):
            database_url = servers.postgres_url(settings)
        with progress_bar(console) as progress:
            printed = tables_of(settings, database_url, progress)
        for table in printed:
            console.print(table)
    except ending as error:
        console.print(f"[red]bench: {error}")
        return 1
    finally:
        servers.stop_postgres(settings)
        if not kept:
            shutil.rmtree(data_dir, ignore_errors=True)
    console.print(f"took {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
