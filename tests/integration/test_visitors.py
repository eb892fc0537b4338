"""Visitor registration (issue 14, R13) against the app in this process on real PostgreSQL:
a site's settings, the public form and its JSON twin with their refusals, the visitor's
cancel link, the desk and the on-site list, retention; erasure checked in the log."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg import sql

from picasse.adapters.http.app import HttpDeps, create_app
from picasse.adapters.http.auth import LoginThrottling, ThrottlePolicy
from picasse.domain.messages import Message
from picasse.domain.personal import ERASED
from picasse.domain.privacy import Privacy
from picasse.domain.visitors import Visitors
from picasse.runners.api import http_deps
from picasse.runners.retention import run_visitor_retention
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_privacy
from tests.integration.api_server import (
    Tenant,
    bearer,
    logged_in,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)
from tests.registry_walk import personal_values

LISTED = "https://shop.example"
THROTTLING = LoginThrottling(
    per_address_registration=ThrottlePolicy(
        slow_after=3, window=timedelta(hours=1), first_delay=timedelta(minutes=5)
    )
)
NOTICE = "We keep your details 28 days after your visit.\nAsk us to erase them at any time."


class Here:
    def __init__(
        self, deps: HttpDeps, base_url: str, a: Tenant, b: Tenant, site: UUID, privacy: Privacy
    ) -> None:
        self.deps, self.base_url, self.a, self.b, self.site = deps, base_url, a, b, site
        self.privacy = privacy
        self._addresses = 0
        self.settings: Settings | None = None
        self.visitors = Visitors(clock=deps.clock, sharing=deps.messages)

    def as_(self, login: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=bearer(self.deps, login), timeout=20)

    def anyone(self, **headers: str) -> httpx.Client:
        """A browser of nobody logged in, from an address of its own (the throttle counts
        per address; the app believes this process's forwarded header)."""
        self._addresses += 1
        address = f"198.51.{self._addresses // 250}.{self._addresses % 250 + 1}"
        return httpx.Client(
            base_url=self.base_url, timeout=20, headers={"x-forwarded-for": address} | headers
        )

    def count(self) -> int:
        return self.visitors.counts(self.a.customer_id).registered


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Here]:
    with (
        module_settings(tmp_path_factory, database_url, "visitors") as settings,
        http_deps(settings, database_url) as opened,
    ):
        deps = dataclasses.replace(
            opened, trusted_proxies=("127.0.0.1",), login_throttling=THROTTLING
        )
        app = create_app(with_cheap_passwords(deps))
        a, b = make_tenant(deps, "Anvil"), make_tenant(deps, "Bevel")
        site = deps.sites.add(a.customer_id, "Werf Oost", "Kade 2, Urk")  # type: ignore[union-attr]
        privacy = open_privacy(settings, database_url)
        with serving(app) as url:
            here = Here(deps, url, a, b, site, privacy)
            here.settings = settings
            answer = here.as_(a.admin_login).put(
                f"/v1/sites/{site}/registration", json=_settings(a, "werf-oost")
            )
            assert answer.status_code == 200, answer.text
            yield here
        privacy.close()


def _settings(t: Tenant, slug: str, **more: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "hosts": [{"user_id": str(t.user_id), "name": "Ann de Vries"}],
        "fields": ["phone", "company"],
        "privacy_notice": NOTICE,
        "origins": [LISTED],
    } | more


def _form(here: Here, **more: str) -> dict[str, str]:
    arrival = (here.deps.clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    return {
        "name": "Visitor Canary7f3a",
        "email": "canary7f3a@visitors.example",
        "phone": "+31 6 1234 5678",
        "company": "Canary BV",
        "host": str(here.a.user_id),
        "arrival": arrival,
        "consent": "yes",
    } | more


def _registered_id(here: Here, before: set[UUID]) -> UUID:
    (new,) = {v.id for v in here.visitors.visitors(here.a.customer_id)} - before
    return new


def _ids(here: Here) -> set[UUID]:
    return {v.id for v in here.visitors.visitors(here.a.customer_id)}


# ---------------------------------------------------------------- settings


def test_an_admin_sets_the_registration_and_its_users_read_it_but_not_others(here: Here) -> None:
    path = f"/v1/sites/{here.site}/registration"
    shown = here.as_(here.a.user_login).get(path)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["slug"] == "werf-oost" and body["keep_days"] == 28
    assert body["hosts"] == [{"user_id": str(here.a.user_id), "name": "Ann de Vries"}]
    assert body["origins"] == [LISTED]
    refused = here.as_(here.a.user_login).put(path, json=_settings(here.a, "werf-oost"))
    assert refused.status_code == 403
    assert here.as_(here.b.admin_login).get(path).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"slug": "A b"}, "slug"),
        ({"slug": "pass"}, "slug"),
        ({"fields": ["shoe size"]}, "fields"),
        ({"hosts": []}, "hosts"),
        ({"origins": ["https://shop.example/path"]}, "origins"),
        ({"origins": ["http://[::1"]}, "origins"),
        ({"origins": ["https://shop.example:99999"]}, "origins"),
        ({"keep_days": 0}, "keep_days"),
        ({"privacy_notice": "a\x00b"}, "privacy_notice"),
    ],
)
def test_bad_registration_settings_are_refused_naming_the_field(
    here: Here, change: dict[str, Any], field: str
) -> None:
    answer = here.as_(here.a.admin_login).put(
        f"/v1/sites/{here.site}/registration", json=_settings(here.a, "werf-oost") | change
    )
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.text


