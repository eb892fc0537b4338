"""Views at scale (issue 18): the pages and list routes with millions of deliveries and
a hundred thousand customers, and the rebuild rate beside the audit replay's.

At `--scale 1` the log holds 2,000,000 deliveries and 100,000 customers: one big customer
with half the deliveries (a million in the month), the other half spread over the small
customers, ten recipients a message; each delivery is queued, attempted and delivered.
The history is written in big batches of aggregates (bench/audit_replay.py's way), and the
views are grown from it by `picasse project --rebuild` itself (`_by_hand`: the shadow
build, a page of events per transaction through the projections' own code, then the
swap). Then, against the app in this process (Litestar's TestClient, no socket):

0. follow rate: log events/s of the live projector (`Follower.advance`, as `picasse
   project` runs it) catching every view up on a backlog (the log's first FOLLOW_BACKLOG
   events, as after `picasse project` was down), beside a rebuild of the same stretch
   (the page-batched path), the two taking turns FOLLOW_ROUNDS times;
1. rebuild rate: log events/s of rebuilding every view, beside `audit replay`'s replay
   rate over the same log (its decode + project into scratch views), goal ratio >= 0.5;
2. each page's and list route's median latency (5 loads, after a warm-up), goal < 200 ms;
3. the small customer's page, after 50 loads of the big customer's (plans cached on the
   connection go generic after five runs), goal < 50 ms.

Run alone with `python -m bench.views [--scale 0.01]` (PICASSE_DATABASE_URL, else an
embedded server), or `python -m bench --only views`. For profiling, `--keep DIR` runs in
DIR (its embedded server's data and the master key) and leaves the log and views there;
`--reuse DIR` then times the pages again on them, without writing or rebuilding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from litestar.testing import TestClient
from psycopg import sql
from rich.progress import Progress
from rich.table import Table

from bench import event_store
from bench.audit_replay import _message, _new_customer, standalone
from picasse.adapters.clock import SystemClock
from picasse.adapters.http.app import create_app
from picasse.adapters.master_key import create_master_key
from picasse.adapters.postgres.audit import audit_replay
from picasse.adapters.postgres.store import factory_of
from picasse.adapters.postgres.views import PostgresTrafficView
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import LOG_NAME
from picasse.domain.messages import traffic_month
from picasse.domain.values import Role
from picasse.runners import relay
from picasse.runners.api import http_deps
from picasse.runners.project import VIEWS, LogReader, Views, _by_hand, _rebuild, view_env
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_messages

PAGE_GOAL_MS = 200.0
SMALL_AFTER_BIG_GOAL_MS = 50.0
BIG_LOADS = 50
RATE_GOAL = 0.5  # rebuild rate / audit replay rate
FOLLOW_BACKLOG = 50_000  # log events the live projector catches up on
FOLLOW_ROUNDS = 2  # the follower and the rebuild take turns, in the same minutes
LOADS = 5  # timed loads of each page; the median is shown
PASSWORD = "a long bench password"
SCHEMA_FILE = "views-schema"  # in a kept run's data dir: the schema it left


class BenchError(Exception):
    """The benchmark could not measure what it claims to measure."""


@dataclass(frozen=True)
class Config:
    scale: float = 1.0  # of 2M deliveries and 100k customers
    events_per_save: int = 1_000  # see bench/audit_replay.py: not more
    keep: bool = False  # leave the schema (log and views) for profiling, named in SCHEMA_FILE
    reuse: bool = False  # time the pages of the schema a kept run left (no write, no rebuild)

    @property
    def deliveries(self) -> int:
        return max(100, round(2_000_000 * self.scale))

    @property
    def customers(self) -> int:
        return max(2, round(100_000 * self.scale))


@dataclass
class Results:
    config: Config
    events: int = 0
    write_seconds: float = 0.0
    rebuild_seconds: float = 0.0
    audit_events: int = 0
    audit_replay_seconds: float = 0.0
    backlog: int = 0  # log events of the follow rate's stretch, caught up on each round
    follow_seconds: list[float] = field(default_factory=list)  # per round
    backlog_rebuild_seconds: list[float] = field(default_factory=list)  # per round
    pages: dict[str, float] = field(default_factory=dict)  # label: median ms
    small_after_big: float = 0.0  # ms

    @property
    def rebuild_rate(self) -> float:
        return self.events / self.rebuild_seconds if self.rebuild_seconds else 0.0

    @property
    def audit_rate(self) -> float:
        return self.audit_events / self.audit_replay_seconds if self.audit_replay_seconds else 0.0

    @property
    def follow_rate(self) -> float:
        seconds = sum(self.follow_seconds)
        return self.backlog * len(self.follow_seconds) / seconds if seconds else 0.0

    @property
    def backlog_rebuild_rate(self) -> float:
        seconds = sum(self.backlog_rebuild_seconds)
        return self.backlog * len(self.backlog_rebuild_seconds) / seconds if seconds else 0.0


def write_log(app: Any, config: Config, progress: Progress) -> tuple[UUID, UUID]:
    """The customers and their traffic; the big customer's id and a small one's."""
    month = traffic_month(SystemClock().now())
    big_share = config.deliveries // 2
    small_customers = config.customers - 1
    per_small = max(1, (config.deliveries - big_share) // small_customers)
    task = progress.add_task("writing the log (deliveries)", total=config.deliveries)
    pending: list[Aggregate] = []
    written = serial = 0

    def flush(force: bool = False) -> None:
        nonlocal pending
        # About three events an aggregate (a delivery: queued, attempted, delivered).
        if pending and (force or len(pending) * 3 >= config.events_per_save):
            app.save(*pending)
            pending = []
            progress.update(task, completed=written)

    big = _new_customer(0)
    pending.append(big)
    flush(force=True)
    done = 0
    while done < big_share:  # the big customer's messages of 100 recipients
        recipients = min(100, big_share - done)
        pending += _message(big.id, month, recipients, serial)
        serial += 1
        done += recipients
        written += recipients
        flush()
    small_id = big.id
    for n in range(1, config.customers):
        customer = _new_customer(n)
        small_id = customer.id if n == 1 else small_id
        pending.append(customer)
        for start in range(0, per_small, 10):
            recipients = min(10, per_small - start)
            pending += _message(customer.id, month, recipients, serial)
            serial += 1
            written += recipients
        flush()
    flush(force=True)
    progress.remove_task(task)
    return big.id, small_id


def median_ms(client: TestClient[Any], path: str, loads: int = LOADS) -> float:
    client.get(path)  # warm
    times = []
    for _ in range(loads):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise BenchError(f"{path} answered {answer.status_code}: {answer.text[:200]}")
    return statistics.median(times)


def run(settings: Settings, database_url: str, config: Config, progress: Progress) -> Results:
    create_master_key(settings.master_key_path)
    results = Results(config)
    with ExitStack() as stack:
        if config.reuse:
            schema = _kept_schema(settings)
        elif config.keep:
            schema = event_store.new_schema(database_url, "views")
            (settings.data_dir / SCHEMA_FILE).write_text(schema + "\n")
        else:
            schema = stack.enter_context(event_store.fresh_schema(database_url, "views"))
        here = Settings(
            data_dir=settings.data_dir, database_url=database_url, database_schema=schema,
            master_key_file=settings.master_key_path, db_connections=20,
        )  # fmt: skip
        if config.keep:
            progress.console.print(
                f"   keeping schema {schema} and the master key in {settings.data_dir}"
            )
        if config.reuse:
            big, small = _kept_customers(here, database_url)
            results.pages, results.small_after_big = _time_pages(here, database_url, big, small)
            return results
        messages = open_messages(here, database_url, schema=schema)
        stack.callback(messages.close)
        started = time.perf_counter()
        big, small = write_log(messages, config, progress)
        results.write_seconds = time.perf_counter() - started
        results.events = messages.recorder.max_notification_id() or 0
        progress.console.print(
            f"   wrote {results.events:,} events ({config.deliveries:,} deliveries,"
            f" {config.customers:,} customers) in {results.write_seconds:.0f}s"
        )

        # 0. The live projector on a backlog, beside a rebuild of the same stretch.
        results.backlog = min(FOLLOW_BACKLOG, results.events)
        follow_backlog(here, database_url, results, progress)

        # 1. The views grown by `picasse project --rebuild` of every view, and its rate
        # beside the audit's replay of the same log.
        views = Views(here, database_url)
        try:
            started = time.perf_counter()
            if _by_hand(views, threading.Event(), reset=True) != 0:
                raise BenchError("the rebuild stopped")
            results.rebuild_seconds = time.perf_counter() - started
        finally:
            views.close()
        # The relay is not running here: record it as one that has published the whole
        # log would be, so the overview's health probe counts its lag as it would live.
        relay_tracking = PostgresTrackingRecorder(
            factory_of(messages).datastore,
            tracking_table_name=relay.TRACKING_TABLE,
        )
        relay_tracking.create_table()
        relay_tracking.insert_tracking(Tracking(LOG_NAME, results.events))
        with _closing(LogReader(view_env(here, database_url))) as fresh:
            task = progress.add_task("audit replay", total=None)
            report = audit_replay(
                fresh.recorder, fresh.mapper, fresh.name, VIEWS,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )  # fmt: skip
            progress.remove_task(task)
        if not report.ok:
            raise BenchError(f"the audit replay found {report.mismatch_count} mismatches")
        results.audit_events, results.audit_replay_seconds = report.events, report.replay_seconds

        # 2. and 3. The pages and routes, as a platform admin, against the app here.
        results.pages, results.small_after_big = _time_pages(here, database_url, big, small)
    return results


def follow_backlog(here: Settings, database_url: str, results: Results, progress: Progress) -> None:
    """Each round: every view emptied and caught up on the backlog by its live follower
    (`advance`, as `picasse project` does after being down), then rebuilt over the same
    stretch (`_rebuild`: the page-batched path). Both leave the views at the backlog's end."""
    upto = results.backlog
    task = progress.add_task("follow vs rebuild (rounds)", total=FOLLOW_ROUNDS)
    views = Views(here, database_url)
    try:
        for _ in range(FOLLOW_ROUNDS):
            for follower in views.followers.values():
                follower.view.reset()
            started = time.perf_counter()
            for follower in views.followers.values():
                failure = follower.advance(upto=upto)
                if failure is not None:
                    raise BenchError(f"the {follower.name} view stopped: {failure}")
            results.follow_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            for follower in views.followers.values():
                if not _rebuild(views, follower, threading.Event(), upto=upto):
                    raise BenchError("the rebuild stopped")
            results.backlog_rebuild_seconds.append(time.perf_counter() - started)
            progress.advance(task)
    finally:
        views.close()
    progress.remove_task(task)


