"""Messaging throughput and latency: HTTP request → relay → worker → Delivered, beside raw JetStream.

Ours runs the way production does, one process per role: keep-alive HTTP clients calling
`POST /v1/messages` with customers' API keys on the real `picasse api`, the real `picasse
relay`, and 1, 2 and 4 processes of the real `picasse worker` runner whose providers are
swapped for one that accepts every delivery at once, so what is measured is the pipeline's
own cost. Run as `python -m bench.messaging instant-worker`, this module is that worker
process.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import queue
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import httpx
import msgspec
import nats
import psycopg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import FetchTimeoutError, NotFoundError
from psycopg import sql
from rich.progress import Progress, TaskID
from rich.table import Table

from picasse.adapters.clock import SystemClock
from picasse.adapters.master_key import create_master_key
from picasse.adapters.nats.jobs import Deliver, Topology, encoder, ensure_stream
from picasse.adapters.nats.jobs import decoder as job_decoder
from picasse.adapters.providers import Delivery, Provider, Sent
from picasse.domain.api_keys import ApiKeys
from picasse.domain.messages import delivery_id
from picasse.domain.values import Role
from picasse.runners.settings import Settings, nats_servers
from picasse.runners.wiring import eventsourcing_env, open_accounts, open_messages

THROUGHPUT_GOAL = 0.25  # ours / raw JetStream
P99_GOAL_MS = 100.0  # request → Delivered committed, at half our measured peak
FANOUT_GOAL_SECONDS = 1.0  # one message to FANOUT recipients, all Delivered committed
# PostgreSQL connections per process (PICASSE_DB_CONNECTIONS): the relay's share under
# `up`; the API's default budget; a worker enough for its database threads. Four workers
# and the rest stay well within the embedded server's max_connections (100).
CONNECTIONS = {"relay": 3, "api": 20, "worker": 8}
REPO = Path(__file__).resolve().parent.parent
EVENTS_TABLE = "picasse_events"
TOPIC = "picasse.domain.messages:Delivery.{}"
MESSAGE_TOPIC = "picasse.domain.messages:Message.Requested"
WORKER_EVENTS = ("Attempted", "Delivered")
POLL_SECONDS = 0.25
CHILD_START_SECONDS = 60.0
BODY = "Gate 4 at the north entrance is open again; trucks may use it from now on. Ref {:06d}"


def _wall() -> float:
    """Seconds since the epoch: stages are compared with the events' own timestamps."""
    return SystemClock().now().timestamp()


class BenchError(Exception):
    """The benchmark could not measure what it claims to measure."""


class InstantProvider:
    """Accepts every delivery at once, as if handing over cost nothing: the pipeline's own cost."""

    name = "instant"

    async def send(self, delivery: Delivery) -> Sent:
        return Sent(provider=self.name, final=True)

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class Config:
    messages: int = 2000  # throughput: sent as fast as the clients can
    rate: float | None = None  # latency: offered load, messages/s; None: half our peak
    seconds: float = 10.0  # latency: how long that load is offered
    senders: int = 2  # processes holding the HTTP clients
    clients: int = 16  # keep-alive HTTP clients over all senders, each one request at a time
    concurrency: int = 32  # the worker's --concurrency; also the baseline's fetch batch
    customers: int = 40  # sends spread over them, so no per-customer rate limit applies
    workers: tuple[int, ...] = (1, 2, 4)  # worker processes of the throughput runs
    fanout: int = 1000  # recipients of the one alert of the fan-out run
    baseline_messages: int = 20_000
    stall_seconds: float = 30.0  # no new Delivered event for this long: the run failed
    unsaturated_share: float = 0.5  # of our peak throughput, for the latency run


@dataclass
class Phase:
    """One load run of ours: for each message, in request order, when each step happened.

    requested/accepted: the sender's clock around Messages.send; published: the job seen
    on NATS; Attempted/Delivered: the worker's events' own timestamps (taken before their
    save); committed: the Delivered event seen in the log, committed. All wall clock.
    """

    label: str
    times: dict[str, list[float]]
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per role in the run
    send_transactions: int = 0  # transactions the messages were written in (group commit)

    @property
    def count(self) -> int:
        return len(self.times["requested"])

    @property
    def deliveries_per_second(self) -> float:
        return self.count / (max(self.times["committed"]) - min(self.times["requested"]))

    @property
    def offered_per_second(self) -> float:
        requested = self.times["requested"]
        span = max(requested) - min(requested)
        return (self.count - 1) / span if span > 0 else float("inf")

    def span_seconds(self) -> float:
        """From the first request to the last Delivered committed."""
        return max(self.times["committed"]) - min(self.times["requested"])

    def latencies_ms(self, start: str = "requested", end: str = "committed") -> list[float]:
        pairs = zip(self.times[start], self.times[end], strict=True)
        return sorted((e - s) * 1000 for s, e in pairs)


