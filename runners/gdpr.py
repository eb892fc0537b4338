"""`picasse gdpr …` and `picasse customers terminate`: export, erasure, statements, disclosure (R9, R10)."""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from picasse.adapters.archive import write_export
from picasse.adapters.postgres.keystore import PostgresKeyStore
from picasse.adapters.signing import PlatformSigner
from picasse.adapters.statements import (
    KeptRecord,
    SignedStatement,
    Statement,
    ViewCheck,
    canonical,
    read,
    sha256_of,
    sign,
    write,
)
from picasse.domain.accounts import Accounts
from picasse.domain.clock import Clock
from picasse.domain.errors import AlreadyTerminated, Conflict, InvalidInput
from picasse.domain.privacy import Privacy
from picasse.domain.users import PLATFORM_TENANT
from picasse.projections.personal_data import REGISTRY, Sources, TrafficRecords, all_sources
from picasse.runners import servers
from picasse.runners.project import LiveViews, live_views
from picasse.runners.settings import Settings
from picasse.runners.wiring import clock_from, ensure_master_key, open_accounts, open_privacy

err = Console(stderr=True, highlight=False)


class StatementInvalid(Exception):
    """A statement's signature or one of its claims does not hold."""


def operator() -> str:
    """Who ran the command, as recorded in the privacy ledger (a system account name)."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry in a container, for example
        return "cli"


@dataclass
class Platform:
    settings: Settings
    accounts: Accounts
    privacy: Privacy
    views: LiveViews
    clock: Clock

    @property
    def keys(self) -> PostgresKeyStore:
        return self.privacy.factory.keys  # type: ignore[attr-defined, no-any-return]

    def sources(self) -> Sources:
        return Sources(
            accounts=self.views.view("accounts"),
            traffic=self.views.view("traffic"),
            customer_events=lambda customer_id: self.accounts.events.get(customer_id),
            now=self.clock.now,
        )

    def signer(self) -> PlatformSigner:
        return PlatformSigner.from_file(self.settings.signing_key_path, create=True)


@contextmanager
def platform(settings: Settings) -> Iterator[Platform]:
    database_url = servers.postgres_url(settings)
    ensure_master_key(settings)
    accounts = open_accounts(settings, database_url)
    privacy = open_privacy(settings, database_url)
    try:
        with live_views(settings, database_url) as views:
            yield Platform(settings, accounts, privacy, views, clock_from(settings))
    finally:
        privacy.close()
        accounts.close()


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True)


# Export


def export_customer(p: Platform, customer_id: UUID, out: Path, *, purpose: str, by: str) -> str:
    """Write the customer's personal data to `out`; returns the archive's sha256."""
    p.accounts.customer(customer_id)  # NotFound for an unknown customer
    sources = all_sources(p.sources())
    sections: dict[str, list[dict[str, Any]]] = {}
    with _progress() as progress:
        task = progress.add_task("exporting…", total=len(sources))
        for source in sources:
            progress.update(task, description=f"exporting {source.kind}…")
            sections[source.kind] = source.export(customer_id)
            progress.advance(task)
    counts = {kind: len(records) for kind, records in sections.items()}
    manifest = {
        "customer_id": str(customer_id),
        "generated_at": p.clock.now().isoformat(),
        "purpose": purpose,
        "counts": counts,
        "kinds": {kind: cls.description for kind, cls in REGISTRY.items()},
        "period": "everything still held; traffic data is kept six months (R5)",
    }
    write_export(out, manifest, sections)
    p.privacy.record_export(customer_id, purpose, counts, by)
    return sha256_of(out)


def export_main(settings: Settings, customer_id: UUID, out: Path) -> int:
    with platform(settings) as p:
        digest = export_customer(p, customer_id, out, purpose="portability", by=operator())
    print(f"exported to {out} (sha256 {digest})")
    return 0


# Termination


def terminate_customer(
    p: Platform, customer_id: UUID, out_dir: Path, *, export: bool, by: str
) -> SignedStatement:
    customer = p.accounts.customer(customer_id)
    if customer.subscription.value == "terminated" and p.keys.live_key_count(customer_id) == 0:
        raise AlreadyTerminated(f"customer {customer_id} has been terminated and erased already")
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    export_digest = None
    if export:
        export_digest = export_customer(
            p, customer_id, out_dir / "export.zip", purpose="termination", by=by
        )
    if customer.subscription.value != "terminated":
        p.accounts.terminate_customer(customer_id)
    terminated_at = _terminated_at(p.accounts, customer_id)
    unreadable = p.keys.sealed_event_count(customer_id)
    with _progress() as progress:
        progress.add_task("destroying keys…")
        key_ids = p.privacy.erase_tenant(customer_id, "termination of the subscription (R10)")
        erased_at = p.clock.now()
        progress.add_task("waiting for the views to forget…")
        p.views.catch_up()
        _vacuum_views(p)
    destroyed = [k.key_id for k in p.keys.destroyed_keys(customer_id)]
    checks = [ViewCheck(s.kind, s.plaintext_held(customer_id)) for s in all_sources(p.sources())]
    statement = Statement(
        customer_id=customer_id,
        terminated_at=terminated_at,
        erased_at=erased_at,
        destroyed_key_ids=sorted(set(destroyed) | set(key_ids), key=str),
        unreadable_events=unreadable,
        views=checks,
        views_hold_personal_data=any(c.plaintext_values for c in checks),
        kept_under_legal_obligation=kept_records(),
        export_sha256=export_digest,
        signing_key=p.signer().key_id,
    )
    signed = sign(statement, p.signer())
    write(signed, out_dir)
    p.privacy.record_statement(customer_id, _digest(statement), unreadable)
    return signed


def kept_records() -> list[KeptRecord]:
    """Records the law obliges us to keep after termination. Invoices (7 years, Dutch tax
    law) will be sealed under a separate fiscal key once invoicing exists; none yet."""
    return []


def _terminated_at(accounts: Accounts, customer_id: UUID) -> datetime:
    for event in accounts.events.get(customer_id, desc=True, limit=10):
        if type(event).__name__ == "Terminated":
            return event.timestamp  # type: ignore[no-any-return]
    raise Conflict(f"customer {customer_id} has no termination recorded")


def _digest(statement: Statement) -> str:
    return hashlib.sha256(canonical(statement)).hexdigest()


def _vacuum_views(p: Platform) -> None:
    """Purged rows linger in table pages until vacuumed; plaintext should not."""
    for name in p.views.runners:
        view = p.views.view(name)
        with view.datastore.get_connection() as conn:
            for table in view.t.values():
                conn.execute(sql.SQL("VACUUM {}").format(table))


def terminate_main(settings: Settings, customer_id: UUID, out_dir: Path, *, export: bool) -> int:
    with platform(settings) as p:
        signed = terminate_customer(p, customer_id, out_dir, export=export, by=operator())
    d = signed.document
    print(
        f"customer {customer_id} terminated and erased: {len(d.destroyed_key_ids)} keys destroyed,"
        f" {d.unreadable_events} events now unreadable; statement in {out_dir / 'statement.json'}"
    )
    return 0


# Verifying a statement


def verify_statement(p: Platform, path: Path) -> SignedStatement:
    try:
        signed = read(path)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
        raise StatementInvalid(f"{path} is not a statement of erasure: {error}") from None
    signer = p.signer()
    if signed.document.signing_key != signer.key_id or not signer.verifies(
        canonical(signed.document), signed.signature
    ):
        raise StatementInvalid(
            "the signature does not match the document: it was altered or not signed by us"
        )
    d = signed.document
    destroyed = {k.key_id for k in p.keys.destroyed_keys(d.customer_id)}
    if missing := set(d.destroyed_key_ids) - destroyed:
        raise StatementInvalid(f"{len(missing)} of the keys it names were never destroyed")
    if p.keys.live_key_count(d.customer_id):
        raise StatementInvalid("keys of this customer exist again")
    held = {s.kind: s.plaintext_held(d.customer_id) for s in all_sources(p.sources())}
    if any(held.values()):
        kinds = ", ".join(kind for kind, n in held.items() if n)
        raise StatementInvalid(f"views hold personal data of this customer again: {kinds}")
    if d.unreadable_events != p.keys.sealed_event_count(d.customer_id):
        raise StatementInvalid("the number of unreadable events does not match the database")
    return signed


def verify_statement_main(settings: Settings, path: Path) -> int:
    with platform(settings) as p:
        signed = verify_statement(p, path)
    d = signed.document
    print(
        f"ok: statement for customer {d.customer_id} is signed by {d.signing_key}, and its claims"
        f" hold: {len(d.destroyed_key_ids)} keys destroyed, no view holds its personal data"
    )
    return 0


# Individual erasure


def erase_main(
    settings: Settings, *, customer_id: UUID | None, contact: bool, login: str | None
) -> int:
    with platform(settings) as p:
        if login is not None:
            user = p.accounts.user_by_login(login)
            tenant = user.customer_id
            if tenant is None:
                tenant = PLATFORM_TENANT
            subject = f"user/{user.id}"
        elif contact and customer_id is not None:
            p.accounts.customer(customer_id)
            tenant, subject = customer_id, f"contact/{customer_id}"
        else:
            raise InvalidInput("say whose data to erase: --login LOGIN, or --customer ID --contact")
        key_ids = p.privacy.erase_subject(
            tenant, subject, "request of the data subject (GDPR art. 17)"
        )
        p.views.catch_up()
    print(f"erased {subject}: {len(key_ids)} key(s) destroyed")
    return 0


# Lawful disclosure


def disclose_main(
    settings: Settings,
    customer_id: UUID,
    *,
    start: date,
    end: date,
    authority: str,
    legal_basis: str,
    out: Path,
) -> int:
    with platform(settings) as p:
        p.accounts.customer(customer_id)
        begin = datetime.combine(start, time.min, UTC)
        finish = datetime.combine(end, time.min, UTC) + timedelta(days=1)
        if end < start:
            raise InvalidInput("--to lies before --from", field="to")
        records = TrafficRecords(p.sources()).export(customer_id, begin, finish)
        manifest = {
            "customer_id": str(customer_id),
            "authority": authority,
            "legal_basis": legal_basis,
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "generated_at": p.clock.now().isoformat(),
            "records": len(records),
            "note": "traffic data still held; older data was erased after six months (R5)",
        }
        p.privacy.record_disclosure(
            customer_id,
            authority=authority,
            legal_basis=legal_basis,
            period_from=start,
            period_to=end,
            records=len(records),
            by=operator(),
        )
        write_export(out, manifest, {"traffic": records})
    print(f"disclosed {len(records)} traffic records to {authority}; written to {out}")
    return 0
