"""Which fields are personal data, whose they are, and what an erased value reads as."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import msgspec


class Personal(msgspec.Struct, frozen=True):
    """Marks a field as personal data of one data subject, inside `Annotated[...]`.

    The subject is `"{kind}/{value of the event field named by of}"` within the event's
    tenant (its `tenant_id` field, or for a tenant's own aggregate its originator id).
    The sealing mapper, the export and the erasure all read this one declaration.
    """

    kind: str
    of: str = "originator_id"


class Erased(msgspec.Struct, frozen=True, tag="erased"):
    """What a personal value reads as once its subject's key has been destroyed."""

    def __str__(self) -> str:
        return "[erased]"


ERASED = Erased()


class Trigger(StrEnum):
    """What erases a kind of personal data (by destroying the keys it is sealed under)."""

    TERMINATION = "termination"  # the subscription ends: every key of the customer goes
    REQUEST = "request"  # the data subject asks (GDPR art. 17): that subject's key goes
    RETENTION = "retention"  # its retention period is over: that month's key goes


class Retention(msgspec.Struct, frozen=True, kw_only=True):
    """How long a kind is kept: `months` or `days` (neither: the subscription's life),
    changed by `setting`. A kind kept in months has one key per month (`…/<YYYY-MM>`), one
    kept in days one key per day (`…/<YYYY-MM-DD>`): retention destroys whole keys. A kind
    whose subject names no month or day (`visitor/<visitor id>`) is kept that long after its
    subject's own event (a visit), and its own job destroys each subject's key in time."""

    months: int | None = None
    days: int | None = None
    setting: str | None = None  # the environment variable that changes `months` or `days`
    reason: str


class HeldIn(msgspec.Struct, frozen=True, kw_only=True):
    """Where a view holds values of a kind: its table and columns. The rows of one subject
    are those whose `subject_column` reads as the subject's key name after the slash."""

    table: str
    columns: tuple[str, ...]
    subject_column: str
    optional: tuple[str, ...] = ()  # may be NULL because nothing was ever given


class PersonalDataKind(msgspec.Struct, frozen=True, kw_only=True):
    """One kind of personal data, declared once: export, erasure, view purges, retention,
    the statement's checks and the audit replay all read this declaration."""

    kind: str  # its name, the `Personal(kind)` of event fields
    description: str
    purpose: str  # why we hold it (R9: purposes are explicit)
    subject: str  # how its subject (and its key) is named within the customer
    retention: Retention
    erased_on: frozenset[Trigger]
    export: tuple[str, ...] = ()  # the export sources that hand it out (projections/ maps them)
    not_exported: str = ""  # why, when `export` is empty
    held_in: tuple[HeldIn, ...] = ()  # the view columns that hold it


SUBSCRIPTION = Retention(reason="R10: kept for the subscription's life, then erased")
TRAFFIC_RETENTION_SETTING = "PICASSE_TRAFFIC_RETENTION_MONTHS"
DEFAULT_TRAFFIC_MONTHS = 6
TRAFFIC = Retention(
    months=DEFAULT_TRAFFIC_MONTHS,
    setting=TRAFFIC_RETENTION_SETTING,
    reason=(
        "R5: traffic data (who sent when to which numbers and addresses) and message"
        " content are kept six months for delivery, billing and complaints, then erased"
    ),
)
VISITOR_RETENTION_SETTING = "PICASSE_VISITOR_RETENTION_DAYS"
DEFAULT_VISITOR_DAYS = 28
VISITS = Retention(
    days=DEFAULT_VISITOR_DAYS,
    setting=VISITOR_RETENTION_SETTING,
    reason=(
        "R13: a visitor's details are kept for the visit (host notice, check-in, the"
        " evacuation list) and a short while after, then erased; a site may keep them"
        " shorter or longer"
    ),
)
PING_RETENTION_SETTING = "PICASSE_PING_RETENTION_DAYS"
DEFAULT_PING_DAYS = 30
PINGS = Retention(
    days=DEFAULT_PING_DAYS,
    setting=PING_RETENTION_SETTING,
    reason=(
        "R8: raw location pings are kept 30 days for the customer's attendance records,"
        " then erased; entries and exits (no coordinates) stay"
    ),
)
_CUSTOMER_RECORDS = ("customer", "contact_history")
FISCAL_RETENTION_YEARS = 7
FISCAL = Retention(
    months=FISCAL_RETENTION_YEARS * 12,  # after the end of the invoices' fiscal year
    reason=(
        "legal obligation: Dutch tax law (art. 52 AWR) keeps invoices seven years; kept"
        " after termination, then erased"
    ),
)

# The one registry of personal data. A new kind is one declaration here, plus the
# `Personal(kind)` fields of its events (and an export source if it names a new one).
PERSONAL_DATA_KINDS: dict[str, PersonalDataKind] = {
    k.kind: k
    for k in (
        PersonalDataKind(
            kind="organisation",
            description=(
                "customer's organisation name and billing address, and the names and"
                " addresses of its sites"
            ),
            purpose="contract and invoicing (R1, R3); the customer's premises (R8, R13)",
            subject="organisation/<customer id>",
            retention=SUBSCRIPTION,
            erased_on=frozenset({Trigger.TERMINATION, Trigger.REQUEST}),
            export=(*_CUSTOMER_RECORDS, "sites"),
            held_in=(
                HeldIn(
                    table="customers",
                    columns=("organisation", "billing_address"),
                    subject_column="id",
                ),
            ),
        ),
        PersonalDataKind(
            kind="contact",
            description="customer's contact person: name, e-mail, phone",
            purpose="contract, support and complaints (R1, R3)",
            subject="contact/<customer id>",
            retention=SUBSCRIPTION,
            erased_on=frozenset({Trigger.TERMINATION, Trigger.REQUEST}),
            export=_CUSTOMER_RECORDS,
            held_in=(
                HeldIn(
                    table="customers",
                    columns=("contact_name", "contact_email", "contact_phone"),
                    subject_column="id",
                ),
            ),
        ),
        PersonalDataKind(
            kind="traffic",
            description=(
                "who sent when to which numbers and addresses, and conference call records"
                " (participants, callers' numbers, times), one key per customer and month"
            ),
            purpose="delivering messages and calls, billing and complaints; kept six months (R4, R5)",
            subject="traffic/<YYYY-MM>",
            retention=TRAFFIC,
            erased_on=frozenset({Trigger.TERMINATION, Trigger.RETENTION}),
            export=("traffic", "conferences"),
            held_in=(
                HeldIn(
                    table="messages",
                    columns=("client_ip",),
                    subject_column="month",
                    optional=("client_ip",),
                ),
                HeldIn(table="deliveries", columns=("recipient",), subject_column="month"),
            ),
        ),
        PersonalDataKind(
            kind="content",
            description=(
                "message bodies and subjects, conference titles and the references of call"
                " recordings (which stay at the telephony provider); only the delivery"
                " worker opens bodies"
            ),
            purpose="delivering the customer's messages, nothing else (R7)",
            subject="content/<YYYY-MM>",
            retention=TRAFFIC,
            erased_on=frozenset({Trigger.TERMINATION, Trigger.RETENTION}),
            not_exported=(
                "R7: nobody at Picasse reads message content, so no export opens it;"
                " the customer wrote it and holds it"
            ),
        ),
        PersonalDataKind(
            kind="group",
            description="a customer's recipient group: its name and members (numbers, addresses)",
            purpose="sending the customer's messages to its groups (R4)",
            subject="group/<group id>",
            retention=SUBSCRIPTION,
            erased_on=frozenset({Trigger.TERMINATION}),
            export=("groups",),
        ),
        PersonalDataKind(
            kind="template",
            description="a customer's stored message templates: their names and texts",
            purpose="sending the customer's messages from its own templates (R7)",
            subject="template/<template id>",
            retention=SUBSCRIPTION,
            erased_on=frozenset({Trigger.TERMINATION}),
            not_exported=(
                "R7: templates are the customer's content, which nobody at Picasse reads;"
                " the customer reads them through the API while subscribed"
            ),
        ),
        PersonalDataKind(
            kind="webhook",
            description=(
                "a customer's webhook endpoint: its URL and signing secret (the URL may name"
                " a person's host; the secret must never be readable at rest)"
            ),
            purpose="posting the customer's delivery and alert status events to it (R4, R9)",
            subject="webhook/<endpoint id>",
            retention=SUBSCRIPTION,
            erased_on=frozenset({Trigger.TERMINATION}),
            not_exported=(
                "the customer set the URL and was shown the secret once; an export"
                " hands out no credentials"
            ),
        ),
        PersonalDataKind(
            kind="visitor",
            description=(
                "a visitor registered through a customer's site: name, e-mail address, phone"
                " and company, one key per visitor"
            ),
            purpose="receiving the visitor: host notice, confirmation, check-in, evacuation list (R13)",
            subject="visitor/<visitor id>",
            retention=VISITS,
            erased_on=frozenset({Trigger.TERMINATION, Trigger.REQUEST, Trigger.RETENTION}),
            export=("visitors",),
        ),
        PersonalDataKind(
            kind="location",
            description=(
                "a user's location pings (time, coordinates, accuracy), one key per user and"
                " day; held only while the customer's attendance service is on and the user"
                " consents"
            ),
            purpose="the customer's own attendance records, nothing else (R8)",
            subject="location/<user id>/<YYYY-MM-DD>",
            retention=PINGS,
            erased_on=frozenset({Trigger.TERMINATION, Trigger.REQUEST, Trigger.RETENTION}),
            export=("location",),
        ),
        PersonalDataKind(
            kind="attendance",
            description=(
                "a user's consent history for location processing, and their entries to and"
                " exits from the customer's sites (times, no coordinates)"
            ),
            purpose="the customer's working-time records (R8)",
            subject="attendance/<user id>",
            retention=SUBSCRIPTION,
            erased_on=frozenset({Trigger.TERMINATION, Trigger.REQUEST}),
            export=("attendance",),
        ),
        PersonalDataKind(
            kind="user",
            description=(
                "a customer user's or staff member's login and password hash, a customer"
                " user's e-mail address (where their set-password links go), the names"
                " and hashes of their API keys, and the name a site's visitor form shows"
                " for them as a host"
            ),
            purpose="access to the service (R1, R2, R11)",
            subject="user/<user id>",
            retention=SUBSCRIPTION,
            erased_on=frozenset({Trigger.TERMINATION, Trigger.REQUEST}),
            export=("users",),
            held_in=(
                HeldIn(
                    table="users",
                    columns=("login", "email"),
                    subject_column="id",
                    optional=("email",),  # staff accounts have none
                ),
                HeldIn(
                    table="api_keys",
                    columns=("name",),
                    subject_column="user_id",
                    optional=("name",),  # keys issued before names have none
                ),
            ),
        ),
        PersonalDataKind(
            kind="case",
            description="the words of a customer's complaints and fault reports, and the replies",
            purpose="handling the customer's complaints and fault reports (R3, R9)",
            subject="case/<customer id>",
            retention=SUBSCRIPTION,
            erased_on=frozenset({Trigger.TERMINATION}),
            not_exported=(
                "the customer reads its cases and every reply through GET /v1/cases while"
                " subscribed"
            ),
        ),
        PersonalDataKind(
            kind="fiscal",
            description=(
                "the billing name and address on a customer's invoices, sealed under its"
                " fiscal key, which is not wrapped by the tenant key"
            ),
            purpose="invoicing, and keeping invoices as tax law requires (R3, R9, R10)",
            # One key per fiscal year, in a tenant of the customer's own that the tenant key
            # does not wrap (`billing.fiscal_tenant_id`): termination leaves it.
            subject="fiscal/<YYYY>",
            retention=FISCAL,
            # Not termination: the law keeps invoices seven years after their year; the
            # retention run destroys a year's key then.
            erased_on=frozenset({Trigger.RETENTION}),
            export=("invoices",),
        ),
    )
}


def personal_data_kind(subject: str) -> PersonalDataKind:
    """The kind of a subject key's name (`contact/5f0c…` → contact); ValueError if none."""
    kind = subject.partition("/")[0]
    if kind not in PERSONAL_DATA_KINDS:
        raise ValueError(f"unknown kind of personal data: {kind!r}")
    return PERSONAL_DATA_KINDS[kind]


def kinds_erased_on(trigger: Trigger) -> list[PersonalDataKind]:
    return [k for k in PERSONAL_DATA_KINDS.values() if trigger in k.erased_on]


def export_sources() -> list[str]:
    """Every export source any kind names, each once, in the registry's order."""
    return list(dict.fromkeys(name for k in PERSONAL_DATA_KINDS.values() for name in k.export))


def view_columns(kinds: Iterable[PersonalDataKind] | None = None) -> dict[str, frozenset[str]]:
    """Per view table, the columns holding personal data of these kinds (default: all)."""
    found: dict[str, set[str]] = {}
    for k in PERSONAL_DATA_KINDS.values() if kinds is None else kinds:
        for held in k.held_in:
            found.setdefault(held.table, set()).update(held.columns)
    return {table: frozenset(columns) for table, columns in found.items()}


def sealed_view_columns(table: str) -> dict[str, tuple[str, str]]:
    """Per personal column of a view table: its kind and the column naming its subject.
    The views seal exactly these columns under the subject's key, and open them on reading."""
    return {
        column: (k.kind, held.subject_column)
        for k in PERSONAL_DATA_KINDS.values()
        for held in k.held_in
        if held.table == table
        for column in held.columns
    }


def required_view_columns(table: str) -> frozenset[str]:
    """The table's personal columns that are NULL only once erased (never just not given)."""
    return frozenset(
        column
        for k in PERSONAL_DATA_KINDS.values()
        for held in k.held_in
        if held.table == table
        for column in held.columns
        if column not in held.optional
    )


def subject_name(kind: str, of: object) -> str:
    """The name of a data subject's key within its tenant, e.g. `contact/5f0c…`."""
    if kind not in PERSONAL_DATA_KINDS:
        raise ValueError(f"unknown kind of personal data: {kind!r}")
    return f"{kind}/{of}"