@dataclass
class Results:
    baseline_rates: list[float] = field(default_factory=list)  # before and after ours
    # The throughput run with each number of worker processes.
    throughput: dict[int, Phase] = field(default_factory=dict)
    # At a fixed offered load: half our peak throughput, unless --rate asked for another.
    latency: Phase | None = None
    latency_rate: float = 0.0  # the load asked for
    latency_workers: int = 0  # worker processes of the latency and fan-out runs: the peak's
    fanout: Phase | None = None  # one alert to many recipients
    redelivered: int = 0  # jobs NATS handed out again (NAKs: rate limit, retries)
    notes: list[str] = field(default_factory=list)
    load: list[float] = field(default_factory=list)  # 1-minute load average, start and end

    @property
    def baseline_rate(self) -> float:
        return statistics.median(self.baseline_rates)

    @property
    def peak(self) -> Phase | None:
        runs = list(self.throughput.values())
        return max(runs, key=lambda phase: phase.deliveries_per_second) if runs else None


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = min(max(1, math.ceil(fraction * len(sorted_values))), len(sorted_values))
    return sorted_values[rank - 1]


# The baseline: raw nats-py on a stream configured exactly as ours, the same job bytes.


async def raw_jetstream(
    nats_url: str,
    namespace: str,
    config: Config,
    tick: Callable[[int], None],
    *,
    replicas: int = 1,  # copies of the stream, on a cluster (bench/cluster.py)
) -> float:
    """Messages/s from the first publish to the last ack: publish_async + gather while a
    pull consumer fetches batches of `concurrency` and acks each message."""
    topology = Topology(namespace, replicas)
    publisher = await nats.connect(nats_servers(nats_url), name="bench-raw-publisher")
    consumer = await nats.connect(nats_servers(nats_url), name="bench-raw-consumer")
    try:
        js = publisher.jetstream()
        await ensure_stream(js, topology)
        subscription = await consumer.jetstream().pull_subscribe(
            topology.subjects,
            durable=topology.durable,
            stream=topology.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, max_ack_pending=config.concurrency * 20
            ),
        )
        jobs = [Deliver(uuid.uuid4(), uuid.uuid4(), "sms") for _ in range(config.baseline_messages)]
        payloads = [(topology.subject_of(job), encoder.encode(job)) for job in jobs]

        async def publish() -> None:
            pending = []
            for number, (subject, payload) in enumerate(payloads):
                pending.append(
                    await js.publish_async(
                        subject, payload, headers={"Nats-Msg-Id": f"{namespace}/{number}"}
                    )
                )
                if len(pending) == 500:  # the relay's batch
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)

        async def consume() -> None:
            acked = 0
            while acked < len(payloads):
                try:
                    batch = await subscription.fetch(config.concurrency, timeout=0.5)
                except (FetchTimeoutError, TimeoutError):
                    continue
                await asyncio.gather(*(msg.ack() for msg in batch))
                acked += len(batch)
                tick(len(batch))

        started = time.perf_counter()
        await asyncio.gather(publish(), consume())
        elapsed = time.perf_counter() - started
    finally:
        with suppress(NotFoundError):
            await publisher.jetstream().delete_stream(topology.stream)
        await publisher.close()
        await consumer.close()
    return len(payloads) / elapsed


# Ours: the processes


def child_env(
    settings: Settings, database_url: str, nats_url: str, schema: str, namespace: str
) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PICASSE_")}
    return env | {
        "PICASSE_DATA_DIR": str(settings.data_dir),
        "PICASSE_MASTER_KEY_FILE": str(settings.master_key_path),
        "PICASSE_DATABASE_URL": database_url,
        "PICASSE_DATABASE_SCHEMA": schema,
        "PICASSE_NATS_URL": nats_url,
        "PICASSE_NATS_NAMESPACE": namespace,
    }


