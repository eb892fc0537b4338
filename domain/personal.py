"""Which fields are personal data, whose they are, and what an erased value reads as."""

from __future__ import annotations

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


class PersonalDataKind(msgspec.Struct, frozen=True):
    """One kind of data subject: why we hold its data and how long."""

    kind: str
    description: str
    purpose: str


# The one registry that export, erasure and retention walk (R9: purposes are explicit).
PERSONAL_DATA_KINDS: dict[str, PersonalDataKind] = {
    k.kind: k
    for k in (
        PersonalDataKind(
            "organisation",
            "customer's organisation name and billing address",
            "contract and invoicing (R1, R3)",
        ),
        PersonalDataKind(
            "contact",
            "customer's contact person: name, e-mail, phone",
            "contract, support and complaints (R1, R3)",
        ),
        PersonalDataKind(
            "traffic",
            "who sent when to which numbers and addresses, one key per customer and month",
            "delivering messages, billing and complaints; kept six months (R4, R5)",
        ),
        PersonalDataKind(
            "content",
            "message bodies and subjects; only the delivery worker opens them",
            "delivering the customer's messages, nothing else (R7)",
        ),
        PersonalDataKind(
            "group",
            "members (numbers, addresses) of a customer's recipient group",
            "sending the customer's messages to its groups (R4)",
        ),
        PersonalDataKind(
            "user",
            "a customer user's or staff member's login and password hash",
            "access to the service (R1, R2, R11)",
        ),
    )
}


def subject_name(kind: str, of: object) -> str:
    """The name of a data subject's key within its tenant, e.g. `contact/5f0c…`."""
    if kind not in PERSONAL_DATA_KINDS:
        raise ValueError(f"unknown kind of personal data: {kind!r}")
    return f"{kind}/{of}"
