"""Messaging: the commands and queries for sending messages and recording their deliveries."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import IntegrityError

from picasse.domain.access import PICASSE_SENDER, Viewer
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication, Pseudonyms, Remembered, Saving
from picasse.domain.clock import Clock
from picasse.domain.customers import Customer, Subscription
from picasse.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NameTaken,
    NotCancellable,
    NotFound,
)
from picasse.domain.messages import (
    AckPolicy,
    Catalogue,
    Channel,
    Delivery,
    DeliveryStatus,
    FailureReason,
    IdempotencyClaim,
    Member,
    Message,
    MessageTemplate,
    Priority,
    RecipientGroup,
    call_minutes,
    catalogue_id,
    delivery_id,
    group_name_key,
    template_name_key,
    traffic_month,
)
from picasse.domain.personal import Erased
from picasse.domain.values import (
    EmailAddress,
    PhoneNumber,
    header_text,
    multi_line,
    single_line,
)

MAX_RECIPIENTS = 1000
MAX_BODY = {Channel.SMS: 1600, Channel.EMAIL: 100_000, Channel.VOICE: 3000}
MAX_SUBJECT = 200
MAX_QR_TEXT = 500  # a URL; a QR code of it stays scannable from a phone's screen
MAX_SCHEDULE_AHEAD = timedelta(days=7)
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 200
MAX_GROUP_MEMBERS = MAX_RECIPIENTS  # a group is messaged whole, in one save
MAX_NAME = 100  # of a group or a template
MAX_CATALOGUE = 1000  # templates, and groups, per customer
# A worker's outcome meets another process's write to the same delivery: load and decide
# again, this often at most.
CONFLICT_RETRIES = 5

E = TypeVar("E", bound=StrEnum)
R = TypeVar("R")


class IdempotencyKeyReused(InvalidInput):
    """The idempotency key was used within 24 hours for a different request."""

    code = "idempotency-key-reused"


class SendRequest(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    to: list[str] = []
    group: str | None = None
    body: str | None = None
    template: str | None = None  # text with {name} placeholders, filled from `variables`
    template_id: UUID | None = None  # a stored template, filled from `variables`
    variables: dict[str, str] = {}
    subject: str | None = None
    priority: str = "normal"
    schedule_at: datetime | None = None
    idempotency_key: str | None = None
    ack_within_minutes: int | None = None
    escalation_groups: list[str] = []
    qr_code: str | None = None  # e-mail: text sent along as a QR code image (Picasse's own mail)


class GroupDetails(msgspec.Struct, frozen=True):
    id: UUID
    customer_id: UUID
    name: str | Erased
    members: list[str | Erased]


class TemplateDetails(msgspec.Struct, frozen=True):
    id: UUID
    customer_id: UUID
    channel: Channel
    name: str | Erased
    text: str | Erased
    placeholders: list[str]  # the names `variables` must give, sorted


class DeliveryDetails(msgspec.Struct, frozen=True):
    id: UUID
    index: int
    to: str | Erased | None  # None: the viewer is not entitled to traffic data
    status: DeliveryStatus
    attempts: int
    reason: FailureReason | None
    provider: str | None
    acknowledged: bool
    escalation_level: int


class MessageDetails(msgspec.Struct, frozen=True):
    id: UUID
    customer_id: UUID
    channel: Channel
    priority: Priority
    requested_at: datetime
    not_before: datetime | None
    recipient_count: int
    body: str | Erased | None  # None unless revealed to the customer's own user
    deliveries: list[DeliveryDetails]


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """What the delivery worker holds in memory for one attempt; never stored or logged."""

    delivery_id: UUID
    tenant_id: UUID
    channel: Channel
    to: str
    body: str
    subject: str | None
    attempt: int
    needs_acknowledgement: bool = False  # an alert: the recipient gets a link to acknowledge
    qr_code: str | None = None  # e-mail: sent along as a QR code image

    def __repr__(self) -> str:
        return f"Job(delivery_id={self.delivery_id}, attempt={self.attempt})"

    __str__ = __repr__


class NothingToSend(StrEnum):
    """Why a job calls for no attempt."""

    UNKNOWN = "unknown"  # no such delivery: a stale or foreign job
    SETTLED = "settled"  # final, or awaiting the network's receipt: a repeated job
    ERASED = "erased"  # its recipient or body was erased first: given up
    TERMINATED = "terminated"  # its customer was terminated first: given up


class Attempt:
    """One delivery's next attempt in a worker's hands: the job to send, and the delivery
    as loaded, with the attempt started on it but not yet recorded.

    The attempt is recorded together with its outcome, in one write for a whole batch
    (`Messages.record_outcomes`). A worker that dies in between leaves no trace but its
    job, which comes back and is sent again under the same reference, and is recorded
    once. An Attempt is recorded at most once; after that, its delivery is spent.
    """

    __slots__ = ("delivery", "job")

    def __init__(self, job: Job, delivery: Delivery) -> None:
        self.job = job
        self.delivery = delivery

    def __repr__(self) -> str:
        return f"Attempt({self.job!r})"

    __str__ = __repr__


class Sent(msgspec.Struct, frozen=True):
    """A provider took the message: delivered (final), or the network's receipt will tell."""

    provider: str
    reference: str | None
    final: bool
    segments: int | None = None  # short messages billed (SMPP segments); None: not counted


