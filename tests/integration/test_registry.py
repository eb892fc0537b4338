"""Every kind in the registry of personal data, on real PostgreSQL: an export holds a value of
it, and each of its erasure triggers leaves no readable trace of it in the log or the views."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import psycopg
import pytest
from psycopg import sql

from picasse.adapters.archive import read_export
from picasse.adapters.master_key import create_master_key
from picasse.adapters.postgres.store import shredder_of
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.attendance import Attendance, PingIn
from picasse.domain.billing import Billing, fiscal_tenant_id, price_plan
from picasse.domain.cases import Cases
from picasse.domain.geofences import Circle
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.personal import ERASED, PERSONAL_DATA_KINDS, PersonalDataKind, Trigger
from picasse.domain.privacy import Privacy
from picasse.domain.retention import dated_keys, retention_periods
from picasse.domain.sites import Sites
from picasse.domain.values import Role
from picasse.domain.visitors import HostChoice, RegistrationSettings, VisitForm, Visitors
from picasse.domain.webhooks import Webhooks
from picasse.projections.personal_data import Holdings
from picasse.runners.gdpr import Platform, export_customer, platform, terminate_customer
from picasse.runners.retention import run_retention, run_visitor_retention
from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts, open_messages
from tests.registry_walk import personal_values
from tests.users import add_customer_user

PLAN = price_plan({name: "1" for name in ("monthly_fee", "per_sms_segment", "per_email",
                  "per_voice_minute", "per_conference_minute", "vat_percent")})  # fmt: skip


class Planted(msgspec.Struct, frozen=True):
    """One customer holding a value of every kind, and the names its subjects' keys get."""

    customer_id: UUID
    values: dict[str, str]  # per kind: one high-entropy value of it
    placeholders: dict[str, str]  # "<customer id>" → its id, … (as the registry names subjects)

    def subject(self, kind: PersonalDataKind) -> str:
        name = kind.subject
        for placeholder, value in self.placeholders.items():
            name = name.replace(placeholder, value)
        assert "<" not in name, f"the test cannot name the subject {kind.subject!r}: teach it"
        return name


@pytest.fixture
def gdpr(settings: Settings, schema: str) -> Iterator[Platform]:
    with platform(msgspec.structs.replace(settings, database_schema=schema)) as p:
        yield p


