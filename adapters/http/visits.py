"""Visitor registration on the web (R13): the public form at /visit/{slug}, the visitor's
pass and cancel links, and the desk pages under /app/desk for the customer's users.

The form needs no login and no script, and may be framed by the origins the site lists
(`frame-ancestors`); everything else here keeps the pages' rule (never framed). What
protects the form: the per-address throttle (on the failed-login counters' store), a
honeypot field, a body size limit, the control-character rules of `domain/values.py`,
and the domain's checks of each field, each error shown beside its field. The links a
visitor gets only show a page on GET; their buttons POST, so a mail scanner that follows
a link changes nothing.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec
from litestar import MediaType, Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect

from picasse.adapters.http.auth import LoginThrottled, ThrottlePolicy, address_block
from picasse.adapters.http.clients import client_address
from picasse.adapters.http.pages import (
    PAGE_HEADERS,
    SEE_OTHER,
    PageGuard,
    _caller,
    caller_page,
    templates,
)
from picasse.adapters.qr import qr_svg
from picasse.adapters.visitor_notices import desk_url, notify
from picasse.domain.access import Viewer
from picasse.domain.application import Pseudonyms
from picasse.domain.clock import Clock
from picasse.domain.errors import DomainError, InvalidInput, NotFound
from picasse.domain.messaging import Messages
from picasse.domain.personal import Trigger, subject_name
from picasse.domain.privacy import Privacy
from picasse.domain.visitors import (
    FormRefused,
    Registered,
    RegistrationDetails,
    VisitForm,
    Visitors,
)

if TYPE_CHECKING:
    from picasse.adapters.http.app import HttpDeps

MAX_FORM_BYTES = 16 * 1024  # the form's fields, with room for a long company name
HONEYPOT = "website"


class RegistrationThrottled(LoginThrottled):
    """Too many registrations from this address for now: wait, then try again."""

    code = "registration-throttled"

    def __init__(self, retry_after: int) -> None:
        DomainError.__init__(
            self, f"Too many registrations from your address; try again in {retry_after} seconds."
        )
        self.retry_after = retry_after


class TrapSprung(InvalidInput):
    """The honeypot field was filled in: a program, not a person. Nothing is recorded."""

    code = "honeypot"


class VisitService:
    """What the visit routes and pages do beyond one domain call: throttle, register,
    notify; cancel and erase. A plain class (Litestar would inspect a dataclass)."""

    def __init__(
        self,
        *,
        visitors: Visitors,
        privacy: Privacy,
        messages: Messages,
        public_url: str,
        deps: HttpDeps,
    ) -> None:
        self.visitors = visitors
        self.privacy = privacy
        self.messages = messages
        self.public_url = public_url
        self.deps = deps
        self.throttle: ThrottlePolicy = deps.login_throttling.per_address_registration

    @property
    def clock(self) -> Clock:
        return self.visitors.clock

    def register(self, slug: str, form: VisitForm, honeypot: str, client_ip: str) -> Registered:
        """Throttle, trap, register, notify: FormRefused, TrapSprung or
        RegistrationThrottled record nothing."""
        registration = self.visitors.registration_by_slug(slug)
        if honeypot:
            raise TrapSprung(f"{HONEYPOT}: leave this field empty", field=HONEYPOT)
        # Counted once the form is acceptable: refusals record nothing and send nothing.
        registered = self.visitors.register(slug, form, gate=lambda: self._count(client_ip))
        visitor = self.visitors.visitor(registered.customer_id, registered.visitor_id)
        notify(
            self.messages,
            self.public_url,
            registration,
            registered,
            visitor,
            self.visitors.host_email(registered.customer_id, visitor.host_id),
        )
        return registered

    def _count(self, client_ip: str) -> None:
        store, now = self.deps.auth_store, self.clock.now()
        pseudonyms: Pseudonyms = self.deps.pseudonyms
        key = pseudonyms.pseudonym("visit-registration/address", address_block(client_ip))
        [count] = store.count_attempt([(key, self.throttle.window)], now)
        if count.retry_after is not None:
            raise RegistrationThrottled(max(1, math.ceil(count.retry_after)))
        wait = self.throttle.wait_after(count.attempt or 0)
        if wait is not None:
            store.block(key, now + wait)

    def cancel_and_erase(self, token: str) -> None:
        """The visitor's own request: the visit is cancelled and their key destroyed."""
        visitor = self.visitors.cancel_and_erase(token)
        self.privacy.erase_subject(
            visitor.tenant_id,
            subject_name("visitor", visitor.id),
            "the visitor asked (cancel link)",
            trigger=Trigger.REQUEST,
        )
        self.visitors.record_erased(visitor.id, "request")


def frame_headers(origins: list[str]) -> dict[str, str]:
    """The pages' headers, but framable by the site's listed origins (and nothing else)."""
    ancestors = " ".join(["'self'", *origins]) if origins else "'none'"
    headers = {k: v for k, v in PAGE_HEADERS.items() if k != "X-Frame-Options"}
    headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
        "frame-ancestors 'none'", f"frame-ancestors {ancestors}"
    )
    return headers


