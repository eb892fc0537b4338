"""Event store throughput: Picasse's sealing store beside the plain eventsourcing library."""

from __future__ import annotations

import gc
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event  # noqa: TID251  (the plain library: the baseline)
from eventsourcing.utils import TopicError, resolve_topic
from psycopg import sql
from rich.progress import Progress
from rich.table import Table

from picasse.adapters.master_key import create_master_key
from picasse.domain.customers import Contact, Customer
from picasse.domain.personal import Erased
from picasse.domain.values import EmailAddress, PhoneNumber
from picasse.runners.settings import Settings
from picasse.runners.wiring import eventsourcing_env, open_accounts

EVENTS_PER_AGGREGATE = 4
REPLAY_PAGE_SIZE = 1000
GOAL = 1.0  # ours / baseline: sealing must not cost throughput against the library we build on

# The library's whole-event AES-GCM cipher, on either crypto package it supports. The
# default uses `cryptography`, the AES-GCM our mapper uses, so the two sides differ in
# design rather than in AES implementation; `pycryptodome` is not one of our dependencies.
BASELINE_CIPHERS = {
    "cryptography": "eventsourcing.cryptography:AESCipher",
    "pycryptodome": "eventsourcing.cipher:AESCipher",
}


class BenchError(Exception):
    """The benchmark could not measure what it claims to measure."""


# The baseline: the same four events, with the contact flattened into plain str fields
# because the library's JSON transcoder cannot serialise msgspec Structs.


class BaselineCustomer(Aggregate):
    """Customer's events and fields as plain strings, for the library's own mapper."""

    @event("Registered")
    def __init__(
        self,
        organisation: str,
        contact_name: str,
        contact_email: str,
        contact_phone: str,
        billing_address: str,
    ) -> None:
        self.organisation = organisation
        self.contact_name = contact_name
        self.contact_email = contact_email
        self.contact_phone = contact_phone
        self.billing_address = billing_address
        self.subscription = "registered"
        self.plan: str | None = None

    @event("ContactChanged")
    def change_contact(self, contact_name: str, contact_email: str, contact_phone: str) -> None:
        self.contact_name = contact_name
        self.contact_email = contact_email
        self.contact_phone = contact_phone

    @event("BillingAddressChanged")
    def change_billing_address(self, billing_address: str) -> None:
        self.billing_address = billing_address

    @event("SubscriptionStarted")
    def start_subscription(self, plan: str) -> None:
        self.subscription = "active"
        self.plan = plan


class BaselineApplication(Application[UUID]):
    name = "Baseline"


def _phone(n: int) -> str:
    return f"+3161{n % 10_000_000:07d}"


def baseline_customer(n: int) -> Aggregate:
    customer = BaselineCustomer(
        organisation=f"Organisation {n} B.V.",
        contact_name=f"Contact Person {n}",
        contact_email=f"contact{n}@example.com",
        contact_phone=_phone(n),
        billing_address=f"Keizersgracht {n}, 1015 CJ Amsterdam",
    )
    customer.change_contact(f"Other Person {n}", f"other{n}@example.com", _phone(n + 1))
    customer.change_billing_address(f"Herengracht {n}, 1016 BS Amsterdam")
    customer.start_subscription("standard")
    return customer


def picasse_customer(n: int) -> Aggregate:
    # Values are built directly, not parsed: the baseline validates nothing either, and
    # e-mail and phone parsing is not the event store's cost.
    customer = Customer(
        organisation=f"Organisation {n} B.V.",
        contact=Contact(
            name=f"Contact Person {n}",
            email=EmailAddress(f"contact{n}@example.com"),
            phone=PhoneNumber(_phone(n)),
        ),
        billing_address=f"Keizersgracht {n}, 1015 CJ Amsterdam",
    )
    customer.change_contact(
        Contact(
            name=f"Other Person {n}",
            email=EmailAddress(f"other{n}@example.com"),
            phone=PhoneNumber(_phone(n + 1)),
        )
    )
    customer.change_billing_address(f"Herengracht {n}, 1016 BS Amsterdam")
    customer.start_subscription("standard")
    return customer


# Sides and workloads


