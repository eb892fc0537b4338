"""The API documents itself (issue 12, item 8): every route of the app's generated OpenAPI
document has a summary and a description, every parameter and every schema property a
description. The document is read from the app itself, so routes added later are held to
the same rule without anyone remembering to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from picasse.adapters.http.app import create_app
from picasse.runners.api import http_deps
from tests.integration.api_server import module_settings, serving

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Litestar]:
    with (
        module_settings(tmp_path_factory, database_url, "docs") as settings,
        http_deps(settings, database_url) as deps,
    ):
        yield create_app(deps)


@pytest.fixture(scope="module")
def document(app: Litestar) -> dict[str, Any]:
    return app.openapi_schema.to_schema()


def undocumented_operations(document: dict[str, Any]) -> list[str]:
    """`METHOD path: what is missing` for each operation without a summary or description,
    or with a parameter that has none."""
    missing = []
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            where = f"{method.upper()} {path}"
            missing += [
                f"{where}: {key}" for key in ("summary", "description") if not operation.get(key)
            ]
            for parameter in [*item.get("parameters", []), *operation.get("parameters", [])]:
                if not parameter.get("description"):
                    missing.append(f"{where}: parameter {parameter.get('name')}")
    return missing


def undocumented_properties(node: Any, where: str = "#") -> list[str]:
    """The JSON pointer of every schema property, anywhere in the document, that has no
    description (component schemas, inline ones, nested ones)."""
    missing = []
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            missing += [
                f"{where}/properties/{name}"
                for name, schema in properties.items()
                if not (isinstance(schema, dict) and schema.get("description"))
            ]
        for key, value in node.items():
            missing += undocumented_properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            missing += undocumented_properties(value, f"{where}/{index}")
    return missing


def test_every_route_has_a_summary_and_a_description_and_every_parameter_one(
    document: dict[str, Any],
) -> None:
    assert document["paths"], "the document lists no route"
    assert undocumented_operations(document) == []


def test_every_schema_property_has_a_description(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"], "the document has no schemas"
    assert undocumented_properties(document) == []


def test_the_checks_find_what_is_missing() -> None:
    """The two walks above are not vacuous: they name an undocumented route, parameter and
    property, however deep."""
    document = {
        "paths": {
            "/v1/things": {
                "get": {"summary": "Things", "parameters": [{"name": "limit"}]},
                "post": {"summary": "Add", "description": "Adds one."},
            }
        },
        "components": {
            "schemas": {
                "Thing": {
                    "properties": {
                        "id": {"type": "string", "description": "its id"},
                        "inner": {"type": "object", "properties": {"x": {"type": "integer"}}},
                    }
                }
            }
        },
    }
    assert undocumented_operations(document) == [
        "GET /v1/things: description",
        "GET /v1/things: parameter limit",
    ]
    assert undocumented_properties(document) == [
        "#/components/schemas/Thing/properties/inner",
        "#/components/schemas/Thing/properties/inner/properties/x",
    ]


def test_docs_serves_swagger_ui_its_licence_and_nothing_else_of_the_package(app: Litestar) -> None:
    with serving(app) as base_url, httpx.Client(base_url=base_url, timeout=20) as client:
        page = client.get("/docs")
        script = client.get("/docs/assets/swagger-ui-bundle.js")
        licence = client.get("/docs/assets/LICENSE")
        others = [client.get(f"/docs/assets/{name}") for name in
                  ("swagger-editor-bundle.js", "..%2F__init__.py", "index.css")]  # fmt: skip
        dashboard = client.get("/login")

    assert page.status_code == 200 and 'src="/docs/assets/swagger-ui-bundle.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert licence.status_code == 200 and "Apache License" in licence.text
    assert [other.status_code for other in others] == [404, 404, 404]
    # The other pages keep running no scripts at all.
    assert "script-src" not in dashboard.headers["content-security-policy"]
