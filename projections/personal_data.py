"""The export sources the registry of personal data names, and what views still hold of a kind.

Which kinds exist, which source exports each and which view columns hold it is declared
once, in `domain/personal.py`; here a source's name becomes the code that reads it, and a
view table's name the rows that count what a view still holds (none after erasure).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

import msgspec

from picasse.domain.attendance import Attendance, Ping
from picasse.domain.personal import PERSONAL_DATA_KINDS, Erased, PersonalDataKind, export_sources
from picasse.projections.accounts import AccountsView
from picasse.projections.traffic import TrafficView

Record = dict[str, Any]


class Sources(msgspec.Struct, frozen=True, kw_only=True):
    """What the sources read: the views, and the customer's own event history."""

    accounts: AccountsView
    traffic: TrafficView
    customer_events: Callable[[UUID], Iterable[Any]]  # the Customer aggregate's events
    groups: Callable[[UUID], Iterable[Any]]  # the customer's recipient groups, from the log
    sites: Callable[[UUID], Iterable[Any]]  # the customer's sites (SiteDetails), from the log
    visitors: Callable[[UUID], Iterable[Any]]  # its visitors (VisitorDetails), from the log
    attendance: Attendance  # consent, pings still held and entries/exits, from the log
    conferences: Callable[[UUID], Iterable[Any]] = lambda _: ()  # its Conference aggregates
    invoices: Callable[[UUID], Iterable[Any]]  # its invoices (InvoiceDetails), from the log
    now: Callable[[], datetime]


class ExportSource(Protocol):
    name: ClassVar[str]  # as the registry's kinds name it in their `export`
    description: ClassVar[str]

    def __init__(self, sources: Sources) -> None: ...

    def export(self, customer_id: UUID) -> list[Record]: ...


SOURCES: dict[str, type[ExportSource]] = {}
Source = TypeVar("Source", bound=ExportSource)


def export_source(cls: type[Source]) -> type[Source]:
    SOURCES[cls.name] = cls
    return cls


def _text(value: Any) -> Any:
    if isinstance(value, Erased):
        return None
    if isinstance(value, msgspec.Struct):
        return str(value)
    return value


def _held(*values: Any) -> int:
    return sum(value is not None for value in values)


@export_source
class CustomerRecords:
    name: ClassVar[str] = "customer"
    description: ClassVar[str] = "organisation, contact person and billing address as they are now"

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


@export_source
class ContactHistory:
    name: ClassVar[str] = "contact_history"
    description: ClassVar[str] = (
        "every contact detail and billing address ever registered, with its date"
    )

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


@export_source
class UserRecords:
    name: ClassVar[str] = "users"
    description: ClassVar[str] = (
        "the customer's user accounts: login, e-mail address, role, whether disabled, and"
        " their API keys' names and scopes"
    )

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        keys: dict[UUID, list[Record]] = {}
        for key in self.sources.accounts.api_keys(customer_id=customer_id):
            keys.setdefault(key.user_id, []).append(
                {
                    "key_id": str(key.id),
                    "name": key.name,
                    "scopes": key.scopes,
                    "created_at": key.created_at.isoformat(),
                    "revoked": key.revoked,
                }
            )
        return [
            {
                "user_id": str(u.id),
                "login": u.login,
                "email": u.email,
                "role": u.role,
                "disabled": u.disabled,
                "added_at": u.added_at.isoformat(),
                "api_keys": keys.get(u.id, []),
            }
            for u in self.sources.accounts.users(customer_id=customer_id)
        ]