@dataclass(frozen=True)
class Started:
    pid: int
    line: str  # its first line


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_children(pid: int) -> list[int]:
    """The process and its children (an embedded PostgreSQL: the postmaster and backends)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(child) for child in children)]


def embedded_postgres_pid(settings: Settings) -> int | None:
    """The embedded server's postmaster, when the run started one (an external server's
    CPU is shared with whoever else uses it, so it is not counted)."""
    if settings.database_url is not None:
        return None
    try:
        return int((settings.postgres_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def child(
    command: list[str], env: dict[str, str], log_path: Path, *, ready_word: str = "running"
) -> Iterator[Started]:
    """A platform process, ready once its first line says `ready_word`; SIGTERMed at the end."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], CHILD_START_SECONDS)
        line = process.stdout.readline() if ready else ""
        if ready_word not in line:
            raise BenchError(f"{' '.join(command[2:])} did not start: {tail(log_path)}")
        yield Started(process.pid, line.strip())
        if process.poll() is not None:
            raise BenchError(f"{' '.join(command[2:])} exited early: {tail(log_path)}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:] or "(no output)"
    except OSError:
        return "(no log)"


def instant_worker(argv: list[str]) -> int:
    """`picasse worker`'s own runner, with every channel's provider swapped for InstantProvider."""
    parser = argparse.ArgumentParser(prog="python -m bench.messaging instant-worker")
    parser.add_argument("--concurrency", type=int, default=Config.concurrency)
    args = parser.parse_args(argv)
    from picasse.runners import worker as worker_runner

    def instant_providers(_settings: Settings, *_: object, **__: object) -> dict[str, Provider]:
        provider = InstantProvider()
        return {"sms": provider, "email": provider, "voice": provider}

    # The runner looks providers_from up in its own module: replacing it there swaps the
    # providers and leaves every other line of the production worker as it is. (The
    # benchmark checks every Delivered event names the instant provider.)
    if not hasattr(worker_runner, "providers_from"):
        raise SystemExit("runners/worker.py no longer imports providers_from: update the bench")
    worker_runner.providers_from = instant_providers
    return worker_runner.main(Settings.from_environ(), concurrency=args.concurrency)


# Ours: the HTTP clients, in sender processes of their own (spawned, so nothing is shared)


class SendPlan(msgspec.Struct, frozen=True, kw_only=True):
    api_url: str
    keys: list[str]  # one API key per customer: request n is sent with keys[n % len(keys)]
    offset: int  # which request numbers this sender's first client takes
    step: int  # clients over all senders: client c takes c, c + step, ...
    clients: int  # clients of this sender: offset .. offset + clients - 1
    count: int  # request numbers 0 .. count - 1 over all senders
    first_number: int  # where this phase's recipients and references start
    rate: float | None  # over all clients; None: as fast as they can


def sender(plan_bytes: bytes, ready: Any, go: Any, start_at: Any, results: Any) -> None:
    """Sends its share of the requests over its keep-alive clients; puts (number, message
    id, requested, accepted) for each."""
    plan = msgspec.msgpack.decode(plan_bytes, type=SendPlan)
    try:
        ready.wait()
        go.wait()
        cpu = time.process_time()
        sent = asyncio.run(_send_all(plan, start_at.value))
        results.put(("sent", (sent, time.process_time() - cpu)))
    except Exception as error:
        results.put(("error", f"sender {plan.offset} failed: {error!r}"))


async def _send_all(plan: SendPlan, start: float) -> list[tuple[int, bytes, float, float]]:
    sent: list[tuple[int, bytes, float, float]] = []

    async def client(first: int) -> None:
        # One connection per client, kept alive: what a customer's program would hold.
        # aiohttp, not httpx: the clients share the machine's cores with the platform, and
        # httpx's async client took 1.2-1.4 ms of CPU per request, aiohttp's a fraction.
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(
            plan.api_url, connector=connector, timeout=timeout
        ) as http:
            for number in range(first, plan.count, plan.step):
                if plan.rate is not None:
                    pause = start + number / plan.rate - _wall()
                    if pause > 0:
                        await asyncio.sleep(pause)
                n = plan.first_number + number
                requested = _wall()
                async with http.post(
                    "/v1/messages",
                    data=msgspec.json.encode(
                        {"channel": "sms", "to": [phone(n)], "body": BODY.format(n)}
                    ),
                    headers={
                        "Authorization": f"Bearer {plan.keys[number % len(plan.keys)]}",
                        "Content-Type": "application/json",
                    },
                ) as answer:
                    body = await answer.read()
                accepted = _wall()
                if answer.status != 202:
                    raise BenchError(f"POST /v1/messages: {answer.status} {body[:200]!r}")
                sent.append(
                    (number, UUID(msgspec.json.decode(body)["id"]).bytes, requested, accepted)
                )

    await asyncio.gather(*(client(plan.offset + c) for c in range(plan.clients)))
    return sent


def phone(n: int) -> str:
    return f"+3161{n % 10_000_000:07d}"


# Ours: watching from the side, and one run of load


class Observer:
    """Notes when each job appears on NATS (a plain subscriber beside the worker's pull
    consumer) and when each Delivered event is committed (LISTEN, then read the new rows)."""

    def __init__(self, database_url: str, schema: str, nats_url: str, topology: Topology):
        self.database_url = database_url
        self.schema = schema
        self.nats_url = nats_url
        self.topology = topology
        self.published: dict[UUID, float] = {}
        self.committed: dict[UUID, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Barrier(3)
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._guarded, args=(watch,), daemon=True)
            for watch in (self._watch_log, lambda: asyncio.run(self._watch_nats()))
        ]

    def __enter__(self) -> Observer:
        for thread in self._threads:
            thread.start()
        try:
            self._ready.wait(timeout=CHILD_START_SECONDS)
        except threading.BrokenBarrierError:
            self.__exit__()
            self.check()
            raise BenchError("the observer did not start") from None
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def check(self) -> None:
        if self._errors:
            raise BenchError(f"the observer failed: {self._errors[0]!r}")

    def _guarded(self, watch: Callable[[], None]) -> None:
        try:
            watch()
        except BaseException as error:
            self._errors.append(error)
            self._ready.abort()

    def _watch_log(self) -> None:
        table = sql.Identifier(self.schema, EVENTS_TABLE)
        new_rows = sql.SQL(
            "SELECT notification_id, originator_id FROM {} WHERE notification_id > %s"
            " AND topic = %s ORDER BY notification_id"
        ).format(table)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_TABLE)))
            row = conn.execute(
                sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(table)
            ).fetchone()
            last = int(row[0]) if row else 0
            self._ready.wait()
            while not self._stop.is_set():
                # Every insert notifies; one read takes in all the rows committed so far.
                for _ in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                    pass
                for _ in conn.notifies(timeout=0.0):
                    pass
                rows = conn.execute(new_rows, (last, TOPIC.format("Delivered"))).fetchall()
                seen = _wall()
                for notification_id, originator_id in rows:
                    self.committed.setdefault(originator_id, seen)
                    last = notification_id
                time.sleep(0.002)  # coalesce bursts of commits: fewer reads, ≤ 2 ms later

    async def _watch_nats(self) -> None:
        client = await nats.connect(self.nats_url, name="bench-observer")
        try:

            async def seen(msg: Any) -> None:
                with suppress(msgspec.DecodeError):
                    job = job_decoder.decode(msg.data)
                    if isinstance(job, Deliver):
                        self.published.setdefault(job.delivery_id, _wall())

            await client.subscribe(self.topology.subjects, cb=seen)
            await client.flush()
            await asyncio.to_thread(self._ready.wait)
            while not self._stop.is_set():
                await asyncio.sleep(POLL_SECONDS)
        finally:
            await client.close()


