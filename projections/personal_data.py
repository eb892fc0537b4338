"""Every kind of personal data a customer has, in one registry that export and erasure walk.

A source exports a customer's records of its kind and says how much plaintext a view
still holds for them (which must be none after erasure). Kinds added later (visitors,
attendance, cases, invoices) register here too, so no export or erasure can miss them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol
from uuid import UUID

import msgspec

from picasse.domain.personal import Erased
from picasse.projections.accounts import AccountsView
from picasse.projections.traffic import TrafficView

Record = dict[str, Any]


class Sources(msgspec.Struct, frozen=True, kw_only=True):
    """What the sources read: the views, and the customer's own event history."""

    accounts: AccountsView
    traffic: TrafficView
    customer_events: Callable[[UUID], Iterable[Any]]  # the Customer aggregate's events
    now: Callable[[], datetime]


class PersonalDataSource(Protocol):
    kind: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, sources: Sources) -> None: ...

    def export(self, customer_id: UUID) -> list[Record]: ...

    def plaintext_held(self, customer_id: UUID) -> int:
        """Values of this customer's personal data a view still holds in plaintext."""
        ...


REGISTRY: dict[str, type[PersonalDataSource]] = {}


def personal_data_source(cls: type[PersonalDataSource]) -> type[PersonalDataSource]:
    REGISTRY[cls.kind] = cls
    return cls


def _text(value: Any) -> Any:
    if isinstance(value, Erased):
        return None
    if isinstance(value, msgspec.Struct):
        return str(value)
    return value


def _held(*values: Any) -> int:
    return sum(value is not None for value in values)


@personal_data_source
class CustomerRecords:
    kind = "customer"
    description = "organisation, contact person and billing address as they are now"

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        return [
            {
                "customer_id": str(row.id),
                "organisation": row.organisation,
                "contact_name": row.contact_name,
                "contact_email": row.contact_email,
                "contact_phone": row.contact_phone,
                "billing_address": row.billing_address,
                "subscription": row.subscription,
                "plan": row.plan,
                "registered_at": row.registered_at.isoformat(),
            }
            for row in self.sources.accounts.customers(customer_id=customer_id)
        ]

    def plaintext_held(self, customer_id: UUID) -> int:
        return sum(
            _held(
                r.organisation, r.contact_name, r.contact_email, r.contact_phone, r.billing_address
            )
            for r in self.sources.accounts.customers(customer_id=customer_id)
        )


@personal_data_source
class ContactHistory:
    kind = "contact_history"
    description = "every contact detail and billing address ever registered, with its date"

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        records: list[Record] = []
        for event in self.sources.customer_events(customer_id):
            at = event.timestamp.isoformat()
            values = dict(vars(event))
            contact = values.get("contact")
            if contact is not None:
                for field in ("name", "email", "phone"):
                    records.append(
                        {
                            "at": at,
                            "field": f"contact_{field}",
                            "value": _text(getattr(contact, field)),
                        }
                    )
            for field in ("organisation", "billing_address"):
                if field in values:
                    records.append({"at": at, "field": field, "value": _text(values[field])})
        return records

    def plaintext_held(self, customer_id: UUID) -> int:
        return 0  # read from the log, where it is sealed: no view holds it


@personal_data_source
class UserRecords:
    kind = "users"
    description = "the customer's user accounts: login, role, whether disabled"

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        return [
            {
                "user_id": str(u.id),
                "login": u.login,
                "role": u.role,
                "disabled": u.disabled,
                "added_at": u.added_at.isoformat(),
            }
            for u in self.sources.accounts.users(customer_id=customer_id)
        ]

    def plaintext_held(self, customer_id: UUID) -> int:
        return sum(_held(u.login) for u in self.sources.accounts.users(customer_id=customer_id))


@personal_data_source
class TrafficRecords:
    kind = "traffic"
    description = (
        "messages sent: when, by which account and IP, over which channel, to whom, outcome"
    )

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def _rows(
        self, customer_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> list[Any]:
        return self.sources.traffic.traffic(
            customer_id,
            start or datetime(2000, 1, 1, tzinfo=UTC),
            end or self.sources.now() + timedelta(days=1),
            limit=10_000_000,
        )

    def export(
        self, customer_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> list[Record]:
        return [
            {
                "delivery_id": str(r.delivery_id),
                "message_id": str(r.message_id),
                "requested_at": r.requested_at.isoformat(),
                "requested_by": str(r.requested_by) if r.requested_by else None,
                "client_ip": r.client_ip,
                "channel": r.channel,
                "recipient": r.recipient,
                "status": r.status,
                "attempts": r.attempts,
                "reason": r.reason,
            }
            for r in self._rows(customer_id, start, end)
        ]

    def plaintext_held(self, customer_id: UUID) -> int:
        return sum(_held(r.recipient, r.client_ip) for r in self._rows(customer_id))


def all_sources(sources: Sources) -> list[PersonalDataSource]:
    return [cls(sources) for cls in REGISTRY.values()]