@export_source
class TrafficRecords:
    name: ClassVar[str] = "traffic"
    description: ClassVar[str] = (
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


@export_source
class GroupRecords:
    name: ClassVar[str] = "groups"
    description: ClassVar[str] = "the customer's recipient groups: name and members"

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        return [
            {
                "group_id": str(group.id),
                "name": _text(group.name),
                "members": [_text(member.address) for member in group.members],
            }
            for group in self.sources.groups(customer_id)
        ]


@export_source
class SiteRecords:
    name: ClassVar[str] = "sites"
    description: ClassVar[str] = "the customer's sites (premises): name and address"

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        return [
            {
                "site_id": str(site.id),
                "name": site.name,
                "address": site.address,
                "added_at": site.added_at.isoformat(),
            }
            for site in self.sources.sites(customer_id)
        ]


@export_source
class LocationRecords:
    name: ClassVar[str] = "location"
    description: ClassVar[str] = (
        "the customer's users' location pings still held (days within retention)"
    )

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        app = self.sources.attendance
        return [
            {
                "user_id": str(record.user_id),
                "at": ping.at.isoformat(),
                "lat": ping.lat,
                "lon": ping.lon,
                "accuracy_m": ping.accuracy_m,
            }
            for record in app.consent_records(customer_id)
            for ping in app.pings(customer_id, record.user_id)
            if isinstance(ping, Ping)
        ]


@export_source
class AttendanceRecords:
    name: ClassVar[str] = "attendance"
    description: ClassVar[str] = (
        "the customer's users' consent to location processing (given, withdrawn) and their"
        " entries to and exits from its sites"
    )

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        app = self.sources.attendance
        records: list[Record] = [
            {"user_id": str(c.user_id), "consent": what, "at": _iso(at)}
            for c in app.consent_records(customer_id)
            for what, at in c.history
        ]
        records += [
            {
                "user_id": str(user_id),
                "site_id": str(visit.site_id),
                "geofence_id": str(visit.fence_id),
                "entered_at": _iso(visit.entered_at),
                "exited_at": _iso(visit.exited_at),
            }
            for user_id, visit in app.attendance_records(customer_id)
        ]
        return records


@export_source
class VisitorRecords:
    name: ClassVar[str] = "visitors"
    description: ClassVar[str] = (
        "visitors registered through the customer's sites: name, e-mail, phone, company,"
        " host, expected arrival, check-in and check-out (None once erased)"
    )

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        return [
            {
                "visitor_id": str(v.id),
                "site_id": str(v.site_id),
                "host_id": str(v.host_id),
                "name": v.name,
                "email": v.email,
                "phone": v.phone,
                "company": v.company,
                "expected_at": v.expected_at.isoformat(),
                "checked_in_at": v.checked_in_at.isoformat() if v.checked_in_at else None,
                "checked_out_at": v.checked_out_at.isoformat() if v.checked_out_at else None,
                "cancelled": v.cancelled,
                "erased": v.erased,
            }
            for v in self.sources.visitors(customer_id)
        ]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@export_source
class ConferenceRecords:
    name: ClassVar[str] = "conferences"
    description: ClassVar[str] = (
        "conference calls: when, on which number, with which participants, and who called"
        " in from which number, when, for how many minutes (titles and recordings are"
        " content: not exported)"
    )

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        return [
            {
                "conference_id": str(c.id),
                "start": c.start.isoformat(),
                "duration_minutes": c.duration_minutes,
                "number": c.number,
                "host_id": str(c.host_id),
                "cancelled": c.cancelled,
                "participants": [
                    {"kind": i.kind.value, "user_id": str(i.user_id) if i.user_id else None,
                     "address": _text(i.address)}
                    for i in c.invitees
                ],
                "calls": [
                    {"role": leg.role.value, "caller": _text(leg.caller),
                     "joined_at": _text(leg.joined_at), "left_at": _text(leg.left_at),
                     "minutes": leg.minutes}
                    for leg in c.legs.values()
                ],
                "minutes": c.minutes,
            }
            for c in self.sources.conferences(customer_id)
        ]  # fmt: skip


def all_sources(sources: Sources) -> list[ExportSource]:
    """The sources of every kind the registry exports, each once."""
    return [SOURCES[name](sources) for name in export_sources()]


class Holdings:
    """How many values of a kind the views still hold readable for a customer (sealed
    under a key that is still live: the views open them), read from the view columns the
    registry names for it."""

    def __init__(self, sources: Sources) -> None:
        def traffic(customer_id: UUID) -> list[Any]:
            return TrafficRecords(sources)._rows(customer_id)

        # Per view table, the customer's rows (with the table's columns as attributes).
        self.rows: dict[str, Callable[[UUID], list[Any]]] = {
            "customers": lambda c: sources.accounts.customers(customer_id=c),
            "users": lambda c: sources.accounts.users(customer_id=c),
            "api_keys": lambda c: sources.accounts.api_keys(customer_id=c),
            "messages": lambda c: list({r.message_id: r for r in traffic(c)}.values()),
            "deliveries": traffic,
        }

    def plaintext_held(self, kind: PersonalDataKind, customer_id: UUID) -> int:
        return sum(
            _held(*(getattr(row, column) for column in held.columns))
            for held in kind.held_in
            for row in self.rows[held.table](customer_id)
        )

    def per_kind(self, customer_id: UUID) -> dict[str, int]:
        return {
            name: self.plaintext_held(kind, customer_id)
            for name, kind in PERSONAL_DATA_KINDS.items()
        }


@export_source
class InvoiceRecords:
    name: ClassVar[str] = "invoices"
    description: ClassVar[str] = (
        "the customer's invoices: number, month, billing name and address, amounts"
    )

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def export(self, customer_id: UUID) -> list[Record]:
        return [
            {
                "invoice_id": str(i.id),
                "number": i.number,
                "month": i.month,
                "billed_to_name": i.billed_to_name,
                "billed_to_address": i.billed_to_address,
                "total_cents": i.total_cents,
                "paid_cents": i.paid_cents,
                "status": str(i.status),
            }
            for i in self.sources.invoices(customer_id)
        ]
