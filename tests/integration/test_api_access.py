"""Who sees what through the HTTP API (R7, R11): every route is tried from the app's own
route table, so a route added later is covered without anyone remembering to."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.enums import ParamType
from litestar.routes import HTTPRoute
from litestar.types import Method
from litestar.utils.sync import AsyncCallable

from picasse.adapters.http.app import HttpDeps, create_app
from picasse.domain.access import Viewer
from picasse.domain.api_keys import Scope
from picasse.domain.billing import Billing, price_plan
from picasse.domain.cases import Cases
from picasse.domain.conferencing import ScheduleRequest
from picasse.domain.geofences import Circle
from picasse.domain.sites import Sites
from picasse.domain.values import Role
from picasse.domain.visitors import HostChoice, RegistrationSettings, VisitForm, Visitors
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from tests.integration.api_server import (
    PASSWORD,
    Tenant,
    add_staff,
    catch_up_views,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)

# Routes anyone may call, each for a reason; every other route is tried below. A route made
# PUBLIC without being listed here fails the tests: opening a route is a decision to review.
EXEMPT = {
    ("GET", "/health"): "liveness, says nothing",
    ("POST", "/v1/webhooks/receipts"): "gateways sign each receipt",
    ("POST", "/v1/webhooks/telephony"): "the telephony provider signs each report",
    ("POST", "/v1/webhooks/twilio/status"): "Twilio signs each callback (X-Twilio-Signature)",
    ("POST", "/v1/webhooks/twilio/gather"): "Twilio signs the keypad's answer; records an ack only",
    ("GET", "/v1/ack/{token:str}"): "the link's MAC is the recipient's proof; records nothing",
    ("POST", "/v1/ack/{token:str}"): "the link's MAC is the recipient's proof",
    ("POST", "/v1/sessions"): "logging in",
    ("DELETE", "/v1/sessions"): "logging out",
    ("GET", "/login"): "the login page",
    ("POST", "/login"): "the login form",
    ("GET", "/static/{file_path:path}"): "the stylesheet",
    ("HEAD", "/static/{file_path:path}"): "the stylesheet",
    ("GET", "/set-password/{token:str}"): "the one-time link is the user's proof; shows a form",
    ("POST", "/set-password/{token:str}"): "the one-time link is the user's proof",
    ("POST", "/v1/password-links/{token:str}"): "the one-time link is the user's proof",
    ("GET", "/docs"): "the API reference: the OpenAPI document, which /schema serves anyway",
    ("GET", "/docs/assets/{name:str}"): "Swagger UI's script, stylesheet and licence",
    ("GET", "/visit/{slug:str}"): "a site's public visitor form (R13)",
    ("POST", "/visit/{slug:str}"): "a site's public visitor form: throttled, honeypot (R13)",
    ("POST", "/v1/sites/{slug:str}/visits"): "the form's JSON twin: listed origins only (R13)",
    ("GET", "/visit/pass/{code:str}"): "the pass secret is the visitor's proof; a QR code only",
    ("GET", "/visit/cancel/{token:str}"): "the cancel secret is the visitor's proof; asks only",
    ("POST", "/visit/cancel/{token:str}"): "the cancel secret is the visitor's proof",
}
# What a body for each route that takes one looks like; a new route with a body needs one here.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/v1/customers/{customer_id:uuid}"): {"contact_name": "Mallory Meddler"},
    ("POST", "/v1/customers/{customer_id:uuid}/users"): {
        "login": "planted-user",
        "role": "customer_admin",
        "email": "planted@evil.example",
    },
    ("PATCH", "/v1/customers/{customer_id:uuid}/users/{user_id:uuid}"): {"disabled": True},
    ("POST", "/v1/api-keys"): {"name": "planted", "scopes": ["users"]},
    ("POST", "/v1/me/password"): {"current_password": "not it", "new_password": PASSWORD},
    ("POST", "/account/password"): {
        "current_password": "not it",
        "new_password": PASSWORD,
        "repeat": PASSWORD,
    },
    ("POST", "/v1/messages"): {"channel": "sms", "to": ["+31612345678"], "body": "hi"},
    ("POST", "/v1/templates"): {"name": "Planted", "channel": "sms", "text": "Hi {name}"},
    ("PUT", "/v1/templates/{template_id:uuid}"): {"text": "Overwritten by another customer"},
    ("POST", "/v1/groups"): {"name": "Planted", "members": ["+31612345678"]},
    ("PUT", "/v1/groups/{group_id:uuid}"): {"members": ["planted@evil.example"]},
    ("POST", "/app/templates"): {"name": "Planted", "channel": "sms", "text": "Hi"},
    ("POST", "/v1/webhooks"): {"url": "http://127.0.0.1:9/planted", "events": ["delivery.failed"]},
    ("POST", "/v1/sites"): {"name": "Planted", "address": "Evil Street 1"},
    ("PUT", "/v1/sites/{site_id:uuid}"): {"name": "Planted", "address": "Evil Street 1"},
    ("PUT", "/v1/sites/{site_id:uuid}/registration"): {
        "slug": "planted",
        "hosts": [{"user_id": "00000000-0000-0000-0000-000000000001", "name": "Planted"}],
        "privacy_notice": "Planted",
    },
    ("POST", "/app/desk/check-in"): {"code": "00000000-0000-0000-0000-000000000001.planted"},
    ("PUT", "/v1/attendance/service"): {"on": True},
    ("POST", "/v1/location/pings"): {
        "pings": [
            {
                "user_id": str(uuid.uuid4()),
                "at": "2026-01-01T00:00:00+00:00",
                "lat": 52.0,
                "lon": 4.0,
                "accuracy_m": 5,
            }
        ]
    },
    ("POST", "/v1/geofences"): {
        "site_id": str(uuid.uuid4()),
        "name": "Planted",
        "shape": {"type": "circle", "lat": 52.0, "lon": 4.0, "radius_m": 50},
    },
    ("PUT", "/v1/geofences/{fence_id:uuid}"): {
        "site_id": str(uuid.uuid4()),
        "name": "Planted",
        "shape": {"type": "circle", "lat": 52.0, "lon": 4.0, "radius_m": 50},
    },
    ("POST", "/v1/conferences"): {
        "title": "Planted",
        "start": "2030-01-01T10:00:00Z",
        "duration_minutes": 30,
    },
    ("PATCH", "/v1/conferences/{conference_id:uuid}"): {"title": "Overwritten by another"},
    ("POST", "/v1/dial-in-numbers"): {"customer_id": str(uuid.uuid4()), "number": "+31201234999"},
    ("POST", "/v1/cases"): {"category": "complaint", "description": "Planted"},
    ("POST", "/v1/cases/{case_id:uuid}/comments"): {"text": "Planted in another's case"},
    ("PATCH", "/v1/cases/{case_id:uuid}"): {"state": "in_progress"},
    ("PUT", "/v1/customers/{customer_id:uuid}/plan"): {
        "monthly_fee": "0",
        "per_sms_segment": "0",
        "per_email": "0",
        "per_voice_minute": "0",
        "per_conference_minute": "0",
        "vat_percent": "0",
    },
    ("POST", "/v1/invoices/{invoice_id:uuid}/payments"): {"amount_cents": 1},
    ("POST", "/app/cases"): {"category": "complaint", "description": "Planted"},
    ("POST", "/app/cases/{case_id:uuid}/comments"): {"text": "Planted in another's case"},
    ("POST", "/admin/cases/{case_id:uuid}/comments"): {"text": "Planted"},
    ("POST", "/admin/cases/{case_id:uuid}/state"): {"state": "in_progress"},
}


PLAN = price_plan({name: "1" for name in ("monthly_fee", "per_sms_segment", "per_email",
                  "per_voice_minute", "per_conference_minute", "vat_percent")})  # fmt: skip


class World:
    """Two customers, A and B, Picasse staff, and a client per person."""

    def __init__(self, deps: HttpDeps, base_url: str, a: Tenant, b: Tenant, staff: dict[Role, str]):
        self.deps, self.base_url, self.a, self.b, self.staff = deps, base_url, a, b, staff
        self.b_key_id = deps.api_keys.issue(user_id=b.admin_id, customer_id=b.customer_id).id
        self.b_template_id = deps.messages.save_template(b.customer_id, "sms", "B's", "Hi {n}")
        self.b_group_id = deps.messages.create_group(b.customer_id, "B's", ["+31612345677"])
        b_admin = Viewer(role=Role.CUSTOMER_ADMIN, customer_id=b.customer_id, user_id=b.admin_id)
        self.b_site_id = Sites(clock=deps.clock, sharing=deps.messages).add(
            b.customer_id, "B's depot", "Bellowsweg 1"
        )
        visitors = Visitors(clock=deps.clock, sharing=deps.messages)
        visitors.set_registration(
            b.customer_id,
            self.b_site_id,
            RegistrationSettings(
                slug="bellows-depot",
                hosts=[HostChoice(user_id=b.user_id, name="Bo")],
                privacy_notice="B's notice",
            ),
        )
        tomorrow = (deps.clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
        self.b_visitor_id = visitors.register(
            "bellows-depot",
            VisitForm(name="B's visitor", email="v@bellows.example", host=str(b.user_id),
                      arrival=tomorrow, consent=True),
        ).visitor_id  # fmt: skip
        assert deps.attendance is not None
        self.b_fence_id = deps.attendance.add_fence(
            b.customer_id, self.b_site_id, "B's gate", Circle(lat=52.0, lon=4.0, radius_m=50)
        )
        self.b_webhook_id = deps.webhooks.register(
            b.customer_id, "https://93.184.216.34/b-hook", ["delivery.failed"], by=b_admin
        ).endpoint.id
        self.b_number = "+31201234998"
        assert deps.conferences is not None
        deps.conferences.add_dial_in_number(
            b.customer_id, self.b_number, Viewer(role=Role.SUPPORT, customer_id=None)
        )
        b_user = Viewer(role=Role.CUSTOMER_USER, customer_id=b.customer_id, user_id=b.user_id)
        self.b_conference_id = deps.conferences.schedule(
            b.customer_id,
            ScheduleRequest(
                title="B's call", start=deps.clock.now() + timedelta(days=30), duration_minutes=30
            ),
            b_user,
        ).conference_id
        b_user = Viewer(role=Role.CUSTOMER_USER, customer_id=b.customer_id, user_id=b.user_id)
        cases = Cases(clock=deps.clock, sharing=deps.messages)
        self.b_case_id = cases.file(b.customer_id, "complaint", "B's words", by=b_user).id
        billing = Billing(clock=deps.clock, sharing=deps.messages)
        billing.set_plan(b.customer_id, PLAN, by=Viewer(role=Role.SUPPORT, customer_id=None))
        last_month = f"{deps.clock.now().replace(day=1) - timedelta(days=1):%Y-%m}"
        (line,) = [x for x in billing.run(last_month) if x.customer_id == b.customer_id]
        self.b_invoice_id = line.invoice_id

    def as_(self, login: str) -> httpx.Client:
        user = self.deps.accounts.user_by_login(login)
        issued = self.deps.api_keys.issue(user_id=user.id, customer_id=user.customer_id)
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {issued.key}"},
            timeout=20,
            follow_redirects=False,
        )

    def session_of(self, login: str) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=20, follow_redirects=False)
        response = client.post("/v1/sessions", json={"login": login, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return client


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Settings]:
    """Settings on a schema of this module's own."""
    with module_settings(tmp_path_factory, database_url, "access") as settings:
        yield settings


