"""The accounts view: customers, subscriptions, users and roles, contact details for those
entitled, and API keys (names and scopes; never a secret or hash, and no time of use)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from picasse.domain.api_keys import ApiKey
from picasse.domain.customers import Customer, Subscription
from picasse.domain.personal import Erased
from picasse.domain.privacy import Erasure
from picasse.domain.users import PLATFORM_TENANT, User


def plain(value: Any) -> str | None:
    """Text for a view column (sealed by the view); an erased value is stored as NULL."""
    return None if value is None or isinstance(value, Erased) else str(value)


PAGE_SIZE = 200  # rows of one page of a list, at most


class CustomerRow(msgspec.Struct, frozen=True):
    id: UUID
    organisation: str | None  # None once erased
    contact_name: str | None
    contact_email: str | None
    contact_phone: str | None
    billing_address: str | None
    subscription: str
    plan: str | None
    registered_at: datetime
    erased: bool


class UserRow(msgspec.Struct, frozen=True):
    id: UUID
    customer_id: UUID | None
    login: str | None
    role: str
    disabled: bool
    added_at: datetime
    email: str | None = None  # a customer's user's; None for staff, and once erased


class ApiKeyRow(msgspec.Struct, frozen=True):
    id: UUID
    customer_id: UUID | None  # None for staff's keys
    user_id: UUID  # whose key it is: who created it
    name: str | None  # None for keys issued before names, and once erased
    scopes: list[str]
    created_at: datetime
    revoked: bool


class AccountsView(TrackingRecorder, ABC):
    @abstractmethod
    def customer_registered(
        self, customer_id: UUID, organisation: str | None, contact: tuple[str | None, str | None, str | None],
        billing_address: str | None, registered_at: datetime, tracking: Tracking,
    ) -> None: ...  # fmt: skip

    @abstractmethod
    def contact_changed(
        self,
        customer_id: UUID,
        contact: tuple[str | None, str | None, str | None],
        tracking: Tracking,
    ) -> None: ...

    @abstractmethod
    def billing_address_changed(
        self, customer_id: UUID, billing_address: str | None, tracking: Tracking
    ) -> None: ...

    @abstractmethod
    def subscription_changed(
        self, customer_id: UUID, subscription: str, plan: str | None, tracking: Tracking
    ) -> None: ...

    @abstractmethod
    def user_added(
        self,
        user_id: UUID,
        customer_id: UUID | None,
        login: str | None,
        role: str,
        added_at: datetime,
        tracking: Tracking,
        email: str | None = None,
    ) -> None: ...

    @abstractmethod
    def user_disabled(self, user_id: UUID, disabled: bool, tracking: Tracking) -> None: ...

    @abstractmethod
    def user_role_changed(self, user_id: UUID, role: str, tracking: Tracking) -> None: ...

    @abstractmethod
    def api_key_issued(
        self, key_id: UUID, customer_id: UUID | None, user_id: UUID, scopes: list[str],
        created_at: datetime, tracking: Tracking,
    ) -> None: ...  # fmt: skip

    @abstractmethod
    def api_key_named(
        self, key_id: UUID, customer_id: UUID | None, user_id: UUID, name: str | None,
        tracking: Tracking,
    ) -> None: ...  # fmt: skip

    @abstractmethod
    def api_key_revoked(self, key_id: UUID, tracking: Tracking) -> None: ...

    @abstractmethod
    def erased(self, tenant_id: UUID, subject: str | None, tracking: Tracking) -> None:
        """A subject's key (or, with None, every key of the tenant) was destroyed: its
        sealed values read as erased from now on; only bookkeeping may change."""

    # Queries

    @abstractmethod
    def customers(self, *, customer_id: UUID | None = None) -> list[CustomerRow]:
        """Every customer (oldest first), or the one named. Every one: for exports and
        audits, never for a page (pages read `customer_page`)."""

    @abstractmethod
    def customer_page(
        self, *, after: tuple[datetime, UUID] | None = None, limit: int = PAGE_SIZE
    ) -> list[CustomerRow]:
        """Customers in registration order, those after `after` ((registered_at, id) of the
        previous page's last: keyset paging)."""

    @abstractmethod
    def customers_by_id(self, ids: list[UUID]) -> list[CustomerRow]:
        """The named customers (those the view knows), for the rows of a page."""

    @abstractmethod
    def customer_counts(self) -> dict[str, int]:
        """How many customers per subscription state, kept by the projection."""

    @abstractmethod
    def user_counts(self, customer_ids: list[UUID]) -> dict[UUID, int]:
        """How many users each of these customers has, kept by the projection."""

    @abstractmethod
    def users_by_id(self, ids: list[UUID]) -> list[UserRow]:
        """The named users (those the view knows), for the rows of a page."""

    @abstractmethod
    def users(
        self, *, customer_id: UUID | None = None, platform: bool = False,
        after: tuple[datetime, UUID] | None = None, limit: int | None = None,
    ) -> list[UserRow]:  # fmt: skip
        """A customer's users (or staff, with `platform`) in the order they were added,
        those after `after` ((added_at, id)), at most `limit` (None: all)."""

    @abstractmethod
    def api_keys(
        self, *, customer_id: UUID | None = None, user_id: UUID | None = None
    ) -> list[ApiKeyRow]:
        """Keys of a customer (None: staff's), or of one user when `user_id` is given;
        newest first."""


class AccountsProjection(Projection[AccountsView]):
    name = "accounts_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Customer.Registered,
            Customer.ContactChanged,
            Customer.BillingAddressChanged,
            Customer.SubscriptionStarted,
            Customer.Terminated,
            User.Added,
            User.Disabled,
            User.Enabled,
            User.RoleChanged,
            ApiKey.Issued,
            ApiKey.Named,
            ApiKey.Revoked,
            Erasure.Recorded,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)  # not ours: only move the position on

    @process_event.register
    def _(self, domain_event: Customer.Registered, tracking: Tracking) -> None:
        c = domain_event.contact
        self.view.customer_registered(
            domain_event.originator_id,
            plain(domain_event.organisation),
            (plain(c.name), plain(c.email), plain(c.phone)),
            plain(domain_event.billing_address),
            domain_event.timestamp,
            tracking,
        )

    @process_event.register
    def _(self, domain_event: Customer.ContactChanged, tracking: Tracking) -> None:
        c = domain_event.contact
        self.view.contact_changed(
            domain_event.originator_id, (plain(c.name), plain(c.email), plain(c.phone)), tracking
        )

    @process_event.register
    def _(self, domain_event: Customer.BillingAddressChanged, tracking: Tracking) -> None:
        self.view.billing_address_changed(
            domain_event.originator_id, plain(domain_event.billing_address), tracking
        )

    @process_event.register
    def _(self, domain_event: Customer.SubscriptionStarted, tracking: Tracking) -> None:
        self.view.subscription_changed(
            domain_event.originator_id, Subscription.ACTIVE.value, domain_event.plan, tracking
        )

    @process_event.register
    def _(self, domain_event: Customer.Terminated, tracking: Tracking) -> None:
        self.view.subscription_changed(
            domain_event.originator_id, Subscription.TERMINATED.value, None, tracking
        )

    @process_event.register
    def _(self, domain_event: User.Added, tracking: Tracking) -> None:
        tenant = domain_event.tenant_id
        self.view.user_added(
            domain_event.originator_id,
            None if tenant == PLATFORM_TENANT else tenant,
            plain(domain_event.login),
            domain_event.role.value,
            domain_event.timestamp,
            tracking,
            email=plain(getattr(domain_event, "email", None)),  # events before e-mail: None
        )

    @process_event.register
    def _(self, domain_event: User.Disabled, tracking: Tracking) -> None:
        self.view.user_disabled(domain_event.originator_id, True, tracking)

    @process_event.register
    def _(self, domain_event: User.Enabled, tracking: Tracking) -> None:
        self.view.user_disabled(domain_event.originator_id, False, tracking)

    @process_event.register
    def _(self, domain_event: User.RoleChanged, tracking: Tracking) -> None:
        self.view.user_role_changed(domain_event.originator_id, domain_event.role.value, tracking)

    @process_event.register
    def _(self, domain_event: ApiKey.Issued, tracking: Tracking) -> None:
        tenant = domain_event.tenant_id
        self.view.api_key_issued(
            domain_event.originator_id,
            None if tenant == PLATFORM_TENANT else tenant,
            domain_event.user_id,
            list(domain_event.scopes),
            domain_event.timestamp,
            tracking,
        )

    @process_event.register
    def _(self, domain_event: ApiKey.Named, tracking: Tracking) -> None:
        tenant = domain_event.tenant_id
        self.view.api_key_named(
            domain_event.originator_id,
            None if tenant == PLATFORM_TENANT else tenant,
            domain_event.user_id,
            plain(domain_event.name),
            tracking,
        )

    @process_event.register
    def _(self, domain_event: ApiKey.Revoked, tracking: Tracking) -> None:
        self.view.api_key_revoked(domain_event.originator_id, tracking)

    @process_event.register
    def _(self, domain_event: Erasure.Recorded, tracking: Tracking) -> None:
        self.view.erased(domain_event.tenant_id, domain_event.subject, tracking)
