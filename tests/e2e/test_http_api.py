"""The HTTP API as README.md shows it, against `picasse up` as a process (issue 12, item 8):
the `curl` lines of its section "HTTP API", read from the file itself and run with bash,
and the reference at /docs in Chromium, with every request to another host refused."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import ConsoleMessage, Route, expect, sync_playwright

from tests.e2e.platform import CHROMIUM, CHROMIUM_ARGS, RunningUp, wait_for_links

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "HTTP API"
# The customer and admin the section's lines act as (the README's own example names).
LOGIN, ADDRESS = "anna", "anna@example.nl"


def readme_curl_lines(readme: str) -> list[str]:
    """The lines of the section's shell blocks that run curl, in order (comments and
    assignments the reader makes, like `API=…`, are left to the test)."""
    section = readme.split(f"\n## {SECTION}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [
        line
        for block in blocks
        for line in block.splitlines()
        if "curl " in line and not line.lstrip().startswith("#")
    ]


def run_lines(lines: list[str], env: dict[str, str], cwd: Path) -> list[tuple[int, int | None]]:
    """Each line's exit status and HTTP status, the lines run one after the other in one
    bash (variables they set carry over), each curl's response headers dumped to a file."""
    script = [
        "set -u -o pipefail",
        'curl() { command curl -D "$HEADERS/$STEP" "$@"; }',
    ]
    for step, line in enumerate(lines):
        script += [f"STEP={step}", line, f'echo "{step} $?" >>"$HEADERS/statuses"']
    headers = cwd / "headers"
    headers.mkdir()
    subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=env | {"HEADERS": str(headers)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    exits: dict[int, int] = {}
    for entry in (headers / "statuses").read_text().splitlines():
        ran, code = entry.split()
        exits[int(ran)] = int(code)
    return [(exits.get(step, -1), _http_status(headers / str(step))) for step in range(len(lines))]


def _http_status(dump: Path) -> int | None:
    """The status of the last response in a `curl -D` dump (None: no response came)."""
    if not dump.exists():
        return None
    found = re.findall(r"^HTTP/\S+ (\d{3})", dump.read_text(), re.MULTILINE)
    return int(found[-1]) if found else None


def test_the_readme_has_a_curl_line_for_each_step() -> None:
    lines = readme_curl_lines(README.read_text())
    for route in (
        "/v1/sessions",
        "/v1/api-keys",
        '-X POST "$API/v1/messages"',
        '"$API/v1/messages?',
        "/v1/webhooks",
    ):
        assert any(route in line for line in lines), route


def test_the_readmes_curl_lines_run_against_picasse_up(
    shared_up: RunningUp, tmp_path: Path
) -> None:
    customer = shared_up.cli(
        "customers", "register", "--org", "Bakkerij De Vries", "--contact-name", "Anna de Vries",
        "--email", ADDRESS, "--phone", "+31 6 1234 5678", "--billing-address", "Dorpsstraat 1, Urk",
    ).strip()  # fmt: skip
    shared_up.cli("customers", "subscribe", customer)
    shared_up.cli("users", "add", "--customer", customer, "--login", LOGIN,
                  "--role", "customer_admin", "--email", ADDRESS)  # fmt: skip
    token = wait_for_links(shared_up, ADDRESS, 1)[0].rsplit("/", 1)[1]
    lines = readme_curl_lines(README.read_text())
    # The endpoint: a public address written as one (nothing resolves names here, and
    # private ones are refused); the platform's posts to it fail and are retried later.
    hook = "https://93.184.216.34/picasse"
    env = {"PATH": "/usr/bin:/bin", "API": shared_up.api_url(), "TOKEN": token, "HOOK": hook}

    results = run_lines(lines, env, tmp_path)

    failed = [
        f"exit {code}, HTTP {status}: {line}"
        for line, (code, status) in zip(lines, results, strict=True)
        if code != 0 or status is None or not 200 <= status < 300
    ]
    assert failed == [], "\n".join(failed)


def test_the_reference_at_docs_loads_nothing_from_elsewhere_and_shows_every_route(
    shared_up: RunningUp,
) -> None:
    base = shared_up.api_url()
    here = urlsplit(base).netloc
    document = httpx.get(f"{base}/schema/openapi.json", timeout=30).json()
    elsewhere: list[str] = []
    errors: list[str] = []

    def only_here(route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.netloc != here:
            elsewhere.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP refusals and failed loads are reported here
            errors.append(message.text)

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.route("**/*", only_here)
            page.on("console", console)
            response = page.goto(f"{base}/docs")
            assert response is not None and response.status == 200
            csp = response.headers["content-security-policy"]

            expect(page.locator(".opblock").first).to_be_visible()
            shown = set(page.locator(".opblock-summary-path").evaluate_all(
                "nodes => nodes.map(n => n.getAttribute('data-path'))"
            ))  # fmt: skip
            # Opened, an operation shows its description and its body's fields, described.
            page.locator('.opblock-post [data-path="/v1/messages"]').click()
            opened = page.locator(".opblock.is-open")
            expect(opened).to_contain_text(document["paths"]["/v1/messages"]["post"]["description"])
            opened.get_by_role("tab", name="Schema").first.click()
            opened.locator(".json-schema-2020-12-accordion", has_text="group").first.click()
            expect(opened).to_contain_text("a recipient group's name or id")
        finally:
            browser.close()

    assert elsewhere == []
    assert errors == []
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert set(document["paths"]) <= shown, set(document["paths"]) - shown