class FailedForNow(msgspec.Struct, frozen=True):
    """The provider could not take it now (busy, down, timed out): try again later."""

    reason: FailureReason


class FailedForGood(msgspec.Struct, frozen=True):
    """The provider refused it for good (no such number, mailbox refused): give up."""

    reason: FailureReason


Outcome = Sent | FailedForNow | FailedForGood


def _conclude(delivery: Delivery, outcome: Outcome, max_attempts: int) -> bool:
    """Applies an attempt's outcome to its delivery; True if another attempt should follow.

    `max_attempts` only matters to a temporary failure."""
    if isinstance(outcome, Sent):
        if outcome.final:
            delivery.deliver(outcome.provider, outcome.reference, segments=outcome.segments)
        else:
            delivery.handed_over(outcome.provider, outcome.reference, segments=outcome.segments)
        return False
    if isinstance(outcome, FailedForGood):
        delivery.give_up(outcome.reason)
        return False
    return delivery.fail_temporarily(outcome.reason, max_attempts)


def _attempted_and_concluded(outcome: Outcome, max_attempts: int = 1) -> Callable[[Delivery], bool]:
    """For a delivery loaded afresh: its attempt and the outcome, unless another process
    settled the delivery meanwhile (a repeated job): then there is nothing to record."""

    def decide(delivery: Delivery) -> bool:
        if delivery.settled:
            return False
        delivery.attempt()
        return _conclude(delivery, outcome, max_attempts)

    return decide


def request_fingerprint(request: SendRequest) -> str:
    """What tells two requests under one idempotency key apart: a SHA-256 of the request
    without its key (it holds recipients and content: stored only sealed, as traffic)."""
    request = msgspec.structs.replace(request, idempotency_key=None)
    canonical = msgspec.json.encode(request, order="sorted")
    return hashlib.sha256(canonical).hexdigest()


def _same_request(claim: IdempotencyClaim, fingerprint: str) -> UUID:
    """The first message's id, if this request is the one the key was claimed with.
    A claim without a readable fingerprint (older, or its month erased) is taken as it."""
    if isinstance(claim.fingerprint, str) and claim.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "idempotency_key: already used in the last 24 hours for a different request;"
            " use a new key for a new message",
            field="idempotency_key",
        )
    return claim.message_id


def _give_up_erased(delivery: Delivery) -> None:
    delivery.give_up(FailureReason.ERASED)


CUSTOMER_TERMINATED = FailureReason.CUSTOMER_TERMINATED


def _give_up_terminated(delivery: Delivery) -> None:
    """Nothing is sent for a customer whose subscription ended (R10)."""
    if not delivery.settled:
        delivery.give_up(CUSTOMER_TERMINATED)


def parse_address(channel: Channel, text: str, field: str = "to") -> str:
    if channel is Channel.EMAIL:
        return EmailAddress.parse(text, field=field).address
    return PhoneNumber.parse(text, field=field).e164


def recipient_lookup_form(address: str) -> str:
    """The form a recipient is looked up by (its blind index): e-mail addresses lower-cased,
    numbers in E.164 as they are stored."""
    return address.lower() if "@" in address else address


def parse_recipient_query(text: str, field: str = "recipient") -> str:
    """A recipient searched for, in its look-up form: an e-mail address or a phone number."""
    text = text.strip()
    if "@" in text:
        return recipient_lookup_form(EmailAddress.parse(text, field=field).address)
    return PhoneNumber.parse(text, field=field).e164


def _refuse_bad_text(request: SendRequest) -> None:
    """Every text field of a request, each by the one rule: bodies and templates may hold
    several lines, the rest (and every variable's name) one."""
    for name, text in (
        ("channel", request.channel),
        ("group", request.group),
        ("subject", request.subject),
        ("priority", request.priority),
        ("idempotency_key", request.idempotency_key),
        ("qr_code", request.qr_code),
    ):
        if text is not None:
            single_line(text, name)
    for name, texts in (("to", request.to), ("escalation_groups", request.escalation_groups)):
        for text in texts:
            single_line(text, name)
    for name, text in (("body", request.body), ("template", request.template)):
        if text is not None:
            multi_line(text, name)
    for variable, value in request.variables.items():
        single_line(variable, "variables")
        multi_line(value, "variables")


def placeholders(template: str, field: str = "template") -> set[str]:
    """The {name}s of a template. Only plain names: a conversion (`{a!r}`) or a format spec
    (`{a:>999999999}`, a gigabyte of padding) is refused, not obeyed."""
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as error:
        raise InvalidInput(f"{field}: {error}", field=field) from None
    if any(not name.isidentifier() or spec or conversion for name, spec, conversion in fields):
        raise InvalidInput(f"{field}: placeholders must be plain names like {{name}}", field=field)
    return {name for name, _, _ in fields}


def _name(text: str) -> str:
    """A group's or template's name: one line, runs of spaces as one, 1 to 100 characters."""
    name = " ".join(single_line(text, "name").split())
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name: 1 to {MAX_NAME} characters", field="name")
    return name


