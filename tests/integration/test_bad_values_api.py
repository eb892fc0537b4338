"""A bad value never gets in through the HTTP API or the login form: a control character in
any text field of any route's body is a field-named 422 and records nothing.

The cases come from the app's own route table and each body's type, so a text field or a
route added later is tried without anyone remembering to."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Union
from uuid import UUID

import httpx
import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.enums import RequestEncodingType
from litestar.routes import HTTPRoute
from psycopg import sql

from picasse.adapters.http.app import HttpDeps, create_app
from picasse.domain.access import Viewer
from picasse.domain.billing import Billing, price_plan
from picasse.domain.cases import Cases
from picasse.domain.conferencing import ScheduleRequest
from picasse.domain.geofences import Circle
from picasse.domain.sites import Sites
from picasse.domain.values import Role
from picasse.domain.visitors import RegistrationSettings, VisitForm, Visitors
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from tests.integration.api_server import (
    PASSWORD,
    Tenant,
    add_staff,
    bearer,
    logged_in,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)

# pages: a session; staff: Picasse's support
Who = Literal["anyone", "admin", "user", "admin-session", "user-session", "staff", "staff-session"]
GROUP = "night shift"
ADMIN = "anvil-admin"  # make_tenant's admin of "Anvil"

# Valid bodies for each route that takes one, and who sends them. Together a route's
# examples give every text field of its body; each is also sent as is, and must succeed.
# A new route with a body needs examples here, a new text field a value in one of them.
EXAMPLES: dict[tuple[str, str], tuple[Who, list[dict[str, Any]]]] = {
    ("POST", "/v1/sessions"): ("anyone", [{"login": ADMIN, "password": PASSWORD}]),
    ("PATCH", "/v1/customers/{customer_id:uuid}"): (
        "admin",
        [
            {
                "contact_name": "Anna de Vries",
                "email": "anna@anvil.example",
                "phone": "+31612345671",
                "billing_address": "Dorpsstraat 2, Urk",
            }
        ],
    ),
    ("POST", "/v1/customers/{customer_id:uuid}/users"): (
        "admin",
        [{"login": "planted-user", "role": "customer_user", "email": "planted@anvil.example"}],
    ),
    ("PATCH", "/v1/customers/{customer_id:uuid}/users/{user_id:uuid}"): (
        "admin",
        [{"role": "customer_user"}],
    ),
    ("POST", "/v1/api-keys"): ("admin", [{"name": "nightly sender", "scopes": ["messages:send"]}]),
    ("POST", "/v1/password-links/{token:str}"): ("anyone", [{"new_password": PASSWORD}]),
    ("POST", "/set-password/{token:str}"): (
        "anyone",
        [{"new_password": PASSWORD, "repeat": PASSWORD}],
    ),
    # After /set-password (a new password voids the user's link), before /v1/me/password
    # (the password must still be PASSWORD to log in).
    ("POST", "/account/password"): (
        "user-session",
        [{"current_password": PASSWORD, "new_password": PASSWORD, "repeat": PASSWORD}],
    ),
    ("POST", "/v1/me/password"): (
        "user",
        [{"current_password": PASSWORD, "new_password": PASSWORD}],
    ),
    ("POST", "/v1/messages"): (
        "user",
        [
            {
                "channel": "email",
                "to": ["one@rcpt.example"],
                "subject": "Drill",
                "body": "Fire drill at ten.\n\tBring your badge.",
                "group": GROUP,
                "idempotency_key": "drill-1",
                "priority": "alert",
                "ack_within_minutes": 5,
                "escalation_groups": [GROUP],
            },
            {
                "channel": "sms",
                "to": ["+31612345678"],
                "template": "Hi {name},\n{text}",
                "variables": {"name": "Anna", "text": "drill\tat ten"},
            },
        ],
    ),
    ("POST", "/login"): ("anyone", [{"login": ADMIN, "password": PASSWORD}]),
    ("POST", "/v1/templates"): (
        "admin",
        [{"name": "Drill", "channel": "sms", "text": "Drill at {time},\n\tall of you"}],
    ),
    ("PUT", "/v1/templates/{template_id:uuid}"): ("admin", [{"text": "Hi {name},\n\tdrill"}]),
    ("POST", "/app/templates"): (
        "admin-session",
        [{"name": "Page drill", "channel": "email", "text": "Drill at {time},\n\tall of you"}],
    ),
    ("POST", "/v1/groups"): ("admin", [{"name": "day shift", "members": ["+31612345670"]}]),
    ("PUT", "/v1/groups/{group_id:uuid}"): ("admin", [{"members": ["day@rcpt.example"]}]),
    ("POST", "/v1/sites"): ("admin", [{"name": "Depot", "address": "Havenweg 3, Urk"}]),
    ("PUT", "/v1/sites/{site_id:uuid}"): ("admin", [{"name": "Depot", "address": "Kade 1"}]),
    # Visitor registration: the hosts' ids, the arrival and the desk's pass code are set
    # by the world fixture (they exist only once it has made them).
    ("PUT", "/v1/sites/{site_id:uuid}/registration"): ("admin", []),
    ("POST", "/visit/{slug:str}"): ("anyone", []),
    ("POST", "/v1/sites/{slug:str}/visits"): ("anyone", []),
    ("POST", "/app/desk/check-in"): ("user-session", []),
    ("PUT", "/v1/attendance/service"): ("admin", [{"on": True}]),
    ("POST", "/v1/location/pings"): (
        "admin",
        [
            {
                "pings": [
                    {
                        "user_id": "{user_id:uuid}",
                        "at": "2026-01-01T00:00:00+00:00",
                        "lat": 52.0,
                        "lon": 4.0,
                        "accuracy_m": 5,
                    }
                ]
            }
        ],
    ),
    # "{site_id:uuid}": the world's site, filled in as path parameters are.
    ("POST", "/v1/geofences"): (
        "admin",
        [
            {
                "site_id": "{site_id:uuid}",
                "name": "Gate",
                "shape": {"type": "circle", "lat": 52.0, "lon": 4.0, "radius_m": 50},
            }
        ],
    ),
    ("PUT", "/v1/geofences/{fence_id:uuid}"): (
        "admin",
        [
            {
                "site_id": "{site_id:uuid}",
                "name": "Gate",
                "shape": {"type": "circle", "lat": 52.0, "lon": 4.0, "radius_m": 80},
            }
        ],
    ),
    ("POST", "/v1/conferences"): (
        "user",
        [
            {
                "title": "Weekly call",
                "start": "{in a month}",  # filled in: at most a year ahead
                "duration_minutes": 30,
                "participants": [{"email": "guest@rcpt.example"}, {"phone": "+31612345676"}],
            }
        ],
    ),
    ("PATCH", "/v1/conferences/{conference_id:uuid}"): ("user", [{"title": "Weekly call, moved"}]),
    ("POST", "/v1/dial-in-numbers"): (
        "staff",
        [{"customer_id": "{customer_id:uuid}", "number": "+31201234561"}],
    ),
    ("POST", "/v1/cases"): ("user", [{"category": "complaint", "description": "SMS late"}]),
    ("POST", "/v1/cases/{case_id:uuid}/comments"): ("user", [{"text": "Again today"}]),
    ("PATCH", "/v1/cases/{case_id:uuid}"): ("staff", [{"state": "in_progress"}]),
    ("POST", "/app/cases"): (
        "user-session",
        [{"category": "fault_report", "description": "The page hangs"}],
    ),
    ("POST", "/app/cases/{case_id:uuid}/comments"): ("user-session", [{"text": "Still so"}]),
    ("POST", "/admin/cases/{case_id:uuid}/comments"): ("staff-session", [{"text": "On it"}]),
    ("POST", "/admin/cases/{case_id:uuid}/state"): ("staff-session", [{"state": "resolved"}]),
    ("PUT", "/v1/customers/{customer_id:uuid}/plan"): (
        "staff",
        [
            {
                "monthly_fee": "10.00",
                "per_sms_segment": "0.07",
                "per_email": "0.01",
                "per_voice_minute": "0.12",
                "per_conference_minute": "0.05",
                "vat_percent": "21",
            }
        ],
    ),
    ("POST", "/v1/invoices/{invoice_id:uuid}/payments"): ("staff", [{"amount_cents": 1}]),
    # A public address, written as one: nothing resolves a name, and no sender runs here.
    ("POST", "/v1/webhooks"): (
        "admin",
        [{"url": "https://93.184.216.34/hook", "events": ["delivery.failed", "alert.escalated"]}],
    ),
}
# Text fields that are not recorded, each for a reason; every other one is tried.
NOT_RECORDED = {
    ("POST", "/v1/sessions", "password"): "compared with a hash only, never recorded",
    ("POST", "/login", "password"): "compared with a hash only, never recorded",
    ("POST", "/v1/me/password", "current_password"): "compared with a hash only, never recorded",
    ("POST", "/account/password", "current_password"): "compared with a hash only, never recorded",
    ("POST", "/account/password", "repeat"): "compared with new_password only",
    ("POST", "/set-password/{token:str}", "repeat"): "compared with new_password only",
    ("POST", "/app/desk/check-in", "code"): "a pass: compared with a hash only (404 if none)",
}
# Fields refused with another status, each for a reason (the field is still named).
OTHER_STATUS = {
    ("POST", "/v1/customers/{customer_id:uuid}/users", "login"): (
        409,
        "a refused login gets one answer whatever the reason (issue 11, finding 8)",
    ),
}
BAD = ["\x00", "\x1b", "\r"]  # NUL, an escape, and a line ending no one-line field takes


@dataclass
class World:
    app: Litestar
    deps: HttpDeps
    base_url: str
    tenant: Tenant
    settings: Settings
    headers: dict[str, dict[str, str]]
    tokens: dict[str, str]  # per route, a set-password link's token (issued up front)
    ids: dict[str, str]  # a template's and a group's id, for the paths that name one
    staff_login: str  # Picasse's support


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[World]:
    with (
        module_settings(tmp_path_factory, database_url, "badvalues") as settings,
        http_deps(settings, database_url) as deps,
    ):
        app = create_app(with_cheap_passwords(deps))
        tenant = make_tenant(deps, "Anvil")
        assert tenant.admin_login == ADMIN
        deps.messages.create_group(
            tenant.customer_id, GROUP, ["+31612345679", "night@rcpt.example"]
        )
        staff_login = add_staff(deps)[Role.SUPPORT]
        headers = {
            "anyone": {},
            "admin": bearer(deps, tenant.admin_login),  # keys issued before events are counted
            "user": bearer(deps, tenant.user_login),
            "staff": bearer(deps, staff_login),
        }
        tokens = {  # one user each: a user's newer link replaces the older
            path: deps.accounts.reset_password(login).token
            for path, login in (
                ("/v1/password-links/{token:str}", tenant.admin_login),
                ("/set-password/{token:str}", tenant.user_login),
            )
        }
        ids = {
            "{template_id:uuid}": str(
                deps.messages.save_template(tenant.customer_id, "sms", "Hello", "Hi {name}")
            ),
            "{group_id:uuid}": str(deps.messages.group_id_of(tenant.customer_id, GROUP)),
            "{user_id:uuid}": str(tenant.user_id),
            "{site_id:uuid}": str(
                Sites(clock=deps.clock, sharing=deps.messages).add(
                    tenant.customer_id, "Depot", "Havenweg 3, Urk"
                )
            ),
        }
        ids["{customer_id:uuid}"] = str(tenant.customer_id)
        ids["{conference_id:uuid}"] = _conference_examples(deps, tenant)
        ids["{in a month}"] = (deps.clock.now() + timedelta(days=31)).isoformat()
        ids["{case_id:uuid}"], ids["{invoice_id:uuid}"] = _billing_examples(deps, tenant)
        ids["{slug:str}"] = _visitor_examples(deps, tenant, UUID(ids["{site_id:uuid}"]))
        assert deps.attendance is not None
        # Pings of a user who consented, so that the example is accepted.
        deps.attendance.switch(tenant.customer_id, True)
        deps.attendance.give_consent(tenant.customer_id, tenant.user_id)
        ids["{fence_id:uuid}"] = str(
            deps.attendance.add_fence(
                tenant.customer_id, UUID(ids["{site_id:uuid}"]), "Gate",
                Circle(lat=52.0, lon=4.0, radius_m=50),
            )
        )  # fmt: skip
        with serving(app) as base_url:
            yield World(app, deps, base_url, tenant, settings, headers, tokens, ids, staff_login)


def _conference_examples(deps: HttpDeps, tenant: Tenant) -> str:
    """A number in Anvil's dial-in pool, and a conference of its user; the conference's id."""
    assert deps.conferences is not None
    deps.conferences.add_dial_in_number(
        tenant.customer_id, "+31201234560", Viewer(role=Role.SUPPORT, customer_id=None)
    )
    user = Viewer(role=Role.CUSTOMER_USER, customer_id=tenant.customer_id, user_id=tenant.user_id)
    return str(
        deps.conferences.schedule(
            tenant.customer_id,
            ScheduleRequest(
                title="Planning", start=deps.clock.now() + timedelta(days=30), duration_minutes=30
            ),
            user,
        ).conference_id
    )


def _billing_examples(deps: HttpDeps, tenant: Tenant) -> tuple[str, str]:
    """A case of Anvil's user, and an invoice of Anvil's last month; their ids."""
    user = Viewer(role=Role.CUSTOMER_USER, customer_id=tenant.customer_id, user_id=tenant.user_id)
    case = Cases(clock=deps.clock, sharing=deps.messages).file(
        tenant.customer_id, "complaint", "SMS late", by=user
    )
    billing = Billing(clock=deps.clock, sharing=deps.messages)
    plan = price_plan({name: "1" for name in PLAN_FIELDS})
    billing.set_plan(tenant.customer_id, plan, by=Viewer(role=Role.SUPPORT, customer_id=None))
    last_month = f"{deps.clock.now().replace(day=1) - timedelta(days=1):%Y-%m}"
    (line,) = [x for x in billing.run(last_month) if x.customer_id == tenant.customer_id]
    return str(case.id), str(line.invoice_id)


PLAN_FIELDS = (
    "monthly_fee", "per_sms_segment", "per_email", "per_voice_minute", "per_conference_minute",
    "vat_percent",
)  # fmt: skip


def _visitor_examples(deps: HttpDeps, tenant: Tenant, site: UUID) -> str:
    """Fills in the visitor routes' EXAMPLES (ids, a pass, tomorrow); the form's slug."""
    visitors = Visitors(clock=deps.clock, sharing=deps.messages)
    registration = {
        "slug": "anvil-depot",
        "hosts": [{"user_id": str(tenant.user_id), "name": "Anna Host"}],
        "fields": ["phone", "company"],
        "privacy_notice": "We keep it 28 days.\n\tThen it is erased.",
        "origins": ["https://www.anvil.example"],
    }
    visitors.set_registration(
        tenant.customer_id, site, msgspec.convert(registration, RegistrationSettings)
    )
    arrival = (deps.clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    visit = {
        "name": "Vera Visitor", "email": "vera@visitors.example", "phone": "+31612345672",
        "company": "Vera BV", "host": str(tenant.user_id), "arrival": arrival,
    }  # fmt: skip
    registered = visitors.register(
        "anvil-depot", msgspec.convert(visit | {"consent": True}, VisitForm)
    )
    code = f"{registered.visitor_id}.{registered.pass_secret}"
    EXAMPLES[("PUT", "/v1/sites/{site_id:uuid}/registration")] = ("admin", [registration])
    EXAMPLES[("POST", "/visit/{slug:str}")] = (
        "anyone", [visit | {"consent": "yes", "website": ""}],
    )  # fmt: skip
    EXAMPLES[("POST", "/v1/sites/{slug:str}/visits")] = (
        "anyone", [visit | {"consent": True, "website": ""}],
    )  # fmt: skip
    EXAMPLES[("POST", "/app/desk/check-in")] = ("user-session", [{"code": code}])
    return "anvil-depot"


def _client(world: World, who: Who) -> httpx.Client:
    if who.endswith("-session"):  # logged in now: a password set meanwhile ends sessions
        login = {
            "admin-session": world.tenant.admin_login,
            "user-session": world.tenant.user_login,
            "staff-session": world.staff_login,
        }[who]
        browser = logged_in(world.base_url, login)
        cookies = browser.cookies
        browser.close()
        return httpx.Client(base_url=world.base_url, cookies=cookies, timeout=20)
    return httpx.Client(base_url=world.base_url, headers=world.headers[who], timeout=20)


def _events(world: World) -> int:
    table = sql.Identifier(world.settings.database_schema or "public", "picasse_events")
    with psycopg.connect(world.settings.database_url or "") as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def _routes_with_bodies(app: Litestar) -> Iterator[tuple[str, str, type, bool]]:
    """(method, path, body type, is a form) of every route handler that takes a body."""
    for route in app.routes:
        assert isinstance(route, HTTPRoute)
        for method, (handler, _) in route.route_handler_map.items():
            data = handler.parsed_data_field
            if data is None or method == "OPTIONS":  # a CORS preflight sends no body
                continue
            kwarg = data.kwarg_definition
            form = getattr(kwarg, "media_type", None) is RequestEncodingType.URL_ENCODED
            given = [a for a in typing.get_args(data.annotation) if a is not type(None)]
            optional = typing.get_origin(data.annotation) in (Union, types.UnionType)
            body = given[0] if optional and len(given) == 1 else data.annotation
            yield method, route.path, body, form


def _text_shape(annotation: Any) -> str | None:
    """'str', 'list' or 'dict' for a text field (None allowed), None for any other field."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if annotation is str:
        return "str"
    if origin in (Union, types.UnionType) and len(args) == 1:
        return _text_shape(args[0])
    if origin is list and args == [str]:
        return "list"
    if origin is dict and args == [str, str]:
        return "dict"
    assert "str" not in repr(annotation), (
        f"a text field of a shape this test knows not: {annotation}"
    )
    return None


