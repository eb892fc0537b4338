"""Malformed input against the running platform (`picasse up` as a process) answers a 4xx,
never a 500 and a traceback (issue 11, finding 7)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.platform import RunningUp

ADMIN, PASSWORD = "bad-input-admin", "Quartz-plover-91-vintage-lamp"


@pytest.fixture(scope="module")
def up(shared_up: RunningUp) -> RunningUp:
    """The session's running platform, with a platform admin of these tests' own."""
    shared_up.cli(
        "users", "add", "--login", ADMIN, "--role", "platform_admin", "--password-stdin",
        stdin=PASSWORD,
    )  # fmt: skip
    return shared_up


def _no_traceback(up: RunningUp) -> None:
    log = up.stderr()
    assert "Traceback" not in log and "unhandled" not in log, log[-3000:]


def test_json_nested_8000_deep_posted_to_sessions_is_a_400_problem_without_a_traceback(
    up: RunningUp,
) -> None:
    for body in (b"[" * 8000 + b"]" * 8000, b'{"login": ' + b"[" * 8000 + b"]" * 8000 + b"}"):
        response = httpx.post(
            f"{up.api_url()}/v1/sessions",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=20,
        )

        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "bad-request"
    _no_traceback(up)


def test_a_traffic_page_for_days_at_the_end_of_time_is_a_400_page(up: RunningUp) -> None:
    with httpx.Client(base_url=up.api_url(), timeout=20) as browser:
        logged_in = browser.post("/v1/sessions", json={"login": ADMIN, "password": PASSWORD})
        assert logged_in.status_code == 201, logged_in.text
        for query in (
            {"from": "9999-12-31"},
            {"to": "9999-12-31"},
            {"from": "9999-12-30", "to": "9999-12-31"},
            {"from": "0001-01-01", "to": "0001-01-01"},
        ):
            page = browser.get("/admin/traffic", params=query)

            assert page.status_code == 400, (query, page.status_code)
            assert "is not a valid date (between 0002-01-01 and 9998-12-31)" in page.text
    _no_traceback(up)
