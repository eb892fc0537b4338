"""The privacy ledger: every export, termination, erasure, retention run and disclosure, and
every change Picasse staff made to a customer's users, without personal data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from picasse.domain.customers import Customer
from picasse.domain.privacy import Disclosure, Erasure, Export, RetentionRun, StatementIssued
from picasse.domain.users import PLATFORM_TENANT, User
from picasse.domain.values import PLATFORM_ROLES

STAFF = frozenset({"operator", *(role.value for role in PLATFORM_ROLES)})  # `by` of staff


def _by_staff(e: Any) -> str | None:
    """Who among Picasse staff changed a customer's user (None: not staff, or not a
    customer's user). Events written before `by` existed tell no actor and are left out."""
    tenant = getattr(e, "tenant_id", None)
    by = getattr(e, "by", "")
    if tenant is None or tenant == PLATFORM_TENANT or by not in STAFF:
        return None
    return "Picasse staff (CLI)" if by == "operator" else f"Picasse staff ({by})"


class LedgerEntry(msgspec.Struct, frozen=True):
    at: datetime
    kind: str  # export, termination, erasure, retention, disclosure, statement, users
    customer_id: UUID | None
    summary: str  # ids, counts, reasons: never personal data
    position: int = 0  # its place in the log (as read back): where a page of entries ends


class LedgerView(TrackingRecorder, ABC):
    @abstractmethod
    def record(self, entry: LedgerEntry, tracking: Tracking) -> None: ...

    @abstractmethod
    def entries(
        self, *, customer_id: UUID | None = None, limit: int = 500, before: int | None = None
    ) -> list[LedgerEntry]:
        """Newest first; with `before` (the previous page's last position) those older."""


class LedgerProjection(Projection[LedgerView]):
    name = "ledger_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Export.Made,
            Customer.Terminated,
            Erasure.Recorded,
            RetentionRun.Ran,
            Disclosure.Recorded,
            StatementIssued.Issued,
            User.Added,
            User.PasswordLinkIssued,
            User.Disabled,
            User.Enabled,
            User.RoleChanged,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Export.Made, tracking: Tracking) -> None:
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(e.counts.items()))
        entry = LedgerEntry(
            e.timestamp, "export", e.tenant_id, f"{e.purpose} export by {e.by}: {counts}"
        )
        self.view.record(entry, tracking)

    @process_event.register
    def _(self, e: Customer.Terminated, tracking: Tracking) -> None:
        self.view.record(
            LedgerEntry(e.timestamp, "termination", e.originator_id, "subscription terminated"),
            tracking,
        )

    @process_event.register
    def _(self, e: Erasure.Recorded, tracking: Tracking) -> None:
        what = "all keys of the customer" if e.subject is None else e.subject
        summary = f"{what}: {len(e.key_ids)} key(s) destroyed ({e.reason})"
        self.view.record(LedgerEntry(e.timestamp, "erasure", e.tenant_id, summary), tracking)

    @process_event.register
    def _(self, e: RetentionRun.Ran, tracking: Tracking) -> None:
        verb = "would erase" if e.dry_run else "erased"
        summary = f"months up to {e.cutoff_month}: {verb} {len(e.erased)} month key(s)"
        self.view.record(LedgerEntry(e.timestamp, "retention", None, summary), tracking)

    @process_event.register
    def _(self, e: Disclosure.Recorded, tracking: Tracking) -> None:
        summary = (
            f"{e.records} traffic record(s) {e.period_from} to {e.period_to} disclosed to {e.authority}"
            f" by {e.by}; legal basis: {e.legal_basis}"
        )
        self.view.record(LedgerEntry(e.timestamp, "disclosure", e.tenant_id, summary), tracking)

    @process_event.register
    def _(self, e: StatementIssued.Issued, tracking: Tracking) -> None:
        summary = f"statement of erasure issued (sha256 {e.sha256[:16]}…), {e.unreadable_events} events unreadable"
        self.view.record(LedgerEntry(e.timestamp, "statement", e.tenant_id, summary), tracking)

    @process_event.register
    def _(self, e: User.Added, tracking: Tracking) -> None:
        self._staff_change(e, f"user {e.originator_id} added as {e.role}", tracking)

    @process_event.register
    def _(self, e: User.PasswordLinkIssued, tracking: Tracking) -> None:
        what = f"set-password link for user {e.originator_id} sent to the user"
        self._staff_change(e, what, tracking)

    @process_event.register
    def _(self, e: User.Disabled, tracking: Tracking) -> None:
        self._staff_change(e, f"user {e.originator_id} disabled", tracking)

    @process_event.register
    def _(self, e: User.Enabled, tracking: Tracking) -> None:
        self._staff_change(e, f"user {e.originator_id} enabled", tracking)

    @process_event.register
    def _(self, e: User.RoleChanged, tracking: Tracking) -> None:
        self._staff_change(e, f"user {e.originator_id} made {e.role}", tracking)

    def _staff_change(self, e: Any, what: str, tracking: Tracking) -> None:
        by = _by_staff(e)
        if by is None:
            self.view.insert_tracking(tracking)
            return
        entry = LedgerEntry(e.timestamp, "users", e.tenant_id, f"{what} by {by}")
        self.view.record(entry, tracking)
