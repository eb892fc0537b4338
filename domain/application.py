"""The base of Picasse's applications: one shared event log, library errors turned into ours."""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterable
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application

from picasse.domain.aggregates import Aggregate
from picasse.domain.clock import Clock, stamp_events_with
from picasse.domain.errors import NotFound

# Every part of the domain records into one log, so the relay and the projections
# follow a single sequence of notifications.
LOG_NAME = "Picasse"

A = TypeVar("A", bound=Aggregate)


def projected(aggregate: Any, events: Iterable[Any]) -> Any:
    """An aggregate from its events: the library's `project_aggregate` without its
    `assert isinstance(event, CanMutateProtocol)`, a check against a runtime Protocol that
    takes 18-23 µs an event on Python 3.11 (every aggregate read replays its events: a tenth
    of a send's CPU in the API, more in the worker). Our events are the library's own
    classes, whose `mutate` it calls all the same."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class PicasseApplication(Application[UUID]):
    """`sharing`: another application of this process whose store (pool, key store and
    key listener) this one uses too, instead of opening its own: a small part of the
    domain then costs no database connections of its own; and its clock, unless given one.

    `clock`: the process's one clock, given to every application that decides by time (it
    keeps it as `self.clock`). It also stamps the events this process triggers
    (`domain/clock.py` `stamp_events_with`); an application that triggers none (a reader of
    the log) needs none."""

    name = LOG_NAME

    def __init__(
        self,
        env: Any = None,
        *,
        sharing: PicasseApplication | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._sharing = sharing
        stamping = clock if clock is not None else getattr(sharing, "clock", None)
        if stamping is not None:  # else a reader, or a part using its sharer's clock
            stamp_events_with(stamping)
        super().__init__(env if sharing is None else sharing.env)

    def construct_factory(self, env: Any) -> Any:
        return super().construct_factory(env) if self._sharing is None else self._sharing.factory

    def construct_mapper(self) -> Any:
        return super().construct_mapper() if self._sharing is None else self._sharing.mapper

    def construct_recorder(self) -> Any:
        return super().construct_recorder() if self._sharing is None else self._sharing.recorder

    def construct_event_store(self) -> Any:
        return super().construct_event_store() if self._sharing is None else self._sharing.events

    def close(self) -> None:
        if self._sharing is None:  # what is shared is closed by its owner
            super().close()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = LOG_NAME

    def _get(self, aggregate_id: UUID, kind: type[A], what: str) -> A:
        try:
            aggregate: object = self.repository.get(aggregate_id, projector_func=projected)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate

    def _get_many(self, aggregate_ids: Iterable[UUID], kind: type[A]) -> dict[UUID, A]:
        """Those of these aggregates that exist and are of `kind`, by id: read in one query
        where the event store can (ours), else one by one."""
        wanted = list(dict.fromkeys(aggregate_ids))
        get_many = getattr(self.events, "get_many", None)
        if get_many is None:  # the library's own store (the unit tests' in-memory one)
            found: dict[UUID, A] = {}
            for ident in wanted:
                with contextlib.suppress(NotFound):
                    found[ident] = self._get(ident, kind, kind.__name__)
            return found
        aggregates: dict[UUID, object] = {
            ident: projected(None, events) for ident, events in get_many(wanted).items()
        }
        return {ident: a for ident, a in aggregates.items() if isinstance(a, kind)}


class Saving(Protocol):
    """How a command's aggregates are saved: the application itself, or (in the API) a
    group commit that writes concurrent saves in one transaction, each returning after
    the commit that holds it."""

    def save(self, *aggregates: Any) -> Any: ...


class Remembered(Protocol):
    """What a process may keep between calls, forgotten whenever what it was read from may
    have changed (in adapters: a cache kept true by the database's notices). `generation`
    is read before the read; `keep` drops the value if anything was forgotten since."""

    generation: int

    def get(self, key: Hashable) -> Any | None: ...

    def keep(self, key: Hashable, value: Any, generation: int) -> None: ...


class PasswordHasher(Protocol):
    """Hashes passwords so they are never stored readable (R2); argon2id in adapters."""

    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class Pseudonyms(Protocol):
    """Turns text (a login, a client's idempotency key) into a stable id that reveals
    nothing without a secret key, so such text never appears in the log as an id."""

    def pseudonym(self, purpose: str, text: str) -> UUID: ...