class _Stamped(msgspec.Struct):
    timestamp: datetime
    provider: str | None = None  # Delivered only


_stamped = msgspec.msgpack.Decoder(_Stamped)


@dataclass
class Pipeline:
    api_url: str
    keys: list[str]  # one API key per customer
    roles: dict[str, list[int]]  # the pids of api, relay and workers
    db: psycopg.Connection[Any]
    observer: Observer
    progress: Progress
    config: Config
    postgres_pid: int | None = None
    numbers_used: int = 0
    _client_cpu: float = 0.0

    def last_notification(self) -> int:
        row = self.db.execute(
            sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
                sql.Identifier(EVENTS_TABLE)
            )
        ).fetchone()
        return int(row[0]) if row else 0

    def event_times(self, mark: int) -> dict[str, dict[UUID, float]]:
        """The worker's events' own timestamps since `mark`, by delivery (plain fields only)."""
        times: dict[str, dict[UUID, float]] = {stage: {} for stage in WORKER_EVENTS}
        rows = self.db.execute(
            sql.SQL(
                "SELECT topic, originator_id, state FROM {}"
                " WHERE notification_id > %s AND topic = ANY(%s)"
            ).format(sql.Identifier(EVENTS_TABLE)),
            (mark, [TOPIC.format(stage) for stage in WORKER_EVENTS]),
        )
        for topic, originator_id, state in rows:
            stage = topic.rsplit(".", 1)[1]
            event = _stamped.decode(state)
            if stage == "Delivered" and event.provider != InstantProvider.name:
                raise BenchError(
                    f"a delivery went through {event.provider!r}, not the instant provider:"
                    " the worker's provider wiring changed; see instant_worker"
                )
            # A retried delivery has several attempts: the first one counts.
            times[stage].setdefault(originator_id, event.timestamp.timestamp())
        return times

    def run(self, label: str, count: int, rate: float | None) -> Phase:
        """`count` requests from the senders, then waits for every delivery's Delivered."""
        mark = self.last_notification()
        task = self.progress.add_task(label, total=count)
        cpu_before = self.role_cpu()
        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(self.config.senders + 1)
        go = context.Event()
        start_at = context.Value("d", 0.0)
        results = context.Queue()
        per_sender = [
            len(range(s, self.config.clients, self.config.senders))
            for s in range(self.config.senders)
        ]
        firsts = [sum(per_sender[:s]) for s in range(self.config.senders)]
        plans = [
            SendPlan(
                api_url=self.api_url,
                keys=self.keys,
                offset=first,
                step=self.config.clients,
                clients=clients,
                count=count,
                first_number=self.numbers_used,
                rate=rate,
            )
            for first, clients in zip(firsts, per_sender, strict=True)
        ]
        self.numbers_used += count
        processes = [
            context.Process(
                target=sender,
                args=(msgspec.msgpack.encode(plan), ready, go, start_at, results),
                daemon=True,
            )
            for plan in plans
        ]
        for process in processes:
            process.start()
        try:
            try:
                ready.wait(timeout=CHILD_START_SECONDS)
            except Exception:
                raise BenchError(f"{label}: the senders did not start: {drain(results)}") from None
            start_at.value = _wall() + 0.05  # every client's schedule starts here
            go.set()
            sent = self._await(label, count, results, task)
        finally:
            for process in processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
            self.progress.remove_task(task)
        cpu = {
            role: seconds - cpu_before.get(role, 0.0) for role, seconds in self.role_cpu().items()
        }
        cpu["clients"] = self._client_cpu
        sent.sort()
        phase = self._phase(
            label,
            mark,
            [
                (delivery_id(UUID(bytes=message_id), 0), requested, accepted)
                for _, message_id, requested, accepted in sent
            ],
        )
        phase.cpu = cpu
        phase.send_transactions = self.send_transactions(mark)
        return phase

    def send_transactions(self, mark: int) -> int:
        """In how many transactions the API wrote the messages since `mark`: rows one
        transaction inserted share its xmin."""
        row = self.db.execute(
            sql.SQL(
                "SELECT count(DISTINCT xmin::text) FROM {} WHERE notification_id > %s AND topic = %s"
            ).format(sql.Identifier(EVENTS_TABLE)),
            (mark, MESSAGE_TOPIC),
        ).fetchone()
        return int(row[0]) if row else 0

    def role_cpu(self) -> dict[str, float]:
        cpu = {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in self.roles.items()}
        if self.postgres_pid is not None:
            cpu["postgres"] = sum(cpu_seconds(pid) for pid in with_children(self.postgres_pid))
        return cpu

    def fanout(self, label: str, recipients: int) -> Phase:
        """One alert to `recipients` numbers in one request; waits for all their Delivered."""
        mark = self.last_notification()
        task = self.progress.add_task(label, total=recipients)
        first = self.numbers_used
        self.numbers_used += recipients
        before = len(self.observer.committed)
        cpu_before = self.role_cpu()
        try:
            with httpx.Client(base_url=self.api_url, timeout=60) as http:
                requested = _wall()
                answer = http.post(
                    "/v1/messages",
                    json={
                        "channel": "sms",
                        "priority": "alert",
                        "to": [phone(first + n) for n in range(recipients)],
                        "body": BODY.format(first),
                    },
                    headers={"Authorization": f"Bearer {self.keys[0]}"},
                )
                accepted = _wall()
            if answer.status_code != 202:
                raise BenchError(f"{label}: {answer.status_code} {answer.text[:200]}")
            message_id = UUID(answer.json()["id"])
            last_change, delivered = time.monotonic(), 0
            while delivered < recipients:
                time.sleep(POLL_SECONDS / 5)
                self.observer.check()
                now = len(self.observer.committed) - before
                if now != delivered:
                    delivered, last_change = now, time.monotonic()
                    self.progress.update(task, completed=delivered)
                elif time.monotonic() - last_change > self.config.stall_seconds:
                    raise BenchError(f"{label}: stuck at {delivered} of {recipients} deliveries")
        finally:
            self.progress.remove_task(task)
        phase = self._phase(
            label,
            mark,
            [(delivery_id(message_id, n), requested, accepted) for n in range(recipients)],
        )
        phase.cpu = {
            role: seconds - cpu_before.get(role, 0.0) for role, seconds in self.role_cpu().items()
        }
        return phase

    def _phase(self, label: str, mark: int, sent: list[tuple[UUID, float, float]]) -> Phase:
        """Each delivery's moments, in the order given: (delivery id, requested, accepted)."""
        ids = [ident for ident, _, _ in sent]
        events = self.event_times(mark)
        moments = {
            "published": self.observer.published,
            "Attempted": events["Attempted"],
            "Delivered": events["Delivered"],
            "committed": self.observer.committed,
        }
        for name, seen in moments.items():
            missing = sum(1 for i in ids if i not in seen)
            if missing:
                raise BenchError(f"{label}: {missing} deliveries have no {name} time")
        times = {
            "requested": [requested for _, requested, _ in sent],
            "accepted": [accepted for _, _, accepted in sent],
        }
        times.update({name: [seen[i] for i in ids] for name, seen in moments.items()})
        return Phase(label=label, times=times)

    def _await(
        self, label: str, count: int, results: Any, task: TaskID
    ) -> list[tuple[int, bytes, float, float]]:
        sent: list[tuple[int, bytes, float, float]] = []
        self._client_cpu = 0.0
        reports = 0
        before = len(self.observer.committed)  # deliveries only ever get added
        delivered = 0
        last_change = time.monotonic()
        while reports < self.config.senders or delivered < count:
            try:
                kind, payload = results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                pass
            else:
                if kind == "error":
                    raise BenchError(f"{label}: {payload}")
                rows, cpu = payload
                sent.extend(rows)
                self._client_cpu += cpu
                reports += 1
            self.observer.check()
            now = len(self.observer.committed) - before
            if now != delivered:
                delivered = now
                last_change = time.monotonic()
                self.progress.update(task, completed=delivered)
            elif time.monotonic() - last_change > self.config.stall_seconds:
                raise BenchError(
                    f"{label}: stuck at {delivered} of {count} deliveries"
                    f" for {self.config.stall_seconds:.0f}s"
                )
        return sent