def test_a_host_of_another_customer_and_a_taken_slug_are_refused(here: Here) -> None:
    b = here.as_(here.b.admin_login)
    site = b.post("/v1/sites", json={"name": "Loods", "address": "Dijk 9"}).json()["id"]
    path = f"/v1/sites/{site}/registration"
    foreign = b.put(path, json=_settings(here.a, "loods"))
    assert foreign.status_code == 422 and foreign.json()["field"] == "hosts"
    taken = b.put(path, json=_settings(here.b, "werf-oost"))
    assert taken.status_code == 409 and taken.json()["field"] == "slug"


# ---------------------------------------------------------------- the public form


def test_the_form_is_framable_by_the_listed_origins_only(here: Here) -> None:
    page = here.anyone().get("/visit/werf-oost")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert f"frame-ancestors 'self' {LISTED}" in csp and "x-frame-options" not in page.headers
    assert "Ann de Vries" in page.text and "We keep your details" in page.text
    assert 'name="consent"' in page.text and "<script" not in page.text
    assert here.anyone().get("/visit/no-such-site").status_code == 404
    # the desk and every other page stay unframable
    assert (
        "frame-ancestors 'none'" in here.anyone().get("/login").headers["content-security-policy"]
    )


def test_a_visitor_registers_through_the_form_and_both_notices_are_queued(here: Here) -> None:
    before, sent = _ids(here), _messages(here)
    answer = here.anyone().post("/visit/werf-oost", data=_form(here))
    assert answer.status_code == 200 and 'data-result="registered"' in answer.text, answer.text
    visitor = here.visitors.visitor(here.a.customer_id, _registered_id(here, before))
    assert (visitor.name, visitor.company, visitor.phone) == (
        "Visitor Canary7f3a", "Canary BV", "+31612345678",
    )  # fmt: skip
    assert visitor.email == "canary7f3a@visitors.example" and visitor.checked_in_at is None
    new = _messages(here) - sent
    assert len(new) == 2  # the host's notice and the visitor's confirmation


def _messages(here: Here) -> set[UUID]:
    """Ids of every message the log holds for customer A (the notices among them)."""
    recorder = here.deps.messages.recorder
    found = set()
    for n in recorder.select_notifications(start=1, limit=1_000_000):
        if n.topic.endswith("Message.Requested"):
            event = here.deps.messages.mapper.to_domain_event(n)
            assert isinstance(event, Message.Requested), n.topic
            if event.tenant_id == here.a.customer_id:
                found.add(event.originator_id)
    return found


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "Bad\x07Name"}, "name"),
        ({"email": "not an address"}, "email"),
        ({"phone": "0900 123"}, "phone"),
        ({"company": "x" * 101}, "company"),
        ({"host": "00000000-0000-0000-0000-000000000009"}, "host"),
        ({"arrival": "tomorrow"}, "arrival"),
        ({"arrival": "2001-01-01T09:00"}, "arrival"),
        ({"consent": ""}, "consent"),
        ({"website": "http://spam.example"}, "website"),
    ],
)
def test_each_bad_field_and_the_honeypot_give_their_error_beside_it_and_record_nothing(
    here: Here, change: dict[str, str], field: str
) -> None:
    before = here.count()
    answer = here.anyone().post("/visit/werf-oost", data=_form(here, **change))
    assert answer.status_code == 422, answer.text
    errors = re.findall(r'data-error-for="([a-z]+)"', answer.text)
    assert errors == [field], answer.text
    assert here.count() == before


