"""Erasure: the recorded act of destroying a data subject's (or a whole customer's) key.

The event says what was erased and why; destroying the key is what makes it so. Views
purge their plaintext when they see the event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Protocol
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import event

from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication, projected
from picasse.domain.billing import kept_under_legal_obligation
from picasse.domain.clock import Clock
from picasse.domain.customers import Customer
from picasse.domain.errors import InvalidInput
from picasse.domain.personal import Trigger, personal_data_kind
from picasse.domain.termination import (
    DestroyedEpoch,
    Statement,
    Step,
    Termination,
    TerminationProgress,
    ViewCheck,
    statement_digest,
    termination_id,
)
from picasse.domain.values import single_line


class Erasure(Aggregate):
    """One erasure: of a tenant's keys (subject None), or of one subject's key."""

    class Recorded(Aggregate.Created):
        tenant_id: UUID
        subject: str | None
        reason: str
        key_ids: list[UUID]

    @event(Recorded)
    def __init__(
        self, tenant_id: UUID, subject: str | None, reason: str, key_ids: list[UUID]
    ) -> None:
        self.tenant_id = tenant_id
        self.subject = subject
        self.reason = reason
        self.key_ids = key_ids


class Export(Aggregate):
    """A customer's personal data was handed out (portability, or on termination)."""

    class Made(Aggregate.Created):
        tenant_id: UUID
        purpose: str
        counts: dict[str, int]
        by: str

    @event(Made)
    def __init__(self, tenant_id: UUID, purpose: str, counts: dict[str, int], by: str) -> None:
        self.tenant_id = tenant_id
        self.purpose = purpose
        self.counts = counts


