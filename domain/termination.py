"""Termination (R10): export, end of subscription, erasure, statement — a process that resumes.

Each step is an event of one `Termination` per customer, so a termination interrupted at
any point (a crash, a kill) carries on at its next step when run again, and ends with
exactly one signed statement of erasure, stored in the log (ids, counts, digests and the
signature: no personal data) so that it can be handed out again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import event

from picasse.domain.aggregates import Aggregate
from picasse.domain.errors import Conflict

# Statements of erasure: the document that is signed, and what it says.


class KeptRecord(msgspec.Struct, frozen=True):
    kind: str
    reason: str
    until: str | None  # the day they will be destroyed
    invoices: list[UUID] = msgspec.field(default_factory=list)  # the records kept, by id
    key: str | None = None  # the key they stay sealed under (within the fiscal tenant)


class ViewCheck(msgspec.Struct, frozen=True):
    kind: str
    plaintext_values: int


class DestroyedEpoch(msgspec.Struct, frozen=True):
    """A key-encryption-key epoch whose key file was destroyed: every backup's copy of the
    tenant keys it wrapped (and so of the keys under them) opens no more."""

    epoch_id: UUID
    destroyed_no_later_than: datetime


class Statement(msgspec.Struct, frozen=True, kw_only=True):
    """What was erased, when, how; what is kept and why. Holds no personal data."""

    statement: str = "written statement of erasure"
    customer_id: UUID
    terminated_at: datetime
    erased_at: datetime
    method: str = (
        "crypto-shredding: the customer's tenant key and every data subject key under it were"
        " destroyed; personal data sealed under them (AES-256-GCM) can no longer be decrypted"
    )
    destroyed_key_ids: list[UUID]
    unreadable_events: int
    views: list[ViewCheck]
    views_hold_personal_data: bool
    kept_under_legal_obligation: list[KeptRecord]
    export_sha256: str | None
    issued_by: str = "Picasse"
    signing_key: str  # the key id; verification uses the platform's own key
    # The epoch that wrapped the customer's tenant key, destroyed too (so backups open
    # nothing of it). None in statements from before epochs, which keep verifying.
    key_epoch: DestroyedEpoch | None = None


def canonical(statement: Statement) -> bytes:
    """The exact bytes that are signed: compact JSON with sorted keys. A statement without
    a key epoch is signed without the field, as statements were before epochs."""
    document = msgspec.to_builtins(statement, order="sorted")
    if document.get("key_epoch") is None:
        document.pop("key_epoch", None)
    return msgspec.json.encode(document)


def statement_digest(statement: Statement) -> str:
    return hashlib.sha256(canonical(statement)).hexdigest()


def kept_records(kept: list[KeptRecord] | None) -> list[KeptRecord]:
    """Records the law obliges us to keep after termination: the customer's invoices (7
    years, Dutch tax law), sealed under its fiscal keys, as recorded with the keys' step."""
    return list(kept or [])


# The process


class Step(StrEnum):
    """The steps of a termination, in their order."""

    EXPORT = "export"  # the customer's data written to the export file (unless not wanted)
    SUBSCRIPTION = "subscription"  # the customer's subscription terminated
    KEYS = "keys"  # every key of the customer destroyed: the erasure itself
    VIEWS = "views"  # every view has taken the erasure in and holds no plaintext of it
    STATEMENT = "statement"  # the statement of erasure signed and stored


class ExportGone(Conflict):
    """The export was asked for again after the keys that could open the data are gone."""

    code = "export-gone"


class StepOutOfOrder(Conflict):
    code = "termination-step-out-of-order"


def termination_id(customer_id: UUID) -> UUID:
    """One termination per customer: its id follows from the customer's."""
    return uuid5(NAMESPACE_URL, f"picasse:termination/{customer_id}")


