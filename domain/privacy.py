"""Erasure: the recorded act of destroying a data subject's (or a whole customer's) key.

The event says what was erased and why; destroying the key is what makes it so. Views
purge their plaintext when they see the event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from picasse.domain.application import PicasseApplication
from picasse.domain.errors import InvalidInput
from picasse.domain.personal import PERSONAL_DATA_KINDS


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
