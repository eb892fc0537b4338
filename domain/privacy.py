"""Erasure: the recorded act of destroying a data subject's (or a whole customer's) key.

The event says what was erased and why; destroying the key is what makes it so. Views
purge their plaintext when they see the event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from picasse.domain.application import PicasseApplication
from picasse.domain.errors import InvalidInput
from picasse.domain.personal import PERSONAL_DATA_KINDS
from picasse.domain.values import single_line


class Erasure(Aggregate):
    """One erasure: of a tenant's keys (subject None), or of one subject's key."""

    @event("Recorded")
    def __init__(
        self, tenant_id: UUID, subject: str | None, reason: str, key_ids: list[UUID]
    ) -> None:
        self.tenant_id = tenant_id
        self.subject = subject
        self.reason = reason
        self.key_ids = key_ids


class Export(Aggregate):
    """A customer's personal data was handed out (portability, or on termination)."""

    @event("Made")
    def __init__(self, tenant_id: UUID, purpose: str, counts: dict[str, int], by: str) -> None:
        self.tenant_id = tenant_id
        self.purpose = purpose
        self.counts = counts


class Disclosure(Aggregate):
    """Traffic data handed to a competent authority (R9): who, when, to whom, on what basis."""

    @event("Recorded")
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

    @event("Ran")
    def __init__(self, cutoff_month: str, dry_run: bool, erased: list[str], reason: str) -> None:
        self.erased = erased


class StatementIssued(Aggregate):
    """A signed written statement of erasure was given to the customer (R10)."""

    @event("Issued")
    def __init__(self, tenant_id: UUID, sha256: str, unreadable_events: int) -> None:
        self.tenant_id = tenant_id
        self.sha256 = sha256


class KeyShredder(Protocol):
    """Destroys keys (the erasure itself); returns the ids of the keys destroyed."""

    def destroy_subject_key(self, tenant_id: UUID, subject: str) -> list[UUID]: ...

    def destroy_tenant_keys(self, tenant_id: UUID) -> list[UUID]: ...


class Privacy(PicasseApplication):
    """Erasure of data subjects and customers (R10), recorded so that views purge and
    auditors see it; the record holds ids, never the personal data itself."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        shredder: Callable[[PicasseApplication], KeyShredder],
    ) -> None:
        super().__init__(env)
        self.shredder = shredder(self)

    def erase_subject(self, tenant_id: UUID, subject: str, reason: str) -> list[UUID]:
        kind = subject.partition("/")[0]
        if kind not in PERSONAL_DATA_KINDS:
            raise InvalidInput(f"subject: unknown kind of personal data {kind!r}", field="subject")
        key_ids = self.shredder.destroy_subject_key(tenant_id, subject)
        self.save(Erasure(tenant_id=tenant_id, subject=subject, reason=reason, key_ids=key_ids))
        return key_ids

    def erase_tenant(self, tenant_id: UUID, reason: str) -> list[UUID]:
        key_ids = self.shredder.destroy_tenant_keys(tenant_id)
        self.save(Erasure(tenant_id=tenant_id, subject=None, reason=reason, key_ids=key_ids))
        return key_ids

    def record_export(self, tenant_id: UUID, purpose: str, counts: dict[str, int], by: str) -> None:
        self.save(Export(tenant_id=tenant_id, purpose=purpose, counts=counts, by=by))

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

    def record_statement(self, tenant_id: UUID, sha256: str, unreadable_events: int) -> None:
        self.save(
            StatementIssued(tenant_id=tenant_id, sha256=sha256, unreadable_events=unreadable_events)
        )
