"""Cases and invoices over HTTP, in one process: a customer's user files a case, support
replies and moves it along, the customer reads the reply; staff set a plan, the customer's
admin fetches its invoice and its PDF, staff record payments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import httpx
import msgspec
import pytest
from psycopg import sql

from picasse.adapters.http import billing_api
from picasse.adapters.http.app import HttpDeps, create_app
from picasse.adapters.http.billing_api import InvoiceOut
from picasse.adapters.postgres.store import recorder_of
from picasse.domain.access import Viewer
from picasse.domain.billing import Billing
from picasse.domain.conferencing import ScheduleRequest
from picasse.domain.values import Role
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from tests.integration.api_server import (
    Tenant,
    add_staff,
    bearer,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)
from tests.integration.projection_runners import caught_up, running

PLAN = {
    "monthly_fee": "19.95",
    "per_sms_segment": "0.075",
    "per_email": "0.002",
    "per_voice_minute": "0.13",
    "per_conference_minute": "0.04",
    "vat_percent": "21",
}


class World(msgspec.Struct):
    deps: HttpDeps
    base_url: str
    tenant: Tenant
    staff: dict[Role, str]
    schema: str
    invoices_view: dict[str, Any]  # its projection, run here (no `picasse project` runs)

    def client(self, login: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=bearer(self.deps, login), timeout=20)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[World]:
    with (
        module_settings(tmp_path_factory, database_url, "care") as settings,
        http_deps(settings, database_url) as deps,
        running(settings, database_url, ["invoices"]) as invoices_view,
    ):
        assert isinstance(settings, Settings)
        app = create_app(with_cheap_passwords(deps))
        tenant, staff = make_tenant(deps, "Caster"), add_staff(deps)
        with serving(app) as base_url:
            schema = settings.database_schema or "public"
            yield World(deps, base_url, tenant, staff, schema, invoices_view)


def test_a_customer_files_a_case_support_replies_and_the_customer_reads_the_reply(
    world: World, raw_events: Callable[[World], bytes]
) -> None:
    customer = world.client(world.tenant.user_login)
    support = world.client(world.staff[Role.SUPPORT])
    words = "Our alerts of Tuesday never arrived at the night shift"
    filed = customer.post(
        "/v1/cases",
        json={
            "category": "fault_report",
            "description": words,
            "message_id": str(world.tenant.message_id),
        },
    )
    assert filed.status_code == 201, filed.text
    case = filed.json()
    assert case["state"] == "open" and case["description"] == words

    queue = support.get("/v1/cases").json()
    assert case["id"] in [c["id"] for c in queue]
    replied = support.post(
        f"/v1/cases/{case['id']}/comments", json={"text": "We are looking into it"}
    )
    assert replied.status_code == 201, replied.text
    assert (
        support.patch(f"/v1/cases/{case['id']}", json={"state": "in_progress"}).status_code == 200
    )
    skipped = support.patch(f"/v1/cases/{case['id']}", json={"state": "closed"})
    assert skipped.status_code == 409 and skipped.json()["code"] == "case-step-refused"
    assert customer.patch(f"/v1/cases/{case['id']}", json={"state": "resolved"}).status_code == 403

    (mine,) = [c for c in customer.get("/v1/cases").json() if c["id"] == case["id"]]
    assert mine["state"] == "in_progress"
    assert [(c["from_support"], c["text"]) for c in mine["comments"]] == [
        (True, "We are looking into it")
    ]
    auditor = world.client(world.staff[Role.AUDITOR])
    assert auditor.get(f"/v1/cases/{case['id']}").status_code == 403
    stored = raw_events(world)
    assert b"fault_report" in stored and words.encode() not in stored  # sealed, not absent


def test_a_case_about_another_customers_message_or_call_or_without_words_is_refused(
    world: World,
) -> None:
    customer = world.client(world.tenant.user_login)
    other = customer.post(
        "/v1/cases",
        json={"category": "complaint", "description": "x", "message_id": str(world.tenant.user_id)},
    )
    assert other.status_code == 422 and other.json()["field"] == "message_id"
    no_call = customer.post(
        "/v1/cases",
        json={"category": "complaint", "description": "x", "conference_id": str(uuid4())},
    )
    assert no_call.status_code == 422 and no_call.json()["field"] == "conference_id"
    deps, tenant = world.deps, world.tenant
    assert deps.conferences is not None
    deps.conferences.add_dial_in_number(
        tenant.customer_id, "+31201234321", Viewer(role=Role.SUPPORT, customer_id=None)
    )
    call = deps.conferences.schedule(
        tenant.customer_id,
        ScheduleRequest(
            title="Weekly", start=deps.clock.now() + timedelta(days=3), duration_minutes=30
        ),
        Viewer(role=Role.CUSTOMER_USER, customer_id=tenant.customer_id, user_id=tenant.user_id),
    )
    about_the_call = customer.post(
        "/v1/cases",
        json={"category": "fault_report", "description": "echo on the line",
              "conference_id": str(call.conference_id)},
    )  # fmt: skip
    assert about_the_call.status_code == 201, about_the_call.text
    empty = customer.post("/v1/cases", json={"category": "complaint", "description": "  "})
    assert empty.status_code == 422 and empty.json()["field"] == "description"
    staff = world.client(world.staff[Role.SUPPORT]).post(
        "/v1/cases", json={"category": "complaint", "description": "x"}
    )
    assert staff.status_code == 403


def test_staff_set_a_plan_and_the_customers_admin_gets_its_invoice_and_pdf_and_payments_count(
    world: World,
) -> None:
    customer_id = world.tenant.customer_id
    support = world.client(world.staff[Role.SUPPORT])
    admin = world.client(world.tenant.admin_login)
    floats = support.put(f"/v1/customers/{customer_id}/plan", json={**PLAN, "per_email": 0.002})
    assert floats.status_code in (400, 422)
    assert admin.put(f"/v1/customers/{customer_id}/plan", json=PLAN).status_code == 403
    assert support.put(f"/v1/customers/{customer_id}/plan", json=PLAN).status_code == 200

    billing = Billing(clock=world.deps.clock, sharing=world.deps.messages)
    last_month = f"{world.deps.clock.now().replace(day=1) - timedelta(days=1):%Y-%m}"
    billing.run(last_month)
    caught_up(world.invoices_view)  # the list is read from the invoices view

    (listed,) = [i for i in admin.get("/v1/invoices").json() if i["month"] == last_month]
    assert listed["billed_to_name"] == world.tenant.organisation
    assert listed["total_cents"] == 2414  # 19.95 + 21 % VAT, nothing sent last month
    assert {line["item"] for line in listed["lines"]} >= {
        "monthly_fee",
        "sms_segments",
        "conference_minutes",
    }
    assert world.client(world.tenant.user_login).get("/v1/invoices").status_code == 403
    pdf = admin.get(f"/v1/invoices/{listed['id']}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")

    paid = support.post(f"/v1/invoices/{listed['id']}/payments", json={"amount_cents": 1000})
    assert (
        paid.status_code == 201
        and paid.json()["paid_cents"] == 1000
        and paid.json()["status"] == "open"
    )
    over = support.post(f"/v1/invoices/{listed['id']}/payments", json={"amount_cents": 1415})
    assert over.status_code == 409 and over.json()["code"] == "invoice-overpaid"
    assert (
        admin.post(f"/v1/invoices/{listed['id']}/payments", json={"amount_cents": 1}).status_code
        == 403
    )
    rest = support.post(f"/v1/invoices/{listed['id']}/payments", json={"amount_cents": 1414})
    assert rest.json()["status"] == "paid"
    caught_up(world.invoices_view)
    assert world.deps.invoices_view is not None
    assert world.deps.invoices_view.overdue_of([customer_id]) == {}
    assert Viewer(role=Role.AUDITOR, customer_id=None).sees_invoices_of(customer_id)


def test_the_invoice_list_comes_from_the_view_page_by_page_and_a_customer_sees_only_its_own(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /v1/invoices reads the invoices view by number, a page at a time, and names the
    next page in a `Link: <…?after=…>; rel="next"` header (issue 18). The page size is made
    small here so that a few invoices make several pages."""
    support = world.client(world.staff[Role.SUPPORT])
    other = make_tenant(world.deps, "Listed")
    for customer in (world.tenant.customer_id, other.customer_id):
        assert support.put(f"/v1/customers/{customer}/plan", json=PLAN).status_code == 200
    billing = Billing(clock=world.deps.clock, sharing=world.deps.messages)
    first = world.deps.clock.now().replace(day=1)
    for back in (40, 70):  # two months before last: two invoices for each customer
        billing.run(f"{first - timedelta(days=back):%Y-%m}")
    caught_up(world.invoices_view)
    issued = sorted(
        i.number
        for customer in (world.tenant.customer_id, other.customer_id)
        for i in billing.invoices(customer, by=Viewer(role=Role.SUPPORT, customer_id=None))
    )
    monkeypatch.setattr(billing_api, "PAGE_SIZE", 3)

    path: str | None = "/v1/invoices"
    pages: list[list[dict[str, Any]]] = []
    while path is not None:
        answer = support.get(path)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        path = answer.links.get("next", {}).get("url")
    numbers = [i["number"] for page in pages for i in page]
    assert numbers == sorted(set(numbers)) and set(issued) <= set(numbers)
    assert len(pages) == -(-len(numbers) // 3) > 1 and all(len(p) == 3 for p in pages[:-1])
    assert set(pages[0][0]) == set(InvoiceOut.__struct_fields__)  # the shape it always had

    own = world.client(other.admin_login).get("/v1/invoices")
    assert own.status_code == 200 and "link" not in own.headers
    assert {i["customer_id"] for i in own.json()} == {str(other.customer_id)}
    assert len(own.json()) == 2 and own.json()[0]["billed_to_name"] == other.organisation
    narrowed = support.get("/v1/invoices", params={"customer_id": str(other.customer_id)})
    assert narrowed.json() == own.json()
    refused = support.get("/v1/invoices", params={"after": "not-a-cursor"})
    assert refused.status_code == 422 and refused.json()["field"] == "after"

    # The view keeps what was paid; its row holds no billing name or address.
    paid = support.post(f"/v1/invoices/{own.json()[0]['id']}/payments", json={"amount_cents": 500})
    assert paid.status_code == 201, paid.text
    caught_up(world.invoices_view)
    assert world.deps.invoices_view is not None
    (row, _) = world.deps.invoices_view.invoices(customer_id=other.customer_id)
    assert (row.number, row.paid_cents, row.overdue) == (own.json()[0]["number"], 500, False)
    assert not {"billed_to_name", "billed_to_address"} & set(row.__struct_fields__)


@pytest.fixture
def raw_events() -> Callable[[World], bytes]:
    """Every stored event's bytes, straight from the table (the mapper bypassed)."""

    def read(world: World) -> bytes:
        recorder = recorder_of(world.deps.messages)
        with recorder.datastore.get_connection() as conn:
            table = recorder.events_table_name
            query = sql.SQL("SELECT state FROM {}.{}")
            rows = conn.execute(
                query.format(sql.Identifier(world.schema), sql.Identifier(table))
            ).fetchall()
        return b"".join(bytes(r["state"]) for r in rows)

    return read
