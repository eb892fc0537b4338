"""A customer's admins over the API: its users' roles and access, API keys with scopes, and
idempotent sends (issue 12, items 1, 6 and 7), on real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from picasse.adapters.http.app import HttpDeps, create_app
from picasse.domain.users import User
from picasse.domain.values import Role
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from tests.integration.api_server import (
    PASSWORD,
    Tenant,
    add_staff,
    catch_up_views,
    logged_in,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)
from tests.users import add_customer_user

SMS = {"channel": "sms", "to": ["+31612345678"], "body": "Gate closes at six"}


class Here:
    def __init__(
        self, deps: HttpDeps, base_url: str, settings: Settings, database_url: str
    ) -> None:
        self.deps, self.base_url = deps, base_url
        self.settings, self.database_url = settings, database_url

    def key(self, login: str, scopes: list[str] | None = None) -> httpx.Client:
        user = self.deps.accounts.user_by_login(login)
        issued = self.deps.api_keys.issue(
            user_id=user.id, customer_id=user.customer_id, name="test", scopes=scopes
        )
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {issued.key}"}, timeout=20
        )

    def session(self, login: str) -> httpx.Client:
        return logged_in(self.base_url, login)

    def catch_up(self) -> None:
        catch_up_views(self.settings, self.database_url)


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Here]:
    with (
        module_settings(tmp_path_factory, database_url, "admins") as settings,
        http_deps(settings, database_url) as deps,
    ):
        app: Litestar = create_app(with_cheap_passwords(deps))
        with serving(app) as base_url:
            yield Here(deps, base_url, settings, database_url)


@pytest.fixture(scope="module")
def acme(here: Here) -> Tenant:
    return make_tenant(here.deps, "Acme")


@pytest.fixture(scope="module")
def staff(here: Here) -> dict[Role, str]:
    return add_staff(here.deps)


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["type"] == f"urn:picasse:problem:{code}", body
    return body


def _new_user(here: Here, tenant: Tenant, role: Role = Role.CUSTOMER_USER) -> tuple[str, uuid.UUID]:
    login = f"u-{uuid.uuid4().hex[:8]}"
    user_id = add_customer_user(
        here.deps.accounts, customer_id=tenant.customer_id, login=login, role=role,
        password=PASSWORD,
    )  # fmt: skip
    return login, user_id


# ---------------------------------------------------------------- users (R2, R11)


def test_a_customer_admin_makes_a_user_admin_and_an_ordinary_user_again(
    here: Here, acme: Tenant
) -> None:
    _, user_id = _new_user(here, acme)
    admin = here.key(acme.admin_login)
    path = f"/v1/customers/{acme.customer_id}/users/{user_id}"

    promoted = admin.patch(path, json={"role": "customer_admin"})
    again = admin.patch(path, json={"role": "customer_admin"})
    demoted = admin.patch(path, json={"role": "customer_user"})

    assert promoted.status_code == 200 and promoted.json()["role"] == "customer_admin"
    assert again.status_code == 200  # what already holds: nothing changes
    assert demoted.json()["role"] == "customer_user"
    user: User = here.deps.accounts.repository.get(user_id)
    assert user.version == 5  # added, link issued, password set, then two role changes
    here.catch_up()
    listed = {u["id"]: u for u in admin.get(f"/v1/customers/{acme.customer_id}/users").json()}
    assert listed[str(user_id)]["role"] == "customer_user"


def test_a_user_of_the_customer_cannot_change_users_and_staff_roles_are_refused(
    here: Here, acme: Tenant, staff: dict[Role, str]
) -> None:
    _, user_id = _new_user(here, acme)
    path = f"/v1/customers/{acme.customer_id}/users/{user_id}"

    by_user = here.key(acme.user_login).patch(path, json={"disabled": True})
    by_auditor = here.key(staff[Role.AUDITOR]).patch(path, json={"disabled": True})
    staff_role = here.key(acme.admin_login).patch(path, json={"role": "platform_admin"})
    nothing = here.key(acme.admin_login).patch(path, json={})
    typo = here.key(acme.admin_login).patch(path, json={"disable": True})
    staff_user = here.deps.accounts.user_by_login(staff[Role.SUPPORT]).id
    not_ours = here.key(acme.admin_login).patch(
        f"/v1/customers/{acme.customer_id}/users/{staff_user}", json={"disabled": True}
    )

    _problem(by_user, 403, "forbidden")
    _problem(by_auditor, 403, "forbidden")
    assert _problem(staff_role, 422, "invalid-input")["field"] == "role"
    _problem(nothing, 422, "invalid-input")
    assert typo.status_code == 400
    _problem(not_ours, 404, "not-found")
    assert not here.deps.accounts.user(user_id).disabled


def test_the_last_active_admin_is_neither_disabled_nor_demoted(
    here: Here, staff: dict[Role, str]
) -> None:
    solo = make_tenant(here.deps, f"Solo{uuid.uuid4().hex[:4]}")
    admin = here.key(solo.admin_login)
    own = f"/v1/customers/{solo.customer_id}/users/{solo.admin_id}"

    disabled = admin.patch(own, json={"disabled": True})
    demoted = admin.patch(own, json={"role": "customer_user"})
    by_support = here.key(staff[Role.SUPPORT]).patch(own, json={"disabled": True})

    assert "last active admin" in _problem(disabled, 409, "last-admin")["detail"]
    _problem(demoted, 409, "last-admin")
    _problem(by_support, 409, "last-admin")
    assert here.deps.accounts.user(solo.admin_id).role is Role.CUSTOMER_ADMIN
    # With a second admin, the first may step down; the second is then the last.
    other = f"/v1/customers/{solo.customer_id}/users/{solo.user_id}"
    assert admin.patch(other, json={"role": "customer_admin"}).status_code == 200
    assert admin.patch(own, json={"role": "customer_user"}).status_code == 200
    second = here.key(solo.user_login)
    _problem(second.patch(other, json={"disabled": True}), 409, "last-admin")


def test_disabling_ends_the_users_sessions_and_enabling_lets_them_log_in_again(
    here: Here, acme: Tenant, staff: dict[Role, str]
) -> None:
    login, user_id = _new_user(here, acme)
    browser = here.session(login)
    program = here.key(login)
    path = f"/v1/customers/{acme.customer_id}/users/{user_id}"
    assert browser.get("/v1/customers").status_code == 200

    disabled = here.key(acme.admin_login).patch(path, json={"disabled": True})

    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    _problem(browser.get("/v1/customers"), 401, "unauthorized")
    _problem(program.get("/v1/customers"), 401, "unauthorized")
    refused = httpx.post(
        f"{here.base_url}/v1/sessions", json={"login": login, "password": PASSWORD}
    )
    _problem(refused, 409, "user-disabled")
    enabled = here.key(staff[Role.SUPPORT]).patch(path, json={"disabled": False})
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert here.session(login).get("/v1/customers").status_code == 200
    assert program.get("/v1/customers").status_code == 200


# ---------------------------------------------------------------- API keys (item 6)


def test_api_keys_are_listed_with_name_scopes_and_creator_never_a_secret(
    here: Here, acme: Tenant
) -> None:
    browser = here.session(acme.user_login)
    made = browser.post(
        "/v1/api-keys", json={"name": "Nightly report", "scopes": ["messages:read"]}
    )
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    assert made.json()["scopes"] == ["messages:read"] and made.json()["name"] == "Nightly report"
    colleague = here.deps.api_keys.issue(
        user_id=acme.admin_id, customer_id=acme.customer_id, name="Admin's", scopes=["users"]
    )
    revoked = browser.delete(f"/v1/api-keys/{made.json()['id']}")
    assert revoked.status_code == 204
    here.catch_up()

    as_admin = here.session(acme.admin_login).get("/v1/api-keys")
    as_user = browser.get("/v1/api-keys")

    assert as_admin.status_code == 200, as_admin.text
    keys = {k["id"]: k for k in as_admin.json()}
    mine = keys[made.json()["id"]]
    assert mine["name"] == "Nightly report" and mine["scopes"] == ["messages:read"]
    assert mine["creator"] == str(acme.user_id) and mine["revoked"] is True
    assert set(mine) == {"id", "name", "scopes", "creator", "created", "revoked"}
    assert str(colleague.id) in keys
    # A customer's user lists its own keys only; no listing holds a secret.
    assert {k["creator"] for k in as_user.json()} == {str(acme.user_id)}
    for listing in (as_admin, as_user):
        assert secret.split("_", 2)[2] not in listing.text
        assert colleague.key.split("_", 2)[2] not in listing.text


def test_a_key_calls_the_routes_of_its_scopes_only_and_sessions_are_not_limited(
    here: Here, acme: Tenant
) -> None:
    reader = here.key(acme.user_login, scopes=["messages:read"])
    browser = here.session(acme.user_login)

    refused = reader.post("/v1/messages", json=SMS)
    shown = reader.get(f"/v1/messages/{acme.message_id}")
    sent = browser.post("/v1/messages", json=SMS)

    assert "messages:send" in _problem(refused, 403, "missing-scope")["detail"]
    assert shown.status_code == 200
    assert sent.status_code == 202, sent.text
    _problem(reader.get("/v1/api-keys"), 403, "missing-scope")
    assert reader.get("/app/").status_code == 403  # pages take sessions only
    assert reader.get("/schema/openapi.json").status_code == 200  # anyone reads the document


def test_a_key_makes_no_key_broader_than_itself_and_unknown_scopes_are_refused(
    here: Here, acme: Tenant
) -> None:
    keeper = here.key(acme.admin_login, scopes=["users", "messages:read"])

    broader = keeper.post("/v1/api-keys", json={"name": "more", "scopes": ["messages:send"]})
    narrower = keeper.post("/v1/api-keys", json={"name": "less", "scopes": ["messages:read"]})
    unknown = keeper.post("/v1/api-keys", json={"name": "odd", "scopes": ["messages:write"]})
    none = keeper.post("/v1/api-keys", json={"name": "empty", "scopes": []})

    _problem(broader, 403, "missing-scope")
    assert narrower.status_code == 201, narrower.text
    assert _problem(unknown, 422, "invalid-input")["field"] == "scopes"
    assert _problem(none, 422, "invalid-input")["field"] == "scopes"


# ---------------------------------------------------------------- idempotency (item 7)


def test_the_idempotency_key_header_counts_as_the_body_field(here: Here, acme: Tenant) -> None:
    client = here.key(acme.user_login)
    key = f"order-{uuid.uuid4().hex[:8]}"

    first = client.post("/v1/messages", json=SMS, headers={"Idempotency-Key": key})
    by_header = client.post("/v1/messages", json=SMS, headers={"Idempotency-Key": key})
    by_body = client.post("/v1/messages", json=SMS | {"idempotency_key": key})
    both = client.post(
        "/v1/messages", json=SMS | {"idempotency_key": key}, headers={"Idempotency-Key": key}
    )
    differ = client.post(
        "/v1/messages", json=SMS | {"idempotency_key": "other"}, headers={"Idempotency-Key": key}
    )

    assert first.status_code == 202, first.text
    assert by_header.json()["id"] == by_body.json()["id"] == both.json()["id"] == first.json()["id"]
    assert _problem(differ, 422, "invalid-input")["field"] == "idempotency_key"


def test_the_same_idempotency_key_with_a_different_request_answers_422_and_sends_nothing(
    here: Here, acme: Tenant
) -> None:
    client = here.key(acme.user_login)
    key = f"order-{uuid.uuid4().hex[:8]}"
    first = client.post("/v1/messages", json=SMS, headers={"Idempotency-Key": key})
    before = here.deps.messages.recorder.max_notification_id()

    reused = client.post(
        "/v1/messages",
        json=SMS | {"body": "Gate closes at seven"},
        headers={"Idempotency-Key": key},
    )

    assert first.status_code == 202
    body = _problem(reused, 422, "idempotency-key-reused")
    assert body["field"] == "idempotency_key"
    assert here.deps.messages.recorder.max_notification_id() == before


# ---------------------------------------------------------------- the admins' pages


def test_the_users_page_adds_changes_disables_and_keeps_the_last_admin(
    here: Here, staff: dict[Role, str]
) -> None:
    solo = make_tenant(here.deps, f"Page{uuid.uuid4().hex[:4]}")
    admin = here.session(solo.admin_login)

    last = admin.post(f"/app/users/{solo.admin_id}", data={"disabled": "true"})
    disabled = admin.post(f"/app/users/{solo.user_id}", data={"disabled": "true"})
    enabled = admin.post(f"/app/users/{solo.user_id}", data={"disabled": "false"})
    promoted = admin.post(f"/app/users/{solo.user_id}", data={"role": "customer_admin"})
    login = f"paged-{uuid.uuid4().hex[:6]}"
    added = admin.post(
        "/app/users", data={"login": login, "email": "p@page.example", "role": "customer_user"}
    )

    assert last.status_code == 409 and "last active admin" in last.text
    assert disabled.status_code == 200 and 'data-result="user-changed"' in disabled.text
    assert enabled.status_code == 200 and promoted.status_code == 200
    assert here.deps.accounts.user(solo.user_id).role is Role.CUSTOMER_ADMIN
    assert added.status_code == 200 and 'data-result="user-added"' in added.text
    assert here.deps.accounts.user_by_login(login).role is Role.CUSTOMER_USER
    assert here.session(solo.user_login).get("/app/users").status_code == 200  # admin now
    assert here.session(staff[Role.SUPPORT]).get("/app/users").status_code == 403