def drain(results: Any) -> str:
    errors = []
    with suppress(queue.Empty):
        while True:
            kind, payload = results.get(timeout=1.0)
            if kind == "error":
                errors.append(payload)
    return "; ".join(errors) or "no error reported"


# Setting up ours


@contextmanager
def fresh_schema(database_url: str) -> Iterator[str]:
    name = f"bench_messaging_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def active_customers(
    settings: Settings, database_url: str, schema: str, count: int
) -> list[tuple[UUID, str]]:
    """`count` subscribed customers, each with an admin and an API key of theirs."""
    accounts = open_accounts(settings, database_url, schema=schema)
    api_keys = ApiKeys(
        eventsourcing_env(database_url, settings.master_key_path, schema=schema),
        clock=accounts.clock,
    )
    try:
        customers = []
        for n in range(count):
            customer_id = accounts.register_customer(
                organisation=f"Bench Customer {n} B.V.",
                contact_name=f"Contact Person {n}",
                email=f"contact{n}@customer{n}.example",
                phone=phone(9_000_000 + n),
                billing_address=f"Keizersgracht {n + 1}, 1015 CJ Amsterdam",
            )
            accounts.start_subscription(customer_id)
            # Invited, the link never used: an API key needs no password.
            link = accounts.invite_user(
                customer_id=customer_id,
                login=f"bench-admin-{n}",
                role=Role.CUSTOMER_ADMIN,
                email=f"admin{n}@customer{n}.example",
            )
            key = api_keys.issue(user_id=link.user_id, customer_id=customer_id, name="bench")
            customers.append((customer_id, key.key))
    finally:
        api_keys.close()
        accounts.close()
    return customers


