"""Event store throughput: Picasse's sealing store beside the plain eventsourcing library.

The save workloads run both sides in one run, taking turns: one side saves a turn's
aggregates (10 calls of one, or one call of 100), then the other side, the side going first
alternating from round to round, every turn timed. So both sides meet the same machine: on
a shared machine a run of each side after the other caught whatever else ran in those
seconds, and the ratio swung between runs of the same code. A side's rate is its events
over the time of all its turns; the spread is ours/baseline's 10th to 90th percentile over
the rounds (the two turns of a round save as many events). Replay reads the whole table, so it
runs a side at a time, alternating which goes first, and the median of the runs counts.
"""

from __future__ import annotations

import gc
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
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
    calls: int = 1500  # workload 1: saves of one aggregate, each side
    batches: int = 30  # workload 2: saves of batch_size aggregates each, each side
    batch_size: int = 100
    turn: int = 10  # aggregates a side saves before the other's turn (at least one call)
    repeats: int = 3  # runs of the replay, each side
    warmup_calls: int = 50
    baseline_cipher: str = "cryptography"


@dataclass(frozen=True)
class Result:
    """A workload's rates, events/s, and how far ours/baseline ranged while measuring."""

    workload: str
    baseline: float
    ours: float
    spread: tuple[float, float]  # saves: the rounds' 10th to 90th percentile; replay: runs' range

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline


# A workload measures both sides; it says what it found and advances the progress bar.
Say = Callable[[str], None]
Advance = Callable[[], None]


@dataclass(frozen=True)
class Workload:
    label: str  # short, for the table
    title: str  # what exactly is measured, for the progress lines
    steps: int  # of the progress bar
    measure: Callable[[Sequence[Side], Say, Advance], Result]


def save_aggregates(side: Side, *, calls: int, per_call: int) -> float:
    """Events/s of `calls` saves of `per_call` new aggregates each (4 events apiece), one
    side alone: the warm-up, and a quick way to fill a table."""
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


def saves_in_turns(
    sides: Sequence[Side], *, calls: int, per_call: int, turn_calls: int, advance: Advance
) -> dict[str, list[float]]:
    """Seconds of each side's turns: `calls` saves of `per_call` new aggregates a side, the
    sides taking turns of `turn_calls` saves, the side going first alternating each round.

    Turn i of every side is round i, and its saves hold as many events on every side. The
    aggregates are made before the first turn and the garbage collected, for both sides at
    once; the collector runs during the turns as it would in a save of either side.
    """
    saves = {}
    for side in sides:
        if side.writer is None:
            raise BenchError(f"{side.name} has no application open to save with")
        saves[side.name] = side.writer.save
    pending = {side.name: [side.aggregates(per_call) for _ in range(calls)] for side in sides}
    seconds: dict[str, list[float]] = {side.name: [] for side in sides}
    gc.collect()
    for number, first in enumerate(range(0, calls, turn_calls)):
        for side in sides if number % 2 == 0 else sides[::-1]:
            save = saves[side.name]
            turn = pending[side.name][first : first + turn_calls]
            started = time.perf_counter()
            for aggregates in turn:
                save(*aggregates)
            seconds[side.name].append(time.perf_counter() - started)
        advance()
    for side in sides:
        side.written += calls * per_call * EVENTS_PER_AGGREGATE
    return seconds