@pytest.fixture(scope="module")
def app_and_deps(here: Settings, database_url: str) -> Iterator[tuple[Litestar, HttpDeps]]:
    with http_deps(here, database_url) as deps:
        yield create_app(with_cheap_passwords(deps)), deps


@pytest.fixture(scope="module")
def app(app_and_deps: tuple[Litestar, HttpDeps]) -> Litestar:
    return app_and_deps[0]


@pytest.fixture(scope="module")
def world(
    app_and_deps: tuple[Litestar, HttpDeps], here: Settings, database_url: str
) -> Iterator[World]:
    app, deps = app_and_deps
    a, b = make_tenant(deps, "Anvil"), make_tenant(deps, "Bellows")
    staff = add_staff(deps)
    catch_up_views(here, database_url)
    with serving(app) as base_url:
        yield World(deps, base_url, a, b, staff)


def _markers(tenant: Tenant) -> list[str]:
    """Text that only a response about this tenant could hold."""
    return [
        str(tenant.customer_id), tenant.organisation, tenant.contact_email, str(tenant.admin_id),
        str(tenant.user_id), tenant.admin_login, tenant.user_login, str(tenant.message_id),
        tenant.recipient, tenant.body,
    ]  # fmt: skip


def _operations(app: Litestar) -> Iterator[tuple[Method, str, HTTPRoute, Any]]:
    """(method, path, route, kwargs model) of every route handler, OPTIONS aside (Litestar
    answers those itself, with the methods only)."""
    for route in app.routes:
        assert isinstance(route, HTTPRoute), f"a route of a kind this test does not know: {route}"
        for method, (_, kwargs_model) in route.route_handler_map.items():
            if method != "OPTIONS":
                yield method, route.path, route, kwargs_model