def _template_text(channel: Channel, text: str) -> str:
    """A stored template's text, checked as a message's body is (its placeholders too)."""
    multi_line(text, "text")
    if not text.strip():
        raise InvalidInput("text: must not be empty", field="text")
    if len(text) > MAX_BODY[channel]:
        raise InvalidInput(
            f"text: at most {MAX_BODY[channel]} characters for {channel.value}", field="text"
        )
    placeholders(text, "text")
    return text


def _render(template: str, variables: dict[str, str]) -> str:
    """The template with its {name}s filled (each a plain name, see `placeholders`)."""
    missing = sorted(placeholders(template) - variables.keys())
    if missing:
        raise InvalidInput(f"template: no value for {', '.join(missing)}", field="variables")
    return template.format_map(variables)


class Messages(PicasseApplication):
    """The whole surface of sending: the CLI, the API, the workers and tests all come here."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        pseudonyms: Pseudonyms,
        saving: Saving | None = None,
    ) -> None:
        super().__init__(env, clock=clock)
        self.clock = clock
        self.pseudonyms = pseudonyms
        # How sends are saved; the API sets a group commit (adapters/group_commit.py).
        self.saving: Saving = saving if saving is not None else self
        # Customers found sending, kept between calls; the API sets a cache that forgets
        # at any change of a customer (adapters/postgres/notices.py). None: read each time.
        self.sending: Remembered | None = None

    # Groups

    def create_group(
        self, customer_id: UUID, name: str, members: list[str], *, replace: bool = True
    ) -> UUID:
        """Creates the customer's group of that name, or (with `replace`, as `picasse groups
        set` does) replaces the members of the one that exists; returns its id."""
        name = _name(name)
        parsed = self._members(members)
        self._sending_customer(customer_id)
        ident = self._group_ident(customer_id, name)
        try:
            group = self._get(ident, RecipientGroup, "group")
        except NotFound:
            group = RecipientGroup(id=ident, tenant_id=customer_id, name=name, members=parsed)
        else:
            if not replace and not group.deleted:
                raise NameTaken(f"name: this customer has a group {name!r} already", field="name")
            group.replace_members(parsed)
        self.save(group, self._listed(customer_id, "groups", ident))
        return ident

    def replace_group_members(self, customer_id: UUID, group_id: UUID, members: list[str]) -> None:
        parsed = self._members(members)
        group = self._own_group(customer_id, group_id)
        self._sending_customer(customer_id)
        group.replace_members(parsed)
        self.save(group)

    def delete_group(self, customer_id: UUID, group_id: UUID) -> None:
        """Nobody is sent to it again (nor escalated to); its name is free for a new group."""
        group = self._own_group(customer_id, group_id)
        group.delete()
        self.save(group, self._unlisted(customer_id, "groups", group_id))

    def groups(self, customer_id: UUID) -> list[GroupDetails]:
        """The customer's groups, by name."""
        found = [
            self._own_group(customer_id, ident) for ident in self._catalogue(customer_id, "groups")
        ]
        return sorted((self._group_details(g) for g in found), key=lambda g: str(g.name).casefold())

    def group_id_of(self, customer_id: UUID, name_or_id: str) -> UUID:
        """The id of the customer's group with this name or id (InvalidInput if none)."""
        return self._group(customer_id, name_or_id).id

    def group(self, customer_id: UUID, group_id: UUID) -> GroupDetails:
        return self._group_details(self._own_group(customer_id, group_id))

    @staticmethod
    def _group_details(group: RecipientGroup) -> GroupDetails:
        return GroupDetails(
            id=group.id,
            customer_id=group.tenant_id,
            name=group.name,
            members=[m.address for m in group.members],
        )

    def _own_group(self, customer_id: UUID, group_id: UUID) -> RecipientGroup:
        """The customer's live group with this id; another customer's, or a deleted one,
        is not found."""
        group = self._get(group_id, RecipientGroup, "group")
        if group.tenant_id != customer_id or group.deleted:
            raise NotFound(f"group {group_id} not found")
        return group

    # Listing what has no readable name to be found by

    def _catalogue(self, customer_id: UUID, of: str) -> list[UUID]:
        try:
            return list(self._get(catalogue_id(customer_id, of), Catalogue, of).ids)
        except NotFound:
            return []

    def _listed(self, customer_id: UUID, of: str, ident: UUID) -> Catalogue:
        """The customer's catalogue with `ident` in it (to save with what it lists)."""
        try:
            catalogue = self._get(catalogue_id(customer_id, of), Catalogue, of)
        except NotFound:
            catalogue = Catalogue(id=catalogue_id(customer_id, of), tenant_id=customer_id, of=of)
        if ident not in catalogue.ids and len(catalogue.ids) >= MAX_CATALOGUE:
            raise Conflict(f"this customer has {MAX_CATALOGUE} {of} already: delete some first")
        catalogue.add(ident)
        return catalogue

    def _unlisted(self, customer_id: UUID, of: str, ident: UUID) -> Catalogue:
        catalogue = self._get(catalogue_id(customer_id, of), Catalogue, of)
        catalogue.remove(ident)
        return catalogue

    # Templates

    def save_template(self, customer_id: UUID, channel: str, name: str, text: str) -> UUID:
        """A new template of the customer for this channel; its placeholders are checked
        now, not when a message is sent from it. Returns its id."""
        kind = self._choice(Channel, channel, "channel")
        name = _name(name)
        text = _template_text(kind, text)
        self._sending_customer(customer_id)
        ident = self.pseudonyms.pseudonym("template", template_name_key(customer_id, kind, name))
        try:
            template = self._get(ident, MessageTemplate, "template")
        except NotFound:
            template = MessageTemplate(
                id=ident, tenant_id=customer_id, channel=kind, name=name, text=text
            )
        else:
            if not template.deleted:
                raise NameTaken(
                    f"name: this customer has a {kind.value} template {name!r} already",
                    field="name",
                )
            template.change(text)
        self.save(template, self._listed(customer_id, "templates", ident))
        return ident

    def change_template(self, customer_id: UUID, template_id: UUID, text: str) -> None:
        multi_line(text, "text")  # before anything is looked up
        template = self._own_template(customer_id, template_id)
        template.change(_template_text(template.channel, text))
        self.save(template)

    def delete_template(self, customer_id: UUID, template_id: UUID) -> None:
        template = self._own_template(customer_id, template_id)
        template.delete()
        self.save(template, self._unlisted(customer_id, "templates", template_id))

    def templates(self, customer_id: UUID, channel: str | None = None) -> list[TemplateDetails]:
        """The customer's templates (of one channel), by channel and name."""
        wanted = self._choice(Channel, channel, "channel") if channel is not None else None
        found = [
            self._template_details(self._own_template(customer_id, ident))
            for ident in self._catalogue(customer_id, "templates")
        ]
        return sorted(
            (t for t in found if wanted is None or t.channel is wanted),
            key=lambda t: (t.channel.value, str(t.name).casefold()),
        )

    def template(self, customer_id: UUID, template_id: UUID) -> TemplateDetails:
        return self._template_details(self._own_template(customer_id, template_id))

    @staticmethod
    def _template_details(template: MessageTemplate) -> TemplateDetails:
        text = template.text
        return TemplateDetails(
            id=template.id,
            customer_id=template.tenant_id,
            channel=template.channel,
            name=template.name,
            text=text,
            placeholders=sorted(placeholders(text, "text")) if isinstance(text, str) else [],
        )

    def _own_template(self, customer_id: UUID, template_id: UUID) -> MessageTemplate:
        template = self._get(template_id, MessageTemplate, "template")
        if template.tenant_id != customer_id or template.deleted:
            raise NotFound(f"template {template_id} not found")
        return template

    @staticmethod
    def _members(members: list[str]) -> list[Member]:
        if not members:
            raise InvalidInput("members: a group needs at least one member", field="members")
        if len(members) > MAX_GROUP_MEMBERS:
            raise InvalidInput(f"members: at most {MAX_GROUP_MEMBERS}", field="members")
        parsed = []
        for text in members:
            text = single_line(text, "members").strip()
            address = (
                EmailAddress.parse(text, field="members").address
                if "@" in text
                else PhoneNumber.parse(text, field="members").e164
            )
            parsed.append(Member(address))
        return parsed

    def _group(self, customer_id: UUID, name_or_id: str) -> RecipientGroup:
        try:
            ident = UUID(name_or_id)
        except ValueError:
            ident = self._group_ident(customer_id, name_or_id)
        try:
            group = self._get(ident, RecipientGroup, "group")
        except NotFound:
            raise InvalidInput(
                f"group: no group {name_or_id!r} for this customer", field="group"
            ) from None
        if group.tenant_id != customer_id or group.deleted:
            raise InvalidInput(f"group: no group {name_or_id!r} for this customer", field="group")
        return group

    def _group_ident(self, customer_id: UUID, name: str) -> UUID:
        """A group's id: a keyed pseudonym of (customer, name), so the name itself is only
        ever stored sealed, yet `--group NAME` finds the group."""
        return self.pseudonyms.pseudonym("group", group_name_key(customer_id, name))

    @staticmethod
    def _group_addresses(group: RecipientGroup, channel: Channel) -> list[str]:
        wanted_email = channel is Channel.EMAIL
        if group.deleted:  # an escalation to a group deleted since: nobody more
            return []
        return [
            m.address
            for m in group.members
            if isinstance(m.address, str) and ("@" in m.address) == wanted_email
        ]

    # Sending

    def send(
        self,
        customer_id: UUID,
        request: SendRequest,
        *,
        requested_by: UUID | None = None,
        client_ip: str | None = None,
        billed: bool = True,
    ) -> UUID:
        """Records the request and one queued delivery per recipient; returns the message id.
        `billed=False` only for Picasse's own mail about an account or an invoice.

        The same idempotency key within 24 hours returns the first message's id and
        records nothing, if the request is the same; a different one is refused
        (IdempotencyKeyReused).
        """
        _refuse_bad_text(request)
        if requested_by == PICASSE_SENDER:  # account mail: also before a subscription starts
            self._get(customer_id, Customer, "customer")._guard_not_terminated()
        else:
            self._sending_customer(customer_id)
        now = self.clock.now()
        channel = self._choice(Channel, request.channel, "channel")
        priority = self._choice(Priority, request.priority, "priority")
        claim_id = self._claim_id(customer_id, request.idempotency_key)
        fingerprint = request_fingerprint(request)
        claim = self._live_claim(claim_id, now)
        if claim is not None:
            return _same_request(claim, fingerprint)
        stored = (
            self._stored_template(customer_id, channel, request.template_id)
            if request.template_id is not None
            else None
        )
        body = self._body(channel, request, stored)
        subject = self._subject(channel, request.subject)
        qr_code = self._qr_code(channel, request.qr_code)
        group = self._group(customer_id, request.group) if request.group else None
        recipients = [parse_address(channel, text) for text in request.to]
        if group is not None:
            recipients += self._group_addresses(group, channel)
        unique: dict[str, str] = {}
        for address in recipients:  # each recipient once; e-mail local parts compared caselessly
            unique.setdefault(address.casefold(), address)
        recipients = list(unique.values())
        if not recipients:
            raise InvalidInput(
                "to: give at least one recipient (or a group with members)", field="to"
            )
        if len(recipients) > MAX_RECIPIENTS:
            raise InvalidInput(f"to: at most {MAX_RECIPIENTS} recipients per message", field="to")
        not_before = self._not_before(request.schedule_at, now)
        ack = self._ack_policy(customer_id, request)
        month = traffic_month(now)
        message = Message(
            tenant_id=customer_id,
            month=month,
            channel=channel,
            priority=priority,
            body=body,
            subject=subject,
            recipient_count=len(recipients),
            group_id=group.id if group else None,
            not_before=not_before,
            requested_by=requested_by,
            client_ip=client_ip,
            ack=ack,
            qr_code=qr_code,
        )
        deliveries = [
            Delivery(
                id=delivery_id(message.id, index),
                tenant_id=customer_id,
                month=month,
                message_id=message.id,
                index=index,
                channel=channel,
                to=address,
                not_before=not_before,
                escalation_level=0,
                billed=billed,
            )
            for index, address in enumerate(recipients)
        ]
        pending = [message, *deliveries]
        if claim_id is not None:
            try:
                claim = self._get(claim_id, IdempotencyClaim, "idempotency key")
            except NotFound:
                claim = IdempotencyClaim(id=claim_id, message_id=message.id, claimed_at=now)
            else:
                claim.reclaim(message.id, now)
            claim.fingerprint_with(customer_id, month, fingerprint)
            pending.append(claim)
        try:
            self.saving.save(*pending)
        except IntegrityError:
            if claim_id is None:
                raise
            # Another request with the same key won the race: it is the first message.
            winner = self._live_claim(claim_id, now)
            if winner is None:
                raise
            return _same_request(winner, fingerprint)
        return message.id

    def send_account_mail(self, customer_id: UUID, to: str, subject: str, body: str) -> UUID:
        """Mail Picasse sends to one of a customer's users about their account (a
        set-password link). It goes the way of the customer's own mail (same pipeline,
        provider and development Maildir), under the customer's tenant, its body sealed as
        content; requested by `PICASSE_SENDER`, so no one reads the body back (R7). Not
        billed to the customer."""
        return self.send(
            customer_id,
            SendRequest(channel="email", to=[to], body=body, subject=subject),
            requested_by=PICASSE_SENDER,
            billed=False,
        )

    def _sending_customer(self, customer_id: UUID) -> None:
        """Refused unless the customer's subscription is active (remembered once found so)."""
        read = self._customers_not_remembered_sending([customer_id])
        if customer_id not in read:
            return  # remembered sending
        customer = read[customer_id]
        if customer is None:
            raise NotFound(f"customer {customer_id} not found")
        if customer.subscription is not Subscription.ACTIVE:
            raise Conflict(f"customer {customer_id} has no active subscription")

    def _terminated(self, customer_ids: Iterable[UUID]) -> set[UUID]:
        """Which of these customers are terminated. One remembered sending is not: its
        termination would have made every process forget it."""
        read = self._customers_not_remembered_sending(customer_ids)
        return {ident for ident, customer in read.items() if customer and customer.terminated}

    def _customers_not_remembered_sending(
        self, customer_ids: Iterable[UUID]
    ) -> dict[UUID, Customer | None]:
        """Those of these customers not remembered sending, read in one go (None: no such
        customer); those found sending are remembered from now on."""
        sending = self.sending
        unknown = [c for c in customer_ids if sending is None or sending.get(c) is None]
        if not unknown:
            return {}
        generation = sending.generation if sending is not None else 0
        customers = self._get_many(unknown, Customer)
        if sending is not None:
            for ident, customer in customers.items():
                if customer.subscription is Subscription.ACTIVE:
                    sending.keep(ident, True, generation)
        return {ident: customers.get(ident) for ident in unknown}

    @staticmethod
    def _choice(kind: type[E], text: str, field: str) -> E:
        try:
            return kind(text)
        except ValueError:
            allowed = ", ".join(v.value for v in kind)
            raise InvalidInput(f"{field}: must be one of {allowed}", field=field) from None

    def _claim_id(self, customer_id: UUID, key: str | None) -> UUID | None:
        if key is None:
            return None
        if not key or len(key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidInput(
                f"idempotency_key: 1 to {MAX_IDEMPOTENCY_KEY} characters", field="idempotency_key"
            )
        return self.pseudonyms.pseudonym("idempotency", f"{customer_id}/{key}")

    def _live_claim(self, claim_id: UUID | None, now: datetime) -> IdempotencyClaim | None:
        if claim_id is None:
            return None
        try:
            claim = self._get(claim_id, IdempotencyClaim, "idempotency key")
        except NotFound:
            return None
        return claim if now - claim.claimed_at < IDEMPOTENCY_WINDOW else None

    def _stored_template(self, customer_id: UUID, channel: Channel, template_id: UUID) -> str:
        try:
            template = self._own_template(customer_id, template_id)
        except NotFound:
            raise InvalidInput(
                f"template_id: no template {template_id} for this customer", field="template_id"
            ) from None
        if template.channel is not channel:
            raise InvalidInput(
                f"template_id: a {template.channel.value} template, not {channel.value}",
                field="template_id",
            )
        if not isinstance(template.text, str):
            raise InvalidInput("template_id: the template was erased", field="template_id")
        return template.text

    @staticmethod
    def _body(channel: Channel, request: SendRequest, stored: str | None = None) -> str:
        given = [request.body, request.template, stored]
        if sum(text is not None for text in given) > 1:
            raise InvalidInput("give one of body, template or template_id", field="body")
        if stored is not None:
            body = _render(stored, request.variables)
        elif request.template is not None:
            body = _render(request.template, request.variables)
        elif request.body is not None:
            body = request.body
        else:
            raise InvalidInput("body: a message needs a body or a template", field="body")
        if not body.strip():
            raise InvalidInput("body: must not be empty", field="body")
        limit = MAX_BODY[channel]
        if len(body) > limit:
            raise InvalidInput(
                f"body: at most {limit} characters for {channel.value} (got {len(body)})",
                field="body",
            )
        return body

    @staticmethod
    def _subject(channel: Channel, subject: str | None) -> str | None:
        if subject is None:
            return None
        if channel is not Channel.EMAIL:
            raise InvalidInput("subject: only e-mail messages have a subject", field="subject")
        header_text(subject, "subject")  # the Subject header, as mail programs decode it
        subject = " ".join(subject.split())
        if len(subject) > MAX_SUBJECT:
            raise InvalidInput(f"subject: at most {MAX_SUBJECT} characters", field="subject")
        return subject or None

    @staticmethod
    def _qr_code(channel: Channel, text: str | None) -> str | None:
        if text is None:
            return None
        if channel is not Channel.EMAIL:
            raise InvalidInput("qr_code: e-mail only", field="qr_code")
        if not 0 < len(single_line(text, "qr_code")) <= MAX_QR_TEXT:
            raise InvalidInput(f"qr_code: 1 to {MAX_QR_TEXT} characters", field="qr_code")
        return text

    @staticmethod
    def _not_before(schedule_at: datetime | None, now: datetime) -> datetime | None:
        if schedule_at is None:
            return None
        if schedule_at.tzinfo is None:
            raise InvalidInput(
                "schedule_at: give a time zone, e.g. 2026-12-01T09:00:00+01:00", field="schedule_at"
            )
        if schedule_at < now - timedelta(minutes=1):
            raise InvalidInput("schedule_at: lies in the past", field="schedule_at")
        if schedule_at > now + MAX_SCHEDULE_AHEAD:
            raise InvalidInput("schedule_at: at most 7 days ahead", field="schedule_at")
        return schedule_at if schedule_at > now else None

    def _ack_policy(self, customer_id: UUID, request: SendRequest) -> AckPolicy | None:
        if request.ack_within_minutes is None:
            if request.escalation_groups:
                raise InvalidInput(
                    "escalation_groups need ack_within_minutes", field="escalation_groups"
                )
            return None
        if request.priority != Priority.ALERT.value:
            raise InvalidInput(
                "ack_within_minutes: only alerts ask for acknowledgement",
                field="ack_within_minutes",
            )
        if not 1 <= request.ack_within_minutes <= 24 * 60:
            raise InvalidInput("ack_within_minutes: 1 to 1440", field="ack_within_minutes")
        groups = [self._group(customer_id, name).id for name in request.escalation_groups]
        return AckPolicy(request.ack_within_minutes, groups)

    # Deliveries: what the worker calls

    def start_attempts(self, delivery_ids: Sequence[UUID]) -> list[Attempt | NothingToSend]:
        """Opens what each delivery's next attempt needs, in memory, loading each message
        once for the call (never longer: an erasure takes effect at the next call).

        Records nothing, except that a delivery whose recipient or body was erased is
        given up. The attempts are recorded with their outcomes (`record_outcomes`).
        """
        # At most three reads for the whole call: the deliveries, their messages, and their
        # customers not remembered sending.
        deliveries = self._get_many(delivery_ids, Delivery)
        open_ones = [d for d in deliveries.values() if not d.settled]
        messages = self._get_many((d.message_id for d in open_ones), Message)
        terminated = self._terminated({d.tenant_id for d in open_ones})
        started: list[Attempt | NothingToSend] = []
        erased: list[UUID] = []
        ended: list[UUID] = []
        seen: set[UUID] = set()
        for ident in delivery_ids:
            delivery = deliveries.get(ident)
            if delivery is None:
                started.append(NothingToSend.UNKNOWN)
                continue
            if delivery.settled or ident in seen:  # the same job twice: one attempt
                started.append(NothingToSend.SETTLED)
                continue
            seen.add(ident)
            if delivery.tenant_id in terminated:
                ended.append(ident)
                started.append(NothingToSend.TERMINATED)
                continue
            message = messages.get(delivery.message_id)
            if message is None:
                raise NotFound(f"message {delivery.message_id} not found")
            if isinstance(delivery.to, Erased) or isinstance(message.body, Erased):
                erased.append(ident)
                started.append(NothingToSend.ERASED)
                continue
            number = delivery.attempt()
            job = Job(
                delivery_id=delivery.id,
                tenant_id=delivery.tenant_id,
                channel=delivery.channel,
                to=delivery.to,
                body=message.body,
                subject=message.subject if isinstance(message.subject, str) else None,
                attempt=number,
                needs_acknowledgement=message.ack is not None,
                qr_code=message.qr_code if isinstance(message.qr_code, str) else None,
            )
            started.append(Attempt(job, delivery))
        for ident in erased:
            self._decide(ident, _give_up_erased)
        for ident in ended:
            self._decide(ident, _give_up_terminated)
        return started

    def record_outcomes(
        self, outcomes: Sequence[tuple[Attempt, Outcome]], *, max_attempts: int
    ) -> list[bool]:
        """Records each attempt together with its outcome, all in one write; returns for
        each whether the delivery wants another attempt later.

        If another process changed one of these deliveries meanwhile (a repeated job, a
        receipt), the write fails as a whole and records nothing. Then each delivery is
        loaded again, its outcome decided again and written on its own: no outcome is
        lost, and a delivery already delivered is not delivered again.
        """
        again = [_conclude(a.delivery, outcome, max_attempts) for a, outcome in outcomes]
        try:
            self._save_changed(*(a.delivery for a, _ in outcomes))
        except IntegrityError:
            return [
                self._decide(a.job.delivery_id, _attempted_and_concluded(outcome, max_attempts))
                for a, outcome in outcomes
            ]
        return again

    def start_attempt(self, delivery_id_: UUID) -> Job | None:
        """What one attempt needs, or None when there is nothing (more) to send. Records
        nothing: the attempt is recorded with its outcome, by `record_sent` and the like."""
        started = self.start_attempts([delivery_id_])[0]
        if started is NothingToSend.UNKNOWN:
            raise NotFound(f"delivery {delivery_id_} not found")
        return started.job if isinstance(started, Attempt) else None

    def record_sent(
        self, delivery_id_: UUID, provider: str, reference: str | None, *, final: bool
    ) -> None:
        self._decide(delivery_id_, _attempted_and_concluded(Sent(provider, reference, final)))

    def record_temporary_failure(
        self, delivery_id_: UUID, reason: FailureReason, *, max_attempts: int
    ) -> bool:
        """True if another attempt will follow; False once attempts are used up."""
        return self._decide(
            delivery_id_, _attempted_and_concluded(FailedForNow(reason), max_attempts)
        )

    def record_permanent_failure(self, delivery_id_: UUID, reason: FailureReason) -> None:
        self._decide(delivery_id_, _attempted_and_concluded(FailedForGood(reason)))

    def _decide(self, delivery_id_: UUID, decision: Callable[[Delivery], R]) -> R:
        """Load, decide, save; if another process saved the delivery first, again."""
        for tries_left in range(CONFLICT_RETRIES - 1, -1, -1):
            delivery = self._get(delivery_id_, Delivery, "delivery")
            result = decision(delivery)
            try:
                self._save_changed(delivery)
            except IntegrityError:
                if tries_left == 0:
                    raise
                continue
            return result
        raise AssertionError("unreachable")

    def _save_changed(self, *aggregates: Aggregate) -> None:
        changed = [a for a in aggregates if a.pending_events]
        if changed:
            self.save(*changed)

    def record_receipt(
        self,
        delivery_id_: UUID,
        failure: FailureReason | None,
        provider: str,
        reference: str,
        call_seconds: int | None = None,
    ) -> bool:
        """A delivery receipt from the network: delivered (no failure), or failed with the
        reason code the receipt adapter read from it. True if recorded. `call_seconds`: an
        answered call's duration as the receipt gives it, recorded as billed minutes.

        Every gateway signs with its own token, but a token proves only who signed, not
        that the receipt is theirs to give: a receipt counts only from the gateway the
        delivery was handed to (`provider`, as it signed), for the reference that gateway
        answered (`reference`), and only while the delivery awaits one. Otherwise:
        - handed to another gateway, or under another reference: Forbidden;
        - not yet handed to any gateway (its receipt overtook the worker's record of the
          hand-over): Conflict, so that the gateway retries;
        - no longer awaited (final: a replayed or late receipt): False, nothing recorded.
        """
        delivery = self._get(delivery_id_, Delivery, "delivery")
        if delivery.provider is None and not delivery.final:
            raise Conflict(f"delivery {delivery_id_} was not handed to a gateway yet; try again")
        if delivery.provider != provider or delivery.provider_reference != reference:
            raise Forbidden(f"delivery {delivery_id_} was not handed to this gateway")
        if not delivery.awaiting_receipt or delivery.final:
            return False
        if failure is None:
            minutes = None if call_seconds is None else call_minutes(call_seconds)
            delivery.deliver(provider, reference, minutes=minutes)
        else:
            delivery.network_failed(failure)
        self.save(delivery)
        return True

    def acknowledge(
        self,
        delivery_id_: UUID,
        via: str,
        *,
        provider: str | None = None,
        reference: str | None = None,
    ) -> None:
        """The recipient acknowledged the alert (idempotent). Given `provider` and
        `reference` (a keypad press on a call), it counts only as the receipt rule has it:
        on the call the delivery was handed to that provider under that reference."""
        delivery = self._get(delivery_id_, Delivery, "delivery")
        if provider is not None and delivery.provider is None and not delivery.final:
            raise Conflict(f"delivery {delivery_id_} was not handed to a provider yet")
        if provider is not None and (
            delivery.provider != provider or delivery.provider_reference != reference
        ):
            raise Forbidden(f"delivery {delivery_id_} was not handed to this call")
        delivery.acknowledge(via)
        self.save(delivery)

    def escalate_unacknowledged(self, message_id: UUID) -> list[UUID]:
        """At the acknowledgement deadline: alert the next group if anyone has not acknowledged."""
        message = self._get(message_id, Message, "message")
        group_ident = message.next_escalation_group()
        if group_ident is None:
            return []
        deliveries = [self._get(i, Delivery, "delivery") for i in message.delivery_ids()]
        current = [d for d in deliveries if d.escalation_level == message.escalation_level]
        if all(d.acknowledged for d in current):
            return []
        group = self._get(group_ident, RecipientGroup, "group")
        already = {d.to for d in deliveries}
        addresses = [a for a in self._group_addresses(group, message.channel) if a not in already]
        first = message.escalate(group_ident, len(addresses))
        month = traffic_month(self.clock.now())
        added = [
            Delivery(
                id=delivery_id(message.id, first + offset),
                tenant_id=message.tenant_id,
                month=month,
                message_id=message.id,
                index=first + offset,
                channel=message.channel,
                to=address,
                not_before=None,
                escalation_level=message.escalation_level,
            )
            for offset, address in enumerate(addresses)
        ]
        self.save(message, *added)
        return [d.id for d in added]

    def cancel(self, message_id: UUID, viewer: Viewer) -> None:
        """Cancels a scheduled message before its time, while none of its deliveries has
        started: each reads `cancelled`, and the worker sends none of them. Cancelling a
        cancelled message changes nothing."""
        message = self._get(message_id, Message, "message")
        if not viewer.sees_customer(message.tenant_id):
            raise NotFound(f"message {message_id} not found")
        if not viewer.may_send_messages_for(message.tenant_id):
            raise Forbidden("only the customer's users cancel its messages")
        deliveries = [self._get(i, Delivery, "delivery") for i in message.delivery_ids()]
        if all(d.status is DeliveryStatus.CANCELLED for d in deliveries):
            return
        if message.not_before is None or message.not_before <= self.clock.now():
            raise NotCancellable(
                f"message {message_id} is not scheduled for later: only a scheduled message"
                " is cancelled, before its time"
            )
        if not all(d.not_started for d in deliveries):
            raise NotCancellable(f"message {message_id} has deliveries that started")
        for delivery in deliveries:
            delivery.cancel()
        # A worker that took one meanwhile makes this save fail as a whole: nothing cancelled.
        self.save(*deliveries)

    # Queries

    def message(
        self, message_id: UUID, viewer: Viewer, *, reveal_content: bool = False
    ) -> MessageDetails:
        message = self._get(message_id, Message, "message")
        if not viewer.sees_customer(message.tenant_id):
            raise NotFound(f"message {message_id} not found")
        if reveal_content and not viewer.may_read_content_of(
            message.tenant_id, message.requested_by
        ):
            raise Forbidden(
                "message content is readable only by the customer's own users, and mail"
                " Picasse sent to a user (a set-password link) by nobody (R7)"
            )
        traffic = viewer.sees_traffic_of(message.tenant_id)
        deliveries = []
        for ident in message.delivery_ids():
            d = self._get(ident, Delivery, "delivery")
            deliveries.append(
                DeliveryDetails(
                    id=d.id,
                    index=d.index,
                    to=d.to if traffic else None,
                    status=d.status,
                    attempts=d.attempts,
                    reason=d.reason,
                    provider=d.provider,
                    acknowledged=d.acknowledged,
                    escalation_level=d.escalation_level,
                )
            )
        return MessageDetails(
            id=message.id,
            customer_id=message.tenant_id,
            channel=message.channel,
            priority=message.priority,
            requested_at=message.created_on,
            not_before=message.not_before,
            recipient_count=message.recipient_count,
            body=message.body if reveal_content else None,
            deliveries=deliveries,
        )

    def delivery_status(self, delivery_id_: UUID) -> DeliveryStatus:
        return self._get(delivery_id_, Delivery, "delivery").status