@pytest.fixture
def planted(accounts: Accounts, messages: Messages) -> Planted:
    return _plant(accounts, messages)


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[tuple[Planted, dict[str, Any]]]:
    """One planted customer and its export, on a schema of their own, for every kind's
    export test: an export only reads, so one serves them all (a planting and a platform
    to export it take seconds, once per kind before). Erasures change what they find, so
    each erasure test plants its own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    here = tmp_path_factory.mktemp("registry-export")
    settings = Settings(data_dir=here / "data", database_url=database_url, database_schema=schema)
    create_master_key(settings.master_key_path)
    accounts = open_accounts(settings, database_url)
    messages = open_messages(settings, database_url)
    try:
        planted = _plant(accounts, messages)
        with platform(settings) as gdpr:
            export_customer(
                gdpr, planted.customer_id, here / "e.zip", purpose="portability", by="test"
            )
        yield planted, read_export(here / "e.zip")
    finally:
        messages.close()
        accounts.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _plant(accounts: Accounts, messages: Messages) -> Planted:
    """One customer holding a value of every kind of personal data in the registry."""
    tag = uuid.uuid4().hex[:10]
    values = {
        "organisation": f"Org{tag} Holding",
        "contact": f"mail{tag}@example.org",
        "user": f"login{tag}@example.net",
        "group": f"member{tag}@groups.example",
        "traffic": f"rcpt{tag}@inbox.example",
        "content": f"Body{tag} text",
        "template": f"Template{tag} text",
        "webhook": f"https://hooks{tag}.example/in",
        "visitor": f"visitor{tag}@visits.example",
        "case": f"Complaint{tag} words",
        "fiscal": f"Street{tag} 1, Zwolle",  # the billing address, as its invoice holds it
    }
    customer = accounts.register_customer(
        organisation=values["organisation"],
        contact_name=f"Name{tag}",
        email=values["contact"],
        phone="+31612345678",
        billing_address=f"Street{tag} 1, Zwolle",
    )
    accounts.start_subscription(customer)
    user = add_customer_user(
        accounts, customer_id=customer, login=values["user"], role=Role.CUSTOMER_ADMIN, password="a long password"
    )  # fmt: skip
    group = messages.create_group(customer, f"Team{tag}", [values["group"]])
    template = messages.save_template(customer, "sms", f"Name{tag}", values["template"])
    messages.send(
        customer,
        SendRequest(channel="email", to=[values["traffic"]], body=values["content"], subject="S"),
        client_ip="192.0.2.7",
    )
    # A site's name and address are the organisation's, sealed under its key.
    site = Sites(clock=messages.clock, sharing=messages).add(customer, f"Site{tag}", f"Road{tag} 2")
    visitors = Visitors(clock=messages.clock, sharing=messages)
    visitors.set_registration(
        customer,
        site,
        RegistrationSettings(
            slug=f"site-{tag}", hosts=[HostChoice(user_id=user, name="Host")],
            privacy_notice="Kept 28 days.",
        ),
    )  # fmt: skip
    arrival = (messages.clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    visitor = visitors.register(
        f"site-{tag}",
        VisitForm(name=f"Visitor{tag}", email=values["visitor"], host=str(user),
                  arrival=arrival, consent=True),
    ).visitor_id  # fmt: skip
    # A user who consented, pings held (location) and an entry recorded (attendance).
    attendance = Attendance(
        clock=messages.clock,
        privacy=Privacy(shredder=shredder_of, sharing=messages),
        sharing=messages,
    )
    attendance.switch(customer, True)
    attendance.give_consent(customer, user)
    attendance.add_fence(
        customer, site, "gate", Circle(lat=52.0, lon=4.0, radius_m=100),
        hysteresis_m=0, dwell_seconds=0,
    )  # fmt: skip
    lat = 52.0 + int(tag, 16) % 10**6 / 10**10  # high-entropy digits, within the gate
    # All of today's (location keys are per user and day): a run just after midnight
    # would otherwise seal the first pings under yesterday's key, which is not erased.
    now = messages.clock.now()
    first = max(now - timedelta(minutes=10), now.replace(hour=0, minute=0, second=0))
    first = first.replace(microsecond=123457 if first.second or first.minute else 0)
    step = min(timedelta(minutes=1), (now - first) / 5)
    attendance.record_pings(
        customer,
        [PingIn(user, first + m * step, lat, 4.0, 5.0) for m in range(5)],
    )
    values["location"] = repr(lat)
    values["attendance"] = first.isoformat()
    admin = Viewer(role=Role.CUSTOMER_ADMIN, customer_id=customer, user_id=user)
    endpoint = (
        Webhooks(clock=messages.clock, sharing=messages)
        .register(customer, values["webhook"], ["delivery.failed"], by=admin)
        .endpoint.id
    )
    staff = Viewer(role=Role.SUPPORT, customer_id=None)
    user_viewer = Viewer(role=Role.CUSTOMER_USER, customer_id=customer, user_id=user)
    Cases(clock=messages.clock, sharing=messages).file(
        customer, "complaint", values["case"], by=user_viewer
    )
    billing = Billing(clock=messages.clock, sharing=messages)
    billing.set_plan(customer, PLAN, by=staff)
    last_month = f"{messages.clock.now().replace(day=1) - timedelta(days=1):%Y-%m}"
    billing.run(last_month)
    placeholders = {
        "<customer id>": str(customer),
        "<endpoint id>": str(endpoint),
        "<user id>": str(user),
        "<group id>": str(group),
        "<template id>": str(template),
        "<visitor id>": str(visitor),
        "<YYYY-MM>": f"{messages.clock.now():%Y-%m}",
        "<YYYY-MM-DD>": first.date().isoformat(),
        "<YYYY>": f"{messages.clock.now():%Y}",
    }
    missing = [kind for kind in PERSONAL_DATA_KINDS if kind not in values]
    assert missing == [], f"plant a value of each new kind in this fixture: {missing}"
    return Planted(customer, values, placeholders)


def _logged(p: Platform, customer_id: UUID, kind: str) -> list[Any]:
    """Every value of the kind the customer's events hold, as they read now."""
    recorder = p.accounts.recorder
    found: list[Any] = []
    for notification in recorder.select_notifications(start=1, limit=1_000_000):
        event = p.accounts.mapper.to_domain_event(notification)
        # An invoice's tenant is its customer's fiscal tenant; it names the customer too.
        tenant = getattr(event, "customer_id", None) or getattr(
            event, "tenant_id", event.originator_id
        )
        if tenant == customer_id:
            found += personal_values(event, kind)
    return found


