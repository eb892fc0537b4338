"""Cases: a customer's complaints and fault reports, and support's handling of them (R3).

A case moves open → in_progress → resolved → closed, one step at a time, and every step
is an event. The words written in a case (the description and every comment) are sealed
under the customer's `case` key: kept for the subscription, shredded on termination.
A customer's cases are listed through one small index aggregate per customer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID, uuid4, uuid5

import msgspec
from eventsourcing.domain import event
from eventsourcing.persistence import IntegrityError

from picasse.domain.access import Viewer
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication
from picasse.domain.clock import Clock
from picasse.domain.conferences import Conference
from picasse.domain.customers import Customer
from picasse.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from picasse.domain.messages import Message
from picasse.domain.personal import Erased, Personal
from picasse.domain.values import multi_line

CASES = UUID("0c5e9f3a-7b1d-4c42-8e6a-5d2f1b9c7a30")
MAX_TEXT = 10_000
CONFLICT_RETRIES = 10


class CaseCategory(StrEnum):
    COMPLAINT = "complaint"
    FAULT_REPORT = "fault_report"


class CaseState(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


# The one way through: each state has one next state.
NEXT_STATE: dict[CaseState, CaseState] = {
    CaseState.OPEN: CaseState.IN_PROGRESS,
    CaseState.IN_PROGRESS: CaseState.RESOLVED,
    CaseState.RESOLVED: CaseState.CLOSED,
}


class CaseStepRefused(Conflict):
    code = "case-step-refused"


class CaseClosed(Conflict):
    code = "case-closed"


class Comment(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    by: UUID | None  # the user who wrote it
    from_support: bool
    text: Annotated[str, Personal("case", of="tenant_id")]


class Case(Aggregate):
    """One complaint or fault report of one customer."""

    @event("Filed")
    def __init__(
        self,
        id: UUID,
        tenant_id: UUID,
        category: CaseCategory,
        description: Annotated[str, Personal("case", of="tenant_id")],
        message_id: UUID | None,
        conference_id: UUID | None,
        filed_by: UUID | None,
        filed_at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.category = category
        self.description = description
        self.message_id = message_id
        self.conference_id = conference_id
        self.filed_by = filed_by
        self.filed_at = filed_at
        self.state = CaseState.OPEN
        self.comments: list[Comment] = []

    def comment(self, comment: Comment) -> None:
        if self.state is CaseState.CLOSED:
            raise CaseClosed(f"case {self.id} is closed")
        self._commented(self.tenant_id, comment)

    @event("Commented")
    def _commented(self, tenant_id: UUID, comment: Comment) -> None:
        self.comments.append(comment)

    def move_to(self, state: CaseState, by: UUID | None, at: datetime) -> None:
        if NEXT_STATE.get(self.state) is not state:
            expected = NEXT_STATE.get(self.state)
            raise CaseStepRefused(
                f"case {self.id} is {self.state.value}: it can move to"
                f" {expected.value if expected else 'nothing'}, not {state.value}",
                field="state",
            )
        self._moved(self.state, state, by, at)

    @event("StateChanged")
    def _moved(
        self, from_state: CaseState, to_state: CaseState, by: UUID | None, at: datetime
    ) -> None:
        self.state = to_state


class CaseIndex(Aggregate):
    """The ids of one customer's cases, so they can be listed without reading the log."""

    @event("Opened")
    def __init__(self, id: UUID, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.cases: list[UUID] = []

    @event("Added")
    def add(self, case_id: UUID) -> None:
        self.cases.append(case_id)


def case_index_id(customer_id: UUID) -> UUID:
    return uuid5(CASES, f"index/{customer_id}")


CASE_QUEUE_ID = uuid5(CASES, "queue")


class CaseQueue(Aggregate):
    """Every customer with cases, for support's queue (ids only)."""

    @event("Started")
    def __init__(self, id: UUID) -> None:
        self.customers: list[UUID] = []

    @event("CustomerAdded")
    def add(self, customer_id: UUID) -> None:
        self.customers.append(customer_id)


class CommentDetails(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    from_support: bool
    text: str | None  # None once erased


class CaseDetails(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    customer_id: UUID
    category: CaseCategory
    state: CaseState
    description: str | None  # None once erased
    message_id: UUID | None
    conference_id: UUID | None
    filed_at: datetime
    comments: list[CommentDetails]


def _text(value: object) -> str | None:
    return None if isinstance(value, Erased) else str(value)


def _details(case: Case) -> CaseDetails:
    return CaseDetails(
        id=case.id,
        customer_id=case.tenant_id,
        category=case.category,
        state=case.state,
        description=_text(case.description),
        message_id=case.message_id,
        conference_id=case.conference_id,
        filed_at=case.filed_at,
        comments=[
            CommentDetails(at=c.at, from_support=c.from_support, text=_text(c.text))
            for c in case.comments
        ],
    )


def _words(text: str, field: str) -> str:
    text = multi_line(text, field).strip()
    if not text or len(text) > MAX_TEXT:
        raise InvalidInput(f"{field}: 1 to {MAX_TEXT} characters", field=field)
    return text


class Cases(PicasseApplication):
    """Filing, commenting on, moving and reading cases; every question asks the Viewer."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        sharing: PicasseApplication | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.clock = clock

    def file(
        self,
        customer_id: UUID,
        category: str,
        description: str,
        *,
        by: Viewer,
        message_id: UUID | None = None,
        conference_id: UUID | None = None,
    ) -> CaseDetails:
        if not by.may_file_cases_for(customer_id):
            raise Forbidden("only the customer's own users file its cases")
        try:
            kind = CaseCategory(category)
        except ValueError:
            raise InvalidInput("category: complaint or fault_report", field="category") from None
        text = _words(description, "description")
        self._get(customer_id, Customer, "customer")._guard_not_terminated()
        if message_id is not None:
            self._related_message(customer_id, message_id)
        if conference_id is not None:
            self._related_conference(customer_id, conference_id)
        ident, now = uuid4(), self.clock.now()

        def write() -> Case:
            case = Case(
                id=ident,
                tenant_id=customer_id,
                category=kind,
                description=text,
                message_id=message_id,
                conference_id=conference_id,
                filed_by=by.user_id,
                filed_at=now,
            )
            self._filed(customer_id, case)
            return case

        return _details(self._retrying(write))

    def _related_message(self, customer_id: UUID, message_id: UUID) -> None:
        try:
            message = self._get(message_id, Message, "message")
        except NotFound:
            raise InvalidInput("message_id: no such message", field="message_id") from None
        if message.tenant_id != customer_id:
            raise InvalidInput("message_id: no such message", field="message_id")

    def _related_conference(self, customer_id: UUID, conference_id: UUID) -> None:
        try:
            conference = self._get(conference_id, Conference, "conference")
        except NotFound:
            raise InvalidInput("conference_id: no such conference", field="conference_id") from None
        if conference.tenant_id != customer_id:
            raise InvalidInput("conference_id: no such conference", field="conference_id")

    def _filed(self, customer_id: UUID, case: Case) -> None:
        try:
            index = self._get(case_index_id(customer_id), CaseIndex, "cases")
        except NotFound:
            index = CaseIndex(id=case_index_id(customer_id), tenant_id=customer_id)
        pending: list[Aggregate] = [case, index]
        if not index.cases:
            try:
                queue = self._get(CASE_QUEUE_ID, CaseQueue, "case queue")
            except NotFound:
                queue = CaseQueue(id=CASE_QUEUE_ID)
            if customer_id not in queue.customers:
                queue.add(customer_id)
                pending.append(queue)
        index.add(case.id)
        self.save(*pending)

    def comment(self, case_id: UUID, text: str, *, by: Viewer) -> CaseDetails:
        words = _words(text, "text")

        def write() -> Case:
            case = self._visible(case_id, by)
            support = by.may_handle_cases()
            if not support and not by.may_file_cases_for(case.tenant_id):
                raise Forbidden("only support and the customer's users comment on its cases")
            case.comment(
                Comment(at=self.clock.now(), by=by.user_id, from_support=support, text=words)
            )
            self.save(case)
            return case

        return _details(self._retrying(write))

    def move(self, case_id: UUID, state: str, *, by: Viewer) -> CaseDetails:
        try:
            target = CaseState(state)
        except ValueError:
            raise InvalidInput(
                "state: open, in_progress, resolved or closed", field="state"
            ) from None

        def write() -> Case:
            case = self._visible(case_id, by)
            if not by.may_handle_cases():
                raise Forbidden("only support moves a case along")
            case.move_to(target, by.user_id, self.clock.now())
            self.save(case)
            return case

        return _details(self._retrying(write))

    def case(self, case_id: UUID, *, by: Viewer) -> CaseDetails:
        return _details(self._visible(case_id, by))

    def cases(self, customer_id: UUID, *, by: Viewer) -> list[CaseDetails]:
        if not by.sees_cases_of(customer_id):
            raise NotFound(f"customer {customer_id} not found")
        try:
            index = self._get(case_index_id(customer_id), CaseIndex, "cases")
        except NotFound:
            return []
        found = [_details(self._get(i, Case, "case")) for i in index.cases]
        return sorted(found, key=lambda c: c.filed_at, reverse=True)

    def queue(self, *, by: Viewer) -> list[CaseDetails]:
        """Support's queue: every case not closed, oldest first."""
        if not by.may_handle_cases():
            raise Forbidden("the case queue is support's")
        try:
            queue = self._get(CASE_QUEUE_ID, CaseQueue, "case queue")
        except NotFound:
            return []
        found = [
            c
            for customer in queue.customers
            for c in self.cases(customer, by=by)
            if c.state is not CaseState.CLOSED
        ]
        return sorted(found, key=lambda c: c.filed_at)

    def _visible(self, case_id: UUID, by: Viewer) -> Case:
        case = self._get(case_id, Case, "case")
        if not by.sees_cases_of(case.tenant_id):
            raise NotFound(f"case {case_id} not found")
        return case

    def _retrying(self, write: Callable[[], Case]) -> Case:
        for tries_left in range(CONFLICT_RETRIES - 1, -1, -1):
            try:
                return write()
            except IntegrityError:
                if tries_left == 0:
                    raise
        raise AssertionError("unreachable")


__all__ = ["Case", "CaseCategory", "CaseState", "Cases"]