async def delete_stream(nats_url: str, topology: Topology) -> None:
    client = await nats.connect(nats_url)
    try:
        with suppress(NotFoundError):
            await client.jetstream().delete_stream(topology.stream)
    finally:
        await client.close()


async def redeliveries(nats_url: str, topology: Topology) -> int:
    client = await nats.connect(nats_url)
    try:
        info = await client.jetstream().consumer_info(topology.stream, topology.durable)
    finally:
        await client.close()
    return int(info.num_redelivered or 0)


def run(
    settings: Settings, database_url: str, nats_url: str, config: Config, progress: Progress
) -> Results:
    """The raw JetStream baseline, then ours: warm-up, throughput, latency at a fixed load."""
    create_master_key(settings.master_key_path)
    results = Results()

    def say(text: str) -> None:
        progress.console.print(text)

    namespace = f"bench{uuid.uuid4().hex[:8]}"
    results.load.append(os.getloadavg()[0])

    def baseline(number: int) -> None:
        # Run before and after ours, so a machine that got busier meanwhile shows.
        task = progress.add_task("raw JetStream", total=config.baseline_messages)
        rate = asyncio.run(
            raw_jetstream(
                nats_url,
                f"{namespace}raw{number}",
                config,
                lambda acked: progress.advance(task, acked),
            )
        )
        progress.remove_task(task)
        results.baseline_rates.append(rate)
        say(f"   raw JetStream publish+pull+ack, run {number}: {rate:>9,.0f} msgs/s")

    say(f"[bold]raw nats-py baseline: {config.baseline_messages:,} jobs published and acked")
    baseline(1)

    topology = Topology(namespace)
    with ExitStack() as stack:
        schema = stack.enter_context(fresh_schema(database_url))
        # Registered after the schema, so it runs before the schema is dropped.
        stack.callback(lambda: asyncio.run(delete_stream(nats_url, topology)))
        setup = progress.add_task(f"registering {config.customers} customers", total=None)
        customers = active_customers(settings, database_url, schema, config.customers)
        # The tables exist now: the relay, workers and API need not race to create them.
        open_messages(settings, database_url, schema=schema).close()
        env = child_env(settings, database_url, nats_url, schema, namespace) | {
            "PICASSE_HTTP_HOST": "127.0.0.1",
            "PICASSE_HTTP_PORT": "0",
            # The workers' per-customer limit stays the default: the fan-out alert to one
            # customer's 1,000 recipients is the burst it lets go at once, as in production.
        }
        logs = settings.data_dir / "bench-logs"
        logs.mkdir(exist_ok=True)
        progress.update(setup, description="starting picasse relay, api and the instant worker")
        roles: dict[str, list[int]] = {"api": [], "relay": [], "workers": []}
        relay_process = stack.enter_context(
            child(
                [sys.executable, "-m", "picasse.runners.cli", "relay"],
                env | {"PICASSE_DB_CONNECTIONS": str(CONNECTIONS["relay"])},
                logs / "relay.log",
            )
        )
        roles["relay"].append(relay_process.pid)
        listening = stack.enter_context(
            child(
                [sys.executable, "-m", "picasse.runners.cli", "api"],
                env | {"PICASSE_DB_CONNECTIONS": str(CONNECTIONS["api"])},
                logs / "api.log",
                ready_word="listening",
            )
        )
        roles["api"].append(listening.pid)
        api_url = listening.line.rsplit(" ", 1)[-1]
        running: list[ExitStack] = []  # one per worker process, in start order

        def stop_workers() -> None:
            for each in reversed(running):
                each.close()

        stack.callback(stop_workers)

        def workers_to(wanted: int) -> None:
            """Start worker processes, or stop the last started (SIGTERM: they drain)."""
            while len(running) > wanted:
                running.pop().close()
                roles["workers"].pop()
            while len(running) < wanted:
                own = ExitStack()
                started = own.enter_context(
                    child(
                        [
                            sys.executable, "-m", "bench.messaging", "instant-worker",
                            "--concurrency", str(config.concurrency),
                        ],
                        env | {"PICASSE_DB_CONNECTIONS": str(CONNECTIONS["worker"])},
                        logs / f"worker{len(running) + 1}.log",
                    )
                )  # fmt: skip
                running.append(own)
                roles["workers"].append(started.pid)

        workers_to(config.workers[0])
        progress.remove_task(setup)
        db = stack.enter_context(psycopg.connect(database_url, autocommit=True))
        db.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        observer = stack.enter_context(Observer(database_url, schema, nats_url, topology))
        pipeline = Pipeline(
            api_url, [key for _, key in customers], roles, db, observer, progress, config,
            postgres_pid=embedded_postgres_pid(settings),
        )  # fmt: skip

        say(f"[bold]ours: warm-up, one message per customer ({config.customers})")
        pipeline.run("warm-up", config.customers, None)

        for count in config.workers:
            workers_to(count)
            say(
                f"[bold]ours: throughput with {count} worker process(es), {config.messages:,}"
                f" SMS as fast as {config.clients} HTTP clients can request them"
            )
            phase = pipeline.run(f"throughput, {count} workers", config.messages, None)
            results.throughput[count] = phase
            say(
                f"   requests: {phase.offered_per_second:>9,.0f} /s;"
                f" deliveries end to end: {phase.deliveries_per_second:>9,.0f} /s"
            )

        peak = results.peak
        assert peak is not None
        # Half the peak is measured on the deployment that reached it: as many workers.
        peak_workers = next(n for n, phase in results.throughput.items() if phase is peak)
        workers_to(peak_workers)
        results.latency_workers = peak_workers
        rate = config.rate or max(1.0, round(peak.deliveries_per_second * config.unsaturated_share))
        results.latency_rate = rate
        say(f"ours: latency and fan-out with {peak_workers} worker process(es), as at the peak")
        results.latency = latency_run(pipeline, "latency", rate, config, say)
        if results.latency.offered_per_second < 0.95 * rate:
            results.notes.append(
                f"the clients offered only {results.latency.offered_per_second:,.0f} of the"
                f" {rate:,.0f} messages/s asked for (ours was saturated), so the latency"
                f" goal, which is for {rate:,.0f}/s, counts as not met"
            )
        say(f"[bold]ours: fan-out, one alert to {config.fanout:,} recipients")
        results.fanout = pipeline.fanout("fan-out", config.fanout)
        say(f"   all Delivered committed after {results.fanout.span_seconds():.2f} s")
        results.redelivered = asyncio.run(redeliveries(nats_url, topology))
    say("[bold]raw nats-py baseline again")
    baseline(2)
    results.load.append(os.getloadavg()[0])
    return results