def _shown(value: Any) -> str:
    """A logged value as text: a string as it is, a time in ISO form, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return msgspec.json.encode(value).decode()


def _in_views(p: Platform, value: str) -> int:
    """Rows of any view table whose text holds the value: a search that needs no registry."""
    found = 0
    for name in p.views.names:
        view = p.views.view(name)
        with view.datastore.get_connection() as conn:
            for table in view.t.values():
                query = sql.SQL("SELECT count(*) AS n FROM {} AS r WHERE r::text LIKE %s")
                row = conn.execute(query.format(table), (f"%{value}%",)).fetchone()
                found += int(row["n"]) if row else 0
    return found


KINDS = list(PERSONAL_DATA_KINDS.values())
ERASURES = [(kind, trigger) for kind in KINDS for trigger in sorted(kind.erased_on)]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_an_export_holds_a_value_of_every_kind_it_exports(
    kind: PersonalDataKind, exported: tuple[Planted, dict[str, Any]]
) -> None:
    planted, parts = exported
    text = msgspec.json.encode({name: parts[name] for name in kind.export}).decode()
    everything = msgspec.json.encode(parts).decode()
    if kind.export:
        assert planted.values[kind.kind] in text
    else:  # content: withheld by the registry's word (R7), so in no section at all
        assert kind.not_exported and planted.values[kind.kind] not in everything


@pytest.mark.parametrize(
    ("kind", "trigger"), ERASURES, ids=[f"{k.kind}-{t.value}" for k, t in ERASURES]
)
def test_each_erasure_trigger_of_a_kind_leaves_no_readable_trace_of_it(
    kind: PersonalDataKind, trigger: Trigger, gdpr: Platform, planted: Planted, tmp_path: Path
) -> None:
    customer = planted.customer_id
    before = _logged(gdpr, customer, kind.kind)
    assert any(planted.values[kind.kind] in _shown(v) for v in before)  # the search can succeed
    gdpr.views.catch_up()
    holdings = Holdings(gdpr.sources())
    if kind.held_in:
        assert holdings.plaintext_held(kind, customer) > 0  # the views open it for readers
        assert _in_views(gdpr, str(customer)) > 0  # the raw search finds what is stored readable
        assert _in_views(gdpr, planted.values[kind.kind]) == 0  # views hold ciphertext only

    if trigger is Trigger.TERMINATION:
        terminate_customer(gdpr, customer, tmp_path / "out", export=False, by="test")
    elif trigger is Trigger.REQUEST:
        done = gdpr.privacy.erase_subject(
            customer, planted.subject(kind), "the subject asked", trigger=Trigger.REQUEST
        )
        assert done.key_ids
    elif not dated_keys(kind):  # kept for days after its subject's own event (a visit)
        later = gdpr.clock.now() + timedelta(days=(kind.retention.days or 0) + 2)
        visitors = Visitors(clock=gdpr.clock, sharing=gdpr.privacy)
        gone = run_visitor_retention(gdpr.privacy, visitors, now=later, dry_run=False)
        assert [f"visitor/{v}" for _, v in gone] == [planted.subject(kind)]
    else:
        (period,) = [p for p in retention_periods() if kind.kind in p.kinds]
        later = gdpr.clock.now() + timedelta(days=(period.months + 13) * 31)
        erased = run_retention(gdpr.privacy, period, now=later, dry_run=False)
        owner = fiscal_tenant_id(customer) if kind.kind == "fiscal" else customer
        assert (owner, planted.subject(kind)) in erased
    gdpr.views.catch_up()

    after = _logged(gdpr, customer, kind.kind)
    # >=: a sealed None (a user's password before they set one) reads as erased too.
    assert len(after) >= len(before) and all(v == ERASED for v in after)
    assert holdings.plaintext_held(kind, customer) == 0
    assert _in_views(gdpr, planted.values[kind.kind]) == 0
