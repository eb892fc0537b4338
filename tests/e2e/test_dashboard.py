"""The admin dashboard in headless Chromium, served by the real `picasse api` with the
views, relay and a worker running beside it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from uuid import UUID

import httpx
import nats
import nats.js.errors
import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from psycopg import sql

from picasse.adapters.clock import SystemClock
from picasse.adapters.master_key import create_master_key
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.status_events import WebhookTopology
from picasse.domain.accounts import Accounts
from picasse.domain.messages import FailureReason, delivery_id
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.values import Role
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts, open_messages, open_privacy
from tests.e2e.platform import CHROMIUM, CHROMIUM_ARGS
from tests.integration.platform_processes import Processes, base_env, processes, wait_until
from tests.integration.projection_runners import running, statuses
from tests.ports import free_port
from tests.users import add_customer_user

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
PASSWORD = "correct horse battery staple"
# Text that exists only inside sent messages: no page may ever show it (R7).
SECRET_BODY = "Board lunch order: twelve pizzas, code word marzipan-7f3a"
SECRET_SUBJECT = "Quarterly figures marzipan-subject"
SENDER_IP = "192.0.2.10"


@dataclass(frozen=True)
class Platform:
    url: str
    customers: dict[str, UUID]  # organisation → id
    recipients: list[str]  # every address messages went to


# ------------------------------------------------------------------ the platform


def _seed(settings: Settings, database_url: str) -> tuple[dict[str, UUID], list[str]]:
    accounts = open_accounts(settings, database_url)
    messages = open_messages(settings, database_url)
    try:
        return _seed_with(accounts, messages)
    finally:
        accounts.close()
        messages.close()


def _seed_with(accounts: Accounts, messages: Messages) -> tuple[dict[str, UUID], list[str]]:
    """Three customers with users, and messages over every channel with mixed outcomes."""
    customers = {}
    for n, (organisation, contact, city) in enumerate(
        [
            ("Acme Alerts", "Carla Contact", "Delft"),
            ("Brightside Care", "Bram Bakker", "Utrecht"),
            ("Cobalt Logistics", "Cees de Vries", "Rotterdam"),
        ]
    ):
        customer_id = accounts.register_customer(
            organisation=organisation, contact_name=contact,
            email=f"{contact.split()[0].lower()}@{organisation.split()[0].lower()}.example",
            phone=f"+31 6 5555 000{n}", billing_address=f"Kade {n + 1}, {city}",
        )  # fmt: skip
        accounts.start_subscription(customer_id)
        customers[organisation] = customer_id
    accounts.register_customer(
        organisation="Dune Events",
        contact_name="Dirk Duin",
        email="dirk@dune.example",
        phone="+31 6 5555 0009",
        billing_address="Strand 9, Zandvoort",
    )  # fmt: skip — registered, not subscribed
    for login, role in [("ada", Role.PLATFORM_ADMIN), ("otto", Role.AUDITOR)]:
        accounts.add_user(customer_id=None, login=login, role=role, password=PASSWORD)
    acme = customers["Acme Alerts"]
    add_customer_user(
        accounts, customer_id=acme, login="cust.admin", role=Role.CUSTOMER_ADMIN, password=PASSWORD
    )
    sender = add_customer_user(
        accounts, customer_id=acme, login="cust.user", role=Role.CUSTOMER_USER, password=PASSWORD
    )
    add_customer_user(  # changes its password: nobody else logs in with it
        accounts, customer_id=acme, login="cust.changer", role=Role.CUSTOMER_ADMIN,
        password=PASSWORD,
    )  # fmt: skip

    recipients: list[str] = []
    for n, customer_id in enumerate(customers.values()):
        emails = [f"inbox{n}{i}@recipient.example" for i in range(3 + n)]
        phones = [f"+31 6 4444 {n}{i:03d}" for i in range(2 + 2 * n)]
        sent = [
            (
                messages.send(
                    customer_id,
                    SendRequest(
                        channel="email", to=emails, body=SECRET_BODY, subject=SECRET_SUBJECT
                    ),
                    requested_by=sender if customer_id == acme else None,
                    client_ip=SENDER_IP if customer_id == acme else None,
                ),
                len(emails),
            ),
            (
                messages.send(customer_id, SendRequest(channel="sms", to=phones, body=SECRET_BODY)),
                len(phones),
            ),
            (
                messages.send(
                    customer_id, SendRequest(channel="voice", to=phones[:2], body=SECRET_BODY)
                ),
                2,
            ),
        ]
        for message_id, count in sent:
            # The last recipient of each message is refused for good; the worker sends the rest.
            ident = delivery_id(message_id, count - 1)
            messages.start_attempt(ident)
            messages.record_permanent_failure(ident, FailureReason.INVALID_RECIPIENT)
        recipients += emails + [p.replace(" ", "") for p in phones]
    return customers, recipients


@pytest.fixture(scope="module")
def platform(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    schema = f"dash_{uuid.uuid4().hex[:12]}"
    data_dir = tmp_path_factory.mktemp("dashboard")
    settings = Settings(
        data_dir=data_dir / "data",
        database_url=database_url,
        database_schema=schema,
        nats_url=nats_url,
        nats_namespace=schema,
    )
    create_master_key(settings.master_key_path)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    port = free_port()
    env = base_env(
        PICASSE_DATA_DIR=str(settings.data_dir),
        PICASSE_DATABASE_URL=database_url,
        PICASSE_DATABASE_SCHEMA=schema,
        PICASSE_NATS_URL=nats_url,
        PICASSE_NATS_NAMESPACE=schema,
        PICASSE_HTTP_PORT=str(port),
        # Webhooks registered by the pages' tests post to this machine only.
        PICASSE_WEBHOOKS_ALLOW_PRIVATE="1",
    )
    try:
        customers, recipients = _seed(settings, database_url)
        _record_disclosure(settings, database_url, next(iter(customers.values())))
        with (
            running(settings, database_url, ["accounts", "traffic", "ledger"]) as views,
            processes(env, data_dir / "logs") as group,
        ):
            _start_api(group)
            group.start("relay")
            group.start("worker", "--concurrency", "4")
            traffic = views["traffic"].view

            def settled() -> bool:
                if any(s.lag for s in statuses(views)):
                    return False
                rows = traffic.traffic(None, *_today_window())
                return bool(rows) and all(r.status not in ("queued", "sending") for r in rows)

            wait_until(settled, 30, "the worker to send every delivery and the views to see it")
            yield Platform(f"http://127.0.0.1:{port}", customers, recipients)
    finally:
        # Playwright's sync API may still run an event loop in this thread: use another.
        cleanup = threading.Thread(
            target=asyncio.run, args=(_delete_stream(nats_url, Topology(schema)),)
        )
        cleanup.start()
        cleanup.join(30)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _record_disclosure(settings: Settings, database_url: str, customer_id: UUID) -> None:
    privacy = open_privacy(settings, database_url)
    try:
        privacy.record_disclosure(
            customer_id, authority="Politie Eenheid Noord", legal_basis="art. 126ng Sv",
            period_from=date(2026, 1, 1), period_to=date(2026, 12, 31), records=3, by="cli:test",
        )  # fmt: skip
    finally:
        privacy.close()


async def _delete_stream(nats_url: str, topology: Topology) -> None:
    client = await nats.connect(nats_url)
    try:
        for stream in (topology.stream, WebhookTopology(topology.namespace).stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


def _start_api(group: Processes) -> None:
    """`picasse api` as `picasse up` runs it; ready once it says where it listens."""
    log = (group.log_dir / "api.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "picasse.runners.cli", "api"],
        env=group.env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    group.running.append(process)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    assert "api listening on" in line, f"picasse api did not start: {group.logs()}"


def _today_window() -> tuple[datetime, datetime]:
    now = SystemClock().now()
    return now - timedelta(days=1), now + timedelta(days=1)


# ------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: run tests/e2e/ensure_chromium.sh (make test does)")
    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, platform: Platform) -> Iterator[Page]:
    context = browser.new_context(base_url=platform.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def log_in(page: Page, login: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


# ------------------------------------------------------------------ the tests


def test_an_anonymous_request_for_the_dashboard_redirects_to_the_login_page(
    platform: Platform,
) -> None:
    for path in ("/admin/", "/admin/customers", "/admin/traffic"):
        response = httpx.get(platform.url + path, follow_redirects=False)
        assert response.status_code == 302, path
        assert response.headers["location"] == "/login"


def test_a_platform_admin_sees_the_overview_with_the_chart_drawn(
    page: Page, platform: Platform
) -> None:
    log_in(page, "ada")
    page.wait_for_url("**/admin/")
    expect(page.locator("[data-kpi=customers]")).to_have_text("4")
    expect(page.locator("[data-kpi=active]")).to_have_text("3")
    chart = page.locator("svg[data-chart=deliveries-per-day]")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 200
    segments = chart.locator("rect.segment")
    assert segments.count() >= 6  # delivered and not delivered, for each of three channels
    for index in range(segments.count()):
        segment = segments.nth(index).bounding_box()
        assert segment is not None and segment["width"] > 0 and segment["height"] > 0
    outcomes = {segments.nth(i).get_attribute("data-outcome") for i in range(segments.count())}
    assert outcomes == {"delivered", "failed"}
    expect(page.locator("[data-part=view-traffic]")).to_contain_text("up to date")
    expect(page.locator("[data-part=reconciler]")).to_contain_text("Reconciler (lost jobs)")
    # The panel shows the queue as it was when the page was made: an idle worker waits in a
    # pull request nearly all the time, but on a busy machine a page may fall in the gap
    # between two of its requests. Load it again until it shows one (a bounded number of times).
    workers = page.locator("[data-part=workers]")
    for _ in range(20):
        if "ready" in workers.inner_text():
            break
        page.reload()
    expect(workers).to_contain_text("ready")
    page.screenshot(path=OUTPUT / "dashboard-overview.png", full_page=True)


def test_a_platform_admin_opens_a_customer_from_the_customers_list(
    page: Page, platform: Platform
) -> None:
    log_in(page, "ada")
    page.get_by_role("link", name="Customers", exact=True).click()
    page.get_by_role("link", name="Brightside Care").click()
    customer = platform.customers["Brightside Care"]
    page.wait_for_url(f"**/admin/customers/{customer}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Brightside Care")
    expect(page.locator("[data-field=contact-name]")).to_have_text("Bram Bakker")
    expect(page.locator("[data-field=subscription]")).to_have_text("active")
    email = page.locator("[data-table=recent-traffic] tr[data-channel=email] td")
    expect(email).to_have_text(["E-mail", "3", "0", "1", "4"])
    page.screenshot(path=OUTPUT / "dashboard-customer.png", full_page=True)


def test_an_unknown_customer_is_a_page_that_says_so(page: Page, platform: Platform) -> None:
    log_in(page, "ada")
    page.wait_for_url("**/admin/")
    response = page.goto(f"/admin/customers/{uuid.uuid4()}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not Found")


def test_logging_out_ends_the_session(page: Page, platform: Platform) -> None:
    log_in(page, "ada")
    page.wait_for_url("**/admin/")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    page.goto("/admin/")
    assert page.url.endswith("/login")


def test_a_wrong_password_shows_a_clear_message_and_keeps_nothing(
    page: Page, platform: Platform
) -> None:
    log_in(page, "otto", "not the password")
    expect(page.get_by_role("alert")).to_have_text("Wrong login or password.")
    expect(page.get_by_label("Login")).to_have_value("")
    expect(page.get_by_label("Password")).to_have_value("")
    assert page.context.cookies() == []
    page.screenshot(path=OUTPUT / "login-refused.png")


def test_a_customer_user_lands_on_its_own_pages_and_is_refused_the_dashboard(
    page: Page, platform: Platform
) -> None:
    log_in(page, "cust.user")
    page.wait_for_url("**/app/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Acme Alerts")
    response = page.goto("/admin/")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Forbidden")
    for path in ("/admin/customers", f"/admin/customers/{platform.customers['Acme Alerts']}"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path


def test_an_auditor_sees_traffic_without_recipients(page: Page, platform: Platform) -> None:
    log_in(page, "otto")
    page.goto("/admin/traffic")
    rows = page.locator("table.traffic tbody tr")
    assert rows.count() == sum(_recipient_counts(platform))
    recipients = page.locator("[data-field=recipient]")
    assert set(recipients.all_inner_texts()) == {"withheld"}
    text = page.content()
    assert not [r for r in platform.recipients if r in text]
    assert FailureReason.INVALID_RECIPIENT.text not in text  # reasons are traffic data
    assert SENDER_IP not in text and "cust.user" not in text
    page.screenshot(path=OUTPUT / "dashboard-traffic-auditor.png", full_page=True)


def test_a_platform_admin_sees_the_recipients_of_the_traffic(
    page: Page, platform: Platform
) -> None:
    log_in(page, "ada")
    acme = platform.customers["Acme Alerts"]
    page.goto(f"/admin/traffic?customer_id={acme}")
    shown = set(page.locator("[data-field=recipient]").all_inner_texts())
    assert shown == {"inbox00@recipient.example", "inbox01@recipient.example"} | {
        "inbox02@recipient.example",
        "+31644440000",
        "+31644440001",
    }
    senders = page.locator("[data-field=sender]").all_inner_texts()
    assert senders.count(f"cust.user {SENDER_IP}") == 3  # the e-mail's three recipients
    page.screenshot(path=OUTPUT / "dashboard-traffic.png", full_page=True)


def test_a_platform_admin_finds_a_customers_traffic_by_recipient_and_an_auditor_cannot(
    page: Page, platform: Platform
) -> None:
    acme = platform.customers["Acme Alerts"]
    log_in(page, "ada")
    page.goto(f"/admin/traffic?customer_id={acme}")
    page.get_by_label("Recipient").fill("+31 6 4444 0001")  # as people write it
    page.get_by_role("button", name="Search").click()
    rows = page.locator("[data-field=recipient]")
    expect(rows.first).to_have_text("+31644440001")
    assert set(rows.all_inner_texts()) == {"+31644440001"}  # its text and its call
    expect(page.get_by_label("Recipient")).to_have_value("+31 6 4444 0001")

    page.get_by_label("Recipient").fill("not a number")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("alert")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    log_in(page, "otto")
    page.wait_for_url("**/admin/")
    page.goto(f"/admin/traffic?customer_id={acme}")
    expect(page.get_by_label("Recipient")).to_have_count(0)  # auditors see no recipients
    response = page.goto(f"/admin/traffic?customer_id={acme}&recipient=%2B31644440001")
    assert response is not None and response.status == 400


@pytest.mark.parametrize("login", ["ada", "otto"])
def test_no_page_shows_the_content_of_a_message(page: Page, platform: Platform, login: str) -> None:
    log_in(page, login)
    page.wait_for_url("**/admin/")
    paths = ["/admin/", "/admin/customers", "/admin/traffic"]
    paths += [f"/admin/customers/{c}" for c in platform.customers.values()]
    paths += [f"/admin/traffic?customer_id={c}" for c in platform.customers.values()]
    for path in paths:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        html = page.content()
        assert "marzipan" not in html, path
        assert not re.search("pizza", html, re.IGNORECASE), path


def _recipient_counts(platform: Platform) -> list[int]:
    # Per customer n (0, 1, 2): 3 + n e-mails, 2 + 2n texts, two calls.
    return [(3 + n) + (2 + 2 * n) + 2 for n in range(len(platform.customers))]


def test_the_privacy_ledger_page_lists_disclosures_without_personal_data(
    page: Page, platform: Platform
) -> None:
    log_in(page, "ada")
    page.get_by_role("link", name="Privacy ledger").click()
    page.wait_for_url("**/admin/ledger")
    row = page.locator("tr[data-kind=disclosure]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Politie Eenheid Noord")
    html = page.content()
    assert all(recipient not in html for recipient in platform.recipients)
    page.screenshot(path=OUTPUT / "dashboard-ledger.png", full_page=True)


# ------------------------------------------------------------------ the customer's pages


def test_a_customer_admin_changes_its_password_on_the_account_page(
    page: Page, platform: Platform
) -> None:
    new_password = "violet harbour compass 42"
    log_in(page, "cust.changer")
    page.wait_for_url("**/app/")
    page.get_by_role("link", name="Password").click()
    page.wait_for_url("**/account")

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill(new_password)
    page.get_by_label("Repeat it").fill("something else entirely 7")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert")).to_have_text("repeat: the two passwords differ")

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill(new_password)
    page.get_by_label("Repeat it").fill(new_password)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator('[data-result="password-changed"]')).to_be_visible()
    page.screenshot(path=OUTPUT / "account-password-changed.png")

    page.get_by_role("button", name="Log out").click()
    log_in(page, "cust.changer")  # the old password no longer works
    expect(page.get_by_role("alert")).to_have_text("Wrong login or password.")
    log_in(page, "cust.changer", new_password)
    page.wait_for_url("**/app/")


def test_a_customer_user_follows_its_messages_and_sees_its_traffic_chart(
    page: Page, platform: Platform
) -> None:
    log_in(page, "cust.user")
    page.wait_for_url("**/app/")
    page.get_by_role("link", name="Messages").click()
    page.wait_for_url("**/app/messages")
    rows = page.locator("[data-list=messages] tbody tr")
    expect(rows).to_have_count(3)  # Acme's e-mail, text and call; no other customer's
    expect(page.locator("[data-count=undelivered]")).to_have_count(3)
    page.screenshot(path=OUTPUT / "app-messages.png", full_page=True)

    page.get_by_label("Status").select_option("undelivered")
    page.get_by_label("Channel").select_option("email")
    page.get_by_role("button", name="Show").click()
    expect(rows).to_have_count(1)
    rows.first.get_by_role("link").click()
    deliveries = page.locator("[data-list=deliveries] tbody tr")
    expect(deliveries).to_have_count(3)
    expect(deliveries.last).to_contain_text("inbox02@recipient.example")
    expect(deliveries.last).to_contain_text("undelivered")
    assert "marzipan" not in page.content()  # the body is not on these pages either

    page.get_by_role("link", name="Traffic").click()
    page.wait_for_url("**/app/traffic")
    expect(page.locator(".chart-box svg")).to_be_visible()
    expect(page.locator("[data-total=failed]")).to_have_text("Not delivered: 3")
    page.screenshot(path=OUTPUT / "app-traffic.png", full_page=True)
    expect(page.get_by_role("link", name="Templates")).to_have_count(0)
    response = page.goto("/app/templates")
    assert response is not None and response.status == 403


def test_a_customer_admin_stores_and_deletes_a_template_on_its_templates_page(
    page: Page, platform: Platform
) -> None:
    log_in(page, "cust.admin")
    page.wait_for_url("**/app/")
    page.get_by_role("link", name="Templates").click()
    page.wait_for_url("**/app/templates")

    page.get_by_label("Name").fill("Shift change")
    page.get_by_label("Text").fill("Hi {name!r}")
    page.get_by_role("button", name="Save template").click()
    expect(page.get_by_role("alert")).to_contain_text("placeholders must be plain names")
    page.get_by_label("Text").fill("Hi {name}, your shift starts at {time}")
    page.get_by_role("button", name="Save template").click()
    row = page.locator("[data-list=templates] tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("name, time")
    page.screenshot(path=OUTPUT / "app-templates.png", full_page=True)

    row.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No templates yet.")).to_be_visible()


def test_a_customer_admin_creates_an_api_key_and_sees_its_secret_once(
    page: Page, platform: Platform
) -> None:
    log_in(page, "cust.admin")
    page.wait_for_url("**/app/")
    page.get_by_role("link", name="API keys").click()
    page.wait_for_url("**/app/api-keys")

    page.get_by_label("Name").fill("Nightly sender")
    page.get_by_label("messages:send").check()
    page.get_by_role("button", name="Create key").click()

    secret = page.locator('[data-field="new-key"]')
    expect(secret).to_contain_text("pk_")
    key = secret.inner_text().strip()
    row = page.locator("[data-table='api-keys'] tbody tr", has_text="Nightly sender")
    expect(row).to_contain_text("messages:send")
    page.screenshot(path=OUTPUT / "app-api-key-created.png", full_page=True)
    page.goto("/app/api-keys")  # shown once: never again
    assert key not in page.content()
    listed = page.locator("[data-table='api-keys'] tbody tr", has_text="Nightly sender")
    for _ in range(40):  # the list is the view's: it has the key once the projection has it
        if listed.count():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(listed).to_contain_text("messages:send")


def test_a_customer_user_is_refused_the_users_and_api_keys_pages(
    page: Page, platform: Platform
) -> None:
    log_in(page, "cust.user")
    page.wait_for_url("**/app/")
    expect(page.get_by_role("link", name="API keys")).to_have_count(0)
    for path in ("/app/users", "/app/api-keys"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        expect(page.get_by_role("heading", level=1)).to_have_text("Forbidden")


def test_a_customer_admin_registers_a_webhook_sees_its_secret_once_and_deletes_it(
    page: Page, platform: Platform
) -> None:
    hook = f"http://127.0.0.1:{free_port()}/picasse-hook"  # nothing listens: posts fail here
    log_in(page, "cust.admin")
    page.wait_for_url("**/app/")
    page.get_by_role("link", name="Webhooks").click()
    page.wait_for_url("**/app/webhooks")

    page.get_by_label("URL").fill("ftp://127.0.0.1/nope")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("alert")).to_contain_text("http")
    page.get_by_label("URL").fill(hook)
    page.get_by_role("button", name="Register").click()
    secret = page.locator("[data-secret]")
    expect(secret).to_have_text(re.compile(r"^whsec_[A-Za-z0-9+/=]{40,}$"))
    row = page.locator("tr[data-webhook]", has_text=hook)
    expect(row).to_contain_text("delivery.delivered")
    page.screenshot(path=OUTPUT / "app-webhook-registered.png")

    page.get_by_role("link", name="Webhooks").click()  # the secret is not shown again
    expect(page.locator("[data-secret]")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("whsec_")
    page.locator("tr[data-webhook]", has_text=hook).get_by_role("button", name="Delete").click()
    expect(page.locator('[data-result="webhook-deleted"]')).to_be_visible()
    expect(page.locator("tr[data-webhook]", has_text=hook)).to_have_count(0)


def test_a_customer_user_is_refused_the_webhooks_page(page: Page, platform: Platform) -> None:
    log_in(page, "cust.user")
    page.wait_for_url("**/app/")
    expect(page.get_by_role("link", name="Webhooks")).to_have_count(0)
    response = page.goto(platform.url + "/app/webhooks")
    assert response is not None and response.status == 403


def test_a_customer_files_a_case_support_replies_and_the_customer_sees_the_reply(
    page: Page, platform: Platform
) -> None:
    log_in(page, "cust.user")
    page.wait_for_url("**/app/")
    page.get_by_role("link", name="Cases", exact=True).click()
    page.wait_for_url("**/app/cases")
    page.get_by_label("Category").select_option("fault_report")
    page.get_by_label("What happened").fill("Alerts reached nobody on Sunday night")
    page.get_by_role("button", name="File case").click()
    page.wait_for_url(re.compile(r".*/app/cases/[0-9a-f-]{36}$"))
    case_id = page.url.rsplit("/", 1)[1]
    page.get_by_role("button", name="Log out").click()

    log_in(page, "ada")
    page.wait_for_url("**/admin/")
    page.get_by_role("link", name="Cases", exact=True).click()
    page.locator(f"[data-case='{case_id}'] a").first.click()
    expect(page.get_by_text("Alerts reached nobody on Sunday night")).to_be_visible()
    page.get_by_label("Reply").fill("A gateway was down; fixed at 02:10")
    page.get_by_role("button", name="Send reply").click()
    page.get_by_role("button", name="Move to in progress").click()
    expect(page.locator("[data-state]")).to_have_text("in progress")
    page.get_by_role("button", name="Log out").click()

    log_in(page, "cust.user")
    page.wait_for_url("**/app/")
    page.goto(f"/app/cases/{case_id}")
    expect(page.locator("[data-from=support]")).to_contain_text(
        "A gateway was down; fixed at 02:10"
    )
    expect(page.locator("[data-state]")).to_have_text("in progress")
    page.screenshot(path=OUTPUT / "app-case.png", full_page=True)
