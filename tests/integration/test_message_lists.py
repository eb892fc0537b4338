"""Messages listed and followed over the API (issue 12, item 2), stored templates (item 4) and
groups (item 5), against the app in this process on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from eventsourcing.projection import ProjectionRunner

from picasse.adapters.http.app import HttpDeps, create_app
from picasse.domain.messages import (
    Channel,
    Delivery,
    FailureReason,
    Message,
    Priority,
    delivery_id,
    traffic_month,
)
from picasse.domain.messaging import SendRequest
from picasse.domain.values import Role
from picasse.runners.api import http_deps
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


class Here:
    def __init__(
        self, deps: HttpDeps, base_url: str, a: Tenant, b: Tenant, staff: dict[Role, str],
        views: dict[str, ProjectionRunner[Any, Any]],
    ) -> None:  # fmt: skip
        self.deps, self.base_url, self.a, self.b, self.staff = deps, base_url, a, b, staff
        self.views = views

    def as_(self, login: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=bearer(self.deps, login), timeout=20)

    def catch_up(self) -> None:
        caught_up(self.views)

    def send(self, tenant: Tenant, **fields: Any) -> UUID:
        request = {"channel": "sms", "to": ["+31612345678"], "body": "hi"} | fields
        return self.deps.messages.send(
            tenant.customer_id, SendRequest(**request), requested_by=tenant.user_id
        )


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Here]:
    with (
        module_settings(tmp_path_factory, database_url, "lists") as settings,
        http_deps(settings, database_url) as deps,
    ):
        app = create_app(with_cheap_passwords(deps))
        a, b = make_tenant(deps, "Awl"), make_tenant(deps, "Brace")
        staff = add_staff(deps)
        with running(settings, database_url, ["accounts", "traffic"]) as views, serving(app) as url:
            found = Here(deps, url, a, b, staff, views)
            found.catch_up()
            yield found


def _pages(client: httpx.Client, path: str, **params: Any) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        answer = client.get(path, params=params | ({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        yield page
        cursor = page["next_cursor"]
        if cursor is None:
            return


# ---------------------------------------------------------------- paging


def _many_messages(here: Here, tenant: Tenant, count: int, per_save: int = 250) -> list[UUID]:
    """Messages of one recipient each, saved a few hundred at a time through the
    application (sending them one by one would take ten times as long)."""
    messages, now = here.deps.messages, here.deps.clock.now()
    made: list[UUID] = []
    for start in range(0, count, per_save):
        batch: list[Any] = []
        for _ in range(min(per_save, count - start)):
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
            made.append(message.id)
        messages.save(*batch)
    return made


def test_over_a_thousand_messages_each_comes_back_exactly_once_while_new_ones_arrive(
    here: Here,
) -> None:
    existing = set(_many_messages(here, here.b, 1000)) | {here.b.message_id}
    here.catch_up()
    client = here.as_(here.b.user_login)

    seen: list[str] = []
    arrived: set[UUID] = set()
    for page in _pages(client, "/v1/messages", limit=97):
        seen += [m["id"] for m in page["items"]]
        arrived |= {here.send(here.b, body="late") for _ in range(7)}  # newer than any page
        here.catch_up()

    assert len(seen) == len(set(seen)), "a message came back twice"
    assert {UUID(i) for i in seen} == existing
    assert not arrived & {UUID(i) for i in seen}
    times = [
        m["requested_at"] for m in client.get("/v1/messages", params={"limit": 200}).json()["items"]
    ]
    assert times == sorted(times, reverse=True)


def test_a_message_shows_its_counts_per_status_and_the_status_filter_finds_it(here: Here) -> None:
    message_id = here.send(here.a, to=["+31612345671", "+31612345672", "+31612345673"])
    here.deps.messages.record_permanent_failure(
        delivery_id(message_id, 1), FailureReason.INVALID_RECIPIENT
    )
    here.catch_up()
    client = here.as_(here.a.admin_login)

    listed = client.get("/v1/messages", params={"channel": "sms"}).json()["items"]
    undelivered = client.get("/v1/messages", params={"status": "undelivered"}).json()["items"]
    email = client.get("/v1/messages", params={"channel": "email"}).json()["items"]

    mine = next(m for m in listed if m["id"] == str(message_id))
    assert mine["counts"] == {"queued": 2, "undelivered": 1}
    assert mine["recipient_count"] == 3
    assert [m["id"] for m in undelivered] == [str(message_id)]
    assert str(message_id) not in {m["id"] for m in email}
    assert "body" not in mine and "hi" not in str(listed)


def test_since_and_until_bound_the_list_and_times_without_a_zone_are_utc(here: Here) -> None:
    client = here.as_(here.a.user_login)
    future = (here.deps.clock.now() + timedelta(days=1)).replace(tzinfo=None).isoformat()

    none = client.get("/v1/messages", params={"since": future}).json()["items"]
    all_ = client.get("/v1/messages", params={"until": future}).json()["items"]
    backwards = client.get("/v1/messages", params={"since": future, "until": "2000-01-01T00:00:00"})

    assert none == [] and str(here.a.message_id) in {m["id"] for m in all_}
    assert backwards.status_code == 422 and backwards.json()["field"] == "since"


@pytest.mark.parametrize("cursor", ["not-base64!", "bm9wZQ", "WzEsMl0", "x" * 201])
def test_a_cursor_the_api_did_not_give_is_refused_with_a_problem(here: Here, cursor: str) -> None:
    client = here.as_(here.a.user_login)
    for path in ("/v1/messages", f"/v1/messages/{here.a.message_id}/deliveries"):
        refused = client.get(path, params={"cursor": cursor})
        assert refused.status_code in (400, 422), (path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"


def test_deliveries_page_in_recipient_order_and_auditors_see_no_recipients(here: Here) -> None:
    recipients = [f"+3161234{n:04d}" for n in range(5)]
    message_id = here.send(here.a, to=recipients)
    here.catch_up()
    path = f"/v1/messages/{message_id}/deliveries"

    pages = list(_pages(here.as_(here.a.user_login), path, limit=2))
    audited = here.as_(here.staff[Role.AUDITOR]).get(path).json()["items"]
    supported = here.as_(here.staff[Role.SUPPORT]).get(path).json()["items"]

    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [d["to"] for p in pages for d in p["items"]] == recipients
    assert [d["to"] for d in audited] == [None] * 5
    assert [d["to"] for d in supported] == recipients


def test_staff_name_the_customer_whose_messages_they_list(here: Here) -> None:
    support = here.as_(here.staff[Role.SUPPORT])

    unnamed = support.get("/v1/messages")
    named = support.get("/v1/messages", params={"customer_id": str(here.a.customer_id)})

    assert unnamed.status_code == 422 and unnamed.json()["field"] == "customer_id"
    assert str(here.a.message_id) in {m["id"] for m in named.json()["items"]}


# ---------------------------------------------------------------- cancelling


def test_a_scheduled_message_is_cancelled_and_its_deliveries_read_cancelled(here: Here) -> None:
    later = (here.deps.clock.now() + timedelta(hours=3)).isoformat()
    client = here.as_(here.a.user_login)
    sent = client.post(
        "/v1/messages",
        json={"channel": "sms", "to": ["+31612345670"], "body": "later", "schedule_at": later},
    )
    message_id = sent.json()["id"]

    cancelled = client.delete(f"/v1/messages/{message_id}")
    again = client.delete(f"/v1/messages/{message_id}")
    here.catch_up()

    assert (cancelled.status_code, again.status_code) == (204, 204)
    shown = client.get(f"/v1/messages/{message_id}").json()
    assert [d["status"] for d in shown["deliveries"]] == ["cancelled"]
    listed = client.get("/v1/messages", params={"status": "cancelled"}).json()["items"]
    assert [(m["id"], m["counts"]) for m in listed] == [(message_id, {"cancelled": 1})]


def test_a_message_sent_at_once_is_not_cancelled_and_staff_cancel_nothing(here: Here) -> None:
    refused = here.as_(here.a.user_login).delete(f"/v1/messages/{here.a.message_id}")
    staff = here.as_(here.staff[Role.PLATFORM_ADMIN]).delete(f"/v1/messages/{here.a.message_id}")

    assert refused.status_code == 409
    assert refused.json()["code"] == "message-not-cancellable"
    assert refused.json()["type"].endswith("message-not-cancellable")
    assert staff.status_code == 403


# ---------------------------------------------------------------- templates


def test_an_admin_stores_a_template_and_a_user_sends_from_it(here: Here) -> None:
    admin, user = here.as_(here.a.admin_login), here.as_(here.a.user_login)

    made = admin.post(
        "/v1/templates", json={"name": "Shift", "channel": "sms", "text": "Hi {name}, shift at {t}"}
    )
    template_id = made.json()["id"]
    listed = user.get("/v1/templates").json()
    sent = user.post(
        "/v1/messages",
        json={"channel": "sms", "to": ["+31612345679"], "template_id": template_id,
              "variables": {"name": "Ann", "t": "ten"}},
    )  # fmt: skip
    missing = user.post(
        "/v1/messages",
        json={"channel": "sms", "to": ["+31612345679"], "template_id": template_id},
    )

    assert made.status_code == 201, made.text
    assert made.json()["placeholders"] == ["name", "t"]
    assert [t["name"] for t in listed] == ["Shift"]
    assert sent.status_code == 202, sent.text
    body = user.get(f"/v1/messages/{sent.json()['id']}", params={"reveal_content": True})
    assert body.json()["body"] == "Hi Ann, shift at ten"
    assert missing.status_code == 422 and missing.json()["field"] == "variables"


def test_templates_are_checked_changed_and_deleted_by_admins_only(here: Here) -> None:
    admin, user = here.as_(here.a.admin_login), here.as_(here.a.user_login)
    made = admin.post("/v1/templates", json={"name": "Alarm", "channel": "voice", "text": "Go"})
    path = f"/v1/templates/{made.json()['id']}"

    bad = admin.post("/v1/templates", json={"name": "X", "channel": "sms", "text": "{a!r}"})
    taken = admin.post("/v1/templates", json={"name": "alarm", "channel": "voice", "text": "Go"})
    by_user = user.post("/v1/templates", json={"name": "Mine", "channel": "sms", "text": "Hi"})
    changed = admin.put(path, json={"text": "Leave by {exit}"})
    deleted = admin.delete(path)

    assert bad.status_code == 422 and bad.json()["field"] == "text"
    assert taken.status_code == 409 and taken.json()["code"] == "name-taken"
    assert by_user.status_code == 403
    assert changed.json()["placeholders"] == ["exit"]
    assert deleted.status_code == 204 and admin.get(path).status_code == 404


def test_no_picasse_role_reads_a_customers_templates(here: Here) -> None:
    made = here.as_(here.a.admin_login).post(
        "/v1/templates", json={"name": "Secret", "channel": "email", "text": "Vault 4417"}
    )
    for login in here.staff.values():
        staff = here.as_(login)
        assert staff.get("/v1/templates").status_code == 403
        assert staff.get(f"/v1/templates/{made.json()['id']}").status_code == 403


# ---------------------------------------------------------------- groups


def test_an_admin_manages_groups_and_a_user_sends_to_one(here: Here) -> None:
    admin, user = here.as_(here.a.admin_login), here.as_(here.a.user_login)

    made = admin.post("/v1/groups", json={"name": "Night shift", "members": ["+31 6 1234 5601"]})
    path = f"/v1/groups/{made.json()['id']}"
    changed = admin.put(path, json={"members": ["+31612345602", "night@awl.example"]})
    listed = user.get("/v1/groups").json()
    sent = user.post(
        "/v1/messages", json={"channel": "sms", "group": made.json()["id"], "body": "x"}
    )
    by_user = user.put(path, json={"members": ["+31612345603"]})
    bad = admin.post("/v1/groups", json={"name": "Bad", "members": ["not a number"]})
    deleted = admin.delete(path)

    assert made.status_code == 201 and made.json()["members"] == ["+31612345601"]
    assert changed.json()["members"] == ["+31612345602", "night@awl.example"]
    assert [(g["name"], g["member_count"], g["members"]) for g in listed] == [
        ("Night shift", 2, None)
    ]
    assert sent.status_code == 202, sent.text
    assert by_user.status_code == 403
    assert bad.status_code == 422 and bad.json()["field"] == "members"
    assert deleted.status_code == 204 and user.get(path).status_code == 404
    assert user.get("/v1/groups").json() == []
