"""A customer's sites over /v1/sites (issue 13, item 1), against the app in this process on
real PostgreSQL: its admins manage them, its users read them, nobody else sees them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from picasse.adapters.http.app import HttpDeps, create_app
from picasse.runners.api import http_deps
from tests.integration.api_server import (
    Tenant,
    bearer,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)


class Here:
    def __init__(self, deps: HttpDeps, base_url: str, a: Tenant, b: Tenant) -> None:
        self.deps, self.base_url, self.a, self.b = deps, base_url, a, b

    def as_(self, login: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=bearer(self.deps, login), timeout=20)


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Here]:
    with (
        module_settings(tmp_path_factory, database_url, "sites") as settings,
        http_deps(settings, database_url) as deps,
    ):
        app = create_app(with_cheap_passwords(deps))
        a, b = make_tenant(deps, "Adze"), make_tenant(deps, "Burin")
        with serving(app) as url:
            yield Here(deps, url, a, b)


def test_an_admin_adds_changes_and_removes_a_site_and_its_users_read_it(here: Here) -> None:
    admin, user = here.as_(here.a.admin_login), here.as_(here.a.user_login)
    made = admin.post("/v1/sites", json={"name": "Depot  Noord", "address": "Havenweg 3, Urk"})
    assert made.status_code == 201, made.text
    site = made.json()
    assert (site["name"], site["address"]) == ("Depot Noord", "Havenweg 3, Urk")
    path = f"/v1/sites/{site['id']}"

    assert [s["id"] for s in user.get("/v1/sites").json()] == [site["id"]]
    changed = admin.put(path, json={"name": "Depot Zuid", "address": "Kade 1, Urk"})
    assert changed.status_code == 200 and changed.json()["name"] == "Depot Zuid"
    assert user.get(path).json()["address"] == "Kade 1, Urk"

    assert admin.delete(path).status_code == 204
    assert user.get(path).status_code == 404
    assert user.get("/v1/sites").json() == []


def test_a_user_may_not_manage_sites_and_another_customer_sees_none(here: Here) -> None:
    admin = here.as_(here.a.admin_login)
    site = admin.post("/v1/sites", json={"name": "Loods", "address": "Dijk 9, Kampen"}).json()
    refused = here.as_(here.a.user_login).post("/v1/sites", json={"name": "X", "address": "Y"})
    assert refused.status_code == 403

    other = here.as_(here.b.admin_login)
    assert other.get(f"/v1/sites/{site['id']}").status_code == 404
    assert other.delete(f"/v1/sites/{site['id']}").status_code == 404
    assert "Loods" not in other.get("/v1/sites").text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "address": "Dijk 9"}, "name"),
        ({"name": "Loods", "address": "line\nbreak"}, "address"),
        ({"name": "x" * 101, "address": "Dijk 9"}, "name"),
    ],
)
def test_a_bad_site_is_refused_naming_its_field(
    here: Here, body: dict[str, str], field: str
) -> None:
    answer = here.as_(here.a.admin_login).post("/v1/sites", json=body)
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
