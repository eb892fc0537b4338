"""Geofenced attendance over the API (issue 13), against the app in this process on real
PostgreSQL, with the clock moved by the test: consent, pings, entries and exits, withdrawal
and retention, and a refused ping that leaves no trace in the tables or the logs."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from psycopg import sql

from picasse.adapters.clock import ManualClock
from picasse.adapters.http.app import HttpDeps, create_app
from picasse.domain.attendance import Attendance, Ping
from picasse.domain.geofences import GEOD
from picasse.domain.personal import Erased
from picasse.domain.retention import ping_retention
from picasse.domain.values import Role
from picasse.runners.api import http_deps
from picasse.runners.retention import run_retention
from picasse.runners.settings import Settings
from tests.integration.api_server import (
    PASSWORD,
    Tenant,
    bearer,
    logged_in,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)
from tests.users import add_customer_user

START = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
SITE = (52.3702, 4.8952)  # lat, lon


class Here:
    def __init__(
        self, deps: HttpDeps, url: str, a: Tenant, settings: Settings, clock: ManualClock,
        database_url: str,
    ) -> None:  # fmt: skip
        self.deps, self.url, self.a, self.settings, self.clock = deps, url, a, settings, clock
        self.database_url = database_url
        assert deps.attendance is not None
        self.attendance: Attendance = deps.attendance
        admin = self.key(a.admin_login)
        self.site_id = admin.post("/v1/sites", json={"name": "Yard", "address": "Kade 1"}).json()[
            "id"
        ]
        fence = admin.post(
            "/v1/geofences",
            json={
                "site_id": self.site_id, "name": "gate",
                "shape": {"type": "circle", "lat": SITE[0], "lon": SITE[1], "radius_m": 100},
                "hysteresis_m": 10, "dwell_seconds": 60,
            },
        )  # fmt: skip
        assert fence.status_code == 201, fence.text
        assert admin.put("/v1/attendance/service", json={"on": True}).json() == {"on": True}

    def key(self, login: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=bearer(self.deps, login), timeout=20)


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Here]:
    clock = ManualClock(START)
    with (
        module_settings(tmp_path_factory, database_url, "attendance") as settings,
        http_deps(settings, database_url, clock=clock) as deps,
    ):
        app = create_app(with_cheap_passwords(deps))
        a = make_tenant(deps, "Awl")
        with serving(app) as url:
            yield Here(deps, url, a, settings, clock, database_url)


def _walk(user_id: UUID, start: datetime) -> list[dict[str, Any]]:
    """From 300 m west of the gate to its centre (1.5 m/s, a ping each 10 s), ten minutes
    there, and out again 600 m east."""
    lat, lon = SITE
    west_lon, west_lat, _ = GEOD.fwd(lon, lat, 270, 300)
    track = [GEOD.fwd(west_lon, west_lat, 90, 15 * i)[:2] for i in range(21)]
    track += [(lon, lat)] * 60
    track += [GEOD.fwd(lon, lat, 90, 15 * i)[:2] for i in range(1, 41)]
    return [
        {"user_id": str(user_id), "at": (start + timedelta(seconds=10 * i)).isoformat(),
         "lat": y, "lon": x, "accuracy_m": 5.0}
        for i, (x, y) in enumerate(track)
    ]  # fmt: skip


def test_a_walk_through_the_gate_is_one_entry_and_one_exit_and_shows_as_hours(here: Here) -> None:
    user = logged_in(here.url, here.a.user_login)
    assert user.post("/v1/location/consent").json()["consent"] is True
    pings = _walk(here.a.user_id, START)
    here.clock.set(START + timedelta(minutes=30))
    # A minute's batches, each pair sent the later first (out of order by up to two
    # minutes), each batch reversed; then everything again.
    chunks = [pings[i : i + 6][::-1] for i in range(0, len(pings), 6)]
    for n in range(0, len(chunks), 2):
        for chunk in chunks[n : n + 2][::-1]:
            sent = user.post("/v1/location/pings", json={"pings": chunk})
            assert sent.status_code == 202, sent.text
    again = user.post("/v1/location/pings", json={"pings": pings})
    assert again.json()["duplicates"] == len(pings) and again.json()["accepted"] == 0

    visits = [v for _, v in here.attendance.attendance_records(here.a.customer_id)]
    (visit,) = visits
    assert START + timedelta(seconds=130) <= visit.entered_at <= START + timedelta(seconds=200)
    assert visit.exited_at is not None
    # The clean track is inside from 133 s to 877 s: within the dwell time of that.
    assert visit.exited_at - visit.entered_at == pytest.approx(
        timedelta(seconds=744), abs=timedelta(seconds=60)
    )

    admin = here.key(here.a.admin_login)
    shown = admin.get(
        "/v1/attendance", params={"site_id": here.site_id, "date": START.date().isoformat()}
    )
    assert shown.status_code == 200, shown.text
    assert shown.json()["on_site"] == []
    ((hours),) = shown.json()["hours"]
    assert hours["user_id"] == str(here.a.user_id) and 0.15 <= hours["hours"] <= 0.22
    assert here.key(here.a.user_login).get("/v1/attendance", params={
        "site_id": here.site_id, "date": START.date().isoformat()}).status_code == 403  # fmt: skip


def test_a_batch_with_bad_pings_is_refused_whole_naming_each_index_and_field(here: Here) -> None:
    client = here.key(here.a.admin_login)
    now = here.clock.now()
    good = {"user_id": str(here.a.user_id), "at": now.isoformat(), "lat": 52.0, "lon": 4.0,
            "accuracy_m": 5}  # fmt: skip
    batch = [
        good | {"lat": 91.5},
        good,
        good | {"at": (now + timedelta(hours=1)).isoformat()},
        good | {"accuracy_m": -1},
    ]
    refused = client.post("/v1/location/pings", json={"pings": batch})
    assert refused.status_code == 422 and refused.json()["code"] == "invalid-pings"
    assert [(e["index"], e["field"]) for e in refused.json()["errors"]] == [
        (0, "lat"), (2, "at"), (3, "accuracy_m")
    ]  # fmt: skip
    assert "91.5" not in refused.text
    too_many = client.post("/v1/location/pings", json={"pings": [good] * 1001})
    assert too_many.status_code == 400


def _tables(here: Here) -> list[str]:
    with psycopg.connect(here.database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (here.settings.database_schema,),
        ).fetchall()
    return [r[0] for r in rows]


def _found_anywhere(here: Here, needles: list[bytes]) -> list[str]:
    """Every table (events, views, keys) whose raw values hold one of the needles."""
    hits = []
    with psycopg.connect(here.database_url) as conn:
        for table in _tables(here):
            query = sql.SQL("SELECT * FROM {}.{}").format(
                sql.Identifier(here.settings.database_schema), sql.Identifier(table)
            )
            for row in conn.execute(query):
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    hits += [f"{table}: {n!r}" for n in needles if n in raw]
    return hits


def test_a_ping_without_consent_gets_409_and_is_stored_and_logged_nowhere(
    here: Here, caplog: pytest.LogCaptureFixture
) -> None:
    lat, lon = 52.123456789012, 4.987654321098  # the canary
    needles = [f"{lat}".encode(), f"{lon}".encode(), b"52.1234567", b"4.9876543",
               struct.pack("<d", lat), struct.pack(">d", lat),
               struct.pack("<d", lon), struct.pack(">d", lon)]  # fmt: skip
    assert _found_anywhere(here, needles) == []  # the search could find it
    admin = here.key(here.a.admin_login)  # never consented
    ping = {"user_id": str(here.a.admin_id), "at": here.clock.now().isoformat(), "lat": lat,
            "lon": lon, "accuracy_m": 3}  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        refused = admin.post("/v1/location/pings", json={"pings": [ping]})
    assert refused.status_code == 409 and refused.json()["code"] == "no-location-consent"
    assert _found_anywhere(here, needles) == []
    logged = caplog.text.encode()
    assert [n for n in needles if n in logged] == []


def _walker(here: Here) -> tuple[UUID, httpx.Client]:
    """Another user of the customer, logged in, who has consented."""
    login = f"walker-{uuid4().hex[:8]}"
    user_id = add_customer_user(
        here.deps.accounts, customer_id=here.a.customer_id, login=login,
        role=Role.CUSTOMER_USER, password=PASSWORD,
    )  # fmt: skip
    client = logged_in(here.url, login)
    assert client.post("/v1/location/consent").status_code == 200
    return user_id, client


def _visits(here: Here, user_id: UUID) -> list[Any]:
    return [v for u, v in here.attendance.attendance_records(here.a.customer_id) if u == user_id]


def test_withdrawal_refuses_pings_and_erases_raw_pings_while_records_stay(here: Here) -> None:
    day = START + timedelta(days=2)
    here.clock.set(day + timedelta(minutes=30))  # sessions live on this clock too
    user_id, client = _walker(here)
    assert client.post("/v1/location/pings", json={"pings": _walk(user_id, day)}).status_code == 202
    visits = _visits(here, user_id)
    assert len(visits) == 1
    assert here.attendance.pings(here.a.customer_id, user_id)  # held, readable

    withdrawn = client.delete("/v1/location/consent").json()
    assert withdrawn["consent"] is False
    assert [h["change"] for h in withdrawn["history"]] == ["given", "withdrawn"]
    later = _walk(user_id, day + timedelta(minutes=20))[:3]
    refused = client.post("/v1/location/pings", json={"pings": later})
    assert refused.status_code == 409 and refused.json()["code"] == "no-location-consent"
    assert isinstance(here.attendance.pings_of_day(here.a.customer_id, user_id, day.date()), Erased)
    assert here.attendance.pings(here.a.customer_id, user_id) == []
    assert _visits(here, user_id) == visits  # the working-time records stay


def test_retention_erases_old_days_of_pings_and_keeps_entries_and_exits(here: Here) -> None:
    customer, day = here.a.customer_id, START + timedelta(days=4)
    here.clock.set(day + timedelta(minutes=30))
    user_id, client = _walker(here)
    assert client.post("/v1/location/pings", json={"pings": _walk(user_id, day)}).status_code == 202
    visits = _visits(here, user_id)
    assert len(visits) == 1 and all(
        isinstance(p, Ping) for p in here.attendance.pings(customer, user_id)
    )

    period = ping_retention(30)
    early = run_retention(here.attendance.privacy, period, now=day + timedelta(days=29),
                          dry_run=False)  # fmt: skip
    assert [s for _, s in early if s.startswith(f"location/{user_id}/")] == []
    assert here.attendance.pings(customer, user_id)  # 29 days on: still held
    erased = run_retention(here.attendance.privacy, period, now=day + timedelta(days=30),
                           dry_run=False)  # fmt: skip
    assert (customer, f"location/{user_id}/{day.date()}") in erased
    assert isinstance(here.attendance.pings_of_day(customer, user_id, day.date()), Erased)
    assert here.attendance.pings(customer, user_id) == []
    assert _visits(here, user_id) == visits


def test_the_attendance_page_shows_who_is_on_site_and_hours_with_no_coordinates(
    here: Here,
) -> None:
    day = START + timedelta(days=6)
    here.clock.set(day + timedelta(minutes=15))
    user_id, client = _walker(here)
    pings = _walk(user_id, day)[:60]  # in, and staying
    assert client.post("/v1/location/pings", json={"pings": pings}).status_code == 202

    admin = logged_in(here.url, here.a.admin_login)
    page = admin.get("/app/attendance", params={"site": here.site_id, "date": str(day.date())})
    assert page.status_code == 200, page.text
    on_site = page.text.split('data-table="on-site"')[1].split("</table>")[0]
    assert str(user_id) in on_site  # by login once the accounts view has the user
    assert "<svg" in page.text and "h on " + str(day.date()) in page.text
    for ping in pings:
        assert f"{ping['lat']:.4f}"[:7] not in page.text  # no coordinates, not even rounded
    refused = client.get("/app/attendance")
    assert refused.status_code == 403


def test_a_user_gives_and_withdraws_consent_on_their_location_page(here: Here) -> None:
    login = f"pager-{uuid4().hex[:8]}"
    add_customer_user(
        here.deps.accounts, customer_id=here.a.customer_id, login=login,
        role=Role.CUSTOMER_USER, password=PASSWORD,
    )  # fmt: skip
    browser = logged_in(here.url, login)
    assert "Give my consent" in browser.get("/app/location").text
    assert browser.post("/app/location/consent").status_code == 303
    assert "Withdraw my consent" in browser.get("/app/location").text
    assert browser.post("/app/location/withdraw").status_code == 303
    assert [c["change"] for c in browser.get("/v1/location/consent").json()["history"]] == [
        "given", "withdrawn"
    ]  # fmt: skip


def test_removing_a_site_removes_its_geofences_from_listing_and_evaluation(here: Here) -> None:
    admin = here.key(here.a.admin_login)
    site = admin.post("/v1/sites", json={"name": "Shed", "address": "Dijk 2"}).json()["id"]
    fence = admin.post(
        "/v1/geofences",
        json={"site_id": site, "name": "shed",
              "shape": {"type": "circle", "lat": 10.0, "lon": 10.0, "radius_m": 50}},
    ).json()["id"]  # fmt: skip
    assert fence in [f["id"] for f in admin.get("/v1/geofences").json()]
    assert admin.delete(f"/v1/sites/{site}").status_code == 204
    assert fence not in [f["id"] for f in admin.get("/v1/geofences").json()]
    assert admin.get(f"/v1/geofences/{fence}").status_code == 404
    index = here.attendance._index(here.a.customer_id)
    assert UUID(fence) not in index.by_id
