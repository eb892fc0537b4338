"""Webhook endpoints: where a customer wants its delivery and alert status events posted.

An endpoint is a URL, the event types it wants and a signing secret shown once, at its
registration. The URL and the secret are sealed under the endpoint's own key (kind
`webhook` in the registry), so neither is readable at rest and termination shreds them.
A customer's endpoints are listed through one small index aggregate per customer.

How often a failing event is tried again, and when a failing endpoint is given up, are
rules of the business and live here; the sender (adapters) and the scheduler follow them.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import event
from eventsourcing.utils import get_topic

from picasse.domain.access import Viewer
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication
from picasse.domain.clock import Clock
from picasse.domain.customers import Customer
from picasse.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from picasse.domain.personal import Erased, Personal
from picasse.domain.values import single_line

SECRET_PREFIX = "whsec_"  # noqa: S105 (the secrets' prefix, not a secret)
SECRET_BYTES = 32
MAX_URL_LENGTH = 2000
MAX_ENDPOINTS_PER_CUSTOMER = 20
# Each event is tried again, with these waits between attempts, until it has been failing
# for RETRY_WINDOW; an endpoint failing that long is disabled and its customer's admins told.
RETRY_DELAYS = tuple(
    timedelta(minutes=m) for m in (1, 5, 15, 30, 60, 120, 240, 240, 240, 240, 240, 240)
)
RETRY_WINDOW = timedelta(hours=24)


class WebhookEventType(StrEnum):
    DELIVERY_DELIVERED = "delivery.delivered"
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_UNDELIVERED = "delivery.undelivered"
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    ALERT_ESCALATED = "alert.escalated"


class DestinationRefused(InvalidInput):
    """A webhook URL whose host is (or resolves to) a loopback, private or link-local address."""

    code = "webhook-destination-refused"


class TooManyEndpoints(Conflict):
    code = "too-many-webhooks"


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: `whsec_` and base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def parse_webhook_url(text: str) -> str:
    """An http(s) URL with a host and no credentials in it; InvalidInput (field `url`) if not."""
    url = single_line(text.strip(), "url")
    if not url or len(url) > MAX_URL_LENGTH:
        raise InvalidInput(
            f"url: give an http(s) URL of at most {MAX_URL_LENGTH} characters", field="url"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("url: not a URL", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("url: only http and https URLs can receive webhooks", field="url")
    if not parts.hostname:
        raise InvalidInput("url: the URL names no host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url: credentials in the URL are not accepted", field="url")
    if port == 0:
        raise InvalidInput("url: port 0 cannot be posted to", field="url")
    return url


def parse_event_types(names: list[str]) -> list[WebhookEventType]:
    """The event types asked for, each once, in a fixed order; at least one."""
    chosen = set()
    for name in names:
        try:
            chosen.add(WebhookEventType(name))
        except ValueError:
            known = ", ".join(t.value for t in WebhookEventType)
            raise InvalidInput(f"events: {name!r} is not one of {known}", field="events") from None
    if not chosen:
        raise InvalidInput("events: name at least one event type", field="events")
    return [t for t in WebhookEventType if t in chosen]


def next_attempt_at(first_failure: datetime, failed_at: datetime, attempts: int) -> datetime | None:
    """When an event that failed `attempts` times, first at `first_failure`, is tried again;
    None once it has been failing for RETRY_WINDOW. Its last attempt falls on the window's
    end, so an endpoint that fails throughout is seen failing for the whole window."""
    end = first_failure + RETRY_WINDOW
    if failed_at >= end:
        return None
    delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
    return min(failed_at + delay, end)


def endpoint_active(*, deleted: bool, disabled: bool) -> bool:
    """An endpoint is posted to unless deleted or disabled: the endpoint itself asks this, and
    so does the relay, which publishes a status event only if an active endpoint wants it."""
    return not (deleted or disabled)


def failing_too_long(failing_since: datetime | None, now: datetime) -> bool:
    """An endpoint that has answered nothing but failures for RETRY_WINDOW is disabled."""
    return failing_since is not None and now - failing_since >= RETRY_WINDOW


class WebhookEndpoint(Aggregate):
    """One URL of one customer that receives the status events it asked for, signed."""

    @event("Registered")
    def __init__(
        self,
        tenant_id: UUID,
        url: Annotated[str, Personal("webhook")],
        events: list[WebhookEventType],
        secret: Annotated[str, Personal("webhook")],
        registered_by: UUID | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.url = url
        self.events = events
        self.secret = secret
        self.registered_by = registered_by
        self.deleted = False
        self.disabled = False

    @property
    def active(self) -> bool:
        return endpoint_active(deleted=self.deleted, disabled=self.disabled)

    def delete(self) -> None:
        if not self.deleted:
            self._deleted()

    @event("Deleted")
    def _deleted(self) -> None:
        self.deleted = True

    def disable(self, failing_since: datetime) -> bool:
        """True if this disabled it (it was active)."""
        if not self.active:
            return False
        self._disabled(failing_since)
        return True

    @event("Disabled")
    def _disabled(self, failing_since: datetime) -> None:
        self.disabled = True

    def enable(self) -> bool:
        """True if this enabled it again (it was disabled, not deleted)."""
        if self.deleted or not self.disabled:
            return False
        self._enabled()
        return True

    @event("Enabled")
    def _enabled(self) -> None:
        self.disabled = False


# An endpoint's life in the log: the events that decide which of a customer's endpoints
# want which status events. The relay reads them across the whole log when it starts, so
# the event store keeps an index of just their rows.
ENDPOINT_TOPICS = tuple(
    f"{get_topic(WebhookEndpoint)}.{name}"
    for name in ("Registered", "Deleted", "Disabled", "Enabled")
)


class WebhookEndpoints(Aggregate):
    """The index of one customer's endpoints (ids only), so they can be listed."""

    @event("Started")
    def __init__(self, id: UUID, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.endpoint_ids: list[UUID] = []

    def add(self, endpoint_id: UUID) -> None:
        if len(self.endpoint_ids) >= MAX_ENDPOINTS_PER_CUSTOMER:
            raise TooManyEndpoints(
                f"a customer has at most {MAX_ENDPOINTS_PER_CUSTOMER} webhook endpoints:"
                " delete one first"
            )
        self._added(endpoint_id)

    @event("EndpointAdded")
    def _added(self, endpoint_id: UUID) -> None:
        self.endpoint_ids.append(endpoint_id)

    def remove(self, endpoint_id: UUID) -> None:
        if endpoint_id in self.endpoint_ids:
            self._removed(endpoint_id)

    @event("EndpointRemoved")
    def _removed(self, endpoint_id: UUID) -> None:
        self.endpoint_ids.remove(endpoint_id)


def endpoints_index_id(tenant_id: UUID) -> UUID:
    return uuid5(tenant_id, "webhook-endpoints")


class EndpointDetails(msgspec.Struct, frozen=True):
    """An endpoint as its customer's admins see it: never its secret."""

    id: UUID
    customer_id: UUID
    url: str | None  # None once erased
    events: list[WebhookEventType]
    disabled: bool
    created_at: datetime


class NewEndpoint(msgspec.Struct, frozen=True):
    """A registered endpoint and its secret, shown this once and kept only sealed."""

    endpoint: EndpointDetails
    secret: str

    def __repr__(self) -> str:  # the secret stays out of every log line
        return f"NewEndpoint(id={self.endpoint.id})"

    __str__ = __repr__


class Subscriber(msgspec.Struct, frozen=True):
    """What the sender needs to post to one endpoint (opened in memory, never logged)."""

    endpoint_id: UUID
    tenant_id: UUID
    url: str
    secret: str
    events: list[WebhookEventType]

    def __repr__(self) -> str:
        return f"Subscriber(endpoint_id={self.endpoint_id})"

    __str__ = __repr__


class EndpointUnavailable(DomainError):
    code = "webhook-unavailable"


class Webhooks(PicasseApplication):
    """Registers, lists and deletes webhook endpoints; tells the sender whom to post to."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        sharing: PicasseApplication | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.clock = clock

    # ------------------------------------------------------------ the customer's admins

    def register(
        self, customer_id: UUID, url: str, events: list[str], *, by: Viewer
    ) -> NewEndpoint:
        """A new endpoint (the URL's destination already checked by the caller's adapter)."""
        if not by.may_administer(customer_id):
            raise Forbidden("only the customer's admins manage its webhooks")
        url = parse_webhook_url(url)
        types = parse_event_types(events)
        customer = self._get(customer_id, Customer, "customer")
        customer._guard_not_terminated()
        index = self._index(customer_id)
        secret = new_secret()
        endpoint = WebhookEndpoint(
            tenant_id=customer_id, url=url, events=types, secret=secret, registered_by=by.user_id
        )
        index.add(endpoint.id)
        self.save(index, endpoint)
        return NewEndpoint(endpoint=self._details(endpoint), secret=secret)

    def endpoints(self, customer_id: UUID, *, by: Viewer) -> list[EndpointDetails]:
        if not by.may_administer(customer_id):
            raise Forbidden("only the customer's admins manage its webhooks")
        return [
            self._details(self._get(endpoint_id, WebhookEndpoint, "webhook"))
            for endpoint_id in self._index(customer_id).endpoint_ids
        ]

    def endpoint(self, endpoint_id: UUID, *, by: Viewer) -> EndpointDetails:
        return self._details(self._visible(endpoint_id, by))

    def delete(self, endpoint_id: UUID, *, by: Viewer) -> None:
        endpoint = self._visible(endpoint_id, by)
        index = self._index(endpoint.tenant_id)
        endpoint.delete()
        index.remove(endpoint.id)
        self._save_changed(endpoint, index)

    def enable(self, endpoint_id: UUID, *, by: Viewer) -> bool:
        """Enables a disabled endpoint again (its admins fixed it); True if it was disabled.
        Events of the time it was disabled are not posted: its pending posts were cancelled."""
        endpoint = self._visible(endpoint_id, by)
        if not endpoint.enable():
            return False
        self.save(endpoint)
        return True

    # ------------------------------------------------------------ the sender

    def subscribers(self, tenant_id: UUID, event_type: WebhookEventType) -> list[Subscriber]:
        """The customer's active endpoints that want this type of event."""
        index = self._existing_index(tenant_id)
        if index is None:
            return []
        found = []
        for endpoint_id in index.endpoint_ids:
            subscriber = self.subscriber(endpoint_id)
            if subscriber is not None and event_type in subscriber.events:
                found.append(subscriber)
        return found

    def subscriber(self, endpoint_id: UUID) -> Subscriber | None:
        """The endpoint to post to, or None once it is deleted, disabled or erased."""
        try:
            endpoint = self._get(endpoint_id, WebhookEndpoint, "webhook")
        except NotFound:
            return None
        if (
            not endpoint.active
            or isinstance(endpoint.url, Erased)
            or isinstance(endpoint.secret, Erased)
        ):
            return None
        return Subscriber(
            endpoint_id=endpoint.id,
            tenant_id=endpoint.tenant_id,
            url=endpoint.url,
            secret=endpoint.secret,
            events=list(endpoint.events),
        )

    def disable(self, endpoint_id: UUID, failing_since: datetime) -> UUID | None:
        """Disables an endpoint that failed too long; its customer's id if this disabled it."""
        endpoint = self._get(endpoint_id, WebhookEndpoint, "webhook")
        if not endpoint.disable(failing_since):
            return None
        self.save(endpoint)
        return endpoint.tenant_id

    # ------------------------------------------------------------ helpers

    def _visible(self, endpoint_id: UUID, by: Viewer) -> WebhookEndpoint:
        """The endpoint if the caller manages its customer's webhooks; to others it does not exist."""
        endpoint = self._get(endpoint_id, WebhookEndpoint, "webhook")
        if endpoint.deleted or not by.may_administer(endpoint.tenant_id):
            raise NotFound(f"webhook {endpoint_id} not found")
        return endpoint

    def _index(self, customer_id: UUID) -> WebhookEndpoints:
        index = self._existing_index(customer_id)
        if index is None:
            return WebhookEndpoints(id=endpoints_index_id(customer_id), tenant_id=customer_id)
        return index

    def _existing_index(self, customer_id: UUID) -> WebhookEndpoints | None:
        try:
            return self._get(endpoints_index_id(customer_id), WebhookEndpoints, "webhook index")
        except NotFound:
            return None

    def _save_changed(self, *aggregates: Aggregate) -> None:
        changed = [a for a in aggregates if a.pending_events]
        if changed:
            self.save(*changed)

    @staticmethod
    def _details(endpoint: WebhookEndpoint) -> EndpointDetails:
        return EndpointDetails(
            id=endpoint.id,
            customer_id=endpoint.tenant_id,
            url=None if isinstance(endpoint.url, Erased) else endpoint.url,
            events=list(endpoint.events),
            disabled=endpoint.disabled,
            created_at=endpoint.created_on,
        )