def _is_public(route: HTTPRoute, method: Method) -> bool:
    handler = route.route_handler_map[method][0]
    return bool(handler.opt.get("public")) or route.path.startswith("/schema")


def _query_names(kwargs_model: Any) -> set[str]:
    return {
        p.field_alias for p in kwargs_model.expected_query_params if p.param_type is ParamType.QUERY
    }


def _fill(path: str, values: dict[str, str]) -> str | None:
    """The path with its parameters filled, or None if one has no value to fill it with."""
    out = []
    for part in path.split("/"):
        if part.startswith("{"):
            name = part.strip("{}").split(":")[0]
            if name not in values:
                return None
            part = values[name]
        out.append(part)
    return "/".join(out)


def _request(
    client: httpx.Client,
    method: str,
    path: str,
    url: str,
    kwargs_model: Any,
    query: dict[str, str],
) -> httpx.Response | str:
    """The response from `url` (`path` filled in), or why the request could not be made."""
    body = None
    if "data" in kwargs_model.expected_reserved_kwargs or kwargs_model.expected_form_data:
        body = BODIES.get((method, path))
        if body is None:
            return f"{method} {path} takes a body: add an example to BODIES"
    return client.request(method, url, params=query, json=body)


# ---------------------------------------------------------------- scopes of API keys


