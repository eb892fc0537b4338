"""The registry of personal-data kinds against the domain's events, both ways, and its own sense."""

from __future__ import annotations

import pytest

from picasse.domain.personal import (
    PERSONAL_DATA_KINDS,
    PersonalDataKind,
    Trigger,
    export_sources,
)
from picasse.domain.retention import dated_keys, expired, fiscal_retention, retention_periods
from picasse.projections.personal_data import SOURCES
from tests.registry_walk import domain_event_classes, personal_fields_of


def _declared() -> list[tuple[str, str]]:
    return [
        (path, personal.kind)
        for event_class in domain_event_classes()
        for path, personal in personal_fields_of(event_class)
    ]


def test_the_walk_finds_the_domains_events_and_their_personal_fields() -> None:
    paths = {path for path, _ in _declared()}
    assert "Customer.Registered.contact.email" in paths
    assert "RecipientGroup.Created.members.address" in paths
    assert len(domain_event_classes()) > 20


def test_every_personal_field_of_every_event_names_a_registered_kind() -> None:
    unknown = [f"{path}: {kind}" for path, kind in _declared() if kind not in PERSONAL_DATA_KINDS]
    assert unknown == []


def test_every_registered_kind_is_held_by_some_event_field() -> None:
    used = {kind for _, kind in _declared()}
    assert [kind for kind in PERSONAL_DATA_KINDS if kind not in used] == []


@pytest.mark.parametrize("kind", PERSONAL_DATA_KINDS.values(), ids=lambda k: k.kind)
def test_every_kind_is_exported_from_a_known_source_or_says_why_not(kind: PersonalDataKind) -> None:
    assert kind.export or kind.not_exported
    assert [name for name in kind.export if name not in SOURCES] == []


@pytest.mark.parametrize("kind", PERSONAL_DATA_KINDS.values(), ids=lambda k: k.kind)
def test_every_kind_is_erased_by_termination_or_says_it_is_kept(kind: PersonalDataKind) -> None:
    # Only a kind the law makes us keep (fiscal records) may outlive the subscription.
    assert Trigger.TERMINATION in kind.erased_on or kind.retention.months is not None
    assert Trigger.RETENTION not in kind.erased_on or (kind.retention.months or kind.retention.days)
    assert kind.subject.startswith(f"{kind.kind}/")


def test_every_export_source_serves_a_registered_kind() -> None:
    assert sorted(SOURCES) == sorted(export_sources())


def test_the_traffic_ping_and_fiscal_periods_govern_the_kinds_erased_by_retention() -> None:
    periods = retention_periods(
        {"PICASSE_TRAFFIC_RETENTION_MONTHS": 9, "PICASSE_PING_RETENTION_DAYS": 12}
    )
    by_kind = {kind: period for period in periods for kind in period.kinds}
    traffic, pings, fiscal = by_kind["traffic"], by_kind["location"], by_kind["fiscal"]
    assert len(periods) == 3
    assert traffic.months == 9 and set(traffic.kinds) == {"traffic", "content"}
    assert pings.days == 12 and pings.kinds == ("location",)
    # Invoices' names and addresses: seven years of tax law, which no setting shortens.
    assert fiscal.months == 84 and fiscal.kinds == ("fiscal",) and fiscal.setting is None
    retained = {k.kind for k in PERSONAL_DATA_KINDS.values() if Trigger.RETENTION in k.erased_on}
    per_visit = {k.kind for k in PERSONAL_DATA_KINDS.values() if not dated_keys(k)}
    assert {*traffic.kinds, *pings.kinds, *fiscal.kinds} == retained - per_visit


def test_visitors_are_kept_28_days_after_the_visit_by_a_declared_setting() -> None:
    visitor = PERSONAL_DATA_KINDS["visitor"]
    assert visitor.retention.days == 28 and visitor.retention.months is None
    assert visitor.retention.setting == "PICASSE_VISITOR_RETENTION_DAYS"
    assert visitor.erased_on == {Trigger.TERMINATION, Trigger.REQUEST, Trigger.RETENTION}
    assert not dated_keys(visitor)  # its own job, after each visit


def test_a_fiscal_years_key_goes_seven_years_after_the_years_end() -> None:
    fiscal = fiscal_retention()
    assert not expired("2026", "2033-12", fiscal)
    assert expired("2026", "2034-01", fiscal)
