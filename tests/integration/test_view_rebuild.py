"""`picasse project --rebuild`: a view is built afresh beside the live one and swapped in,
so the pages never show a view part-built (issue 18, item 5)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import psycopg
import pytest

from picasse.adapters.http.app import HttpDeps, create_app
from picasse.domain.messages import Channel, Delivery, Message, Priority, delivery_id, traffic_month
from picasse.domain.values import Role
from picasse.runners.api import http_deps
from picasse.runners.project import SHADOW_PREFIX, Views, _by_hand
from picasse.runners.settings import Settings
from tests.integration.api_server import (
    Tenant,
    add_staff,
    logged_in,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)

OTHERS = 1500  # deliveries of another customer, earlier in the log
OURS = 60  # the customer's own, last in the log: a view part-built would lack them


def _deliveries(deps: HttpDeps, tenant: Tenant, count: int) -> None:
    """Messages of one recipient each, saved a few hundred at a time."""
    now = deps.clock.now()
    for start in range(0, count, 250):
        batch: list[Any] = []
        for _ in range(min(250, count - start)):
            message = Message(
                tenant_id=tenant.customer_id, month=traffic_month(now), channel=Channel.SMS,
                priority=Priority.NORMAL, body="hi", subject=None, recipient_count=1,
                group_id=None, not_before=None, requested_by=tenant.user_id, client_ip=None,
                ack=None,
            )  # fmt: skip
            delivery = Delivery(
                id=delivery_id(message.id, 0), tenant_id=tenant.customer_id,
                month=traffic_month(now), message_id=message.id, index=0, channel=Channel.SMS,
                to="+31612345678", not_before=None, escalation_level=0,
            )  # fmt: skip
            batch += [message, delivery]
        deps.messages.save(*batch)


def _rebuild(settings: Settings, names: list[str] | None = None) -> None:
    views = Views(settings, settings.database_url or "", names)
    try:
        assert _by_hand(views, threading.Event(), reset=True) == 0
    finally:
        views.close()


class World:
    def __init__(
        self, settings: Settings, base_url: str, ours: Tenant, others: Tenant, admin: str
    ) -> None:
        self.settings, self.base_url, self.admin = settings, base_url, admin
        self.ours, self.others = ours, others


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[World]:
    with (
        module_settings(tmp_path_factory, database_url, "rebuild") as settings,
        http_deps(settings, database_url) as deps,
    ):
        app = create_app(with_cheap_passwords(deps))
        others, ours = make_tenant(deps, "Others"), make_tenant(deps, "Ours")
        staff = add_staff(deps)
        _deliveries(deps, others, OTHERS)
        _deliveries(deps, ours, OURS)
        _rebuild(settings)  # every view built from the log the first time, the same way
        with serving(app) as url:
            yield World(settings, url, ours, others, staff[Role.PLATFORM_ADMIN])


def test_the_traffic_page_never_shows_fewer_rows_while_the_view_is_rebuilt(
    world: World, database_url: str
) -> None:
    page = f"/admin/traffic?customer_id={world.ours.customer_id}"
    shadow = f"{world.settings.database_schema}.{SHADOW_PREFIX}traffic_view_tracking"

    def rows_shown(client: Any) -> int:
        answer = client.get(page)
        assert answer.status_code == 200, answer.text
        return len(re.findall(r"data-delivery=", answer.text))

    client = logged_in(world.base_url, world.admin)
    with closing(client), psycopg.connect(database_url, autocommit=True) as conn:
        before = rows_shown(client)
        assert before == OURS + 1  # and the message make_tenant sent
        failed: list[BaseException] = []

        def rebuild() -> None:
            try:
                _rebuild(world.settings, ["traffic"])
            except BaseException as error:
                failed.append(error)

        thread = threading.Thread(target=rebuild)
        thread.start()
        seen, during = [], 0
        while thread.is_alive():
            building = conn.execute("SELECT to_regclass(%s)", (shadow,)).fetchone()
            seen.append(rows_shown(client))
            during += building is not None and building[0] is not None
        thread.join()
        assert not failed, failed
        after = rows_shown(client)
        shadows = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND relname LIKE %s",
            (world.settings.database_schema, f"{SHADOW_PREFIX}%"),
        ).fetchall()
    assert during > 0, "no page was read while the shadow view was being built"
    assert min(seen) >= before and after == before, (before, seen, after)
    assert shadows == []  # swapped in under the live names: tables, keys and indexes


def test_list_routes_page_by_a_link_to_the_next_page_and_each_row_comes_once(
    world: World,
) -> None:
    """GET /v1/traffic answers its array as before, at most 200 rows, and names the next
    page in a `Link: <…?after=…>; rel="next"` header (issue 18, item 3)."""
    client = logged_in(world.base_url, world.admin)
    with closing(client):
        path: str | None = f"/v1/traffic?customer_id={world.others.customer_id}&limit=500"
        pages, seen = [], []
        while path is not None:
            answer = client.get(path)
            assert answer.status_code == 200, answer.text
            pages.append(len(answer.json()))
            seen += [row["delivery_id"] for row in answer.json()]
            path = answer.links.get("next", {}).get("url")
        refused = client.get(
            "/v1/traffic", params={"customer_id": str(world.ours.customer_id), "after": "x"}
        )
    assert max(pages) == 200 and len(pages) == 8, pages
    assert len(seen) == len(set(seen)) == OTHERS + 1
    assert refused.status_code == 422 and refused.json()["field"] == "after"


def test_a_view_with_none_of_its_events_in_a_long_stretch_records_that_it_is_up_to_date(
    world: World,
) -> None:
    """The ledger took none of the 1,500+ traffic events after its last one: its position
    is the head, so its lag (the overview counts it on every load) is read from there."""
    views = Views(world.settings, world.settings.database_url or "", ["ledger"])
    try:
        (status,) = views.statuses()
    finally:
        views.close()
    assert status.head > OTHERS and status.position == status.head and status.lag == 0


def test_a_customer_is_found_by_a_search_box_over_the_login_blind_index_not_a_list(
    world: World,
) -> None:
    """No page lists every customer to choose from: the customers page and the traffic
    page find one by its id or by a login of one of its users (the Login claim)."""
    client = logged_in(world.base_url, world.admin)
    with closing(client):
        found = client.get("/admin/customers", params={"q": world.ours.user_login})
        by_id = client.get("/admin/customers", params={"q": str(world.others.customer_id)})
        traffic = client.get("/admin/traffic", params={"customer": world.ours.admin_login})
        nobody = client.get("/admin/traffic", params={"customer": "no-such-login"})
        listed = client.get("/admin/traffic")
    assert re.findall(r'data-customer="([^"]+)"', found.text) == [str(world.ours.customer_id)]
    assert re.findall(r'data-customer="([^"]+)"', by_id.text) == [str(world.others.customer_id)]
    assert traffic.status_code == 200 and traffic.text.count("data-delivery=") == OURS + 1
    assert nobody.status_code == 400 and "No customer has that id" in nobody.text
    assert "<option" not in listed.text  # no drop-down of every customer