def test_every_route_that_is_not_public_names_a_known_scope_or_is_a_page(app: Litestar) -> None:
    """A /v1 route without a scope would refuse every key; a page takes sessions only."""
    unscoped = []
    for method, path, route, _ in _operations(app):
        if _is_public(route, method) or not path.startswith("/v1"):
            continue
        scope = route.route_handler_map[method][0].opt.get("scope")
        if scope is None or scope not in {s.value for s in Scope}:
            unscoped.append(f"{method} {path}: scope {scope!r}")

    assert not unscoped, "name a scope with opt=scoped(Scope....):\n" + "\n".join(unscoped)


def test_every_guard_runs_in_the_event_loop_not_in_a_thread(app: Litestar) -> None:
    """Guards read only the caller that the middleware resolved: Litestar wraps a plain
    function guard to run in a worker thread, a thread hand-off for each guard of each
    request (four of them per send, before the handler's own)."""
    threaded = {
        f"{method} {path}: {guard.func!r}"
        for method, path, route, _ in _operations(app)
        for guard in route.route_handler_map[method][0].resolve_guards()
        if isinstance(guard, AsyncCallable)
    }
    assert not threaded, "make these guards coroutines (async def):\n" + "\n".join(threaded)


def test_a_key_is_refused_every_route_outside_its_scopes_and_every_page(
    app: Litestar, world: World
) -> None:
    a = world.a
    of_a = {
        "customer_id": str(a.customer_id),
        "message_id": str(a.message_id),
        "key_id": str(uuid.uuid4()),
        "user_id": str(a.user_id),
    }
    user = world.deps.accounts.user_by_login(a.admin_login)
    problems, tried = [], 0
    for scope in Scope:
        others = [s.value for s in Scope if s is not scope]
        issued = world.deps.api_keys.issue(
            user_id=user.id, customer_id=user.customer_id, name="narrow", scopes=others
        )
        client = httpx.Client(
            base_url=world.base_url,
            headers={"Authorization": f"Bearer {issued.key}"},
            timeout=20,
            follow_redirects=False,
        )
        for method, path, route, kwargs_model in _operations(app):
            if _is_public(route, method):
                continue
            needed = route.route_handler_map[method][0].opt.get("scope")
            if needed is not None and needed != scope:
                continue
            url = _fill(path, of_a)
            if url is None:
                continue
            response = _request(client, method, path, url, kwargs_model, {})
            if isinstance(response, str):
                problems.append(response)
                continue
            tried += 1
            refused = response.status_code == 403 and (
                not path.startswith("/v1") or response.json()["code"] == "missing-scope"
            )  # a page answers with a page
            if not refused:
                problems.append(f"{scope.value}-less key: {method} {url} -> {response.status_code}")

    assert not problems, "\n".join(problems)
    assert tried >= 12