def _text_fields(body_type: type) -> dict[str, str]:
    hints = typing.get_type_hints(body_type, include_extras=False)
    fields = {}
    for field in msgspec.structs.fields(body_type):
        shape = _text_shape(hints[field.name])
        if shape is not None:
            fields[field.encode_name] = shape
    return fields


def _spoiled(value: Any, shape: str, bad: str) -> list[Any]:
    """`value` with `bad` planted in it: in the text, in a list's item, in a key or a value."""
    if shape == "str":
        return [value[:1] + bad + value[1:]]
    if shape == "list":
        return [[value[0] + bad, *value[1:]]]
    key, item = next(iter(value.items()))
    return [value | {key: item + bad}, {k + bad if k == key else k: v for k, v in value.items()}]


def _cases(app: Litestar) -> Iterator[tuple[str, str, bool, Who, dict[str, Any], str]]:
    """(method, path, form, who, body, field) for every text field of every route's body."""
    for method, path, body_type, form in _routes_with_bodies(app):
        assert (method, path) in EXAMPLES, f"{method} {path} takes a body: add EXAMPLES of it"
        who, examples = EXAMPLES[method, path]
        for name, shape in _text_fields(body_type).items():
            if (method, path, name) in NOT_RECORDED:
                continue
            given = [e for e in examples if name in e]
            assert given, f"{method} {path}: no example gives the text field {name!r}"
            for bad in BAD:
                for spoiled in _spoiled(given[0][name], shape, bad):
                    yield method, path, form, who, given[0] | {name: spoiled}, name


