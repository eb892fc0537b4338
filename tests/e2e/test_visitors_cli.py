"""`picasse sites registration` as a process: a site's visitor registration on the command line."""

from __future__ import annotations

import json

from tests.e2e.conftest import Run
from tests.e2e.test_cli import CUSTOMER


def test_a_sites_registration_is_set_and_shown_and_a_bad_slug_is_refused(picasse: Run) -> None:
    customer = json.loads(picasse(*CUSTOMER, "--json", check=True).stdout)["id"]
    picasse("customers", "subscribe", customer, check=True)
    site = picasse(
        "sites", "add", "--customer", customer, "--name", "Depot", "--address", "Kade 1",
        check=True,
    ).stdout.strip()  # fmt: skip
    user = picasse(
        "users", "add", "--customer", customer, "--login", "host-ann", "--role",
        "customer_admin", "--email", "ann@depot.example", check=True,
    ).stdout.strip().split()[-1]  # fmt: skip
    base = ["sites", "registration", "--customer", customer, "--site", site]
    set_ = picasse(
        *base, "--slug", "depot", "--host", f"{user}=Ann de Vries", "--field", "phone",
        "--privacy-notice", "We keep it 28 days.", "--origin", "https://www.depot.example",
        check=True,
    )  # fmt: skip
    shown = json.loads(picasse(*base, check=True).stdout)
    assert json.loads(set_.stdout) == shown
    assert (shown["slug"], shown["fields"], shown["keep_days"]) == ("depot", ["phone"], 28)
    assert shown["hosts"] == [{"user_id": user, "name": "Ann de Vries"}]
    assert shown["origins"] == ["https://www.depot.example"]

    refused = picasse(*base, "--slug", "No Good", "--host", f"{user}=Ann", "--privacy-notice", "x")
    assert refused.returncode == 1 and "slug" in refused.stderr