# ---------------------------------------------------------------- tenant isolation (R11)


def test_every_public_route_is_one_listed_as_exempt(app: Litestar) -> None:
    public = {
        (method, path)
        for method, path, route, _ in _operations(app)
        if _is_public(route, method) and not path.startswith("/schema")
    }

    assert public <= EXEMPT.keys(), f"public but not listed as exempt: {public - EXEMPT.keys()}"


def test_a_user_of_customer_a_gets_404_or_403_for_every_resource_of_customer_b(
    app: Litestar, world: World
) -> None:
    b = world.b
    of_b = {
        "customer_id": str(b.customer_id),
        "message_id": str(b.message_id),
        "key_id": str(world.b_key_id),
        "user_id": str(b.user_id),
        "template_id": str(world.b_template_id),
        "group_id": str(world.b_group_id),
        "webhook_id": str(world.b_webhook_id),
        "site_id": str(world.b_site_id),
        "visitor_id": str(world.b_visitor_id),
        "fence_id": str(world.b_fence_id),
        "conference_id": str(world.b_conference_id),
        "participant_id": str(uuid.uuid4()),
        "number": world.b_number,
        "case_id": str(world.b_case_id),
        "invoice_id": str(world.b_invoice_id),
    }
    problems, tried = [], 0
    for login in (world.a.admin_login, world.a.user_login):
        client = world.as_(login)
        for method, path, route, kwargs_model in _operations(app):
            if (method, path) in EXEMPT or path.startswith("/schema"):
                continue
            url = _fill(path, of_b)
            if url is None:
                problems.append(f"{method} {path}: a path parameter with no B resource to try")
                continue
            query = {"customer_id": str(b.customer_id)} if "customer_id" in _query_names(
                kwargs_model
            ) else {}  # fmt: skip
            response = _request(client, method, path, url, kwargs_model, query)
            if isinstance(response, str):
                problems.append(response)
                continue
            tried += 1
            names_b = url != path or bool(query)
            if names_b and response.status_code not in (403, 404):
                problems.append(f"{login}: {method} {url} {query} -> {response.status_code}")
            # An id the request itself named may come back in "… not found"; nothing else may.
            asked = url + " ".join(query.values())
            leaked = [m for m in _markers(b) if m in response.text and m not in asked]
            if leaked:
                problems.append(f"{login}: {method} {url} {query} shows B's {leaked}")

    assert not problems, "\n".join(problems)
    assert tried >= 2 * 12  # the /v1 routes at least, for both of A's users


def test_a_customer_sees_only_itself_where_staff_see_every_customer(world: World) -> None:
    mine = world.as_(world.a.user_login).get("/v1/customers").json()
    everyone = world.as_(world.staff[Role.SUPPORT]).get("/v1/customers").json()

    assert [c["id"] for c in mine] == [str(world.a.customer_id)]
    assert {str(world.a.customer_id), str(world.b.customer_id)} <= {c["id"] for c in everyone}


# ---------------------------------------------------------------- message content (R7)


def test_no_picasse_role_obtains_a_message_body_through_any_route(
    app: Litestar, world: World
) -> None:
    a = world.a
    of_a = {"customer_id": str(a.customer_id), "message_id": str(a.message_id)}
    problems, tried = [], 0
    for role, login in world.staff.items():
        for client in (world.as_(login), world.session_of(login)):
            for method, path, _, kwargs_model in _operations(app):
                if method != "GET" or path.startswith("/schema"):
                    continue
                url = _fill(path, of_a)
                if url is None:
                    continue  # e.g. ack links and static files: no message to name
                # Every flag asked for (reveal_content=true and any added later), A's id
                # where a customer is named; periods and limits keep their defaults.
                query = {
                    name: str(a.customer_id) if name == "customer_id" else "true"
                    for name in _query_names(kwargs_model) - {"from", "to", "limit"}
                }
                response = client.get(url, params=query)
                tried += 1
                if a.body in response.text or a.body[:20] in response.text:
                    problems.append(f"{role.value}: GET {url} {query} shows the body")

    assert not problems, "\n".join(problems)
    assert tried >= 3 * 2 * 6
    # The control: the same route does give the body to the customer's own user.
    own = world.as_(a.user_login).get(f"/v1/messages/{a.message_id}?reveal_content=true")
    assert own.json()["body"] == a.body


