"""`picasse sites add/list/remove` as a process: a customer's premises on the command line."""

from __future__ import annotations

import json
from uuid import UUID

from tests.e2e.conftest import Run
from tests.e2e.test_cli import CUSTOMER


def test_sites_are_added_listed_and_removed_and_a_bad_name_is_refused(picasse: Run) -> None:
    customer = json.loads(picasse(*CUSTOMER, "--json", check=True).stdout)["id"]
    added = picasse(
        "sites", "add", "--customer", customer, "--name", "Depot Noord",
        "--address", "Havenweg 3, Urk", check=True,
    ).stdout.strip()  # fmt: skip
    assert str(UUID(added)) == added

    listed = json.loads(
        picasse("sites", "list", "--customer", customer, "--json", check=True).stdout
    )
    assert [(s["id"], s["name"], s["address"]) for s in listed] == [
        (added, "Depot Noord", "Havenweg 3, Urk")
    ]

    refused = picasse("sites", "add", "--customer", customer, "--name", " ", "--address", "x")
    assert refused.returncode == 1 and "name" in refused.stderr

    picasse("sites", "remove", "--customer", customer, added, check=True)
    assert "Depot Noord" not in picasse("sites", "list", "--customer", customer, check=True).stdout


def test_geofences_are_added_to_a_site_listed_and_removed(picasse: Run) -> None:
    customer = json.loads(picasse(*CUSTOMER, "--json", check=True).stdout)["id"]
    site = picasse(
        "sites", "add", "--customer", customer, "--name", "Yard", "--address", "Kade 1",
        check=True,
    ).stdout.strip()  # fmt: skip
    circle = picasse(
        "geofences", "add", "--customer", customer, "--site", site, "--name", "gate",
        "--circle", "52.37,4.89,100", check=True,
    ).stdout.strip()  # fmt: skip
    polygon = picasse(
        "geofences", "add", "--customer", customer, "--site", site, "--name", "shed",
        "--polygon", '{"type": "Polygon", "coordinates": [[[179.999, -16.5], [-179.999, -16.5],'
        ' [-179.999, -16.501], [179.999, -16.501], [179.999, -16.5]]]}', check=True,
    ).stdout.strip()  # fmt: skip
    listed = json.loads(
        picasse("geofences", "list", "--customer", customer, "--json", check=True).stdout
    )
    assert sorted((f["name"], f["shape"]["type"]) for f in listed) == [
        ("gate", "circle"), ("shed", "Polygon")
    ]  # fmt: skip
    assert {f["id"] for f in listed} == {circle, polygon}

    refused = picasse(
        "geofences", "add", "--customer", customer, "--site", site, "--name", "x",
        "--circle", "95,4.89,100",
    )  # fmt: skip
    assert refused.returncode == 1 and "shape" in refused.stderr
    picasse("geofences", "remove", "--customer", customer, circle, check=True)
    assert "gate" not in picasse("geofences", "list", "--customer", customer, check=True).stdout
