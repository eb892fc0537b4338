"""Who sees what on the dashboard's pages (R7, R11): every page the app serves, for every
role, against what the one access policy (`Viewer`) says, like test_api_access.py does for
the API. Pages are taken from the app's own route table, so a page added later is covered
without anyone remembering to."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.enums import ParamType
from litestar.routes import HTTPRoute

import picasse.adapters.http as http
from picasse.adapters.http.app import HttpDeps, create_app
from picasse.adapters.http.pages import PageGuard
from picasse.domain.access import Viewer
from picasse.domain.cases import Cases
from picasse.domain.values import Role
from picasse.runners.api import http_deps
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

PAGES_MODULES = (
    "picasse.adapters.http.pages",
    "picasse.adapters.http.customer_pages",
    "picasse.adapters.http.visits",
    "picasse.adapters.http.attendance_pages",
    "picasse.adapters.http.case_pages",
)


class People:
    """Customer A (with a sent message) and one person per role; a session per person."""

    def __init__(self, deps: HttpDeps, base_url: str, a: Tenant, staff: dict[Role, str]):
        self.deps, self.base_url, self.a = deps, base_url, a
        self.logins = staff | {Role.CUSTOMER_ADMIN: a.admin_login, Role.CUSTOMER_USER: a.user_login}
        a_user = Viewer(role=Role.CUSTOMER_USER, customer_id=a.customer_id, user_id=a.user_id)
        cases = Cases(clock=deps.clock, sharing=deps.messages)
        self.case_id = cases.file(a.customer_id, "complaint", "Late alerts", by=a_user).id

    def viewer(self, role: Role) -> Viewer:
        user = self.deps.accounts.user_by_login(self.logins[role])
        return Viewer(role=user.role, customer_id=user.customer_id, user_id=user.id)

    @contextmanager
    def session(self, role: Role) -> Iterator[httpx.Client]:
        """A browser logged in as this role's person (a session cookie, as the pages use)."""
        with httpx.Client(base_url=self.base_url, timeout=20, follow_redirects=False) as client:
            login = {"login": self.logins[role], "password": PASSWORD}
            assert client.post("/v1/sessions", json=login).status_code == 201
            yield client