@dataclass
class Side:
    """One event store under test: how to open it and what it stores."""

    name: str
    open_app: Callable[[], Application[Any]]
    new_aggregate: Callable[[int], Aggregate]
    writer: Application[Any] | None = None
    written: int = 0  # events in its table, which replay must read back
    serial: int = 0  # numbers the aggregates, so every one is a new customer

    def aggregates(self, count: int) -> list[Aggregate]:
        first = self.serial
        self.serial += count
        return [self.new_aggregate(n) for n in range(first, first + count)]


@dataclass(frozen=True)
class Config:
    calls: int = 500  # workload 1: one aggregate per save
    batches: int = 10  # workload 2: saves of batch_size aggregates each
    batch_size: int = 100
    repeats: int = 3
    warmup_calls: int = 50
    baseline_cipher: str = "cryptography"


@dataclass(frozen=True)
class Workload:
    label: str  # short, for the table
    title: str  # what exactly is measured, for the progress lines
    measure: Callable[[Side], float]  # events per second


@dataclass
class Result:
    workload: str
    rates: dict[str, list[float]] = field(default_factory=dict)

    def median(self, side: str) -> float:
        return statistics.median(self.rates[side])

    @property
    def ratio(self) -> float:
        return self.median("ours") / self.median("baseline")


def save_aggregates(side: Side, *, calls: int, per_call: int) -> float:
    """Events/s of `calls` saves of `per_call` new aggregates each (4 events apiece)."""
    if side.writer is None:
        raise BenchError(f"{side.name} has no application open to save with")
    batches = [side.aggregates(per_call) for _ in range(calls)]
    save = side.writer.save
    gc.collect()
    started = time.perf_counter()
    for batch in batches:
        save(*batch)
    elapsed = time.perf_counter() - started
    events = calls * per_call * EVENTS_PER_AGGREGATE
    side.written += events
    return events / elapsed


def replay(side: Side) -> float:
    """Events/s of reading, opening and decoding the whole table with a fresh application.

    Fresh, so nothing cached while writing helps. Each side replays the way its own
    replaying code does: the library event by event; ours a page at a time, fetching the
    page's keys in one round trip (`SealingMapper.to_domain_events`, as our replays do).
    """
    app = side.open_app()
    try:
        recorder, mapper = app.recorder, app.mapper
        decoded: list[Any] = []
        start = 1
        gc.collect()
        started = time.perf_counter()
        while True:
            page = recorder.select_notifications(start, limit=REPLAY_PAGE_SIZE)
            if hasattr(mapper, "to_domain_events"):
                decoded.extend(mapper.to_domain_events(page))
            else:
                decoded.extend(mapper.to_domain_event(notification) for notification in page)
            if len(page) < REPLAY_PAGE_SIZE:
                break
            start = page[-1].id + 1
        elapsed = time.perf_counter() - started
    finally:
        app.close()
    if len(decoded) != side.written:
        raise BenchError(f"{side.name} replayed {len(decoded)} events but wrote {side.written}")
    # A key that failed to load opens as ERASED, which would look like a fast replay.
    erased = sum(1 for domain_event in decoded if _has_erased_value(domain_event))
    if erased:
        raise BenchError(f"{side.name} replayed {erased} events with values that read as erased")
    return len(decoded) / elapsed


def _has_erased_value(domain_event: Any) -> bool:
    for value in vars(domain_event).values():
        if isinstance(value, Erased):
            return True
        if isinstance(value, msgspec.Struct) and any(
            isinstance(getattr(value, name), Erased) for name in value.__struct_fields__
        ):
            return True
    return False


def workloads(config: Config) -> list[Workload]:
    batch_events = config.batch_size * EVENTS_PER_AGGREGATE
    return [
        Workload(
            "save 1 aggregate/call",
            f"save 1 new customer ({EVENTS_PER_AGGREGATE} events) per call, {config.calls} calls",
            lambda side: save_aggregates(side, calls=config.calls, per_call=1),
        ),
        Workload(
            f"save {config.batch_size} aggregates/call",
            f"save {config.batch_size} new customers ({batch_events} events) per call,"
            f" {config.batches} calls",
            lambda side: save_aggregates(side, calls=config.batches, per_call=config.batch_size),
        ),
        Workload(
            "replay all events",
            "replay: select, open and decode every event in the table, fresh application",
            replay,
        ),
    ]