def test_a_form_too_large_is_refused_and_records_nothing(here: Here) -> None:
    before = here.count()
    answer = here.anyone().post("/visit/werf-oost", data=_form(here, company="x" * 20_000))
    assert answer.status_code == 413
    assert here.count() == before


def test_the_rate_limit_per_address_refuses_and_records_nothing(here: Here) -> None:
    one = here.anyone()
    for _ in range(THROTTLING.per_address_registration.slow_after):
        assert one.post("/visit/werf-oost", data=_form(here)).status_code == 200
    before = here.count()
    refused = one.post("/visit/werf-oost", data=_form(here))
    assert refused.status_code == 429 and 'data-result="throttled"' in refused.text
    assert int(refused.headers["retry-after"]) > 0
    twin = one.post("/v1/sites/werf-oost/visits", json=_twin(here))
    assert twin.status_code == 429 and twin.json()["code"] == "registration-throttled"
    assert here.count() == before
    assert here.anyone().post("/visit/werf-oost", data=_form(here)).status_code == 200


# ---------------------------------------------------------------- the JSON twin


def _twin(here: Here, **more: Any) -> dict[str, Any]:
    form = _form(here)
    return {k: v for k, v in form.items() if k != "consent"} | {"consent": True} | more


def test_the_json_twin_answers_cors_for_listed_origins_only(here: Here) -> None:
    preflight = here.anyone(origin=LISTED, **{"access-control-request-method": "POST"}).options(
        "/v1/sites/werf-oost/visits"
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == LISTED
    stranger = here.anyone(origin="https://evil.example")
    assert stranger.options("/v1/sites/werf-oost/visits").status_code == 403
    before = here.count()
    assert stranger.post("/v1/sites/werf-oost/visits", json=_twin(here)).status_code == 403
    assert here.count() == before

    listed = here.anyone(origin=LISTED, **{"sec-fetch-site": "cross-site"})
    made = listed.post("/v1/sites/werf-oost/visits", json=_twin(here))
    assert made.status_code == 201, made.text
    assert made.headers["access-control-allow-origin"] == LISTED
    bad = listed.post("/v1/sites/werf-oost/visits", json=_twin(here, email="x", name=""))
    assert bad.status_code == 422 and bad.headers["access-control-allow-origin"] == LISTED
    assert bad.json()["field"] == "name" and "email:" in bad.json()["detail"]
    trap = listed.post("/v1/sites/werf-oost/visits", json=_twin(here, website="x"))
    assert trap.status_code == 422 and trap.json()["code"] == "honeypot"
    assert here.count() == before + 1


# ---------------------------------------------------------------- the visitor's own links


def _register(here: Here) -> tuple[UUID, str, str]:
    """A new visitor through the domain (as the routes do); its id, pass and cancel tokens."""
    from picasse.domain.visitors import VisitForm

    form = _form(here)
    registered = here.visitors.register(
        "werf-oost",
        VisitForm(
            name=form["name"], email=form["email"], phone=form["phone"], company=form["company"],
            host=form["host"], arrival=form["arrival"], consent=True,
        ),
    )  # fmt: skip
    ident = registered.visitor_id
    return ident, f"{ident}.{registered.pass_secret}", f"{ident}.{registered.cancel_secret}"


def _logged(here: Here, visitor_id: UUID) -> list[Any]:
    return [
        value
        for event in here.deps.messages.events.get(visitor_id)
        for value in personal_values(event, "visitor")
    ]


def test_a_get_of_the_cancel_link_changes_nothing_and_its_post_erases_at_once(here: Here) -> None:
    ident, _, cancel = _register(here)
    page = here.anyone().get(f"/visit/cancel/{cancel}")
    assert page.status_code == 200 and "Cancel the visit and erase my details" in page.text
    assert here.visitors.visitor(here.a.customer_id, ident).name == "Visitor Canary7f3a"
    assert here.anyone().get(f"/visit/cancel/{ident}.wrong").status_code == 404

    done = here.anyone().post(f"/visit/cancel/{cancel}")
    assert done.status_code == 200 and 'data-result="erased"' in done.text
    after = here.visitors.visitor(here.a.customer_id, ident)
    assert after.erased and after.cancelled and after.name is None and after.email is None
    assert _logged(here, ident) and all(v == ERASED for v in _logged(here, ident))
    assert here.anyone().get(f"/visit/cancel/{cancel}").status_code == 404
    assert here.visitors.counts(here.a.customer_id).erased >= 1  # counted still


def test_the_pass_page_shows_a_qr_code_of_the_desk_page(here: Here) -> None:
    _, code, _ = _register(here)
    page = here.anyone().get(f"/visit/pass/{code}")
    assert page.status_code == 200 and "<svg" in page.text and 'class="segno"' in page.text
    assert here.anyone().get("/visit/pass/nothing").status_code == 404


# ---------------------------------------------------------------- the desk


def test_check_in_and_out_at_the_desk_show_in_the_on_site_and_evacuation_lists(
    here: Here,
) -> None:
    ident, code, _ = _register(here)
    desk = logged_in(here.base_url, here.a.user_login, follow_redirects=True)
    shown = desk.get("/app/desk", params={"code": code})
    assert shown.status_code == 200 and "Check in" in shown.text
    assert here.visitors.visitor(here.a.customer_id, ident).checked_in_at is None  # GET: nothing

    assert desk.post("/app/desk/check-in", data={"code": code}).status_code == 200
    assert f'data-visitor="{ident}"' in desk.get("/app/desk").text
    printable = desk.get("/app/desk/evacuation", params={"site": str(here.site)})
    assert printable.status_code == 200 and "Visitor Canary7f3a" in printable.text

    assert desk.post(f"/app/desk/check-out/{ident}").status_code == 200
    assert f'data-visitor="{ident}"' not in desk.get("/app/desk").text
    assert ident not in {v.id for v in here.visitors.on_site(here.a.customer_id, here.site)}
    desk.close()


def test_the_desk_is_for_the_customers_own_users(here: Here) -> None:
    _, code, _ = _register(here)
    other = logged_in(here.base_url, here.b.user_login)
    assert other.post("/app/desk/check-in", data={"code": code}).status_code == 404
    other.close()
    anonymous = here.anyone().get("/app/desk", params={"code": code})
    assert anonymous.status_code in (302, 303, 307) and "/login" in anonymous.headers["location"]


# ---------------------------------------------------------------- retention


def test_past_the_retention_a_visitors_data_reads_as_erased_and_counts_stay(here: Here) -> None:
    ident, _, _ = _register(here)
    visitor = here.visitors.visitor(here.a.customer_id, ident)
    just_before = visitor.expected_at + timedelta(days=27)
    due = run_visitor_retention(here.privacy, here.visitors, now=just_before, dry_run=False)
    assert ident not in {v for _, v in due}
    counts = here.visitors.counts(here.a.customer_id)

    later = visitor.expected_at + timedelta(days=28, minutes=1)
    erased = run_visitor_retention(here.privacy, here.visitors, now=later, dry_run=False)
    assert (here.a.customer_id, ident) in erased
    assert all(v == ERASED for v in _logged(here, ident))
    assert here.visitors.visitor(here.a.customer_id, ident).erased
    after = here.visitors.counts(here.a.customer_id)
    assert after.registered == counts.registered and after.erased > counts.erased


def _stored_rows(here: Here) -> str:
    """Every row of every table of this module's schema, as PostgreSQL writes it out as
    text (bytea as hex): the log, the views, the keys, the throttle, everything."""
    assert here.settings is not None
    schema = here.settings.database_schema
    out = []
    with psycopg.connect(here.settings.database_url or "") as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
        for (table,) in tables:
            query = sql.SQL("SELECT r::text FROM {} AS r").format(sql.Identifier(schema, table))
            out += [row[0] for row in conn.execute(query)]
    return "\n".join(out)


def test_no_stored_row_holds_a_visitors_details_readable(here: Here) -> None:
    canary = f"Canary{uuid.uuid4().hex[:12]}"
    answer = here.anyone().post(
        "/visit/werf-oost", data=_form(here, name=canary, company=f"{canary} BV")
    )
    assert answer.status_code == 200, answer.text
    stored = _stored_rows(here)
    assert b"werf-oost".hex() in stored  # the search finds what is stored readable
    for needle in (canary, canary.encode().hex(), canary.encode("utf-16-le").hex()):
        assert needle not in stored


def test_registrations_at_once_are_each_recorded_and_listed(here: Here) -> None:
    """They all add to the customer's one catalogue: a registration that loses the race is
    made again, not lost (nor listed without its visitor)."""
    from concurrent.futures import ThreadPoolExecutor

    before = _ids(here)
    with ThreadPoolExecutor(max_workers=6) as pool:
        made = list(pool.map(lambda _: _register(here)[0], range(6)))
    assert set(made) <= _ids(here) and len(_ids(here) - before) == 6
    assert all(here.visitors.visitor(here.a.customer_id, v).name for v in made)