def test_staff_asking_for_a_messages_content_get_403_and_status_without_content(
    world: World,
) -> None:
    a = world.a
    for role, login in world.staff.items():
        client = world.as_(login)
        refused = client.get(f"/v1/messages/{a.message_id}", params={"reveal_content": "true"})
        status = client.get(f"/v1/messages/{a.message_id}")

        assert refused.status_code == 403, role
        assert status.status_code == 200, role
        assert status.json()["body"] is None
        delivery = status.json()["deliveries"][0]
        assert delivery["to"] == (None if role is Role.AUDITOR else a.recipient)


# ---------------------------------------------------------------- roles


def test_an_auditor_sees_customers_without_their_contact_person(world: World) -> None:
    auditor = world.as_(world.staff[Role.AUDITOR])
    support = world.as_(world.staff[Role.SUPPORT])
    path = f"/v1/customers/{world.a.customer_id}"

    audited, supported = auditor.get(path).json(), support.get(path).json()

    assert audited["organisation"] == world.a.organisation
    assert audited["contact"] is None and audited["billing_address"] is None
    assert supported["contact"]["email"] == world.a.contact_email
    assert all(c["contact"] is None for c in auditor.get("/v1/customers").json())


def test_a_customer_admin_changes_its_contact_and_reads_it_back_at_once(world: World) -> None:
    path = f"/v1/customers/{world.a.customer_id}"
    admin = world.as_(world.a.admin_login)

    changed = admin.patch(path, json={"email": "new.contact@anvil.example"})

    assert changed.status_code == 200, changed.text
    assert admin.get(path).json()["contact"]["email"] == "new.contact@anvil.example"
    for login in (world.a.user_login, world.staff[Role.AUDITOR]):
        assert world.as_(login).patch(path, json={"email": "x@y.example"}).status_code == 403
    bad = admin.patch(path, json={"phone": "not a number"})
    assert bad.status_code == 422 and bad.json()["field"] == "phone"
    unknown = admin.patch(path, json={"emial": "typo@anvil.example"})
    assert unknown.status_code == 400


def test_a_customer_admin_adds_a_user_of_its_own_customer_who_can_then_log_in(
    world: World,
) -> None:
    path = f"/v1/customers/{world.a.customer_id}/users"
    body = {"login": "anvil-new", "role": "customer_user", "email": "new@anvil.example"}

    added = world.as_(world.a.admin_login).post(path, json=body)

    assert added.status_code == 201, added.text
    assert added.json()["login"] == "anvil-new" and added.json()["role"] == "customer_user"
    # The user follows a link (the mailed one's token is not ours to see: a new one's is).
    token = world.deps.accounts.reset_password("anvil-new").token
    anonymous = httpx.Client(base_url=world.base_url, timeout=20)
    weak = anonymous.post(f"/v1/password-links/{token}", json={"new_password": "password1234"})
    assert weak.status_code == 422 and "too easy to guess" in weak.json()["detail"]
    set_ = anonymous.post(f"/v1/password-links/{token}", json={"new_password": PASSWORD})
    assert set_.status_code == 200, set_.text
    assert "API keys stay valid" in set_.json()["api_keys"]
    again = anonymous.post(f"/v1/password-links/{token}", json={"new_password": PASSWORD})
    assert again.status_code == 404
    assert world.session_of("anvil-new").get(f"/v1/customers/{world.a.customer_id}").is_success
    staff_role = world.as_(world.staff[Role.PLATFORM_ADMIN]).post(
        path, json=body | {"login": "anvil-staff", "role": "support"}
    )
    assert staff_role.status_code == 422
    for login in (world.a.user_login, world.staff[Role.SUPPORT], world.staff[Role.AUDITOR]):
        refused = world.as_(login).post(path, json=body | {"login": f"x-{uuid.uuid4().hex[:6]}"})
        assert refused.status_code == 403, login