def latency_run(
    pipeline: Pipeline, label: str, rate: float, config: Config, say: Callable[[str], None]
) -> Phase:
    count = max(2, round(rate * config.seconds))
    say(f"[bold]ours: {label}, {rate:,.0f} SMS/s offered for {config.seconds:.0f}s ({count:,} SMS)")
    phase = pipeline.run(label, count, rate)
    latencies = phase.latencies_ms()
    say(
        f"   offered {phase.offered_per_second:,.0f} /s; request → Delivered committed:"
        f" p50 {percentile(latencies, 0.5):,.0f} ms, p99 {percentile(latencies, 0.99):,.0f} ms"
    )
    return phase


# Reporting


def table(results: Results, config: Config) -> Table:
    grid = Table(
        title="Messaging: HTTP request → relay → worker → Delivered committed",
        caption=(
            f"ours: {config.clients} keep-alive HTTP clients (POST /v1/messages, API keys) in"
            f" {config.senders} processes, picasse api, picasse relay, picasse worker"
            f" --concurrency {config.concurrency} with a provider that accepts at once"
            " (PICASSE_RATE_PER_CUSTOMER as by default; PostgreSQL connections:"
            f" api {CONNECTIONS['api']}, relay {CONNECTIONS['relay']}, each worker"
            f" {CONNECTIONS['worker']}). raw NATS: nats-py"
            f" publish_async, pull fetch({config.concurrency}), ack."
        ),
    )
    grid.add_column("measure", no_wrap=True)
    grid.add_column("raw NATS", justify="right")
    grid.add_column("ours", justify="right")
    grid.add_column("ours/raw", justify="right")
    grid.add_column("goal", no_wrap=True)
    peak = results.peak
    for workers, phase in results.throughput.items():
        ratio = phase.deliveries_per_second / results.baseline_rate
        grid.add_row(
            f"deliveries/s, {workers} worker{'s' if workers > 1 else ''} ({phase.count:,} msgs)",
            f"{results.baseline_rate:,.0f}",
            f"{phase.deliveries_per_second:,.0f}",
            f"{ratio:.3f}",
            _verdict(ratio >= THROUGHPUT_GOAL, f"≥ {THROUGHPUT_GOAL:.2f}", judged=phase is peak),
        )
        grid.add_row("  requests accepted/s", "", f"{phase.offered_per_second:,.0f}")
        if phase.send_transactions:
            grid.add_row(
                "  sends per transaction (group commit)",
                "",
                f"{phase.count / phase.send_transactions:,.1f}",
            )
    latency = results.latency
    if latency is not None:
        # The goal is about the asked load: a run the clients could not offer it in
        # cannot meet it, however short its latencies.
        offered = latency.offered_per_second >= 0.95 * results.latency_rate
        latencies = latency.latencies_ms()
        for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
            value = percentile(latencies, fraction)
            label = (
                f"latency at {latency.offered_per_second:,.0f}/s"
                f" (asked {results.latency_rate:,.0f}; {results.latency_workers} worker"
                f"{'s' if results.latency_workers > 1 else ''}), {name}"
                if name == "p50"
                else f"  {name}"
            )
            goal = ""
            if name == "p99":
                goal = _verdict(value < P99_GOAL_MS and offered, f"< {P99_GOAL_MS:.0f} ms")
            grid.add_row(label, "", f"{value:,.0f} ms", "", goal)
    fanout = results.fanout
    if fanout is not None:
        span = fanout.span_seconds()
        grid.add_row(
            f"one alert to {fanout.count:,}: all Delivered committed",
            "",
            f"{span:,.2f} s",
            "",
            _verdict(span <= FANOUT_GOAL_SECONDS, f"≤ {FANOUT_GOAL_SECONDS:.0f} s"),
        )
        # Not the throughput goal, which is for one recipient per request: what the same
        # pipeline moves when one request carries many recipients.
        grid.add_row(
            "  its deliveries/s (one request, many recipients)",
            f"{results.baseline_rate:,.0f}",
            f"{fanout.deliveries_per_second:,.0f}",
            f"{fanout.deliveries_per_second / results.baseline_rate:.3f}",
            "",
        )
    return grid


