"""Visitors: a site's public registration, the visitors it records, check-in, check-out and erasure (R13).

A visitor is a data subject of their own: name, e-mail, phone and company are sealed
under the key `visitor/<visitor id>` (the registry's `visitor` kind), which is destroyed
once the retention after the visit is over, or at once when the visitor asks. What stays
is what the customer counts: that someone registered for a site and host, when, and
whether they came.

The cancel link and the check-in code are random secrets handed to the visitor only;
the log keeps their SHA-256, so neither can be rebuilt from what is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, TypeVar
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import event
from eventsourcing.persistence import IntegrityError

from picasse.domain.access import Viewer
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import PicasseApplication
from picasse.domain.clock import Clock
from picasse.domain.customers import Customer, Subscription
from picasse.domain.errors import Conflict, InvalidInput, NotFound
from picasse.domain.messages import Catalogue, catalogue_id
from picasse.domain.personal import (
    DEFAULT_VISITOR_DAYS,
    Erased,
    Personal,
)
from picasse.domain.sites import Site, Sites
from picasse.domain.users import User
from picasse.domain.values import (
    EmailAddress,
    PhoneNumber,
    multi_line,
    required_text,
    single_line,
)

T = TypeVar("T")
OPTIONAL_FIELDS = ("phone", "company")  # what a site may ask for beside name, e-mail, host, arrival
MAX_NAME = 100
MAX_COMPANY = 100
MAX_EMAIL = 254
MAX_NOTICE = 10_000
MAX_HOSTS = 200
MAX_ORIGINS = 20
MAX_KEEP_DAYS = 366
MAX_AHEAD = timedelta(days=366)  # an expected arrival further ahead is a mistake
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,62}[a-z0-9])")
_RESERVED_SLUGS = frozenset({"pass", "cancel"})  # /visit/pass/… and /visit/cancel/…
VISITORS = "visitors"  # the customer's catalogue of them (ids only)
_NAMESPACE = uuid5(NAMESPACE_URL, "https://picasse.example/visit-slug")
CONFLICT_RETRIES = 20  # registrations racing for the catalogue: each attempt is one save


class FormRefused(InvalidInput):
    """One or more fields of a registration are not acceptable; each has its own reason."""

    code = "invalid-input"

    def __init__(self, errors: dict[str, str]) -> None:
        first = next(iter(errors))
        super().__init__("; ".join(errors.values()), field=first)
        self.by_field = errors  # field → its reason (the page shows each beside its field)


class NotOnSite(Conflict):
    code = "visitor-not-on-site"


class Host(msgspec.Struct, frozen=True):
    """A user of the customer a visitor may come to see, with the name the form shows;
    that name is the user's personal data, sealed under the user's own key."""

    user_id: UUID
    name: Annotated[str, Personal("user", of="user_id")]


class Registration(Aggregate):
    """A site's visitor registration settings; its id is `registration_id(site_id)`."""

    @event("Set")
    def __init__(
        self,
        id: UUID,
        tenant_id: UUID,
        site_id: UUID,
        slug: str,
        hosts: list[Host],
        fields: list[str],
        privacy_notice: str,
        origins: list[str],
        keep_days: int,
    ) -> None:
        self.tenant_id = tenant_id
        self.site_id = site_id
        self._apply(slug, hosts, fields, privacy_notice, origins, keep_days)

    @event("Changed")
    def change(
        self,
        tenant_id: UUID,
        slug: str,
        hosts: list[Host],
        fields: list[str],
        privacy_notice: str,
        origins: list[str],
        keep_days: int,
    ) -> None:
        self._apply(slug, hosts, fields, privacy_notice, origins, keep_days)

    def _apply(
        self,
        slug: str,
        hosts: list[Host],
        fields: list[str],
        privacy_notice: str,
        origins: list[str],
        keep_days: int,
    ) -> None:
        self.slug = slug
        self.hosts = hosts
        self.fields = fields
        self.privacy_notice = privacy_notice
        self.origins = origins
        self.keep_days = keep_days


class SlugClaim(Aggregate):
    """Which site a public slug belongs to; its id is `slug_claim_id(slug)`."""

    @event("Claimed")
    def __init__(self, id: UUID, slug: str, site_id: UUID | None) -> None:
        self.slug = slug
        self.site_id = site_id

    @event("Moved")
    def move(self, site_id: UUID | None) -> None:
        self.site_id = site_id


