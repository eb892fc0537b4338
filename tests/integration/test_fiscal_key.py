"""Invoices outlive termination (Dutch tax law keeps them seven years): after termination
they stay readable while everything else of the customer is erased, the statement names
them and the day they go, `verify-statement` checks that, and seven years on a retention
run erases them too."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from uuid import UUID

import msgspec
import pytest

from picasse.adapters.clock import ManualClock
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.billing import Billing, fiscal_tenant_id, price_plan
from picasse.domain.personal import ERASED
from picasse.domain.retention import fiscal_retention
from picasse.domain.values import Role
from picasse.runners.gdpr import (
    Platform,
    StatementInvalid,
    platform,
    terminate_customer,
    verify_statement,
)
from picasse.runners.retention import run_retention
from picasse.runners.settings import Settings

STAFF = Viewer(role=Role.SUPPORT, customer_id=None)
PLAN = price_plan({name: "2" for name in ("monthly_fee", "per_sms_segment", "per_email",
                  "per_voice_minute", "per_conference_minute", "vat_percent")})  # fmt: skip


@pytest.fixture
def gdpr(settings: Settings, schema: str) -> Iterator[Platform]:
    with platform(msgspec.structs.replace(settings, database_schema=schema)) as p:
        yield p


def _invoiced(accounts: Accounts, billing: Billing) -> tuple[UUID, UUID]:
    customer = accounts.register_customer(
        organisation="Fiscus Holding", contact_name="Fay", email="fay@fiscus.example",
        phone="+31612345678", billing_address="Belastingweg 7, Apeldoorn",
    )  # fmt: skip
    accounts.start_subscription(customer)
    billing.set_plan(customer, PLAN, by=STAFF)
    last_month = f"{billing.clock.now().replace(day=1) - timedelta(days=1):%Y-%m}"
    (line,) = [x for x in billing.run(last_month) if x.customer_id == customer]
    return customer, line.invoice_id


def test_invoices_stay_readable_after_termination_the_statement_names_them_and_seven_years_on_they_go(
    gdpr: Platform, accounts: Accounts, tmp_path: Path
) -> None:
    billing = Billing(clock=gdpr.clock, sharing=gdpr.accounts)
    customer, invoice_id = _invoiced(accounts, billing)
    year = f"{billing.invoice(invoice_id, by=STAFF).issued_on:%Y}"

    done = terminate_customer(gdpr, customer, tmp_path / "out", export=False, by="test")

    invoice = billing.invoice(invoice_id, by=STAFF)
    assert (invoice.billed_to_name, invoice.billed_to_address) == (
        "Fiscus Holding",
        "Belastingweg 7, Apeldoorn",
    )
    erased = gdpr.accounts.customer(customer)
    assert erased.organisation == ERASED and erased.contact.name == ERASED
    (kept,) = done.signed.document.kept_under_legal_obligation
    until = date(int(year) + 8, 1, 1)
    assert (kept.kind, kept.key, kept.until, kept.invoices) == (
        "fiscal",
        f"fiscal/{year}",
        until.isoformat(),
        [invoice_id],
    )
    assert "tax law" in kept.reason
    statement = tmp_path / "out" / "statement.json"
    assert verify_statement(gdpr, statement).document == done.signed.document
    html = (tmp_path / "out" / "statement.html").read_text()
    assert "1 invoice(s)" in html and until.isoformat() in html and "Belastingweg" not in html

    # Seven years after the end of the invoice's year, the retention run destroys its key.
    later = gdpr.clock.now().replace(year=int(year) + 8, month=1, day=2)
    assert (
        run_retention(
            gdpr.privacy, fiscal_retention(), now=later - timedelta(days=3), dry_run=False
        )
        == []
    )
    erased_keys = run_retention(gdpr.privacy, fiscal_retention(), now=later, dry_run=False)
    assert erased_keys == [(fiscal_tenant_id(customer), f"fiscal/{year}")]
    gone = billing.invoice(invoice_id, by=STAFF)
    assert gone.billed_to_name is None and gone.billed_to_address is None
    assert gone.total_cents == invoice.total_cents  # counts and amounts are no one's data

    # The statement still holds then; read today, it would claim a kept key that is gone.
    assert verify_statement(dataclasses.replace(gdpr, clock=ManualClock(later)), statement)
    with pytest.raises(StatementInvalid, match="gone already"):
        verify_statement(gdpr, statement)
