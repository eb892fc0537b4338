"""The interactive API reference at /docs: Swagger UI over the app's own OpenAPI document.

Everything the page loads comes from this server: Swagger UI's script and stylesheet from
the `swagger-ui-py` package's copy of swagger-ui-dist (Apache-2.0, its LICENSE served
beside them), our few lines that start it from /static, the document from
/schema/openapi.json. No CDN is reachable where Picasse runs, and a page that loaded
scripts from elsewhere would hand that elsewhere every session that opens it. The page's
Content-Security-Policy says so to the browser: scripts, styles and requests from this
origin only. It is the one page that runs scripts; the dashboard's pages run none.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Final

from litestar import MediaType, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter
from litestar.response import File

from picasse.adapters.http.auth import PUBLIC

DOCS_PATH: Final = "/docs"
ASSETS_PATH: Final = f"{DOCS_PATH}/assets"
# The files of swagger-ui-dist the page needs, and its licence; nothing else is served.
ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
}
ASSET_CACHE = "public, max-age=86400"  # the package's files change only with an upgrade

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Picasse API reference</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<noscript><p>The reference needs JavaScript; the document itself is at
<a href="/schema/openapi.json">/schema/openapi.json</a>.</p></noscript>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body>
</html>
"""
# Scripts, styles, images and requests ("Try it out") from this origin only. Swagger UI
# sets some styles as attributes and draws a few images from data: URIs.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self';"
        " img-src 'self' data:; connect-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def swagger_ui_files() -> Path:
    """Where the swagger-ui-py package keeps swagger-ui-dist (found without importing it:
    its own module pulls in web-framework glue we do not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@get(DOCS_PATH, opt=PUBLIC, include_in_schema=False, sync_to_thread=False)
def reference_page() -> Response[str]:
    return Response(PAGE, media_type=MediaType.HTML, headers=PAGE_HEADERS)


@get(f"{ASSETS_PATH}/{{name:str}}", opt=PUBLIC, include_in_schema=False, sync_to_thread=False)
def reference_asset(
    name: Annotated[str, PathParameter(description="one of the page's files")],
) -> File:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no such file: {name}")
    return File(
        swagger_ui_files() / name,
        media_type=media_type,
        content_disposition_type="inline",
        headers={"Cache-Control": ASSET_CACHE, "X-Content-Type-Options": "nosniff"},
    )


def docs_router() -> Router:
    """/docs and the files it loads."""
    return Router(path="/", route_handlers=[reference_page, reference_asset])