def turn_calls(config: Config, per_call: int) -> int:
    return max(1, -(-config.turn // per_call))


def measure_saves(
    label: str, config: Config, *, calls: int, per_call: int
) -> Callable[[Sequence[Side], Say, Advance], Result]:
    def measure(sides: Sequence[Side], say: Say, advance: Advance) -> Result:
        seconds = saves_in_turns(
            sides,
            calls=calls,
            per_call=per_call,
            turn_calls=turn_calls(config, per_call),
            advance=advance,
        )
        events = calls * per_call * EVENTS_PER_AGGREGATE
        rates = {name: events / sum(turns) for name, turns in seconds.items()}
        # A round's two turns save as many events: their rates' ratio is the times' inverse.
        ratios = [
            baseline / ours
            for baseline, ours in zip(seconds["baseline"], seconds["ours"], strict=True)
        ]
        low, median, high = tenth_median_ninetieth(ratios)
        for name in ("baseline", "ours"):
            say(f"   {name:<8} {rates[name]:>9,.0f} events/s over {len(seconds[name])} turns")
        say(
            f"   ours/baseline by round: 10th percentile {low:.2f}, median {median:.2f},"
            f" 90th {high:.2f}"
        )
        return Result(label, rates["baseline"], rates["ours"], (low, high))

    return measure


def tenth_median_ninetieth(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return deciles[0], statistics.median(values), deciles[-1]


def measure_replays(label: str, config: Config) -> Callable[[Sequence[Side], Say, Advance], Result]:
    def measure(sides: Sequence[Side], say: Say, advance: Advance) -> Result:
        rates: dict[str, list[float]] = {side.name: [] for side in sides}
        for repeat in range(config.repeats):
            # Alternate who goes first, so neither side always meets a warmer server.
            for side in sides if repeat % 2 == 0 else sides[::-1]:
                rate = replay(side)
                rates[side.name].append(rate)
                say(f"   {side.name:<8} run {repeat + 1}: {rate:>9,.0f} events/s")
                advance()
        ratios = [
            ours / baseline for ours, baseline in zip(rates["ours"], rates["baseline"], strict=True)
        ]
        return Result(
            label,
            statistics.median(rates["baseline"]),
            statistics.median(rates["ours"]),
            (min(ratios), max(ratios)),
        )

    return measure


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
    one, batch = "save 1 aggregate/call", f"save {config.batch_size} aggregates/call"
    return [
        Workload(
            one,
            f"save 1 new customer ({EVENTS_PER_AGGREGATE} events) per call, {config.calls} calls"
            f" a side, in turns of {turn_calls(config, 1)}",
            -(-config.calls // turn_calls(config, 1)),
            measure_saves(one, config, calls=config.calls, per_call=1),
        ),
        Workload(
            batch,
            f"save {config.batch_size} new customers ({batch_events} events) per call,"
            f" {config.batches} calls a side, in turns of {turn_calls(config, config.batch_size)}",
            -(-config.batches // turn_calls(config, config.batch_size)),
            measure_saves(batch, config, calls=config.batches, per_call=config.batch_size),
        ),
        Workload(
            "replay all events",
            "replay: select, open and decode every event in the table, fresh application,"
            f" {config.repeats} times a side",
            config.repeats * 2,
            measure_replays("replay all events", config),
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
    """Measures every workload on both sides: saves in turns, replays a side at a time."""
    create_master_key(settings.master_key_path)
    plan = workloads(config)
    task = progress.add_task("setting up", total=2 + sum(workload.steps for workload in plan))

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
            say(f"[bold]{number}. {workload.title}")
            progress.update(task, description=f"{number}. {workload.label}")
            results.append(workload.measure(sides, say, lambda: progress.advance(task)))
    return results


def table(results: list[Result]) -> Table:
    grid = Table(
        title="Event store throughput, events/s",
        caption=(
            f"{EVENTS_PER_AGGREGATE} events per aggregate; goal: ours/baseline ≥ {GOAL:.1f}."
            " Saves: the sides in turns, all turns' events over their time; spread: the rounds'"
            " ratios, 10th to 90th percentile. Replay: median of runs; spread: the runs' range."
        ),
    )
    grid.add_column("workload", no_wrap=True)
    grid.add_column("baseline", justify="right")
    grid.add_column("ours", justify="right")
    grid.add_column("ours/baseline", justify="right", no_wrap=True)
    grid.add_column("spread", justify="right", no_wrap=True)
    grid.add_column("goal", justify="center", no_wrap=True)
    for result in results:
        met = result.ratio >= GOAL
        low, high = result.spread
        grid.add_row(
            result.workload,
            f"{result.baseline:,.0f}",
            f"{result.ours:,.0f}",
            f"{result.ratio:.2f}",
            f"{low:.2f} to {high:.2f}",
            "[green]met" if met else "[red]not met",
        )
    return grid
