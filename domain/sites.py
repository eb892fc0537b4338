"""Sites: a customer's premises, to which its geofences (and later visitor registration) belong.

A site is a name and an address. Both are the customer's own records, sealed under its
organisation key (the registry's `organisation` kind), so termination shreds them with the
rest of what the customer is. A customer's sites are listed through its `Catalogue` of
sites (ids only), as its groups and templates are.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import msgspec
from eventsourcing.domain import event

from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication
from picasse.domain.clock import Clock
from picasse.domain.customers import Customer
from picasse.domain.errors import Conflict, NotFound
from picasse.domain.personal import Erased, Personal
from picasse.domain.values import required_text

if TYPE_CHECKING:  # messages (and its event classes) is loaded when the list is read
    from picasse.domain.messages import Catalogue

# A site's geofences, unless told otherwise: the band either side of the edge within which
# nothing changes (hysteresis), and how long a change must hold (dwell). Here rather than
# in `geofences`, so that reading them needs no geometry library (the CLI's options do).
DEFAULT_HYSTERESIS_M = 20.0
DEFAULT_DWELL = timedelta(seconds=60)

MAX_SITE_NAME = 100
MAX_ADDRESS = 300
MAX_SITES = 1000  # per customer
SITES = "sites"  # the customer's catalogue of them

Sealed = Annotated[str, Personal("organisation", of="tenant_id")]


class Site(Aggregate):
    """One of a customer's premises."""

    @event("Added")
    def __init__(
        self, tenant_id: UUID, name: Sealed, address: Sealed, added_by: UUID | None
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.address = address
        self.added_by = added_by
        self.removed = False

    def change(self, name: str, address: str) -> None:
        if (name, address) != (self.name, self.address):
            self._changed(self.tenant_id, name, address)

    @event("Changed")
    def _changed(self, tenant_id: UUID, name: Sealed, address: Sealed) -> None:
        self.name = name
        self.address = address

    def remove(self) -> None:
        if not self.removed:
            self._removed()

    @event("Removed")
    def _removed(self) -> None:
        self.removed = True


class SiteDetails(msgspec.Struct, frozen=True):
    """A site as the customer's users see it; name and address None once erased."""

    id: UUID
    customer_id: UUID
    name: str | None
    address: str | None
    added_at: datetime


def site_name(text: str) -> str:
    return required_text(text, "name", max_length=MAX_SITE_NAME)


def site_address(text: str) -> str:
    return required_text(text, "address", max_length=MAX_ADDRESS)


class Sites(PicasseApplication):
    """Adds, lists, changes and removes a customer's sites. Who may is the caller's
    business (API guards ask `Viewer`; the CLI is the operator's)."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        sharing: PicasseApplication | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.clock = clock

    def add(self, customer_id: UUID, name: str, address: str, *, by: UUID | None = None) -> UUID:
        """A new site of the customer; its id."""
        name, address = site_name(name), site_address(address)
        self._live_customer(customer_id)
        catalogue = self._catalogue(customer_id)
        if len(catalogue.ids) >= MAX_SITES:
            raise Conflict(f"this customer has {MAX_SITES} sites already: remove some first")
        site = Site(tenant_id=customer_id, name=name, address=address, added_by=by)
        catalogue.add(site.id)
        self.save(catalogue, site)
        return site.id

    def change(self, customer_id: UUID, site_id: UUID, name: str, address: str) -> None:
        name, address = site_name(name), site_address(address)
        self._live_customer(customer_id)
        site = self.own_site(customer_id, site_id)
        site.change(name, address)
        if site.pending_events:
            self.save(site)

    def remove(self, customer_id: UUID, site_id: UUID) -> None:
        """The site is no longer listed; what belongs to it goes with it."""
        site = self.own_site(customer_id, site_id)
        catalogue = self._catalogue(customer_id)
        site.remove()
        catalogue.remove(site_id)
        self.save(site, catalogue)

    def sites(self, customer_id: UUID) -> list[SiteDetails]:
        """The customer's sites, by name."""
        found = [self.site(customer_id, ident) for ident in self._catalogue(customer_id).ids]
        return sorted(found, key=lambda s: ((s.name or "").casefold(), str(s.id)))

    def site_ids(self, customer_id: UUID) -> set[UUID]:
        """The ids of the customer's live sites (what belongs to a removed one stops with it)."""
        return set(self._catalogue(customer_id).ids)

    def site(self, customer_id: UUID, site_id: UUID) -> SiteDetails:
        return _details(self.own_site(customer_id, site_id))

    def own_site(self, customer_id: UUID, site_id: UUID) -> Site:
        """The customer's live site; another customer's, or a removed one, is not found."""
        site = self._get(site_id, Site, "site")
        if site.tenant_id != customer_id or site.removed:
            raise NotFound(f"site {site_id} not found")
        return site

    def _live_customer(self, customer_id: UUID) -> Customer:
        customer = self._get(customer_id, Customer, "customer")
        customer._guard_not_terminated()
        return customer

    def _catalogue(self, customer_id: UUID) -> Catalogue:
        from picasse.domain.messages import Catalogue, catalogue_id

        try:
            return self._get(catalogue_id(customer_id, SITES), Catalogue, SITES)
        except NotFound:
            return Catalogue(id=catalogue_id(customer_id, SITES), tenant_id=customer_id, of=SITES)


def _details(site: Site) -> SiteDetails:
    return SiteDetails(
        id=site.id,
        customer_id=site.tenant_id,
        name=None if isinstance(site.name, Erased) else site.name,
        address=None if isinstance(site.address, Erased) else site.address,
        added_at=site.created_on,
    )
