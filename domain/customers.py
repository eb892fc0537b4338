"""Customer: a business that subscribes to Picasse; its contact person is a data subject."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec
from eventsourcing.domain import event

from picasse.domain.aggregates import Aggregate
from picasse.domain.errors import AlreadyTerminated, Conflict
from picasse.domain.personal import Personal
from picasse.domain.values import EmailAddress, PhoneNumber


class Contact(msgspec.Struct, frozen=True, gc=False):
    """The person Picasse deals with at a customer.

    gc=False: it holds only text and frozen values, so it can never be in a reference
    cycle; untracked, the contacts a replay keeps cost the garbage collector nothing.
    """

    name: Annotated[str, Personal("contact")]
    email: Annotated[EmailAddress, Personal("contact")]
    phone: Annotated[PhoneNumber, Personal("contact")]


class Subscription(StrEnum):
    REGISTERED = "registered"  # known to us, not yet subscribed
    ACTIVE = "active"
    TERMINATED = "terminated"


class Customer(Aggregate):
    """A customer is also a tenant: its id names the keys its personal data is sealed under.

    Its event classes are declared, not named in `@event`, so that type checkers see the
    classes the projections and workers dispatch on.
    """

    class Registered(Aggregate.Created):
        organisation: Annotated[str, Personal("organisation")]
        contact: Contact
        billing_address: Annotated[str, Personal("organisation")]

    @event(Registered)
    def __init__(
        self,
        organisation: Annotated[str, Personal("organisation")],
        contact: Contact,
        billing_address: Annotated[str, Personal("organisation")],
    ) -> None:
        self.organisation = organisation
        self.contact = contact
        self.billing_address = billing_address
        self.subscription = Subscription.REGISTERED
        self.plan: str | None = None

    @property
    def terminated(self) -> bool:
        return self.subscription is Subscription.TERMINATED

    def change_contact(self, contact: Contact) -> None:
        self._guard_not_terminated()
        if contact != self.contact:
            self._contact_changed(contact)

    class ContactChanged(Aggregate.Event):
        contact: Contact

    @event(ContactChanged)
    def _contact_changed(self, contact: Contact) -> None:
        self.contact = contact

    def change_billing_address(self, billing_address: str) -> None:
        self._guard_not_terminated()
        if billing_address != self.billing_address:
            self._billing_address_changed(billing_address)

    class BillingAddressChanged(Aggregate.Event):
        billing_address: Annotated[str, Personal("organisation")]

    @event(BillingAddressChanged)
    def _billing_address_changed(
        self, billing_address: Annotated[str, Personal("organisation")]
    ) -> None:
        self.billing_address = billing_address

    def start_subscription(self, plan: str) -> None:
        """Idempotent: the plan it already has active is no change; another plan is refused."""
        self._guard_not_terminated()
        if self.subscription is Subscription.ACTIVE:
            if plan == self.plan:
                return
            raise Conflict(
                f"customer {self.id} already has an active subscription (plan {self.plan})"
            )
        self._subscription_started(plan)

    class SubscriptionStarted(Aggregate.Event):
        plan: str

    @event(SubscriptionStarted)
    def _subscription_started(self, plan: str) -> None:
        self.subscription = Subscription.ACTIVE
        self.plan = plan

    def terminate(self) -> None:
        self._guard_not_terminated()
        self._terminated()

    class Terminated(Aggregate.Event):
        pass

    @event(Terminated)
    def _terminated(self) -> None:
        self.subscription = Subscription.TERMINATED

    def _guard_not_terminated(self) -> None:
        if self.terminated:
            raise AlreadyTerminated(f"customer {self.id} has been terminated")
