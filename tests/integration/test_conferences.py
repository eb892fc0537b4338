"""Conference calls for real: the API in this process on PostgreSQL, invitations through
the relay and delivery worker (NATS) to a real SMTP server, and a local HTTP server playing
the telephony provider, which posts signed reports and receives the host controls. The
clock is moved, never waited for."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest

from picasse.adapters.clock import ManualClock
from picasse.adapters.http.app import HttpDeps, create_app
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.worker import WorkerSettings
from picasse.adapters.providers.receipts import sign_receipt
from picasse.adapters.providers.smtp import SmtpProvider
from picasse.domain.access import Viewer
from picasse.domain.conferences import WRONG_PIN_LIMIT
from picasse.domain.conferencing import Conferences, ScheduleRequest, conferences_in, random_pin
from picasse.domain.retention import traffic_retention
from picasse.domain.values import Role
from picasse.projections.personal_data import Sources, all_sources
from picasse.runners.api import http_deps
from picasse.runners.retention import run_retention
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_privacy, recording_eraser
from tests.integration.api_server import (
    Tenant,
    add_staff,
    bearer,
    logged_in,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)
from tests.integration.fake_telephony import FakeTelephony
from tests.integration.inprocess import relay_and_worker
from tests.integration.smtp_server import RecordingSmtpServer
from tests.users import add_customer_user

TOKEN = "telephony-token-for-tests"
NUMBER = "+31201234567"
CALLER = "+31612340001"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeTelephony]:
    with FakeTelephony(TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def here(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, provider: FakeTelephony
) -> Iterator[Settings]:
    with module_settings(tmp_path_factory, database_url, "conferences") as settings:
        yield msgspec.structs.replace(
            settings,
            telephony_url=provider.url,
            telephony_token=TOKEN,
            nats_namespace=f"conf{uuid.uuid4().hex[:10]}",
        )


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def deps(here: Settings, database_url: str, clock: ManualClock) -> Iterator[HttpDeps]:
    with http_deps(here, database_url, clock=clock) as opened:
        yield with_cheap_passwords(opened)


@pytest.fixture(scope="module")
def tenant(deps: HttpDeps) -> Tenant:
    made = make_tenant(deps, "Confer")
    add_staff(deps)
    return made


@pytest.fixture(scope="module")
def smtp() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def pipeline(
    deps: HttpDeps, here: Settings, nats_url: str, smtp: RecordingSmtpServer
) -> Iterator[None]:
    """Relay and delivery worker in this process: invitations go out as mail."""
    mail = SmtpProvider.from_url(smtp.url, sender="Picasse <conferences@picasse.example>")
    with relay_and_worker(
        deps.messages, {"email": mail}, nats_url, Topology(here.nats_namespace),
        settings=WorkerSettings(),
    ):  # fmt: skip
        yield


@pytest.fixture(scope="module")
def base_url(deps: HttpDeps, tenant: Tenant) -> Iterator[str]:
    with serving(create_app(deps)) as url:
        yield url


@pytest.fixture(scope="module")
def host(base_url: str, deps: HttpDeps, tenant: Tenant) -> Iterator[httpx.Client]:
    """The customer's user, who schedules and hosts."""
    with httpx.Client(
        base_url=base_url, headers=bearer(deps, tenant.user_login), timeout=20
    ) as client:
        yield client


@pytest.fixture(scope="module")
def pooled(base_url: str, deps: HttpDeps, tenant: Tenant) -> str:
    """The customer's dial-in pool holds NUMBER, as support put it there."""
    with httpx.Client(
        base_url=base_url, headers=bearer(deps, "staff-support"), timeout=20
    ) as support:
        added = support.post(
            "/v1/dial-in-numbers", json={"customer_id": str(tenant.customer_id), "number": NUMBER}
        )
        assert added.status_code == 201, added.text
    return NUMBER