def _time_pages(
    here: Settings, database_url: str, big: UUID, small: UUID
) -> tuple[dict[str, float], float]:
    """Each page's and route's median ms as a platform admin, and the small customer's page
    after BIG_LOADS loads of the big one's."""
    pages: dict[str, float] = {}
    login_name = f"bench-admin-{uuid4().hex[:8]}"  # a kept schema is timed more than once
    with http_deps(here, database_url) as deps:
        deps.accounts.add_user(
            customer_id=None, login=login_name, role=Role.PLATFORM_ADMIN, password=PASSWORD
        )
        with TestClient(create_app(deps), base_url="http://127.0.0.1") as client:
            login = client.post("/v1/sessions", json={"login": login_name, "password": PASSWORD})
            if login.status_code != 201:
                raise BenchError(f"no session: {login.status_code} {login.text[:200]}")
            paths = {
                "/admin/ overview": "/admin/",
                "/admin/customers": "/admin/customers",
                "/admin/customers/{big}": f"/admin/customers/{big}",
                "/admin/customers/{small}": f"/admin/customers/{small}",
                "/admin/traffic": "/admin/traffic",
                "/admin/traffic?customer_id={big}": f"/admin/traffic?customer_id={big}",
                "/admin/ledger": "/admin/ledger",
                "GET /v1/customers": "/v1/customers",
                "GET /v1/customers/{big}/users": f"/v1/customers/{big}/users",
                "GET /v1/traffic?customer_id={big}&limit=100": (
                    f"/v1/traffic?customer_id={big}&limit=100"
                ),
            }
            for label, path in paths.items():
                pages[label] = median_ms(client, path)
            for _ in range(BIG_LOADS):
                client.get(f"/admin/customers/{big}")
            small_after_big = median_ms(client, f"/admin/customers/{small}")
    return pages, small_after_big


