"""What every request and response gets, whatever the route (issue 11): no caching of
responses, HSTS under TLS, and JSON bodies only as application/json."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from picasse.adapters.http.app import HttpDeps, create_app
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from tests.integration.api_server import (
    PASSWORD,
    Tenant,
    logged_in,
    make_tenant,
    module_settings,
    self_signed_certificate,
    serving,
    with_cheap_passwords,
)


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Settings]:
    with module_settings(tmp_path_factory, database_url, "transport") as settings:
        yield settings


@pytest.fixture(scope="module")
def deps(here: Settings, database_url: str) -> Iterator[HttpDeps]:
    with http_deps(here, database_url) as opened:
        yield with_cheap_passwords(opened)


@pytest.fixture(scope="module")
def acme(deps: HttpDeps) -> Tenant:
    return make_tenant(deps, "Acme")


@pytest.fixture(scope="module")
def base_url(deps: HttpDeps) -> Iterator[str]:
    with serving(create_app(deps)) as url:
        yield url


def test_every_api_response_and_page_says_no_store(base_url: str, acme: Tenant) -> None:
    client = logged_in(base_url, acme.admin_login)
    try:
        responses = [
            client.get(f"/v1/messages/{acme.message_id}"),
            client.get(f"/v1/customers/{acme.customer_id}"),
            client.get("/v1/messages/not-an-id"),  # a problem too
            client.get("/admin/"),
        ]
    finally:
        client.close()
    responses.append(httpx.get(f"{base_url}/v1/api-keys"))  # 401

    for response in responses:
        assert response.headers.get("cache-control") == "no-store", (response.url, response)
        assert "strict-transport-security" not in response.headers  # not over TLS


def test_over_tls_every_response_says_strict_transport_security(
    here: Settings, database_url: str, tmp_path: Path, acme: Tenant
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with (
        http_deps(here, database_url, secure=True) as secure_deps,
        serving(create_app(secure_deps), cert=cert, key=key) as url,
    ):
        answers = [httpx.get(f"{url}{path}", verify=False) for path in ("/health", "/login", "/v1")]

    for response in answers:
        assert response.headers["strict-transport-security"].startswith("max-age=")


JSON_CREDENTIALS = f'{{"login": "acme-user", "password": "{PASSWORD}"}}'


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", JSON_CREDENTIALS),
        ("application/x-www-form-urlencoded", "login=acme-user&password=" + PASSWORD),
        ("multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="login"'
         '\r\n\r\nacme-user\r\n--x--\r\n'),
        (None, JSON_CREDENTIALS),
    ],
)  # fmt: skip
def test_a_json_route_refuses_any_body_but_application_json_with_415(
    base_url: str, acme: Tenant, content_type: str | None, body: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{base_url}/v1/sessions", content=body.encode(), headers=headers)

    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unsupported-media-type"
    assert "set-cookie" not in response.headers


def test_json_with_a_charset_or_a_json_suffix_is_json(base_url: str, acme: Tenant) -> None:
    body = JSON_CREDENTIALS.encode()
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = httpx.post(
            f"{base_url}/v1/sessions", content=body, headers={"content-type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)


def test_a_form_page_still_takes_its_form(deps: HttpDeps, acme: Tenant) -> None:
    with serving(create_app(dataclasses.replace(deps))) as url:
        response = httpx.post(f"{url}/login", data={"login": acme.user_login, "password": PASSWORD})
    assert response.status_code == 303, response.text