def _page(template: str, status: int, headers: dict[str, str], **context: Any) -> Response[str]:
    return Response(
        templates.get_template(template).render(**context),
        status_code=status,
        media_type=MediaType.HTML,
        headers=headers,
    )


class FormFields(msgspec.Struct, frozen=True):
    """The form as posted (every field text; absent ones empty)."""

    name: str = ""
    email: str = ""
    phone: str = ""
    company: str = ""
    host: str = ""
    arrival: str = ""
    consent: str = ""
    website: str = ""  # the honeypot

    def __repr__(self) -> str:
        return "FormFields(…)"

    def form(self) -> VisitForm:
        """The form as the domain takes it; InvalidInput (consent) for a box we never send."""
        return VisitForm(
            name=self.name, email=self.email, phone=self.phone, company=self.company,
            host=self.host, arrival=self.arrival, consent=Visitors.parse_consent(self.consent),
        )  # fmt: skip


def _form_page(
    r: RegistrationDetails, form: VisitForm, errors: dict[str, str], status: int, **more: Any
) -> Response[str]:
    return _page(
        "visit_form.html",
        status,
        frame_headers(r.origins),
        slug=r.slug,
        site_name=r.site_name,
        fields=r.fields,
        hosts=r.hosts,
        privacy_notice=r.privacy_notice,
        form=form,
        errors=errors,
        **more,
    )


@get("/visit/{slug:str}", opt={"public": True}, include_in_schema=False, sync_to_thread=True)
def visit_form(visits: NamedDependency[VisitService], slug: FromPath[str]) -> Response[str]:
    registration = visits.visitors.registration_by_slug(slug)
    return _form_page(registration, VisitForm(), {}, HTTPStatus.OK)


