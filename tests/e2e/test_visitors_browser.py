"""Visitor registration in headless Chromium (issue 14): the public form filled in directly
and inside an iframe on a page of a listed origin, refused to a page of an unlisted origin;
the notices through the real pipeline (relay, worker, NATS) to a real SMTP server; the
pass's QR code opening the desk, where check-in and check-out show in the on-site list.

The app runs in this process (as the integration tests run it), the relay and the worker
too; the two "customer websites" are plain HTTP servers on other ports (other origins)."""

from __future__ import annotations

import http.server
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage

import pytest
from playwright.sync_api import FrameLocator, Page, expect, sync_playwright

from picasse.adapters.http.app import create_app
from picasse.adapters.nats.jobs import Topology
from picasse.adapters.nats.worker import WorkerSettings
from picasse.adapters.providers.smtp import SmtpProvider
from picasse.domain.visitors import HostChoice, RegistrationSettings, Visitors
from picasse.runners.api import http_deps
from tests.e2e.platform import CHROMIUM, CHROMIUM_ARGS
from tests.integration.api_server import (
    PASSWORD,
    make_tenant,
    module_settings,
    serving,
    with_cheap_passwords,
)
from tests.integration.inprocess import relay_and_worker
from tests.integration.platform_processes import wait_until
from tests.integration.smtp_server import RecordingSmtpServer


@contextmanager
def website(page_html: str) -> Iterator[str]:
    """A customer's website: one page, from an origin of its own; its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page_html.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _framing(form_url: str) -> str:
    return f'<!doctype html><title>Shop</title><h1>Visit us</h1><iframe src="{form_url}" width="600" height="900"></iframe>'


def _fill(frame: Page | FrameLocator, name: str, email: str, host: str, arrival: str) -> None:
    frame.locator('input[name="name"]').fill(name)
    frame.locator('input[name="email"]').fill(email)
    frame.locator('select[name="host"]').select_option(host)
    frame.locator('input[name="arrival"]').fill(arrival)
    frame.locator('input[name="consent"]').check()
    frame.locator('button[type="submit"]').click()


def test_a_visitor_registers_directly_and_framed_is_told_and_checked_in_and_out(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, nats_url: str
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: run tests/e2e/ensure_chromium.sh (make test does)")
    with (
        module_settings(tmp_path_factory, database_url, "visitors-browser") as settings,
        http_deps(settings, database_url) as deps,
        RecordingSmtpServer() as smtp,
        relay_and_worker(
            deps.messages,
            {"email": SmtpProvider.from_url(smtp.url, sender="visits@picasse.example")},
            nats_url,
            Topology(settings.database_schema),
            settings=WorkerSettings(),
        ),
        serving(create_app(with_cheap_passwords(deps))) as base_url,
    ):
        tenant = make_tenant(deps, "Gimlet")
        host_address = f"{tenant.user_login}@users.example"  # tests/users.py gives it
        site = deps.sites.add(tenant.customer_id, "Werkplaats", "Kade 4, Urk")  # type: ignore[union-attr]
        form_url = f"{base_url}/visit/werkplaats"
        with (
            website(_framing(form_url)) as listed,
            website(_framing(form_url)) as unlisted,
        ):
            Visitors(clock=deps.clock, sharing=deps.messages).set_registration(
                tenant.customer_id,
                site,
                RegistrationSettings(
                    slug="werkplaats",
                    hosts=[HostChoice(user_id=tenant.user_id, name="Gerda Gastvrouw")],
                    privacy_notice="We keep your details 28 days after your visit.",
                    origins=[listed],
                ),
            )
            arrival = (deps.clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
            tag = uuid.uuid4().hex[:6]
            direct, framed = f"direct-{tag}@visitors.example", f"framed-{tag}@visitors.example"
            host = str(tenant.user_id)

            with sync_playwright() as driver:
                chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                context = chromium.new_context()
                context.set_default_timeout(10_000)
                page = context.new_page()

                # 1. The form, directly.
                page.goto(form_url)
                _fill(page, "Dirk Direct", direct, host, arrival)
                expect(page.locator('[data-result="registered"]')).to_be_visible()

                # 2. The form in an iframe on the listed origin's page.
                page.goto(listed)
                frame = page.frame_locator("iframe")
                expect(frame.locator("h1")).to_contain_text("Register your visit")
                _fill(frame, "Frida Framed", framed, host, arrival)
                expect(frame.locator('[data-result="registered"]')).to_be_visible()

                # 3. An unlisted origin's page cannot frame it.
                with page.expect_console_message(lambda m: "frame-ancestors" in m.text):
                    page.goto(unlisted)
                expect(page.frame_locator("iframe").locator("form")).to_have_count(0)

                # 4. The notices reach the SMTP server: the host's twice, each visitor's once.
                def mail_to(address: str) -> list[EmailMessage]:
                    return [m for m in (r.message() for r in smtp.received) if m["To"] == address]

                wait_until(
                    lambda: len(mail_to(host_address)) == 2 and mail_to(direct) and mail_to(framed),
                    30,
                    "the notices at the SMTP server",
                )
                host_mail = mail_to(host_address)
                assert all("registered to see you" in m.get_content() for m in host_mail)
                (framed_mail,) = mail_to(framed)
                text_part = framed_mail.get_body(preferencelist=("plain",))
                assert text_part is not None
                confirmation = text_part.get_content()
                (image,) = [
                    p for p in framed_mail.iter_attachments() if p.get_content_type() == "image/png"
                ]
                assert image.get_content().startswith(b"\x89PNG")  # the QR code, for the desk
                assert "Dirk" not in "".join(m.get_content() for m in host_mail)  # no names
                pass_link = re.search(r"http\S+/visit/pass/\S+", confirmation)
                assert pass_link is not None and "/visit/cancel/" in confirmation
                pass_url = pass_link.group(0).replace(deps.ack_links.public_url, base_url)
                code = pass_url.rsplit("/", 1)[1]

                # 5. The pass shows the QR code; what it holds opens the desk (a login first).
                page.goto(pass_url)
                expect(page.locator("figure.qr svg")).to_be_visible()
                page.goto(f"{base_url}/app/desk?code={code}")
                expect(page).to_have_url(re.compile("/login"))
                page.fill('input[name="login"]', tenant.user_login)
                page.fill('input[name="password"]', PASSWORD)
                page.click('button[type="submit"]')
                page.goto(f"{base_url}/app/desk?code={code}")
                expect(page.locator(".visit-found")).to_contain_text("Frida Framed")
                on_site = page.locator(f'table.on-site[data-site="{site}"] tbody')
                expect(on_site).not_to_contain_text("Frida Framed")  # the look-up changed nothing

                # 6. Check-in and check-out show in the on-site view and the printable list.
                page.click('form[action="/app/desk/check-in"] button')
                expect(on_site).to_contain_text("Frida Framed")
                page.goto(f"{base_url}/app/desk/evacuation")
                expect(page.locator("body")).to_contain_text("Frida Framed")
                page.goto(f"{base_url}/app/desk")
                on_site.locator("button", has_text="Check out").click()
                expect(on_site).not_to_contain_text("Frida Framed")
                context.close()
                chromium.close()
