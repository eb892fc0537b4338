"""`picasse project`: keeps the views up to date with the log, one writer per view; rebuilds one on request.

Exactly one process advances a view: the one that plays its role `view:<name>` (an
advisory lock, picasse.adapters.postgres.roles). A second projector stands by and takes
a view over when its holder dies. A command that must read its own writes catches the
views up (`LiveViews.catch_up`): it advances a view itself only when nobody plays its
role, and otherwise waits for the holder.

A view that cannot take an event stops alone at that event, retries with a back-off,
and goes on by itself once it can (after a fix, or once an erasure makes the value read
as erased). Where it stopped and the error's type are kept in `picasse_view_status`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

import msgspec
import psycopg
from eventsourcing.persistence import IntegrityError, Notification, PersistenceError, Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from picasse.adapters.postgres.audit import replay_into_views
from picasse.adapters.postgres.notices import connection_kwargs
from picasse.adapters.postgres.roles import RoleClaims
from picasse.adapters.postgres.store import factory_of, mapper_of
from picasse.adapters.postgres.views import (
    PostgresAccountsView,
    PostgresInvoicesView,
    PostgresLedgerView,
    PostgresTrafficView,
    ViewFailure,
    ViewStatusTable,
    events_after,
    last_notification_in,
    page_batched,
)
from picasse.domain.application import PicasseApplication
from picasse.domain.clock import Clock
from picasse.domain.errors import Conflict, DomainError
from picasse.domain.privacy import Erasure
from picasse.projections.accounts import AccountsProjection
from picasse.projections.invoices import InvoicesProjection
from picasse.projections.ledger import LedgerProjection
from picasse.projections.traffic import TrafficProjection
from picasse.runners import servers
from picasse.runners.settings import Settings, SettingsError
from picasse.runners.signals import StopRequest, stop_requested
from picasse.runners.wiring import clock_from, ensure_master_key, eventsourcing_env

log = logging.getLogger(__name__)

# What stops a loop: the process's stop request, or an event of the caller's.
Stop = StopRequest | threading.Event

VIEWS: dict[str, tuple[type[Projection[Any]], type[Any]]] = {
    "accounts": (AccountsProjection, PostgresAccountsView),
    "traffic": (TrafficProjection, PostgresTrafficView),
    "ledger": (LedgerProjection, PostgresLedgerView),
    "invoices": (InvoicesProjection, PostgresInvoicesView),
}


def view_on_pool_of(app: PicasseApplication, name: str) -> Any:
    """A view to read, as `picasse project` writes it, on the pool of `app` (no pool of its
    own); it opens its sealed columns with that app's key store."""
    projection, view_class = VIEWS[name]
    view = view_class(
        datastore=factory_of(app).datastore,
        tracking_table_name=f"{projection.name.lower()}_tracking",
        keys=factory_of(app).keys,  # opens the sealed columns
    )
    view.create_table()  # if the projections never ran here yet
    return view


BATCH = 200  # events read at a time; a stop request is seen between two batches
# A view that has taken everything of its topics records the log position it is up to
# once this many events of other topics came after its own last one.
SETTLE_AFTER = 1000
TICK_SECONDS = 0.05  # how often the projector looks at the log's head
CLAIM_SECONDS = 1.0  # how often it checks its claims and tries to take the others
FIRST_RETRY = timedelta(seconds=1)  # a stopped view's first retry; doubles each time
# An erasure can make an event readable (its value now reads as erased): a stopped view
# retries at once when one comes, rather than at the end of its back-off.
UNBLOCKING_TOPICS = (get_topic(Erasure.Recorded),)


def view_role(name: str) -> str:
    return f"view:{name}"


class ViewStuck(DomainError):
    """A view cannot take an event (or no process takes the log into it in time)."""

    code = "view-stuck"

    def __init__(self, view: str, notification_id: int, reason: str) -> None:
        super().__init__(
            f"the {view} view is stopped at event #{notification_id} ({reason}); it retries by"
            " itself (see /health), run this command again once it goes on"
        )
        self.view = view
        self.notification_id = notification_id
        self.reason = reason