def _kept_schema(settings: Settings) -> str:
    try:
        return (settings.data_dir / SCHEMA_FILE).read_text().strip()
    except FileNotFoundError:
        raise BenchError(f"{settings.data_dir} holds no run kept with --keep") from None


def _kept_customers(here: Settings, database_url: str) -> tuple[UUID, UUID]:
    """A kept run's big customer (the most deliveries) and a small one, from the counts."""
    with http_deps(here, database_url) as deps:
        traffic = deps.traffic_view
        assert isinstance(traffic, PostgresTrafficView)
        with traffic.datastore.get_connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT customer_id FROM {} GROUP BY customer_id ORDER BY sum(count) DESC"
                ).format(traffic.t["daily"])
            ).fetchall()
    if len(rows) < 2:
        raise BenchError(f"schema {here.database_schema} holds no bench run to reuse")
    return rows[0]["customer_id"], rows[-1]["customer_id"]


@contextmanager
def _closing(app: Any) -> Iterator[Any]:
    try:
        yield app
    finally:
        app.close()


def _verdict(met: bool, figure: str) -> str:
    return f"[green]{figure}" if met else f"[red]{figure}"


def tables(results: Results) -> list[Table]:
    config = results.config
    follow = Table(
        title=(
            f"live projector vs rebuild: every view caught up on the log's first"
            f" {results.backlog:,} events ({len(results.follow_seconds)} rounds each, in turns)"
        )
    )
    for column in ("", "seconds a round", "events/s"):
        follow.add_column(column, justify="right" if column else "left")
    follow.add_row(
        "picasse project (Follower.advance)",
        " ".join(f"{s:.1f}" for s in results.follow_seconds), f"{results.follow_rate:,.0f}",
    )  # fmt: skip
    follow.add_row(
        "picasse project --rebuild (baseline)",
        " ".join(f"{s:.1f}" for s in results.backlog_rebuild_seconds),
        f"{results.backlog_rebuild_rate:,.0f}",
    )  # fmt: skip
    follow_ratio = (
        results.follow_rate / results.backlog_rebuild_rate if results.backlog_rebuild_rate else 0.0
    )
    follow.add_row("ratio", "", f"{follow_ratio:.2f}")
    rebuild = Table(
        title=f"rebuild vs audit replay ({results.events:,} events in the log)",
    )
    for column in ("", "events", "seconds", "events/s"):
        rebuild.add_column(column, justify="right" if column else "left")
    rebuild.add_row(
        "picasse project --rebuild (every view)", f"{results.events:,}",
        f"{results.rebuild_seconds:.1f}", f"{results.rebuild_rate:,.0f}",
    )  # fmt: skip
    rebuild.add_row(
        "audit replay (baseline)", f"{results.audit_events:,}",
        f"{results.audit_replay_seconds:.1f}", f"{results.audit_rate:,.0f}",
    )  # fmt: skip
    ratio = results.rebuild_rate / results.audit_rate if results.audit_rate else 0.0
    rebuild.add_row("ratio (goal >= 0.5)", "", "", _verdict(ratio >= RATE_GOAL, f"{ratio:.2f}"))
    pages = Table(
        title=(
            f"pages and routes at scale {config.scale:g}: {config.deliveries:,} deliveries,"
            f" {config.customers:,} customers (median of {LOADS}, warm)"
            if not config.reuse
            else f"pages and routes of the kept run (median of {LOADS}, warm)"
        )
    )
    pages.add_column("page or route")
    pages.add_column("median ms", justify="right")
    pages.add_column("goal", justify="right")
    for label, ms in results.pages.items():
        pages.add_row(label, _verdict(ms < PAGE_GOAL_MS, f"{ms:,.1f}"), f"< {PAGE_GOAL_MS:.0f}")
    pages.add_row(
        f"/admin/customers/{{small}} after {BIG_LOADS} loads of {{big}}",
        _verdict(results.small_after_big < SMALL_AFTER_BIG_GOAL_MS, f"{results.small_after_big:,.1f}"),
        f"< {SMALL_AFTER_BIG_GOAL_MS:.0f}",
    )  # fmt: skip
    if config.reuse:  # no log written, no rebuild: the pages only
        return [pages]
    return [follow, rebuild, pages]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.views", description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=Config().scale,
        help="of 2,000,000 deliveries and 100,000 customers (default %(default)s)",
    )  # fmt: skip
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument(
        "--keep", metavar="DIR", type=Path,
        help="run in DIR (embedded PostgreSQL, master key) and leave it there, with the"
        " log and views, for profiling",
    )  # fmt: skip
    kept.add_argument(
        "--reuse", metavar="DIR", type=Path,
        help="time the pages again on what a --keep run left in DIR (no write, rebuild or audit)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    config = Config(scale=args.scale, keep=args.keep is not None, reuse=args.reuse is not None)
    return standalone(
        lambda settings, url, progress: tables(run(settings, url, config, progress)),
        BenchError,
        data_dir=args.keep or args.reuse,
    )


if __name__ == "__main__":
    sys.exit(main())