def _schedule(host: httpx.Client, clock: ManualClock, **more: Any) -> dict[str, Any]:
    body = {
        "title": "Quarterly numbers",
        "start": (clock.now() + timedelta(hours=1)).isoformat(),
        "duration_minutes": 45,
        **more,
    }
    answer = host.post("/v1/conferences", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _running(
    host: httpx.Client, clock: ManualClock, provider: FakeTelephony, base_url: str
) -> tuple[dict[str, Any], str, str]:
    """A conference whose start has come, with one participant admitted and joined; the
    participant's id and the provider's id of their call."""
    scheduled = _schedule(host, clock)
    clock.advance(timedelta(hours=1))
    call = uuid.uuid4().hex
    admitted = provider.report(
        base_url, "dial-in", clock.now(), number=NUMBER, caller=CALLER,
        pin=scheduled["participant_pin"], call=call,
    )  # fmt: skip
    assert admitted.json()["admit"] is True, admitted.text
    joined = provider.report(
        base_url, "joined", clock.now(), conference=scheduled["conference_id"], call=call
    )
    assert joined.status_code == 204, joined.text
    return scheduled, admitted.json()["participant"], call


def test_only_staff_manage_dial_in_pools(
    base_url: str, deps: HttpDeps, tenant: Tenant, pooled: str
) -> None:
    with httpx.Client(base_url=base_url, headers=bearer(deps, tenant.admin_login)) as admin:
        refused = admin.post(
            "/v1/dial-in-numbers", json={"customer_id": str(tenant.customer_id), "number": NUMBER}
        )
        assert refused.status_code == 403
    with httpx.Client(base_url=base_url, headers=bearer(deps, "staff-platform-admin")) as staff:
        listed = staff.get("/v1/dial-in-numbers", params={"customer_id": str(tenant.customer_id)})
        assert [n["number"] for n in listed.json()] == [pooled]


def test_scheduling_invites_participants_by_mail_with_their_pin_only(
    host: httpx.Client,
    clock: ManualClock,
    tenant: Tenant,
    pooled: str,
    pipeline: None,
    smtp: RecordingSmtpServer,
) -> None:
    before = len(smtp.received)
    external = f"guest.{uuid.uuid4().hex[:6]}@partner.example"
    scheduled = _schedule(
        host, clock, participants=[{"email": external}, {"user_id": str(tenant.admin_id)}]
    )
    assert scheduled["number"] == pooled
    participant_pin, host_pin = scheduled["participant_pin"], scheduled["host_pin"]
    assert re.fullmatch(r"\d{6,8}", participant_pin) and re.fullmatch(r"\d{6,8}", host_pin)
    assert participant_pin != host_pin
    host_address = f"{tenant.user_login}@users.example"  # as tests.users makes it
    inbox = _inbox(smtp, before, {external, host_address})
    guest = inbox[external]
    assert participant_pin in guest and host_pin not in guest and pooled in guest
    assert host_pin in inbox[host_address] and participant_pin in inbox[host_address]


def _inbox(smtp: RecordingSmtpServer, before: int, awaited: set[str]) -> dict[str, str]:
    """Plain-text bodies by recipient of the mail since `before`, once `awaited` all have one."""
    inbox: dict[str, str] = {}
    count = before
    while not awaited <= inbox.keys():
        count += 1
        for mail in smtp.wait_for(count, timeout=30)[before:]:
            body = mail.message().get_body(("plain",))
            assert body is not None
            for to in mail.rcpt_tos:
                inbox[to] = str(body.get_content())
    return inbox


def test_a_change_that_adds_a_participant_sends_everyone_a_new_pin_and_the_removed_none(
    host: httpx.Client,
    clock: ManualClock,
    provider: FakeTelephony,
    base_url: str,
    pooled: str,
    pipeline: None,
    smtp: RecordingSmtpServer,
) -> None:
    stays, goes, comes = (f"{who}.{uuid.uuid4().hex[:6]}@partner.example" for who in "abc")
    scheduled = _schedule(host, clock, participants=[{"email": stays}, {"email": goes}])
    _inbox(smtp, 0, {stays, goes})  # the invitations are out
    before = len(smtp.received)
    changed = host.patch(
        f"/v1/conferences/{scheduled['conference_id']}",
        json={"title": "Moved numbers", "participants": [{"email": stays}, {"email": comes}]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["title"] == "Moved numbers"
    inbox = _inbox(smtp, before, {stays, goes, comes})
    new_pin = re.search(r"PIN: (\d{6,8})", inbox[comes])
    assert new_pin is not None and new_pin.group(1) != scheduled["participant_pin"]
    assert new_pin.group(1) in inbox[stays]
    assert "no longer invited" in inbox[goes] and not re.search(r"\d{6,8}", inbox[goes])
    clock.advance(timedelta(hours=1))

    def dial(pin: str) -> bool:
        answer = provider.report(
            base_url, "dial-in", clock.now(), number=pooled, caller=CALLER, pin=pin,
            call=uuid.uuid4().hex,
        )  # fmt: skip
        return bool(answer.json()["admit"])

    assert dial(new_pin.group(1)) and not dial(scheduled["participant_pin"])
    assert dial(scheduled["host_pin"])  # the host's stays


def test_pins_over_the_webhook_admit_right_refuse_wrong_and_limit_a_guessing_caller(
    host: httpx.Client, clock: ManualClock, provider: FakeTelephony, base_url: str, pooled: str
) -> None:
    scheduled = _schedule(host, clock)
    clock.advance(timedelta(minutes=50))  # 10 minutes before the start: the line is open

    def dial(pin: str, caller: str = CALLER) -> dict[str, Any]:
        answer = provider.report(
            base_url, "dial-in", clock.now(), number=pooled, caller=caller, pin=pin,
            call=uuid.uuid4().hex,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    right = dial(scheduled["host_pin"])
    assert (right["admit"], right["role"], right["conference"]) == (
        True, "host", scheduled["conference_id"],
    )  # fmt: skip
    guesser = "+31612340099"
    for _ in range(WRONG_PIN_LIMIT):
        assert dial("00000000", guesser) == {"admit": False, "reason": "wrong-pin"}
    assert dial(scheduled["participant_pin"], guesser) == {
        "admit": False, "reason": "rate-limited",
    }  # fmt: skip
    assert dial(scheduled["participant_pin"])["role"] == "participant"


def test_a_forged_or_replayed_report_is_refused_and_records_nothing(
    host: httpx.Client, clock: ManualClock, provider: FakeTelephony, base_url: str, pooled: str
) -> None:
    scheduled, _, _ = _running(host, clock, provider, base_url)
    conference = f"/v1/conferences/{scheduled['conference_id']}"
    legs_before = host.get(conference).json()["legs"]
    body = msgspec.json.encode(
        {"type": "dial-in", "id": "forged-1", "at": clock.now().isoformat(), "number": pooled,
         "caller": "+31612340077", "pin": scheduled["participant_pin"], "call": "forged"}
    )  # fmt: skip
    forged = provider.post_raw(base_url, body, sign_receipt(body, "not-the-token"))
    unsigned = provider.post_raw(base_url, body, None)
    assert (forged.status_code, unsigned.status_code) == (401, 401)
    replay_id = uuid.uuid4().hex
    first = provider.report(
        base_url, "recording", clock.now(), report_id=replay_id,
        conference=scheduled["conference_id"], recording="rec-1",
    )  # fmt: skip
    again = provider.report(
        base_url, "recording", clock.now(), report_id=replay_id,
        conference=scheduled["conference_id"], recording="rec-1",
    )  # fmt: skip
    stale = provider.report(
        base_url, "started", clock.now() - timedelta(hours=1),
        conference=scheduled["conference_id"],
    )  # fmt: skip
    assert (first.status_code, again.status_code, stale.status_code) == (204, 409, 409)
    after = host.get(conference).json()
    assert after["legs"] == legs_before and after["recordings"] == 1
    assert after["status"] == "scheduled"  # the stale "started" recorded nothing


def test_joins_and_leaves_show_per_participant_with_their_minutes_on_api_and_page(
    host: httpx.Client,
    clock: ManualClock,
    provider: FakeTelephony,
    base_url: str,
    tenant: Tenant,
    pooled: str,
) -> None:
    scheduled, participant, call = _running(host, clock, provider, base_url)
    clock.advance(timedelta(minutes=12, seconds=30))
    conference_id = scheduled["conference_id"]
    left = provider.report(base_url, "left", clock.now(), conference=conference_id, call=call)
    assert left.status_code == 204, left.text
    (leg,) = host.get(f"/v1/conferences/{conference_id}").json()["legs"]
    assert (leg["id"], leg["caller"], leg["minutes"]) == (participant, CALLER, 13)
    assert leg["joined_at"] and leg["left_at"]
    listed = {c["id"]: c for c in host.get("/v1/conferences").json()}
    assert listed[conference_id]["minutes"] == 13
    browser = logged_in(base_url, tenant.user_login)
    try:
        page = browser.get("/app/conferences")
    finally:
        browser.close()
    assert page.status_code == 200
    card = page.text.split(f'data-conference="{conference_id}"')[1].split("</section>")[0]
    assert "Quarterly numbers" in card and CALLER in card and ">13<" in card


def test_host_controls_reach_the_provider_as_the_right_requests(
    host: httpx.Client,
    clock: ManualClock,
    provider: FakeTelephony,
    base_url: str,
    deps: HttpDeps,
    tenant: Tenant,
    pooled: str,
) -> None:
    scheduled, participant, _ = _running(host, clock, provider, base_url)
    conference_id = scheduled["conference_id"]
    other_login = f"other-{uuid.uuid4().hex[:6]}"
    add_customer_user(
        deps.accounts, customer_id=tenant.customer_id, login=other_login,
        role=Role.CUSTOMER_USER, password="correct horse battery staple",
    )  # fmt: skip
    with httpx.Client(base_url=base_url, headers=bearer(deps, other_login)) as other:
        refused = other.post(f"/v1/conferences/{conference_id}/lock")
        assert refused.status_code == 403
    before = len(provider.calls)
    for path in (f"participants/{participant}/mute", f"participants/{participant}/unmute",
                 "lock", f"participants/{participant}/remove", "end"):  # fmt: skip
        answer = host.post(f"/v1/conferences/{conference_id}/{path}")
        assert answer.status_code == 204, (path, answer.text)
    calls = provider.calls[before:]
    assert {c.authorization for c in calls} == {f"Bearer {TOKEN}"}
    assert [(c.method, re.sub(r"/calls/[^/]+/", "/calls/CALL/", c.path)) for c in calls] == [
        ("POST", f"/conferences/{conference_id}/calls/CALL/mute"),
        ("POST", f"/conferences/{conference_id}/calls/CALL/unmute"),
        ("POST", f"/conferences/{conference_id}/lock"),
        ("POST", f"/conferences/{conference_id}/calls/CALL/remove"),
        ("POST", f"/conferences/{conference_id}/end"),
    ]
    assert host.get(f"/v1/conferences/{conference_id}").json()["locked"] is True


def test_conferences_scheduled_at_once_that_draw_the_same_pin_end_up_with_different_ones(
    deps: HttpDeps, tenant: Tenant, clock: ManualClock, pooled: str
) -> None:
    """Both scheduling requests draw 24681357 first: the PostgreSQL write of one of them
    fails on the PIN's claim, and that one draws again."""
    assert deps.messages is not None
    barrier = threading.Barrier(2)
    draws = threading.local()

    def pins() -> str:
        count = getattr(draws, "count", 0)
        draws.count = count + 1
        if count == 0:
            barrier.wait(timeout=20)  # both hold the same PIN's claim, unsaved
            return "24681357"
        return random_pin()

    racing = Conferences(
        clock=clock, pseudonyms=deps.messages.pseudonyms, messages=deps.messages,
        pins=pins, sharing=deps.messages,
    )  # fmt: skip
    host = Viewer(role=Role.CUSTOMER_USER, customer_id=tenant.customer_id, user_id=tenant.user_id)
    request = ScheduleRequest(
        title="Race", start=clock.now() + timedelta(days=20), duration_minutes=10
    )
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: racing.schedule(tenant.customer_id, request, host), [0, 1]))
    pins_given = [pin for s in done for pin in (s.participant_pin, s.host_pin)]
    assert len(set(pins_given)) == 4 and pins_given.count("24681357") == 1


# Last in this module: retention destroys the month's keys of every customer of its schema.
def test_retention_erases_call_numbers_in_api_and_export_keeps_minutes_deletes_recordings(
    host: httpx.Client,
    clock: ManualClock,
    provider: FakeTelephony,
    base_url: str,
    here: Settings,
    database_url: str,
    deps: HttpDeps,
    tenant: Tenant,
    pooled: str,
) -> None:
    scheduled, _, _ = _running(host, clock, provider, base_url)
    conference_id = scheduled["conference_id"]
    provider.report(
        base_url, "recording", clock.now(), conference=conference_id, recording="rec-77"
    )
    clock.advance(timedelta(minutes=20))
    ended = provider.report(base_url, "ended", clock.now(), conference=conference_id)
    assert ended.status_code == 204, ended.text
    minutes = host.get("/v1/conference-minutes").json()
    assert sum(m["minutes"] for m in minutes) >= 20
    assert _exported_callers(deps, tenant, conference_id) == [CALLER]
    privacy = open_privacy(here, database_url)
    try:
        later = clock.now() + timedelta(days=7 * 31)
        before = len(provider.calls)
        run_retention(
            privacy, traffic_retention(6), now=later, dry_run=False,
            recordings=recording_eraser(here, privacy),
        )  # fmt: skip
    finally:
        privacy.close()
    deleted = [c.path for c in provider.calls[before:] if c.method == "DELETE"]
    assert "/recordings/rec-77" in deleted
    shown = host.get("/v1/conference-minutes").json()
    assert shown == minutes  # counts stay for billing
    (leg,) = host.get(f"/v1/conferences/{conference_id}").json()["legs"]
    assert (leg["caller"], leg["joined_at"], leg["minutes"]) == (None, None, 20)
    assert _exported_callers(deps, tenant, conference_id) == [None]  # erased


def _exported_callers(deps: HttpDeps, tenant: Tenant, conference_id: str) -> list[str | None]:
    """The callers of the conference in the customer's export, as the registry's sources
    (`all_sources`) hand them out."""
    assert deps.conferences is not None and deps.attendance is not None
    repository = deps.conferences.repository
    sources = Sources(
        accounts=deps.accounts_view,
        traffic=deps.traffic_view,
        customer_events=lambda _: (),
        groups=lambda _: (),
        sites=lambda _: (),
        visitors=lambda _: (),
        attendance=deps.attendance,
        conferences=lambda customer: conferences_in(repository, customer),
        invoices=lambda _: (),
        now=deps.clock.now,
    )
    (section,) = [s for s in all_sources(sources) if s.name == "conferences"]
    (exported,) = [
        c for c in section.export(tenant.customer_id) if c["conference_id"] == conference_id
    ]
    return [call["caller"] for call in exported["calls"]]