@post(
    "/visit/{slug:str}",
    opt={"public": True},
    include_in_schema=False,
    sync_to_thread=True,
    request_max_body_size=MAX_FORM_BYTES,
)
def visit_register(
    request: Request[Any, Any, Any],
    visits: NamedDependency[VisitService],
    slug: FromPath[str],
    data: Annotated[FormFields, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[str]:
    registration = visits.visitors.registration_by_slug(slug)
    form = VisitForm(
        name=data.name, email=data.email, phone=data.phone, company=data.company,
        host=data.host, arrival=data.arrival,
    )  # fmt: skip
    try:
        form = data.form()
        visits.register(slug, form, data.website, client_address(request))
    except FormRefused as refused:
        return _form_page(registration, form, refused.by_field, HTTPStatus.UNPROCESSABLE_ENTITY)
    except TrapSprung as trap:
        return _form_page(
            registration, form, {HONEYPOT: trap.message}, HTTPStatus.UNPROCESSABLE_ENTITY
        )
    except RegistrationThrottled as error:
        response = _form_page(
            registration, form, {}, HTTPStatus.TOO_MANY_REQUESTS, throttled=error.message
        )
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    except InvalidInput as error:  # a control character, or the like, named by its field
        errors = {error.field or "name": error.message}
        return _form_page(registration, form, errors, HTTPStatus.UNPROCESSABLE_ENTITY)
    return _page(
        "visit_done.html",
        HTTPStatus.OK,
        frame_headers(registration.origins),
        site_name=registration.site_name,
    )


@get("/visit/pass/{code:str}", opt={"public": True}, include_in_schema=False, sync_to_thread=True)
def visit_pass(visits: NamedDependency[VisitService], code: FromPath[str]) -> Response[str]:
    """The visitor's pass: the QR code of the desk page for it (which needs a login)."""
    visitor = visits.visitors.visitor_by_pass_code(code)
    site = visits.visitors.sites.site(visitor.customer_id, visitor.site_id)
    return _page(
        "visit_pass.html",
        HTTPStatus.OK,
        PAGE_HEADERS,
        site_name=site.name,
        expected=visitor.expected_at.strftime("%Y-%m-%d %H:%M %Z"),
        qr=_markup(qr_svg(desk_url(visits.public_url, code))),
    )


def _markup(svg: str) -> Any:
    from markupsafe import Markup

    return Markup(svg)  # noqa: S704 (segno's own SVG of our URL)


@get(
    "/visit/cancel/{token:str}", opt={"public": True}, include_in_schema=False, sync_to_thread=True
)
def visit_cancel_page(visits: NamedDependency[VisitService], token: FromPath[str]) -> Response[str]:
    """Asks; changes nothing (a mail scanner following the link cancels nothing)."""
    visitor = visits.visitors.visit_by_cancel_token(token)
    site = visits.visitors.sites.site(visitor.customer_id, visitor.site_id)
    return _page(
        "visit_cancel.html",
        HTTPStatus.OK,
        PAGE_HEADERS,
        token=token,
        site_name=site.name,
        expected=visitor.expected_at.strftime("%Y-%m-%d %H:%M %Z"),
    )


@post(
    "/visit/cancel/{token:str}",
    opt={"public": True},
    include_in_schema=False,
    sync_to_thread=True,
    request_max_body_size=1024,
)
def visit_cancel(visits: NamedDependency[VisitService], token: FromPath[str]) -> Response[str]:
    visits.cancel_and_erase(token)
    return _page("visit_cancel.html", HTTPStatus.OK, PAGE_HEADERS, done=True, token=token)


# ---------------------------------------------------------------- the desk (logged in)


def _sees_own_visitors(viewer: Viewer) -> bool:
    return viewer.sees_visitors_of(viewer.customer_id)


desk_users = PageGuard(_sees_own_visitors, "the desk is for the customer's own users")


class DeskCode(msgspec.Struct, frozen=True):
    code: str = ""


def _desk(
    request: Request[Any, Any, Any],
    visits: VisitService,
    *,
    code: str | None = None,
    error: str | None = None,
    status: int = HTTPStatus.OK,
) -> Response[str]:
    caller = _caller(request)
    viewer = caller.viewer()
    customer_id = caller.customer_id
    assert customer_id is not None, "desk_users lets a customer's users in only"
    visit = None
    if code and error is None:
        try:
            visit = visits.visitors.visitor_by_pass(viewer, code)
        except NotFound:
            error, status = "No such pass (cancelled, erased, or mistyped).", HTTPStatus.NOT_FOUND
    sites, hosts = [], {}
    for site in visits.visitors.sites.sites(customer_id):
        try:
            registration = visits.visitors.registration(customer_id, site.id)
        except NotFound:
            continue
        hosts.update({h.user_id: h.name for h in registration.hosts})
        sites.append(
            {
                "id": site.id,
                "name": site.name,
                "on_site": visits.visitors.on_site(customer_id, site.id),
                "counts": visits.visitors.counts(customer_id, site.id),
            }
        )
    return caller_page(
        request, "app_desk.html", status, code=code, visit=visit, error=error, sites=sites,
        hosts=hosts,
    )  # fmt: skip


@get("/", include_in_schema=False, sync_to_thread=True)
def desk_page(
    request: Request[Any, Any, Any],
    visits: NamedDependency[VisitService],
    code: Annotated[str | None, QueryParameter()] = None,
) -> Response[str]:
    """The desk: a scanned pass (the QR code opens this page with `code`) shows its visit
    and a button; nothing changes until the button is pressed."""
    return _desk(request, visits, code=code)


@post(
    "/check-in", include_in_schema=False, sync_to_thread=True, request_max_body_size=MAX_FORM_BYTES
)
def desk_check_in(
    request: Request[Any, Any, Any],
    visits: NamedDependency[VisitService],
    data: Annotated[DeskCode, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    viewer = _caller(request).viewer()
    try:
        visits.visitors.check_in(viewer, data.code)
    except DomainError as error:
        status = HTTPStatus.NOT_FOUND if isinstance(error, NotFound) else HTTPStatus.CONFLICT
        return _desk(request, visits, code=data.code, error=error.message, status=status)
    return Redirect(f"/app/desk?code={data.code}", status_code=SEE_OTHER)


@post(
    "/check-out/{visitor_id:uuid}",
    include_in_schema=False,
    sync_to_thread=True,
    request_max_body_size=1024,
)
def desk_check_out(
    request: Request[Any, Any, Any],
    visits: NamedDependency[VisitService],
    visitor_id: FromPath[UUID],
) -> Response[Any]:
    viewer = _caller(request).viewer()
    try:
        visits.visitors.check_out(viewer, visitor_id)
    except DomainError as error:
        status = HTTPStatus.NOT_FOUND if isinstance(error, NotFound) else HTTPStatus.CONFLICT
        return _desk(request, visits, error=error.message, status=status)
    return Redirect("/app/desk", status_code=SEE_OTHER)


@get("/evacuation", include_in_schema=False, sync_to_thread=True)
def evacuation_list(
    request: Request[Any, Any, Any],
    visits: NamedDependency[VisitService],
    site: Annotated[UUID | None, QueryParameter()] = None,
) -> Response[str]:
    """Who is on site now, to print: names, companies, phones, hosts; of one site, or of
    every site that takes visitors."""
    customer_id = _caller(request).customer_id
    assert customer_id is not None, "desk_users lets a customer's users in only"
    wanted = [site] if site else [s.id for s in visits.visitors.sites.sites(customer_id)]
    lists = []
    for ident in wanted:
        try:
            registration = visits.visitors.registration(customer_id, ident)
        except NotFound:
            if site:
                raise
            continue
        lists.append(
            {
                "name": registration.site_name,
                "on_site": visits.visitors.on_site(customer_id, ident),
                "hosts": {h.user_id: h.name for h in registration.hosts},
            }
        )
    return _page(
        "app_evacuation.html", HTTPStatus.OK, PAGE_HEADERS, sites=lists, now=visits.clock.now()
    )


def visit_pages() -> list[Any]:
    """The public visit pages, and the desk under /app/desk (with the pages' error page and
    dependencies: the pages router includes these)."""
    desk = Router(
        path="/app/desk",
        route_handlers=[desk_page, desk_check_in, desk_check_out, evacuation_list],
        guards=[desk_users],
    )
    return [visit_form, visit_register, visit_pass, visit_cancel_page, visit_cancel, desk]