def cpu_table(results: Results) -> Table:
    """CPU time per delivery by process role: what a busy machine changes least."""
    grid = Table(
        title="CPU per delivery (ms), throughput runs",
        caption="user + system time of each role's processes during the run, / deliveries"
        " (PostgreSQL only when embedded: its postmaster and backends; NATS not counted)",
    )
    grid.add_column("role", no_wrap=True)
    phases = list(results.throughput.items())
    for workers, _ in phases:
        grid.add_column(f"{workers} worker{'s' if workers > 1 else ''}", justify="right")
    roles = ("clients", "api", "relay", "workers", "postgres")
    for role in roles:
        grid.add_row(role, *(f"{1000 * p.cpu.get(role, 0.0) / p.count:.2f}" for _, p in phases))
    grid.add_row(
        "total",
        *(f"{1000 * sum(p.cpu.get(r, 0.0) for r in roles) / p.count:.2f}" for _, p in phases),
    )
    return grid


def stages_table(phases: Sequence[Phase]) -> Table:
    """Where a message's time goes, step by step, in each latency run."""
    grid = Table(
        title="Where the time goes (ms)",
        caption=(
            "accepted: POST /v1/messages answered; job: seen on NATS; Attempted, Delivered: the"
            " worker's events' timestamps, taken before their save; committed: Delivered seen"
            " in the log"
        ),
    )
    grid.add_column("step", no_wrap=True)
    for phase in phases:
        for name in ("p50", "p99"):
            grid.add_column(f"{phase.label} {name}", justify="right")
    spans = (
        ("send: request → accepted", "requested", "accepted"),
        ("relay: → job on NATS", "accepted", "published"),
        ("queue, pick-up: → Attempted", "published", "Attempted"),
        ("worker: Attempted → Delivered", "Attempted", "Delivered"),
        ("commit: → Delivered committed", "Delivered", "committed"),
        ("total: request → committed", "requested", "committed"),
    )
    for label, start, end in spans:
        cells = []
        for phase in phases:
            values = phase.latencies_ms(start, end)
            cells += [f"{percentile(values, f):,.0f}" for f in (0.5, 0.99)]
        grid.add_row(label, *cells)
    return grid


def fanout_table(phase: Phase) -> Table:
    """The fan-out's milestones, each the first and the last delivery to reach it, in ms
    after the request; and each role's CPU over the whole fan-out."""
    grid = Table(
        title=f"Fan-out to {phase.count:,}: milestones (ms after the request)",
        caption=(
            "job: seen on NATS; Attempted, Delivered: the worker's events' timestamps;"
            " committed: Delivered seen in the log. CPU: each role's user + system seconds"
            " from the request to the last Delivered seen (PostgreSQL only when embedded)"
        ),
    )
    grid.add_column("milestone", no_wrap=True)
    grid.add_column("first", justify="right")
    grid.add_column("last", justify="right")
    start = min(phase.times["requested"])
    for label, name in (
        ("request accepted", "accepted"),
        ("job on NATS", "published"),
        ("Attempted (worker's clock)", "Attempted"),
        ("Delivered (worker's clock)", "Delivered"),
        ("Delivered committed", "committed"),
    ):
        values = phase.times[name]
        grid.add_row(
            label, f"{(min(values) - start) * 1000:,.0f}", f"{(max(values) - start) * 1000:,.0f}"
        )
    for role in ("api", "relay", "workers", "postgres"):
        if role in phase.cpu:
            grid.add_row(f"CPU: {role}", "", f"{phase.cpu[role] * 1000:,.0f}")
    return grid


def _verdict(met: bool, goal: str, *, judged: bool = True) -> str:
    """Whether the goal is met; in brackets when the run is not the one the goal is about."""
    verdict = f"{goal}: {'met' if met else 'not met'}"
    if not judged:
        return f"[dim]({verdict})"
    return f"[green]{verdict}" if met else f"[red]{verdict}"


def summary(results: Results) -> list[str]:
    lines = list(results.notes)
    rates = ", ".join(f"{rate:,.0f}" for rate in results.baseline_rates)
    lines.append(f"raw NATS runs: {rates} msgs/s; the table shows their median")
    if results.load:
        lines.append(
            f"1-minute load average {results.load[0]:.1f} at the start,"
            f" {results.load[-1]:.1f} at the end, on {os.cpu_count()} CPUs"
            + (
                ": other processes competed for them"
                if max(results.load) > (os.cpu_count() or 1)
                else ""
            )
        )
    if results.redelivered:
        lines.append(f"NATS redelivered {results.redelivered} jobs (NAKs: rate limit or retries)")
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["instant-worker"]:
        sys.exit(instant_worker(sys.argv[2:]))
    sys.exit(
        "usage: python -m bench.messaging instant-worker [--concurrency N]"
        " (the benchmark itself runs with python -m bench)"
    )