# Setting up the two stores side by side


@contextmanager
def fresh_schema(database_url: str, label: str) -> Iterator[str]:
    """A schema of the side's own, dropped with everything in it afterwards."""
    name = new_schema(database_url, label)
    try:
        yield name
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def new_schema(database_url: str, label: str) -> str:
    """A schema of the side's own, left for the caller (fresh_schema drops it afterwards)."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return name


def baseline_env(settings: Settings, database_url: str, schema: str, cipher: str) -> dict[str, str]:
    # Our connection and pool settings, so the two sides differ only in their stores.
    env = {
        name: value
        for name, value in eventsourcing_env(
            database_url, settings.master_key_path, schema=schema
        ).items()
        if name.startswith("POSTGRES_")
    }
    env.update(
        PERSISTENCE_MODULE="eventsourcing.postgres",
        CIPHER_TOPIC=BASELINE_CIPHERS[cipher],
        CIPHER_KEY=baseline_cipher_class(cipher).create_key(32),
    )
    return env


def baseline_cipher_class(cipher: str) -> Any:
    """The library's AESCipher on the named crypto package, or why it cannot be had."""
    try:
        return resolve_topic(BASELINE_CIPHERS[cipher])
    except TopicError:
        raise BenchError(
            f"the baseline cipher {BASELINE_CIPHERS[cipher]} needs the {cipher} package:"
            f" pip install {cipher}"
        ) from None


def run(settings: Settings, database_url: str, config: Config, progress: Progress) -> list[Result]:
    """Measures every workload on both sides, alternating which side goes first."""
    create_master_key(settings.master_key_path)
    plan = workloads(config)
    steps = 2 + len(plan) * config.repeats * 2
    task = progress.add_task("setting up", total=steps)

    def say(text: str) -> None:
        progress.console.print(text)

    with ExitStack() as stack:
        baseline_schema = stack.enter_context(fresh_schema(database_url, "baseline"))
        ours_schema = stack.enter_context(fresh_schema(database_url, "ours"))
        env = baseline_env(settings, database_url, baseline_schema, config.baseline_cipher)
        sides = [
            Side("baseline", lambda: BaselineApplication(env), baseline_customer),
            Side(
                "ours",
                lambda: open_accounts(settings, database_url, schema=ours_schema),
                picasse_customer,
            ),
        ]
        for side in sides:
            side.writer = side.open_app()
            stack.callback(side.writer.close)

        for side in sides:
            progress.update(task, description=f"warming up {side.name}")
            save_aggregates(side, calls=config.warmup_calls, per_call=1)
            save_aggregates(side, calls=1, per_call=config.batch_size)
            replay(side)
            progress.advance(task)

        results = []
        for number, workload in enumerate(plan, start=1):
            result = Result(workload.label, {side.name: [] for side in sides})
            say(f"[bold]{number}. {workload.title}")
            for repeat in range(config.repeats):
                # Alternate who goes first, so neither side always meets a warmer server.
                order = sides if (number + repeat) % 2 else sides[::-1]
                for side in order:
                    progress.update(
                        task,
                        description=f"{number}. {side.name}, run {repeat + 1}/{config.repeats}",
                    )
                    rate = workload.measure(side)
                    result.rates[side.name].append(rate)
                    say(f"   {side.name:<8} run {repeat + 1}: {rate:>9,.0f} events/s")
                    progress.advance(task)
            results.append(result)
    return results


def table(results: list[Result]) -> Table:
    grid = Table(
        title="Event store throughput, events/s (median of runs)",
        caption=f"{EVENTS_PER_AGGREGATE} events per aggregate; goal: ours/baseline ≥ {GOAL:.1f}",
    )
    grid.add_column("workload", no_wrap=True)
    grid.add_column("baseline", justify="right")
    grid.add_column("ours", justify="right")
    grid.add_column("ours/baseline", justify="right", no_wrap=True)
    grid.add_column("goal", justify="center", no_wrap=True)
    for result in results:
        met = result.ratio >= GOAL
        grid.add_row(
            result.workload,
            f"{result.median('baseline'):,.0f}",
            f"{result.median('ours'):,.0f}",
            f"{result.ratio:.2f}",
            "[green]met" if met else "[red]not met",
        )
    return grid