def _url(world: World, path: str) -> str:
    url = path.replace("{customer_id:uuid}", str(world.tenant.customer_id))
    for parameter, ident in world.ids.items():
        url = url.replace(parameter, ident)
    return url.replace("{token:str}", world.tokens.get(path, "no-such-token"))


def _filled(world: World, value: Any) -> Any:
    """The body with the world's ids where an example names them ("{site_id:uuid}")."""
    if isinstance(value, dict):
        return {k: _filled(world, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(world, v) for v in value]
    return world.ids.get(value, value) if isinstance(value, str) else value


def _send(client: httpx.Client, method: str, url: str, body: dict[str, Any], form: bool) -> Any:
    if form:
        return client.request(method, url, data=body)
    return client.request(method, url, json=body)


def test_a_control_character_in_any_text_field_of_any_route_is_a_field_named_422(
    world: World,
) -> None:
    problems, tried = [], 0
    before = _events(world)
    for method, path, form, who, body, field in _cases(world.app):
        with _client(world, who) as client:
            response = _send(client, method, _url(world, path), _filled(world, body), form)
        tried += 1
        case = f"{method} {path} {field}={body[field]!r}"
        expected = OTHER_STATUS.get((method, path, field), (422, ""))[0]
        if response.status_code != expected:
            problems.append(f"{case}: {response.status_code} {response.text[:200]}")
        elif form:
            if f"{field}: " not in response.text:
                problems.append(f"{case}: the page does not name {field}")
        elif response.json().get("field") != field:
            problems.append(f"{case}: names {response.json().get('field')!r}")

    assert not problems, "\n".join(problems)
    assert _events(world) == before, "a refused request recorded something"
    assert tried >= len(BAD) * 16  # the text fields of today's routes, at least


def _takes_objects(annotation: Any) -> bool:
    """Whether a field of this type would take a JSON object (a dict, a struct, anything)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_objects(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_takes_objects(a) for a in typing.get_args(annotation))
    if annotation in (Any, object) or origin is dict or annotation is dict:
        return True
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def test_a_value_of_the_wrong_type_in_any_field_of_any_body_is_named_with_why(
    world: World,
) -> None:
    """Every JSON body's every field that takes no object, given one: a 400 that names the
    field (`field`, and the detail starts with it) and says what was expected."""
    problems, tried = [], 0
    before = _events(world)
    for method, path, body_type, form in _routes_with_bodies(world.app):
        if form:
            continue
        who, examples = EXAMPLES[method, path]
        hints = typing.get_type_hints(body_type, include_extras=True)
        for field in msgspec.structs.fields(body_type):
            if _takes_objects(hints[field.name]):
                continue
            name = field.encode_name
            body = examples[0] | {name: {"not": "this"}}
            with _client(world, who) as client:
                response = _send(client, method, _url(world, path), _filled(world, body), False)
            tried += 1
            answer = response.json() if response.status_code == 400 else {}
            if (answer.get("code"), answer.get("field")) != ("invalid-input", name) or not str(
                answer.get("detail", "")
            ).startswith(f"{name}: Expected"):
                problems.append(f"{method} {path} {name}: {response.status_code} {response.text}")
    assert not problems, "\n".join(problems)
    assert _events(world) == before, "a refused request recorded something"
    assert tried >= 40  # the fields of today's bodies, at least


def test_the_examples_themselves_are_accepted(world: World) -> None:
    """The control: each 422 above came from the character planted, not from the example."""
    forms = {(method, path) for method, path, _, form in _routes_with_bodies(world.app) if form}
    for (method, path), (who, examples) in EXAMPLES.items():
        for example in examples:
            with _client(world, who) as client:
                form = (method, path) in forms
                response = _send(client, method, _url(world, path), _filled(world, example), form)
            accepted = response.status_code < 400 and not (  # not sent back to log in
                who.endswith("-session") and response.headers.get("location") == "/login"
            )
            assert accepted, f"{method} {path}: {response.status_code} {response.text[:300]}"


def test_a_nul_in_a_contact_name_is_refused_and_the_old_name_kept(world: World) -> None:
    path = f"/v1/customers/{world.tenant.customer_id}"
    with _client(world, "admin") as admin:
        before = admin.get(path).json()["contact"]["name"]
        refused = admin.patch(path, json={"contact_name": "Mallory\x00"})
        after = admin.get(path).json()["contact"]["name"]

    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["field"] == "contact_name"
    assert "U+0000" in refused.json()["detail"]
    assert after == before


def test_tab_and_newline_stay_allowed_in_a_message_body_but_not_in_its_subject(
    world: World,
) -> None:
    message = {"channel": "email", "to": ["two@rcpt.example"], "body": "Line one\n\tline two"}
    with _client(world, "user") as client:
        sent = client.post("/v1/messages", json=message)
        with_subject = client.post("/v1/messages", json=message | {"subject": "Drill\nBcc: x"})

    assert sent.status_code == 202, sent.text
    assert with_subject.status_code == 422 and with_subject.json()["field"] == "subject"


def test_an_unknown_login_is_named_as_typed_never_by_its_pseudonym(world: World) -> None:
    from picasse.domain.errors import NotFound

    with pytest.raises(NotFound) as unknown:
        world.deps.accounts.user_by_login("Nobody-Here")

    assert str(unknown.value) == "no user with login 'Nobody-Here'"
    assert unknown.value.field == "login"


# Issue 11, findings 2 and 9: what would reach a mail header or a phone network is refused
# at the API, with the field named, and records nothing.
ENCODED_LINE_BREAKS = [
    "=?utf-8?q?Invoice=0D=0AReply-To:_x@evil.example?=",
    "=?utf-8?b?SW52b2ljZQ0KUmVwbHktVG86IHhAZXZpbC5leGFtcGxl?=",
    "=?utf-8?q?Invoice=0AReply-To:_x@evil.example?=",
    "Invoice =?utf-8?q?=0D=0A=0D=0AContent-Type:_text/html?=",
]


@pytest.mark.parametrize("subject", ENCODED_LINE_BREAKS)
def test_a_subject_whose_encoded_words_decode_to_a_line_break_is_a_422(
    world: World, subject: str
) -> None:
    before = _events(world)
    message = {"channel": "email", "to": ["three@rcpt.example"], "body": "Pay", "subject": subject}
    with _client(world, "user") as client:
        refused = client.post("/v1/messages", json=message)

    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["field"] == "subject"
    assert "encoded word" in refused.json()["detail"]
    assert _events(world) == before


def test_an_address_whose_encoded_words_decode_to_a_line_break_is_a_422(world: World) -> None:
    before = _events(world)
    to = "=?utf-8?q?x=0D=0ABcc:_y?=@rcpt.example"
    with _client(world, "user") as client:
        refused = client.post("/v1/messages", json={"channel": "email", "to": [to], "body": "Hi"})

    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "to"
    assert _events(world) == before


FULL_WIDTH = "\uff0b\uff13\uff11\uff16\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18"


@pytest.mark.parametrize(
    ("number", "says"),
    [
        ("+1 900 555 0123", "premium-rate"),
        ("+44 871 234 5678", "premium-rate"),
        ("tel:+31612345678", "international form"),
        (FULL_WIDTH, "international form"),
        ("+31\uff16\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18", "international form"),
    ],
    ids=["us-premium", "uk-premium", "tel-uri", "full-width", "full-width-digits"],
)
def test_a_lax_phone_number_is_a_422_wherever_numbers_are_given(
    world: World, number: str, says: str
) -> None:
    before = _events(world)
    path = f"/v1/customers/{world.tenant.customer_id}"
    with _client(world, "user") as user, _client(world, "admin") as admin:
        message = user.post("/v1/messages", json={"channel": "sms", "to": [number], "body": "Hi"})
        contact = admin.patch(path, json={"phone": number})

    for refused, field in ((message, "to"), (contact, "phone")):
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == field
        assert says in refused.json()["detail"]
    assert _events(world) == before


def test_subscriber_numbers_of_each_kind_are_accepted(world: World) -> None:
    numbers = ["+31 6 1234 5678", "+31 20 123 4567", "+1 415-555-2671", "+31 85 123 4567"]
    with _client(world, "user") as client:
        sent = client.post("/v1/messages", json={"channel": "sms", "to": numbers, "body": "Hi"})

    assert sent.status_code == 202, sent.text


def _routes_naming_an_id(app: Litestar) -> Iterator[tuple[str, str]]:
    for route in app.routes:
        if isinstance(route, HTTPRoute) and ":uuid}" in route.path:
            for method in sorted(set(route.route_handler_map) - {"HEAD", "OPTIONS"}):
                yield method, route.path


def test_a_path_id_that_is_no_id_is_not_found_on_every_route(world: World) -> None:
    """Never a 405: the method is allowed; what the path names does not exist."""
    problems, tried = [], 0
    for method, path in _routes_naming_an_id(world.app):
        url = path
        for parameter in {p for p in path.split("/") if p.endswith(":uuid}")}:
            url = url.replace(parameter, "not-an-id")
        url = _url(world, url)
        with _client(world, "admin") as client:
            response = client.request(method, url)
        tried += 1
        if response.status_code != 404 or "not-found" not in response.text:
            problems.append(f"{method} {url}: {response.status_code} {response.text[:120]}")
    assert not problems, "\n".join(problems)
    assert tried >= 20