class ViewHeld(Conflict):
    """Another process advances the view: it cannot be rebuilt or caught up from here."""

    code = "view-held"


class LogReader(PicasseApplication):
    """Reads the one event log; the projections' window onto it."""


class ViewStatus(msgspec.Struct, frozen=True):
    view: str
    position: int  # the last notification the view has taken in
    head: int  # the log's last notification
    lag: int  # events for this view still to take in


def view_env(settings: Settings, database_url: str) -> dict[str, str]:
    env = eventsourcing_env(database_url, settings.master_key_path, schema=settings.database_schema)
    # A projection reads and writes from one thread: a small pool is plenty.
    env["POSTGRES_POOL_SIZE"] = "1"
    env["POSTGRES_MAX_OVERFLOW"] = "2"  # readers in other threads (LiveViews) share it
    return env


def _database_away(error: BaseException) -> bool:
    """The database, not the event (psycopg's, or the library's re-raised under the same
    names): the caller waits and tries again."""
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    return isinstance(error, PersistenceError) and type(error).__name__ in (
        "OperationalError",
        "InterfaceError",
    )


class Follower:
    """One view, advanced by this process while it plays the view's role.

    It takes the log in a page of events at a time: the page decoded at once (its keys
    fetched in one round trip) and the view's writes for it committed in one transaction
    with the page's tracking records (`page_batched`, as a rebuild writes). A page that
    cannot go in whole is taken again one event per transaction, so the view stops exactly
    at the event it cannot take, everything before it in."""

    def __init__(
        self,
        name: str,
        reader: LogReader,
        view: Any,
        status: ViewStatusTable,
        clock: Clock,
        retry_max: timedelta,
    ) -> None:
        projection_class = VIEWS[name][0]
        self.name = name
        self.role = view_role(name)
        self.topics = projection_class.topics
        self.projection = projection_class(view)  # one event per transaction
        # The same tables, written a page per transaction.
        self.pages = projection_class(
            page_batched(type(view))(
                view.datastore, tracking_table_name=view.tracking_table_name, keys=view.keys
            )
        )
        self.view = view
        self.reader = reader
        self.status = status
        self.clock = clock
        self.retry_max = retry_max
        self.failure: ViewFailure | None = None  # where it stopped, while it is stopped
        self.retry_at: datetime | None = None
        self.drained_to = 0  # the log's head when it last had nothing left to take

    def position(self) -> int:
        return self.view.max_tracking_id(self.reader.name) or 0

    def taken_over(self) -> None:
        """This process now plays the view's role: go on where its last holder stopped."""
        self.failure = self.status.failure_of(self.name)
        self.retry_at = None  # one attempt at once: the cause may be gone
        self.drained_to = 0

    def due(self, head: int) -> bool:
        """Whether there is something to do now: new events, or a stopped view's retry."""
        if self.failure is None:
            return head > self.drained_to
        if self.retry_at is None or self.clock.now() >= self.retry_at:
            return True
        seen = self.failure.seen
        return head > seen and events_after(self.reader.recorder, seen, UNBLOCKING_TOPICS) > 0

    def advance(
        self,
        upto: int | None = None,
        stop: Stop | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ViewFailure | None:
        """Take in this view's events after its position, up to `upto` (None: the head now).

        Returns None once there (or on a stop request), or the failure where it stopped at
        an event it cannot take; that failure is recorded for /health and retried later."""
        head = self.reader.recorder.max_notification_id() or 0
        target = head if upto is None else upto
        position = self.position()
        while stop is None or not stop.is_set():
            page = self.reader.recorder.select_notifications(
                position, BATCH, stop=target, topics=self.topics, inclusive_of_start=False
            )
            if not page:
                if upto is None:
                    self.drained_to = head
                if target - position >= SETTLE_AFTER:
                    # Nothing of its topics up to `target`: say so, so that its lag (the
                    # health probe's count of its events after its position, on every
                    # overview) reads from here, not from its last event long ago.
                    self.view.insert_tracking(Tracking(self.reader.name, target))
                return None
            if self._took_page(page):
                position = page[-1].id
                if self.failure is not None:
                    self._recovered()
            else:
                taken = self.position()
                if taken >= page[0].id:
                    # Another process took (some of) it in while this one's claim was being
                    # lost. Carry on from where the view is.
                    position = taken
                else:
                    position, failure = self._one_by_one(page, head)
                    if failure is not None:
                        return failure
            if progress is not None:
                progress(position)
        return None

    def _took_page(self, page: Sequence[Notification]) -> bool:
        """Take the page in one transaction; False if it did not go in (nothing of it did)."""
        view = self.pages.view
        try:
            events = mapper_of(self.reader).to_domain_events(page)  # keys: one query
            for notification, event in zip(page, events, strict=True):
                self.pages.process_event(event, Tracking(self.reader.name, notification.id))
            view.flush()
        except Exception as error:
            view.discard()
            if _database_away(error):
                raise
            return False
        return True

    def _one_by_one(
        self, page: Sequence[Notification], head: int
    ) -> tuple[int, ViewFailure | None]:
        """Take the page an event per transaction, up to an event the view cannot take:
        the position reached, and the failure there (None: the page went in, or another
        process took part of it in)."""
        position = page[0].id - 1
        for notification in page:
            try:
                event = self.reader.mapper.to_domain_event(notification)
                self.projection.process_event(event, Tracking(self.reader.name, notification.id))
            except IntegrityError as error:
                # Its tracking record exists: another process took it in while this one's
                # claim was being lost. Carry on from where the view is.
                taken = self.position()
                if taken < notification.id:
                    return position, self._failed(notification.id, error, head)
                return taken, None
            except Exception as error:
                if _database_away(error):
                    raise
                return position, self._failed(notification.id, error, head)
            position = notification.id
            if self.failure is not None:
                self._recovered()
        return position, None

    def _failed(self, notification_id: int, error: BaseException, head: int) -> ViewFailure:
        now = self.clock.now()
        again = self.failure is not None and self.failure.failing_at == notification_id
        attempts = self.failure.attempts + 1 if again and self.failure else 1
        since = self.failure.since if again and self.failure else now
        self.failure = ViewFailure(
            self.name,
            notification_id,
            type(error).__name__,  # never the message: it may quote the value
            since,
            attempts,
            max(head, notification_id),
        )
        wait = min(FIRST_RETRY * 2 ** min(attempts - 1, 16), self.retry_max)
        self.retry_at = now + wait
        self.status.stopped(self.failure)
        log.warning(
            "the %s view cannot take event #%d (%s, attempt %d); next try in %s",
            self.name,
            notification_id,
            self.failure.error_type,
            attempts,
            wait,
        )
        return self.failure

    def _recovered(self) -> None:
        assert self.failure is not None
        log.warning("the %s view took event #%d and goes on", self.name, self.failure.failing_at)
        self.status.cleared(self.name)
        self.failure = None
        self.retry_at = None


class Views:
    """The views this process may advance: one log reader and one datastore for all of
    them, and one connection holding the claims of their roles."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        names: list[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.reader = LogReader(env=view_env(settings, database_url))
        try:
            datastore = factory_of(self.reader).datastore
            self.status = ViewStatusTable(datastore)
            self.status.create_table()
            self.claims = RoleClaims(connection_kwargs(datastore), datastore.schema)
            the_clock = clock or clock_from(settings)
            retry_max = timedelta(seconds=settings.view_retry_max)
            self.followers: dict[str, Follower] = {}
            for name in names or list(VIEWS):
                projection, view_class = VIEWS[name]
                view = view_class(
                    datastore,
                    tracking_table_name=f"{projection.name}_tracking",
                    keys=factory_of(self.reader).keys,
                )
                view.create_table()
                self.followers[name] = Follower(
                    name, self.reader, view, self.status, the_clock, retry_max
                )
        except BaseException:
            self.reader.close()
            raise

    def head(self) -> int:
        return self.reader.recorder.max_notification_id() or 0

    def claim(self, held: set[str]) -> set[str]:
        """Keep the views held, take those nobody plays; the views this process holds now."""
        now_held = set()
        for name, follower in self.followers.items():
            if self.claims.claim(follower.role):
                if name not in held:
                    log.info("advancing the %s view", name)
                    follower.taken_over()
                now_held.add(name)
            elif name in held:
                log.warning("the %s view is no longer this process's to advance", name)
        return now_held

    def statuses(self) -> list[ViewStatus]:
        head = self.head()
        return [
            ViewStatus(
                name,
                position := follower.position(),
                head,
                events_after(self.reader.recorder, position, follower.topics),
            )
            for name, follower in self.followers.items()
        ]

    def close(self) -> None:
        try:
            self.claims.close()
        finally:
            self.reader.close()


def follow(views: Views, stop: Stop) -> None:
    """Advance the views this process holds until `stop`; stand by for the others."""
    held: set[str] = set()
    ticks = 0
    claim_every = round(CLAIM_SECONDS / TICK_SECONDS)
    while not stop.is_set():
        try:
            if ticks % claim_every == 0:
                held = views.claim(held)
            if held:
                head = views.head()
                for name in sorted(held):
                    follower = views.followers[name]
                    if follower.due(head):
                        follower.advance(stop=stop)
        except (psycopg.Error, PersistenceError) as error:
            log.warning("the database does not answer (%s); trying again", type(error).__name__)
            ticks = 0
            stop.wait(CLAIM_SECONDS)
            continue
        ticks += 1
        stop.wait(TICK_SECONDS)


def main(settings: Settings, *, rebuild: str | None = None, once: bool = False) -> int:
    database_url = servers.postgres_url(settings)
    ensure_master_key(settings)
    if rebuild is not None and rebuild not in VIEWS:
        raise SettingsError(f"no view {rebuild!r}; views: {', '.join(VIEWS)}")
    with stop_requested() as stop:
        views = Views(settings, database_url, [rebuild] if rebuild else None)
        try:
            if rebuild or once:
                return _by_hand(views, stop, reset=rebuild is not None)
            print("projections running", flush=True)
            follow(views, stop)
        finally:
            views.close()
    return 0


def _by_hand(views: Views, stop: Stop, *, reset: bool) -> int:
    """`--rebuild` and `--once`: only with every view's role claimed, so no projector runs."""
    for follower in views.followers.values():
        if not views.claims.claim(follower.role):
            raise ViewHeld(
                f"a running projector advances the {follower.name} view: stop `picasse up`"
                " (or that `picasse project`) first, then run this again"
            )
    if reset:
        for follower in views.followers.values():
            if not _rebuild(views, follower, stop):
                return 1  # stopped: the live view is as it was, the shadow is gone
            views.status.cleared(follower.name)
    failures = _catch_up(views, stop)
    for status in views.statuses():
        print(f"{status.view}: at {status.position} of {status.head} (lag {status.lag})")
    if failures:
        first = failures[0]
        raise ViewStuck(first.view, first.failing_at, first.error_type)
    return 0


SHADOW_PREFIX = "rebuild_"  # a view being rebuilt: its tables beside the live ones


def _rebuild(views: Views, follower: Follower, stop: Stop, upto: int | None = None) -> bool:
    """Build the view afresh from the log (up to `upto`; None: the head now) into shadow
    tables beside the live ones, a page of events per transaction (the page's writes
    pipelined, its tracking record in the same transaction: `replay_into_views`, as the
    audit replays), then swap them in in one transaction. Readers see the old view until
    the swap, then the whole new one: never a view part-built. False if stopped first (the
    shadow is dropped, the live view kept)."""
    projection_class, view_class = VIEWS[follower.name]
    live = follower.view
    shadow = page_batched(view_class)(
        live.datastore,
        tracking_table_name=SHADOW_PREFIX + live.tracking_table_name,
        keys=factory_of(views.reader).keys,
    )
    shadow.drop()  # what a rebuild cut short left
    shadow.create_table()
    reader = views.reader
    head = views.head() if upto is None else upto
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task(f"rebuild {follower.name}", total=None)

            def show(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)
                if stop.is_set():
                    raise _Stopped

            counts = replay_into_views(
                reader.recorder,
                reader.mapper,
                reader.name,
                {follower.name: (projection_class(shadow), head)},
                only_topics=True,
                progress=show,
            )
    except _Stopped:
        shadow.drop()
        return False
    except BaseException:
        shadow.drop()
        raise
    live.replace_with(shadow)
    rate = counts.events / counts.seconds if counts.seconds else 0.0
    print(
        f"{follower.name}: rebuilt from {counts.events} events at {rate:,.0f} events/s", flush=True
    )
    return True


class _Stopped(Exception):
    """A stop request during a rebuild."""


def _catch_up(views: Views, stop: Stop) -> list[ViewFailure]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    failures = []
    recorder = views.reader.recorder
    with Progress(*columns, console=Console(stderr=True)) as progress:
        for name, follower in views.followers.items():
            total = events_after(recorder, 0, follower.topics)
            task = progress.add_task(f"view {name}", total=total)

            def show(
                position: int, task: Any = task, follower: Follower = follower, total: int = total
            ) -> None:
                left = events_after(recorder, position, follower.topics)
                progress.update(task, completed=max(total - left, 0))

            show(follower.position())
            failure = follower.advance(stop=stop, progress=show)
            if failure is not None:
                failures.append(failure)
            if stop.is_set():
                break
    return failures


class LiveViews:
    """The views, for commands that must read their own writes: `catch_up` waits for the
    process that advances them, or advances a view itself when nobody does."""

    def __init__(self, views: Views, timeout: float = 60.0) -> None:
        self.views = views
        self.timeout = timeout

    @property
    def names(self) -> list[str]:
        return list(self.views.followers)

    def view(self, name: str) -> Any:
        return self.views.followers[name].view

    def catch_up(self, notification_id: int | None = None, timeout: float | None = None) -> None:
        """Return once every view has taken in the log up to `notification_id` (None: the
        head now); ViewStuck if a view cannot take an event on the way, or none takes it
        in within `timeout` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        target = self.views.head() if notification_id is None else notification_id
        for follower in self.views.followers.values():
            self._catch_up(follower, target, deadline)

    def _catch_up(self, follower: Follower, target: int, deadline: float) -> None:
        # A view tracks only the events of its topics: it is up to date with `target`
        # once it has taken the last of those up to there.
        needed = last_notification_in(self.views.reader.recorder, target, follower.topics)
        claims = self.views.claims
        while follower.position() < needed:
            if claims.claim(follower.role):  # nobody advances it: do it here, then let go
                try:
                    follower.taken_over()
                    failure = follower.advance(upto=needed)
                finally:
                    claims.release(follower.role)
                if failure is not None:
                    raise ViewStuck(follower.name, failure.failing_at, failure.error_type)
                return
            failure = self.views.status.failure_of(follower.name)
            if failure is not None and failure.failing_at <= needed and failure.seen >= needed:
                # Its holder tried with our event in the log and still cannot go on.
                raise ViewStuck(follower.name, failure.failing_at, failure.error_type)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ViewStuck(follower.name, follower.position() + 1, "no process took it in")
            with suppress(TimeoutError):  # then look at the claim and the status again
                follower.view.wait(follower.reader.name, needed, timeout=min(1.0, remaining))


@contextmanager
def live_views(
    settings: Settings, database_url: str, names: list[str] | None = None
) -> Iterator[LiveViews]:
    """The views for a command (or those named); nothing is advanced until it calls `catch_up`."""
    views = Views(settings, database_url, names)
    try:
        yield LiveViews(views)
    finally:
        views.close()