class Termination(Aggregate):
    """The termination of one customer's subscription, step by step (R10)."""

    @staticmethod
    def create_id(customer_id: UUID, export: bool, by: str) -> UUID:
        return termination_id(customer_id)

    @event("Started")
    def __init__(self, customer_id: UUID, export: bool, by: str) -> None:
        self.customer_id = customer_id
        self.export = export
        self.by = by
        self.done: list[Step] = []
        self.export_sha256: str | None = None
        self.terminated_at: datetime | None = None
        self.erased_at: datetime | None = None
        self.destroyed_key_ids: list[UUID] = []
        self.key_epoch: DestroyedEpoch | None = None
        self.unreadable_events = 0
        self.views: list[ViewCheck] = []
        self.statement: Statement | None = None
        self.signature: str | None = None
        self.kept: list[KeptRecord] = []

    @property
    def steps(self) -> list[Step]:
        return [step for step in Step if step is not Step.EXPORT or self.export]

    @property
    def next_step(self) -> Step | None:
        """The step to take now; None once the statement is signed."""
        return next((step for step in self.steps if step not in self.done), None)

    @property
    def keys_destroyed(self) -> bool:
        return Step.KEYS in self.done

    @property
    def finished(self) -> bool:
        return self.next_step is None

    def may_write_export(self) -> None:
        """An export can be written (again) as long as the keys that open the data live."""
        if not self.export:
            raise StepOutOfOrder(f"the termination of customer {self.customer_id} has no export")
        if self.keys_destroyed:
            raise ExportGone(
                f"the export of customer {self.customer_id} cannot be made again: its keys"
                " were destroyed, so its personal data can no longer be read"
            )

    def record_export(self, sha256: str) -> None:
        self.may_write_export()
        self._export_written(sha256)

    @event("ExportWritten")
    def _export_written(self, sha256: str) -> None:
        self.export_sha256 = sha256
        if Step.EXPORT not in self.done:
            self.done.append(Step.EXPORT)

    def record_subscription_terminated(self, terminated_at: datetime) -> None:
        self.expect(Step.SUBSCRIPTION)
        self._subscription_terminated(terminated_at)

    @event("SubscriptionTerminated")
    def _subscription_terminated(self, terminated_at: datetime) -> None:
        self.terminated_at = terminated_at
        self.done.append(Step.SUBSCRIPTION)

    def record_keys_destroyed(
        self, key_ids: list[UUID], unreadable_events: int, erased_at: datetime
    ) -> None:
        self.expect(Step.KEYS)
        self._keys_destroyed(sorted(set(key_ids), key=str), unreadable_events, erased_at)

    @event("KeysDestroyed")
    def _keys_destroyed(
        self, key_ids: list[UUID], unreadable_events: int, erased_at: datetime
    ) -> None:
        self.destroyed_key_ids = key_ids
        self.unreadable_events = unreadable_events
        self.erased_at = erased_at
        self.done.append(Step.KEYS)

    def record_epoch_destroyed(self, epoch: DestroyedEpoch) -> None:
        """Recorded with the keys: the epoch that wrapped them is destroyed too."""
        if not self.keys_destroyed:
            raise StepOutOfOrder(f"the keys of customer {self.customer_id} are not destroyed")
        self._epoch_destroyed(epoch)

    def record_kept(self, kept: list[KeptRecord]) -> None:
        """Recorded with the keys: what the law keeps, and until when (not erased)."""
        if not self.keys_destroyed:
            raise StepOutOfOrder(f"the keys of customer {self.customer_id} are not destroyed")
        if kept:
            self._kept(kept)

    @event("KeptRecorded")
    def _kept(self, kept: list[KeptRecord]) -> None:
        self.kept = kept

    @event("KeyEpochDestroyed")
    def _epoch_destroyed(self, epoch: DestroyedEpoch) -> None:
        self.key_epoch = epoch

    def record_views_caught_up(self, views: list[ViewCheck]) -> None:
        self.expect(Step.VIEWS)
        self._views_caught_up(views)

    @event("ViewsCaughtUp")
    def _views_caught_up(self, views: list[ViewCheck]) -> None:
        self.views = views
        self.done.append(Step.VIEWS)

    def draft_statement(self, signing_key: str) -> Statement:
        """The statement to sign: it says only what the steps recorded."""
        if self.statement is not None:
            return self.statement
        self.expect(Step.STATEMENT)
        if self.terminated_at is None or self.erased_at is None:
            raise StepOutOfOrder(f"the termination of customer {self.customer_id} is incomplete")
        return Statement(
            customer_id=self.customer_id,
            terminated_at=self.terminated_at,
            erased_at=self.erased_at,
            destroyed_key_ids=self.destroyed_key_ids,
            unreadable_events=self.unreadable_events,
            views=self.views,
            views_hold_personal_data=any(v.plaintext_values for v in self.views),
            kept_under_legal_obligation=kept_records(self.kept),
            export_sha256=self.export_sha256,
            signing_key=signing_key,
            key_epoch=self.key_epoch,
        )

    def record_statement(self, statement: Statement, signature: str) -> None:
        self.expect(Step.STATEMENT)
        if statement != self.draft_statement(statement.signing_key):
            raise Conflict("the statement does not say what the termination recorded")
        self._statement_signed(statement, signature)

    @event("StatementSigned")
    def _statement_signed(self, statement: Statement, signature: str) -> None:
        self.statement = statement
        self.signature = signature
        self.done.append(Step.STATEMENT)

    def expect(self, step: Step) -> None:
        if self.next_step is not step:
            raise StepOutOfOrder(
                f"the termination of customer {self.customer_id} is at step"
                f" {self.next_step or 'finished'}, not {step}"
            )


class TerminationProgress(msgspec.Struct, frozen=True):
    """Where a termination stands, for the runner that performs its steps."""

    customer_id: UUID
    export: bool
    next_step: Step | None
    export_sha256: str | None
    keys_destroyed: bool
    statement: Statement | None
    signature: str | None

    @classmethod
    def of(cls, termination: Termination) -> TerminationProgress:
        return cls(
            customer_id=termination.customer_id,
            export=termination.export,
            next_step=termination.next_step,
            export_sha256=termination.export_sha256,
            keys_destroyed=termination.keys_destroyed,
            statement=termination.statement,
            signature=termination.signature,
        )