def test_only_staff_and_the_customers_admin_list_its_users(world: World) -> None:
    path = f"/v1/customers/{world.a.customer_id}/users"

    listed = world.as_(world.a.admin_login).get(path)

    assert listed.status_code == 200
    assert {u["login"] for u in listed.json()} >= {world.a.admin_login, world.a.user_login}
    assert world.as_(world.a.user_login).get(path).status_code == 403
    for login in world.staff.values():
        assert world.as_(login).get(path).status_code == 200


def test_a_customer_user_sends_a_message_and_follows_its_deliveries(world: World) -> None:
    client = world.as_(world.a.user_login)
    message = {
        "channel": "email", "to": ["one@rcpt.example", "two@rcpt.example"],
        "subject": "Drill", "body": "Fire drill at ten", "idempotency_key": "drill-1",
    }  # fmt: skip

    sent = client.post("/v1/messages", json=message)
    again = client.post("/v1/messages", json=message)

    assert sent.status_code == 202, sent.text
    assert again.json()["id"] == sent.json()["id"]
    status = client.get(f"/v1/messages/{sent.json()['id']}").json()
    assert [d["to"] for d in status["deliveries"]] == message["to"]
    assert {d["status"] for d in status["deliveries"]} == {"queued"}
    assert status["body"] is None
    revealed = client.get(f"/v1/messages/{sent.json()['id']}", params={"reveal_content": True})
    assert revealed.json()["body"] == "Fire drill at ten"


def test_staff_cannot_send_messages(world: World) -> None:
    body = {"channel": "sms", "to": ["+31612345678"], "body": "hi"}
    for login in world.staff.values():
        assert world.as_(login).post("/v1/messages", json=body).status_code == 403


def test_a_message_with_unknown_or_invalid_fields_is_refused_and_not_sent(world: World) -> None:
    client = world.as_(world.a.user_login)

    typo = client.post("/v1/messages", json={"channel": "sms", "to": ["+31612345678"],
                                             "body": "hi", "schedule": "tomorrow"})  # fmt: skip
    invalid = client.post("/v1/messages", json={"channel": "sms", "to": ["12"], "body": "hi"})

    assert typo.status_code == 400
    assert typo.headers["content-type"] == "application/problem+json"
    assert invalid.status_code == 422 and invalid.json()["field"] == "to"


def test_traffic_shows_recipients_to_the_customer_and_entitled_staff_only(world: World) -> None:
    a = world.a
    week = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}

    own = world.as_(a.user_login).get("/v1/traffic", params=week)
    admin = world.as_(world.staff[Role.PLATFORM_ADMIN]).get(
        "/v1/traffic", params=week | {"customer_id": str(a.customer_id)}
    )
    auditor = world.as_(world.staff[Role.AUDITOR]).get(
        "/v1/traffic", params=week | {"customer_id": str(a.customer_id)}
    )
    unnamed = world.as_(world.staff[Role.SUPPORT]).get("/v1/traffic", params=week)

    assert own.status_code == 200, own.text
    assert [(r["message_id"], r["recipient"]) for r in own.json()] == [
        (str(a.message_id), a.recipient)
    ]
    assert own.json()[0]["client_ip"] == "192.0.2.10"
    assert [r["recipient"] for r in admin.json()] == [a.recipient]
    assert [(r["recipient"], r["client_ip"]) for r in auditor.json()] == [(None, None)]
    assert unnamed.status_code == 422 and unnamed.json()["field"] == "customer_id"


def test_entitled_staff_find_traffic_by_recipient_through_its_blind_index_others_are_refused(
    world: World,
) -> None:
    a = world.a
    week = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    of_a = week | {"customer_id": str(a.customer_id)}
    support = world.as_(world.staff[Role.SUPPORT])

    found = support.get("/v1/traffic", params=of_a | {"recipient": a.recipient.upper()})
    other = support.get("/v1/traffic", params=of_a | {"recipient": "nobody@elsewhere.example"})
    own = world.as_(a.user_login).get("/v1/traffic", params=week | {"recipient": a.recipient})
    auditor = world.as_(world.staff[Role.AUDITOR]).get(
        "/v1/traffic", params=of_a | {"recipient": a.recipient}
    )
    bad = support.get("/v1/traffic", params=of_a | {"recipient": "not an address"})

    assert found.status_code == 200, found.text
    assert [(r["message_id"], r["recipient"]) for r in found.json()] == [
        (str(a.message_id), a.recipient)
    ]
    assert other.status_code == 200 and other.json() == []
    assert [r["recipient"] for r in own.json()] == [a.recipient]
    assert auditor.status_code == 403, auditor.text
    assert bad.status_code == 422 and bad.json()["field"] == "recipient"