class Visitor(Aggregate):
    """One registration through a site's form; personal fields under `visitor/<id>`."""

    @event("Registered")
    def __init__(
        self,
        tenant_id: UUID,
        site_id: UUID,
        host_id: UUID,
        name: Annotated[str, Personal("visitor")],
        email: Annotated[str, Personal("visitor")],
        phone: Annotated[str | None, Personal("visitor")],
        company: Annotated[str | None, Personal("visitor")],
        expected_at: datetime,
        keep_days: int,
        cancel_hash: str,
        pass_hash: str,
        consented_notice_sha256: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.site_id = site_id
        self.host_id = host_id
        self.name = name
        self.email = email
        self.phone = phone
        self.company = company
        self.expected_at = expected_at
        self.keep_days = keep_days
        self.cancel_hash = cancel_hash
        self.pass_hash = pass_hash
        self.checked_in_at: datetime | None = None
        self.checked_out_at: datetime | None = None
        self.cancelled_at: datetime | None = None
        self.erased = False

    @event("CheckedIn")
    def check_in(self, at: datetime, by: UUID | None) -> None:
        self.checked_in_at = at

    @event("CheckedOut")
    def check_out(self, at: datetime, by: UUID | None) -> None:
        self.checked_out_at = at

    @event("Cancelled")
    def cancel(self, at: datetime) -> None:
        self.cancelled_at = at

    @event("ErasureRecorded")
    def record_erasure(self, reason: str) -> None:
        self.erased = True

    @property
    def on_site(self) -> bool:
        return self.checked_in_at is not None and self.checked_out_at is None

    def retained_until(self) -> datetime:
        """The visit is over at check-out, or else at the expected arrival (a visitor
        who never came, or was never checked out); the data is kept `keep_days` after."""
        ended = self.checked_out_at or max(self.expected_at, self.checked_in_at or self.expected_at)
        return ended + timedelta(days=self.keep_days)


def registration_id(site_id: UUID) -> UUID:
    return uuid5(site_id, "visitor-registration")


def slug_claim_id(slug: str) -> UUID:
    return uuid5(_NAMESPACE, slug)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ what goes in and out


class HostChoice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: Annotated[UUID, msgspec.Meta(description="a user of the customer")]
    name: Annotated[str, msgspec.Meta(description="the name the public form shows for them")]


class RegistrationSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    slug: Annotated[
        str, msgspec.Meta(description="the public form's address: /visit/{slug} (a-z, 0-9, -)")
    ]
    hosts: Annotated[
        list[HostChoice], msgspec.Meta(description="the users visitors may come to see")
    ]
    fields: Annotated[
        list[str],
        msgspec.Meta(
            description="what the form asks beside name, e-mail, host and arrival: phone, company"
        ),
    ] = []
    privacy_notice: Annotated[
        str, msgspec.Meta(description="the privacy notice shown beside the consent checkbox")
    ]
    origins: Annotated[
        list[str],
        msgspec.Meta(
            description="origins (https://host[:port]) whose pages may embed the form and"
            " post to the JSON twin"
        ),
    ] = []
    keep_days: Annotated[
        int | None,
        msgspec.Meta(
            description="days visitor data is kept after the visit; default from"
            " PICASSE_VISITOR_RETENTION_DAYS (28)"
        ),
    ] = None


class RegistrationDetails(msgspec.Struct, frozen=True):
    site_id: UUID
    customer_id: UUID
    site_name: str | None
    slug: str
    hosts: list[HostChoice]
    fields: list[str]
    privacy_notice: str
    origins: list[str]
    keep_days: int


class VisitForm(msgspec.Struct, frozen=True, kw_only=True):
    """What a visitor gives, as text (from the form or the JSON twin)."""

    name: str = ""
    email: str = ""
    phone: str = ""
    company: str = ""
    host: str = ""  # a host's user id
    arrival: str = ""  # ISO 8601 date and time; without a zone read as UTC
    consent: bool = False

    def __repr__(self) -> str:  # personal data stays out of every log line
        return "VisitForm(…)"


class Registered(msgspec.Struct, frozen=True):
    """A new visitor and the secrets only they get: the cancel link's and the pass's."""

    visitor_id: UUID
    customer_id: UUID
    cancel_secret: str
    pass_secret: str
    notification_id: int

    def __repr__(self) -> str:
        return f"Registered(visitor_id={self.visitor_id})"


class VisitorDetails(msgspec.Struct, frozen=True):
    id: UUID
    customer_id: UUID
    site_id: UUID
    host_id: UUID
    name: str | None  # None once erased
    email: str | None
    phone: str | None
    company: str | None
    expected_at: datetime
    checked_in_at: datetime | None
    checked_out_at: datetime | None
    cancelled: bool
    erased: bool


class VisitCounts(msgspec.Struct, frozen=True):
    registered: int
    checked_in: int
    cancelled: int
    erased: int
    on_site: int


def pass_code(visitor_id: UUID, secret: str) -> str:
    """What the visitor's QR code holds: their id and the pass secret."""
    return f"{visitor_id}.{secret}"


def cancel_token(visitor_id: UUID, secret: str) -> str:
    return f"{visitor_id}.{secret}"


def _split_token(token: str) -> tuple[UUID, str]:
    ident, _, secret = token.partition(".")
    try:
        return UUID(ident), secret
    except ValueError:
        raise NotFound("no such visit") from None


def _text(value: object) -> str | None:
    return None if value is None or isinstance(value, Erased) else str(value)


def parse_slug(text: str) -> str:
    slug = single_line(text, "slug").strip()
    if not _SLUG.fullmatch(slug) or slug in _RESERVED_SLUGS:
        raise InvalidInput(
            "slug: 3 to 64 characters of a-z, 0-9 and -, starting and ending with a letter or digit",
            field="slug",
        )
    return slug


def parse_origin(text: str) -> str:
    """`https://www.example.com[:port]`, as browsers send it in Origin (no path)."""
    single_line(text, "origins")
    refused = InvalidInput(
        f"origins: {text!r} is not an origin such as https://www.example.com", field="origins"
    )
    try:
        parts = urlsplit(text.strip())
        hostname, port = parts.hostname, parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port out of range
        raise refused from None
    if (
        parts.scheme not in ("https", "http")
        or not hostname
        or not hostname.isascii()
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise refused
    default = {"https": 443, "http": 80}[parts.scheme]
    suffix = f":{port}" if port and port != default else ""
    return f"{parts.scheme}://{hostname.lower()}{suffix}"


class Visitors(PicasseApplication):
    """A site's visitor registration: its settings, the public registration, the desk's
    check-in and check-out, the on-site list and the erasure of visitors."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock,
        default_keep_days: int = DEFAULT_VISITOR_DAYS,
        sharing: PicasseApplication | None = None,
    ) -> None:
        super().__init__(env, sharing=sharing, clock=clock)
        self.clock = clock
        self.default_keep_days = default_keep_days
        self.sites = Sites(clock=clock, sharing=self)

    # ------------------------------------------------------------ settings

    def set_registration(
        self, customer_id: UUID, site_id: UUID, settings: RegistrationSettings
    ) -> None:
        """Sets (or changes) the site's registration; the slug must be free or the site's own."""
        site = self.sites.own_site(customer_id, site_id)
        self._active(customer_id)
        slug = parse_slug(settings.slug)
        fields = list(dict.fromkeys(settings.fields))
        for f in fields:
            if f not in OPTIONAL_FIELDS:
                raise InvalidInput(
                    f"fields: {f!r} is not one of {', '.join(OPTIONAL_FIELDS)}", field="fields"
                )
        if not settings.hosts:
            raise InvalidInput("hosts: name at least one user to visit", field="hosts")
        if len(settings.hosts) > MAX_HOSTS:
            raise InvalidInput(f"hosts: at most {MAX_HOSTS}", field="hosts")
        hosts: dict[UUID, Host] = {}
        for choice in settings.hosts:
            self._host_user(customer_id, choice.user_id)
            name = required_text(choice.name, "hosts", max_length=MAX_NAME)
            hosts.setdefault(choice.user_id, Host(user_id=choice.user_id, name=name))
        notice = multi_line(settings.privacy_notice, "privacy_notice").strip()
        if not notice:
            raise InvalidInput("privacy_notice: must not be empty", field="privacy_notice")
        if len(notice) > MAX_NOTICE:
            raise InvalidInput(
                f"privacy_notice: at most {MAX_NOTICE} characters", field="privacy_notice"
            )
        if len(settings.origins) > MAX_ORIGINS:
            raise InvalidInput(f"origins: at most {MAX_ORIGINS}", field="origins")
        origins = list(dict.fromkeys(parse_origin(o) for o in settings.origins))
        keep_days = self.default_keep_days if settings.keep_days is None else settings.keep_days
        if not 1 <= keep_days <= MAX_KEEP_DAYS:
            raise InvalidInput(f"keep_days: 1 to {MAX_KEEP_DAYS}", field="keep_days")
        values = (slug, list(hosts.values()), fields, notice, origins, keep_days)
        pending: list[Aggregate] = []
        try:
            registration = self._get(registration_id(site.id), Registration, "registration")
        except NotFound:
            registration = Registration(registration_id(site.id), customer_id, site.id, *values)
            old_slug = None
        else:
            old_slug = registration.slug
            registration.change(customer_id, *values)
        pending.append(registration)
        if old_slug != slug:
            pending.append(self._claim(slug, site.id))
            if old_slug is not None:
                old = self._get(slug_claim_id(old_slug), SlugClaim, "slug")
                old.move(None)
                pending.append(old)
        self.save(*pending)

    def _claim(self, slug: str, site_id: UUID) -> SlugClaim:
        try:
            claim = self._get(slug_claim_id(slug), SlugClaim, "slug")
        except NotFound:
            return SlugClaim(slug_claim_id(slug), slug, site_id)
        if claim.site_id is not None and claim.site_id != site_id:
            raise Conflict(f"slug: {slug!r} is taken", field="slug")
        claim.move(site_id)
        return claim

    def _host_user(self, customer_id: UUID, user_id: UUID) -> User:
        try:
            user = self._get(user_id, User, "user")
        except NotFound:
            raise InvalidInput(
                f"hosts: no user {user_id} of this customer", field="hosts"
            ) from None
        if user.tenant_id != customer_id:
            raise InvalidInput(f"hosts: no user {user_id} of this customer", field="hosts")
        return user

    def host_email(self, customer_id: UUID, host_id: UUID) -> str | None:
        """Where the host's notice goes: their e-mail address, unless they are gone."""
        try:
            user = self._host_user(customer_id, host_id)
        except InvalidInput:
            return None
        return None if user.disabled else _text(user.email)

    def _active(self, customer_id: UUID) -> Customer:
        customer = self._get(customer_id, Customer, "customer")
        if customer.subscription is not Subscription.ACTIVE:
            raise Conflict(f"customer {customer_id} has no active subscription")
        return customer

    def registration(self, customer_id: UUID, site_id: UUID) -> RegistrationDetails:
        site = self.sites.own_site(customer_id, site_id)
        return self._details(
            site, self._get(registration_id(site.id), Registration, "registration")
        )

    def registration_by_slug(self, slug: str) -> RegistrationDetails:
        """The live registration at that slug; NotFound for any other (and for a site or
        customer no longer there)."""
        try:
            claim = self._get(slug_claim_id(slug), SlugClaim, "registration")
        except NotFound:
            raise NotFound("no visitor registration at this address") from None
        if claim.site_id is None:
            raise NotFound("no visitor registration at this address")
        registration = self._get(registration_id(claim.site_id), Registration, "registration")
        try:
            site = self.sites.own_site(registration.tenant_id, claim.site_id)
            self._active(registration.tenant_id)
        except (NotFound, Conflict):
            raise NotFound("no visitor registration at this address") from None
        return self._details(site, registration)

    @staticmethod
    def _details(site: Site, r: Registration) -> RegistrationDetails:
        return RegistrationDetails(
            site_id=site.id,
            customer_id=r.tenant_id,
            site_name=_text(site.name),
            slug=r.slug,
            hosts=[
                HostChoice(user_id=h.user_id, name=n)
                for h in r.hosts
                if (n := _text(h.name)) is not None  # an erased user is no longer offered
            ],
            fields=r.fields,
            privacy_notice=r.privacy_notice,
            origins=r.origins,
            keep_days=r.keep_days,
        )

    # ------------------------------------------------------------ the public form

    def register(
        self, slug: str, form: VisitForm, *, gate: Callable[[], None] | None = None
    ) -> Registered:
        """Records a visitor from the site's form, or refuses with every bad field named
        (FormRefused) and records nothing. `gate` runs once the form is found acceptable,
        before anything is recorded (the caller's rate limit: it may refuse too)."""
        registration = self.registration_by_slug(slug)
        errors: dict[str, str] = {}

        def check(field: str, parse: Callable[[], T]) -> T | None:
            try:
                return parse()
            except InvalidInput as error:
                errors[field] = error.message
                return None

        name = check("name", lambda: required_text(form.name, "name", max_length=MAX_NAME))
        email = check("email", lambda: self._email(form.email))
        phone = (
            check("phone", lambda: str(PhoneNumber.parse(form.phone, field="phone")))
            if "phone" in registration.fields
            else None
        )
        company = (
            check("company", lambda: required_text(form.company, "company", max_length=MAX_COMPANY))
            if "company" in registration.fields
            else None
        )
        host = check("host", lambda: self._host(registration, form.host))
        expected = check("arrival", lambda: self._arrival(form.arrival))
        if not form.consent:
            errors["consent"] = "consent: tick the box to agree to the privacy notice"
        if errors or name is None or email is None or host is None or expected is None:
            raise FormRefused(errors)
        if gate is not None:
            gate()
        cancel_secret, pass_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)

        def new_visitor() -> Visitor:
            return Visitor(
                tenant_id=registration.customer_id,
                site_id=registration.site_id,
                host_id=host,
                name=name,
                email=email,
                phone=phone,
                company=company,
                expected_at=expected,
                keep_days=registration.keep_days,
                cancel_hash=secret_hash(cancel_secret),
                pass_hash=secret_hash(pass_secret),
                consented_notice_sha256=secret_hash(registration.privacy_notice),
            )

        visitor_id, notification = self._save_listed(registration.customer_id, new_visitor)
        return Registered(
            visitor_id, registration.customer_id, cancel_secret, pass_secret, notification
        )

    def _save_listed(
        self, customer_id: UUID, new_visitor: Callable[[], Visitor]
    ) -> tuple[UUID, int]:
        """Saves a new visitor with its entry in the customer's catalogue; when another
        registration wrote the catalogue first, again with both made anew (a failed save
        has taken the pending events of what it was given)."""
        for attempt in range(CONFLICT_RETRIES):
            visitor = new_visitor()
            catalogue = self._catalogue(customer_id)
            catalogue.add(visitor.id)
            try:
                recordings = self.save(catalogue, visitor)
            except IntegrityError:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                continue
            return visitor.id, max(r.notification.id for r in recordings)
        raise Conflict("too many registrations at once; try again")

    @staticmethod
    def _email(text: str) -> str:
        text = text.strip()
        if not text:
            raise InvalidInput("email: must not be empty", field="email")
        if len(text) > MAX_EMAIL:
            raise InvalidInput(f"email: at most {MAX_EMAIL} characters", field="email")
        return str(EmailAddress.parse(text, field="email"))

    @staticmethod
    def _host(registration: RegistrationDetails, text: str) -> UUID:
        for host in registration.hosts:
            if str(host.user_id) == text.strip():
                return host.user_id
        raise InvalidInput("host: choose one of the listed hosts", field="host")

    @staticmethod
    def parse_consent(text: str) -> bool:
        """A form's checkbox: absent (no consent), or the value our form sends."""
        if text in ("", "yes", "on"):
            return bool(text)
        raise InvalidInput("consent: tick the box, or leave it", field="consent")

    def _arrival(self, text: str) -> datetime:
        text = single_line(text, "arrival").strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(
                "arrival: give a date and time, e.g. 2026-12-24T09:30", field="arrival"
            ) from None
        now = self.clock.now()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=now.tzinfo)
        if moment < now - timedelta(hours=12):
            raise InvalidInput("arrival: lies in the past", field="arrival")
        if moment > now + MAX_AHEAD:
            raise InvalidInput("arrival: at most a year ahead", field="arrival")
        return moment

    # ------------------------------------------------------------ the visitor's own links

    def visit_by_cancel_token(self, token: str) -> VisitorDetails:
        """The visit the cancel link names; NotFound for a wrong, changed or used link."""
        return _visitor_details(self._by_secret(token, "cancel"))

    def cancel_and_erase(self, token: str) -> Visitor:
        """Records the cancellation; the caller destroys the key (`Privacy.erase_subject`)."""
        visitor = self._by_secret(token, "cancel")
        if visitor.cancelled_at is None:
            visitor.cancel(self.clock.now())
            self.save(visitor)
        return visitor

    def _by_secret(self, token: str, which: str) -> Visitor:
        ident, secret = _split_token(token)
        try:
            visitor = self._get(ident, Visitor, "visit")
        except NotFound:
            raise NotFound("no such visit") from None
        expected = visitor.cancel_hash if which == "cancel" else visitor.pass_hash
        if visitor.erased or not hmac.compare_digest(expected, secret_hash(secret)):
            raise NotFound("no such visit")
        return visitor

    def record_erased(self, visitor_id: UUID, reason: str) -> None:
        visitor = self._get(visitor_id, Visitor, "visit")
        if not visitor.erased:
            visitor.record_erasure(reason)
            self.save(visitor)

    # ------------------------------------------------------------ the desk

    def visitor_by_pass_code(self, code: str) -> VisitorDetails:
        """The visit of a pass, for its pass page (which shows no personal data)."""
        return _visitor_details(self._by_secret(code, "pass"))

    def visitor_by_pass(self, viewer: Viewer, code: str) -> VisitorDetails:
        """The visitor a scanned pass names, for a user of its customer at the desk."""
        visitor = self._by_secret(code, "pass")
        self._guard_desk(viewer, visitor.tenant_id)
        return _visitor_details(visitor)

    def check_in(self, viewer: Viewer, code: str) -> VisitorDetails:
        visitor = self._by_secret(code, "pass")
        self._guard_desk(viewer, visitor.tenant_id)
        if visitor.cancelled_at is not None:
            raise Conflict("this visit was cancelled")
        if not visitor.on_site:
            visitor.check_in(self.clock.now(), viewer.user_id)
            self.save(visitor)
        return _visitor_details(visitor)

    def check_out(self, viewer: Viewer, visitor_id: UUID) -> VisitorDetails:
        visitor = self._get(visitor_id, Visitor, "visit")
        self._guard_desk(viewer, visitor.tenant_id)
        if not visitor.on_site:
            raise NotOnSite("this visitor is not on site")
        visitor.check_out(self.clock.now(), viewer.user_id)
        self.save(visitor)
        return _visitor_details(visitor)

    @staticmethod
    def _guard_desk(viewer: Viewer, customer_id: UUID) -> None:
        if not viewer.sees_visitors_of(customer_id):
            raise NotFound("no such visit")

    # ------------------------------------------------------------ lists

    def visitors(self, customer_id: UUID, site_id: UUID | None = None) -> list[VisitorDetails]:
        """The customer's visitors (of one site), erased ones included, by expected arrival."""
        found = [
            _visitor_details(v)
            for v in self._visitor_aggregates(customer_id)
            if site_id is None or v.site_id == site_id
        ]
        return sorted(found, key=lambda v: (v.expected_at, str(v.id)))

    def on_site(self, customer_id: UUID, site_id: UUID) -> list[VisitorDetails]:
        """Who is on the site now: the evacuation list."""
        return [
            v
            for v in self.visitors(customer_id, site_id)
            if v.checked_in_at is not None and v.checked_out_at is None
        ]

    def counts(self, customer_id: UUID, site_id: UUID | None = None) -> VisitCounts:
        """What stays for the customer's statistics after erasure."""
        vs = self.visitors(customer_id, site_id)
        return VisitCounts(
            registered=len(vs),
            checked_in=sum(v.checked_in_at is not None for v in vs),
            cancelled=sum(v.cancelled for v in vs),
            erased=sum(v.erased for v in vs),
            on_site=sum(v.checked_in_at is not None and v.checked_out_at is None for v in vs),
        )

    def past_retention(self, customer_id: UUID, now: datetime) -> list[UUID]:
        """Visitors whose retention after the visit is over and who are not yet erased."""
        return [
            v.id
            for v in self._visitor_aggregates(customer_id)
            if not v.erased and v.retained_until() <= now
        ]

    def _visitor_aggregates(self, customer_id: UUID) -> list[Visitor]:
        return [self._get(ident, Visitor, "visit") for ident in self._catalogue(customer_id).ids]

    def visitor(self, customer_id: UUID, visitor_id: UUID) -> VisitorDetails:
        visitor = self._get(visitor_id, Visitor, "visit")
        if visitor.tenant_id != customer_id:
            raise NotFound(f"visit {visitor_id} not found")
        return _visitor_details(visitor)

    def _catalogue(self, customer_id: UUID) -> Catalogue:
        try:
            return self._get(catalogue_id(customer_id, VISITORS), Catalogue, VISITORS)
        except NotFound:
            return Catalogue(
                id=catalogue_id(customer_id, VISITORS), tenant_id=customer_id, of=VISITORS
            )


def _visitor_details(v: Visitor) -> VisitorDetails:
    return VisitorDetails(
        id=v.id,
        customer_id=v.tenant_id,
        site_id=v.site_id,
        host_id=v.host_id,
        name=_text(v.name),
        email=_text(v.email),
        phone=_text(v.phone),
        company=_text(v.company),
        expected_at=v.expected_at,
        checked_in_at=v.checked_in_at,
        checked_out_at=v.checked_out_at,
        cancelled=v.cancelled_at is not None,
        erased=v.erased or isinstance(v.name, Erased),
    )