class Disclosure(Aggregate):
    """Traffic data handed to a competent authority (R9): who, when, to whom, on what basis."""

    class Recorded(Aggregate.Created):
        tenant_id: UUID
        authority: str
        legal_basis: str
        period_from: date
        period_to: date
        records: int
        by: str

    @event(Recorded)
    def __init__(
        self,
        tenant_id: UUID,
        authority: str,
        legal_basis: str,
        period_from: date,
        period_to: date,
        records: int,
        by: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.authority = authority


class RetentionRun(Aggregate):
    """One run of the retention policy: which months' keys were destroyed (ids only)."""

    class Ran(Aggregate.Created):
        cutoff_month: str
        dry_run: bool
        erased: list[str]
        reason: str

    @event(Ran)
    def __init__(self, cutoff_month: str, dry_run: bool, erased: list[str], reason: str) -> None:
        self.erased = erased


class StatementIssued(Aggregate):
    """A signed written statement of erasure was given to the customer (R10)."""

    class Issued(Aggregate.Created):
        tenant_id: UUID
        sha256: str
        unreadable_events: int

    @event(Issued)
    def __init__(self, tenant_id: UUID, sha256: str, unreadable_events: int) -> None:
        self.tenant_id = tenant_id
        self.sha256 = sha256


class KeyShredder(Protocol):
    """Destroys keys (the erasure itself); returns the ids of the keys destroyed."""

    def destroy_subject_key(self, tenant_id: UUID, subject: str) -> list[UUID]: ...

    def destroy_tenant_keys(self, tenant_id: UUID) -> list[UUID]: ...

    def live_subjects(self, tenant_id: UUID, prefix: str) -> list[str]:
        """The names of the tenant's live subject keys that start with `prefix`."""
        ...

    def destroyed_key_ids(self, tenant_id: UUID) -> list[UUID]:
        """Every key of this tenant destroyed so far, by any erasure."""
        ...

    def sealed_event_count(self, tenant_id: UUID) -> int:
        """How many stored events hold personal data sealed under this tenant's keys."""
        ...

    def destroyed_epoch(self, tenant_id: UUID) -> DestroyedEpoch | None:
        """The key-encryption-key epoch that wrapped this tenant's key, once destroyed
        itself (so no backup's copy of the tenant key opens); None if it predates epochs."""
        ...


class ErasureDone(msgspec.Struct, frozen=True):
    """What an erasure destroyed, and the notification id of its record (for views to wait on)."""

    key_ids: list[UUID]
    notification_id: int


class Privacy(PicasseApplication):
    """Erasure of data subjects and customers (R10), recorded so that views purge and
    auditors see it; the record holds ids, never the personal data itself."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        shredder: Callable[[PicasseApplication], KeyShredder],
        sharing: PicasseApplication | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.shredder = shredder(self)

    def _saved(self, *aggregates: Aggregate) -> int:
        """Saves in one transaction; the notification id of the last event written."""
        recordings = self.save(*aggregates)
        return max(r.notification.id for r in recordings)

    def erase_subject(
        self, tenant_id: UUID, subject: str, reason: str, *, trigger: Trigger
    ) -> ErasureDone:
        """Destroys one subject's key, if the registry says `trigger` erases its kind."""
        try:
            kind = personal_data_kind(subject)
        except ValueError:
            what = subject.partition("/")[0]
            raise InvalidInput(
                f"subject: unknown kind of personal data {what!r}", field="subject"
            ) from None
        if trigger not in kind.erased_on or trigger is Trigger.TERMINATION:
            raise InvalidInput(
                f"subject: {kind.kind} data is not erased one subject at a time on {trigger}",
                field="subject",
            )
        key_ids = self.shredder.destroy_subject_key(tenant_id, subject)
        erasure = Erasure(tenant_id=tenant_id, subject=subject, reason=reason, key_ids=key_ids)
        return ErasureDone(key_ids, self._saved(erasure))

    def erase_tenant(self, tenant_id: UUID, reason: str) -> ErasureDone:
        key_ids = self.shredder.destroy_tenant_keys(tenant_id)
        erasure = Erasure(tenant_id=tenant_id, subject=None, reason=reason, key_ids=key_ids)
        return ErasureDone(key_ids, self._saved(erasure))

    def record_export(self, tenant_id: UUID, purpose: str, counts: dict[str, int], by: str) -> int:
        return self._saved(Export(tenant_id=tenant_id, purpose=purpose, counts=counts, by=by))

    # Termination (R10): the steps of the process, each recorded as it is done

    def termination(self, customer_id: UUID) -> TerminationProgress | None:
        found = self._termination(customer_id)
        return None if found is None else TerminationProgress.of(found)

    def _termination(self, customer_id: UUID) -> Termination | None:
        try:
            found: object = self.repository.get(
                termination_id(customer_id), projector_func=projected
            )
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, Termination) else None

    def _started(self, customer_id: UUID) -> Termination:
        found = self._termination(customer_id)
        if found is None:
            raise InvalidInput(f"the termination of customer {customer_id} has not started")
        return found

    def start_termination(self, customer_id: UUID, *, export: bool, by: str) -> TerminationProgress:
        """Starts the termination of a customer, or returns the one already under way: a
        termination is resumed, never begun twice."""
        customer = self._get(customer_id, Customer, "customer")
        found = self._termination(customer_id)
        if found is None:
            # A customer terminated before terminations were recorded has no data to export.
            found = Termination(customer_id, export and not customer.terminated, by)
            self._saved(found)
        return TerminationProgress.of(found)

    def may_write_export(self, customer_id: UUID) -> None:
        """Raises unless the termination's export can be written now (keys still live)."""
        self._started(customer_id).may_write_export()

    def record_termination_export(
        self, customer_id: UUID, sha256: str, counts: dict[str, int], by: str
    ) -> int:
        termination = self._started(customer_id)
        termination.record_export(sha256)
        export = Export(tenant_id=customer_id, purpose="termination", counts=counts, by=by)
        return self._saved(termination, export)

    def terminate_subscription(self, customer_id: UUID) -> int:
        termination = self._started(customer_id)
        termination.expect(Step.SUBSCRIPTION)
        customer = self._get(customer_id, Customer, "customer")
        if not customer.terminated:
            customer.terminate()
        termination.record_subscription_terminated(customer.modified_on)
        return self._saved(customer, termination)

    def destroy_customer_keys(self, customer_id: UUID, reason: str) -> int:
        """The erasure of a terminated customer: destroys every key it has; safe to repeat
        after an interruption (keys destroyed before are found, none is destroyed twice)."""
        termination = self._started(customer_id)
        termination.expect(Step.KEYS)
        destroyed_now = self.shredder.destroy_tenant_keys(customer_id)
        key_ids = self.shredder.destroyed_key_ids(customer_id)
        erasure = Erasure(tenant_id=customer_id, subject=None, reason=reason, key_ids=destroyed_now)
        termination.record_keys_destroyed(
            key_ids, self.shredder.sealed_event_count(customer_id), erasure.created_on
        )
        epoch = self.shredder.destroyed_epoch(customer_id)
        if epoch is not None:
            termination.record_epoch_destroyed(epoch)
        # Invoices are sealed under the fiscal keys, which the tenant key does not wrap:
        # they stay, and the statement names them and the day they go.
        termination.record_kept(kept_under_legal_obligation(self, customer_id))
        return self._saved(termination, erasure)

    def record_views_caught_up(self, customer_id: UUID, views: list[ViewCheck]) -> int:
        termination = self._started(customer_id)
        termination.record_views_caught_up(views)
        return self._saved(termination)

    def draft_statement(self, customer_id: UUID, signing_key: str) -> Statement:
        return self._started(customer_id).draft_statement(signing_key)

    def record_statement(self, customer_id: UUID, statement: Statement, signature: str) -> int:
        """Stores the signed statement, once; the ledger shows it was given (R10)."""
        termination = self._started(customer_id)
        termination.record_statement(statement, signature)
        issued = StatementIssued(
            tenant_id=customer_id,
            sha256=statement_digest(statement),
            unreadable_events=statement.unreadable_events,
        )
        return self._saved(termination, issued)

    def record_disclosure(
        self,
        tenant_id: UUID,
        *,
        authority: str,
        legal_basis: str,
        period_from: date,
        period_to: date,
        records: int,
        by: str,
    ) -> None:
        authority = " ".join(single_line(authority, "authority").split())
        legal_basis = " ".join(single_line(legal_basis, "legal_basis").split())
        if not authority:
            raise InvalidInput("authority: name the competent authority", field="authority")
        if not legal_basis:
            raise InvalidInput(
                "legal basis: state the legal basis of the request", field="legal_basis"
            )
        if period_to < period_from:
            raise InvalidInput("period: 'to' lies before 'from'", field="to")
        self.save(
            Disclosure(
                tenant_id=tenant_id,
                authority=authority,
                legal_basis=legal_basis,
                period_from=period_from,
                period_to=period_to,
                records=records,
                by=by,
            )
        )

    def record_retention_run(
        self, cutoff_month: str, dry_run: bool, erased: list[str], reason: str
    ) -> None:
        self.save(
            RetentionRun(cutoff_month=cutoff_month, dry_run=dry_run, erased=erased, reason=reason)
        )