def test_the_openapi_document_describes_every_v1_route_with_its_security(
    app: Litestar, world: World
) -> None:
    document = httpx.get(f"{world.base_url}/schema/openapi.json").json()
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }

    for method, path, route, _ in _operations(app):
        if not path.startswith("/v1"):
            continue
        documented = (method, route.path_format)
        assert documented in operations, documented
        operation = document["paths"][route.path_format][method.lower()]
        expected: list[object] | None = [] if _is_public(route, method) else None
        assert operation.get("security") == expected, documented
    assert {"apiKey", "session"} == set(document["components"]["securitySchemes"])
    assert document["components"]["schemas"]["SendMessage"]["additionalProperties"] is False


# ---------------------------------------------------------------- adding users (findings 1, 8)


def test_staff_add_a_customers_first_admin_only(world: World) -> None:
    staff = world.as_(world.staff[Role.PLATFORM_ADMIN])
    fresh = world.deps.accounts.register_customer(
        organisation="Fresh BV", contact_name="Fay Fresh", email="fay@fresh.example",
        phone="+31612345671", billing_address="Versweg 1, Ede",
    )  # fmt: skip
    path = f"/v1/customers/{fresh}/users"
    user = {"login": f"fresh-{uuid.uuid4().hex[:6]}", "email": "u@fresh.example"}
    assert staff.post(path, json=user | {"role": "customer_user"}).status_code == 403
    first = staff.post(path, json=user | {"role": "customer_admin"})
    assert first.status_code == 201, first.text
    for role in ("customer_admin", "customer_user"):
        more = {"login": f"more-{uuid.uuid4().hex[:6]}", "email": "m@fresh.example", "role": role}
        second = staff.post(path, json=more)
        assert second.status_code == 403 and "only while it has none" in second.json()["detail"]
    # Tenants A and B have their admins: staff add nobody there.
    a_path = f"/v1/customers/{world.a.customer_id}/users"
    late = {"login": "late-admin", "email": "late@evil.example", "role": "customer_admin"}
    assert staff.post(a_path, json=late).status_code == 403


def test_a_refused_login_gets_one_answer_whatever_the_reason(world: World) -> None:
    """Finding 8: taken in another customer, a staff login, invalid: the same 409."""
    admin = world.as_(world.a.admin_login)
    path = f"/v1/customers/{world.a.customer_id}/users"
    answers = set()
    for login in (world.b.user_login, world.staff[Role.AUDITOR], "x!", world.a.user_login):
        body = {"login": login, "role": "customer_user", "email": "probe@anvil.example"}
        refused = admin.post(path, json=body)
        answer = refused.json()
        answers.add((refused.status_code, answer["code"], answer["detail"], answer.get("field")))
    assert len(answers) == 1, answers
    status, code, _, field = answers.pop()
    assert (status, code, field) == (409, "login-unavailable", "login")
    assert world.b.user_login not in str(answers)


def test_adding_users_is_rate_limited_per_customer(world: World) -> None:
    policy = world.deps.login_throttling.per_customer_user_creation
    admin = world.as_(world.b.admin_login)
    path = f"/v1/customers/{world.b.customer_id}/users"
    statuses = []
    for n in range(policy.slow_after + 1):
        body = {"login": f"burst-{n}-{uuid.uuid4().hex[:4]}", "role": "customer_user",
                "email": f"burst{n}@bellows.example"}  # fmt: skip
        statuses.append(admin.post(path, json=body).status_code)
    assert statuses[: policy.slow_after] == [201] * policy.slow_after
    throttled = admin.post(path, json={"login": "one-more", "role": "customer_user",
                                       "email": "m@bellows.example"})  # fmt: skip
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    # Another customer is not slowed by this one.
    other = world.as_(world.a.admin_login).post(
        f"/v1/customers/{world.a.customer_id}/users",
        json={"login": f"calm-{uuid.uuid4().hex[:6]}", "role": "customer_user",
              "email": "calm@anvil.example"},
    )  # fmt: skip
    assert other.status_code == 201, other.text