@pytest.fixture(scope="module")
def app_and_people(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[tuple[Litestar, People]]:
    with (
        module_settings(tmp_path_factory, database_url, "pages") as settings,
        http_deps(settings, database_url) as deps,
    ):
        app = create_app(with_cheap_passwords(deps))
        a, staff = make_tenant(deps, "Anvil"), add_staff(deps)
        catch_up_views(settings, database_url)
        with serving(app) as base_url:
            yield app, People(deps, base_url, a, staff)


def _pages(app: Litestar) -> Iterator[tuple[str, HTTPRoute, list[PageGuard]]]:
    """(path, route, guards) of every page that needs a login: the GET handlers of the page
    modules, with the page guards that Litestar resolved for them (their routers' too)."""
    for route in app.routes:
        assert isinstance(route, HTTPRoute), f"a route of a kind this test does not know: {route}"
        handler = route.route_handler_map.get("GET", (None,))[0]
        if handler is None:
            continue
        fn = getattr(handler.fn, "func", handler.fn)  # sync handlers come wrapped
        if fn.__module__ not in PAGES_MODULES:
            continue
        if not handler.opt.get("public"):  # the login page is for anyone
            guards = [getattr(g, "func", g) for g in handler.resolve_guards()]  # sync: wrapped
            yield route.path, route, [g for g in guards if isinstance(g, PageGuard)]


def _lets_in(guards: list[PageGuard], viewer: Viewer) -> bool:
    """What the policy says of this page for this viewer: every guard's question, asked."""
    return all(guard.question(viewer) for guard in guards)


def _fill(path: str, values: dict[str, str]) -> str:
    parts = []
    for part in path.split("/"):
        if part.startswith("{"):
            name = part.strip("{}").split(":")[0]
            assert name in values, f"{path}: no value to try for its parameter {name}"
            part = values[name]
        parts.append(part)
    return "/".join(parts)


def _hidden(a: Tenant) -> dict[str, list[str]]:
    """Per kind of field the policy decides on: text that only such a field of A holds."""
    name = a.organisation.split()[0]
    return {
        "contact": [f"{name} Contact", a.contact_email, f"{name}straat 1"],
        "traffic": [a.recipient, "192.0.2.10"],
        "content": [a.body, a.body[:20]],
    }


def _entitled(viewer: Viewer, a: Tenant) -> dict[str, bool]:
    return {
        "contact": viewer.sees_contact_of(a.customer_id),
        "traffic": viewer.sees_traffic_of(a.customer_id),
        "content": viewer.may_read_content_of(a.customer_id),
    }


def test_every_page_answers_every_role_as_the_policy_says_and_shows_only_what_it_may(
    app_and_people: tuple[Litestar, People],
) -> None:
    app, people = app_and_people
    a = people.a
    # A's customer page, and A's traffic over a period that holds its message.
    values = {"customer_id": str(a.customer_id), "message_id": str(a.message_id),
              "case_id": str(people.case_id)}  # fmt: skip
    query = {"customer_id": str(a.customer_id), "from": "2000-01-01", "to": "9998-12-31"}
    pages = list(_pages(app))
    # overview, customers, a customer, traffic, ledger, account, the customer's home at least
    assert len(pages) >= 7, pages
    problems: list[str] = []
    shown: dict[str, set[Role]] = {"contact": set(), "traffic": set(), "content": set()}
    for role in Role:
        viewer = people.viewer(role)
        entitled = _entitled(viewer, a)
        with people.session(role) as client:
            for path, _, guards in pages:
                url = _fill(path, values)
                response = client.get(url, params=query)
                expected = 200 if _lets_in(guards, viewer) else 403
                if response.status_code != expected:
                    problems.append(f"{role.value}: GET {url} -> {response.status_code}, "
                                    f"the policy says {expected}")  # fmt: skip
                    continue
                for field, markers in _hidden(a).items():
                    found = [m for m in markers if m in response.text]
                    if found and not entitled[field]:
                        problems.append(f"{role.value}: GET {url} shows {field} {found}")
                    if found:
                        shown[field].add(role)

    assert not problems, "\n".join(problems)
    # The controls: the pages do show contact and traffic data to the roles entitled to it,
    # so their absence above is the policy at work, not an empty page.
    assert shown["contact"] >= {Role.PLATFORM_ADMIN, Role.SUPPORT}
    assert shown["traffic"] >= {Role.PLATFORM_ADMIN, Role.SUPPORT}
    assert not shown["content"] & {role for role in Role if role.is_platform}


def test_an_auditor_sees_a_customer_page_without_its_contact_person(
    app_and_people: tuple[Litestar, People],
) -> None:
    """Finding 10 of issue 11: the API hid the contact from auditors, the page showed it."""
    _, people = app_and_people
    a = people.a
    with people.session(Role.AUDITOR) as auditor, people.session(Role.SUPPORT) as support:
        audited = auditor.get(f"/admin/customers/{a.customer_id}")
        supported = support.get(f"/admin/customers/{a.customer_id}")

    assert audited.status_code == 200 and a.organisation in audited.text
    assert a.contact_email not in audited.text and "Anvilstraat" not in audited.text
    assert 'data-field="contact-withheld"' in audited.text
    assert a.contact_email in supported.text


def test_no_template_decides_by_role() -> None:
    """Templates ask the viewer; a test of a role in a template would be a second policy."""
    templates = Path(http.__file__).parent / "templates"
    for template in templates.glob("*.html"):
        code = " ".join(re.findall(r"\{[{%](.*?)[%}]\}", template.read_text(), re.S))
        decides = re.findall(r"role\b[\w.]*\s*(?:==|!=|\bin\b|\bis\b)|is_platform", code)
        assert not decides, f"{template.name}: {decides}"


# ---------------------------------------------------------------- malformed queries (finding 7)


def _query_names(route: HTTPRoute) -> list[str]:
    _, kwargs_model = route.route_handler_map["GET"]
    return sorted(
        p.field_alias for p in kwargs_model.expected_query_params if p.param_type is ParamType.QUERY
    )


# What a person, a bookmark or a prober may put in a page's query: dates at and past the ends
# of the calendar, ids, numbers and any text at all.
QUERY_VALUES = st.one_of(
    st.dates().map(date.isoformat),
    st.sampled_from(["9999-12-31", "0001-01-01", "9998-12-31", "0002-01-01", "", " "]),
    st.from_regex(r"\A[+-]?\d{1,6}-\d{1,2}-\d{1,2}\Z"),
    st.uuids().map(str),
    st.integers().map(str),
    st.text(max_size=40),
)


def test_no_query_a_page_may_be_given_gets_a_server_error_for_any_role(
    app_and_people: tuple[Litestar, People], caplog: pytest.LogCaptureFixture
) -> None:
    """Hypothesis over every page's query parameters (its own, and one it does not know),
    as every role: 4xx for what is malformed, never 5xx, and nothing logged as unhandled."""
    app, people = app_and_people
    pages = [(path, _query_names(route)) for path, route, _ in _pages(app)]
    values = {"customer_id": str(people.a.customer_id), "message_id": str(people.a.message_id),
              "case_id": str(people.case_id)}  # fmt: skip
    with ExitStack() as stack:
        sessions = {role: stack.enter_context(people.session(role)) for role in Role}

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            derandomize=True,  # the same cases each run
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(data=st.data())
        def answers_without_a_server_error(data: st.DataObject) -> None:
            role = data.draw(st.sampled_from(list(Role)), label="role")
            path, names = data.draw(st.sampled_from(pages), label="page")
            keys = st.sampled_from([*names, "unknown"]) if names else st.just("unknown")
            query = data.draw(st.lists(st.tuples(keys, QUERY_VALUES), max_size=4), label="query")
            response = sessions[role].get(_fill(path, values), params=query)
            assert response.status_code < 500, (role, path, query, response.status_code)

        with caplog.at_level(logging.ERROR):
            answers_without_a_server_error()

    assert "unhandled" not in caplog.text, caplog.text
