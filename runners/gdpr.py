"""`picasse gdpr …` and `picasse customers terminate`: export, erasure, statements, disclosure (R9, R10)."""

from __future__ import annotations

import getpass
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
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

from picasse.adapters.archive import (
    TargetExists,
    check_target,
    move_into_place,
    partial_path,
    write_export,
)
from picasse.adapters.clock import TEST_DATA_DIR_MARKER
from picasse.adapters.postgres.keystore import PostgresKeyStore
from picasse.adapters.postgres.store import factory_of
from picasse.adapters.signing import PlatformSigner
from picasse.adapters.statements import (
    SignedStatement,
    read,
    sha256_of,
    sign,
    write,
)
from picasse.adapters.statements import files as statement_files
from picasse.domain.access import OPERATOR
from picasse.domain.accounts import Accounts
from picasse.domain.application import projected
from picasse.domain.attendance import Attendance
from picasse.domain.billing import Billing, fiscal_tenant_id
from picasse.domain.clock import Clock
from picasse.domain.conferencing import conferences_in
from picasse.domain.errors import Conflict, InvalidInput
from picasse.domain.personal import PERSONAL_DATA_KINDS, Trigger
from picasse.domain.privacy import Privacy
from picasse.domain.sites import Sites
from picasse.domain.termination import Statement, Step, TerminationProgress, ViewCheck, canonical
from picasse.domain.users import PLATFORM_TENANT
from picasse.domain.visitors import Visitors
from picasse.projections.personal_data import Holdings, Sources, TrafficRecords, all_sources
from picasse.runners import servers
from picasse.runners.project import LiveViews, live_views
from picasse.runners.settings import Settings
from picasse.runners.wiring import (
    clock_from,
    ensure_master_key,
    open_accounts,
    open_privacy,
    reach_database,
    recording_eraser,
)

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
        return factory_of(self.privacy).keys

    def sources(self) -> Sources:
        return Sources(
            accounts=self.views.view("accounts"),
            traffic=self.views.view("traffic"),
            customer_events=lambda customer_id: self.accounts.events.get(customer_id),
            groups=self.groups,
            sites=Sites(clock=self.clock, sharing=self.accounts).sites,
            visitors=Visitors(clock=self.clock, sharing=self.accounts).visitors,
            attendance=Attendance(clock=self.clock, privacy=self.privacy, sharing=self.accounts),
            conferences=self.conferences,
            invoices=self.invoices,
            now=self.clock.now,
        )

    def conferences(self, customer_id: UUID) -> list[Any]:
        """The customer's conferences, from its catalogue of them in the log."""
        return conferences_in(self.accounts.repository, customer_id)

    def invoices(self, customer_id: UUID) -> list[Any]:
        billing = Billing(clock=self.clock, sharing=self.accounts)
        return billing.invoices(customer_id, by=OPERATOR)

    def groups(self, customer_id: UUID) -> list[Any]:
        """The customer's recipient groups: one subject key each, so the key store lists
        them (while they are readable)."""
        return [
            self.accounts.repository.get(UUID(subject.partition("/")[2]), projector_func=projected)
            for tenant, subject in self.keys.subjects_with_prefix(["group/"])
            if tenant == customer_id
        ]

    def signer(self) -> PlatformSigner:
        return PlatformSigner.from_file(self.settings.signing_key_path, create=True)


@contextmanager
def platform(settings: Settings) -> Iterator[Platform]:
    database_url = servers.postgres_url(settings)
    reach_database(database_url)
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


class ExportContent(msgspec.Struct, frozen=True):
    manifest: dict[str, Any]
    sections: dict[str, list[dict[str, Any]]]

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(records) for kind, records in self.sections.items()}


def collect_export(p: Platform, customer_id: UUID, *, purpose: str) -> ExportContent:
    """Every kind of personal data held for the customer, opened, with a manifest."""
    p.accounts.customer(customer_id)  # NotFound for an unknown customer
    p.views.catch_up()  # the views hold every write made so far
    sources = all_sources(p.sources())
    sections: dict[str, list[dict[str, Any]]] = {}
    with _progress() as progress:
        task = progress.add_task("exporting…", total=len(sources))
        for source in sources:
            progress.update(task, description=f"exporting {source.name}…")
            sections[source.name] = source.export(customer_id)
            progress.advance(task)
    manifest = {
        "customer_id": str(customer_id),
        "generated_at": p.clock.now().isoformat(),
        "purpose": purpose,
        "counts": {kind: len(records) for kind, records in sections.items()},
        "kinds": {
            name: {
                "description": kind.description,
                "purpose": kind.purpose,
                "sections": list(kind.export),
                **({"not_exported": kind.not_exported} if kind.not_exported else {}),
            }
            for name, kind in PERSONAL_DATA_KINDS.items()
        },
        "period": "everything still held; traffic data is kept six months (R5)",
    }
    return ExportContent(manifest, sections)


def export_customer(
    p: Platform, customer_id: UUID, out: Path, *, purpose: str, by: str, replace: bool = False
) -> str:
    """Write the customer's personal data to `out`; returns the archive's sha256."""
    check_target(out, replace=replace)
    content = collect_export(p, customer_id, purpose=purpose)
    write_export(out, content.manifest, content.sections, replace=replace)
    p.privacy.record_export(customer_id, purpose, content.counts, by)
    return sha256_of(out)


def export_main(settings: Settings, customer_id: UUID, out: Path, *, force: bool = False) -> int:
    check_target(out, replace=force)  # before connecting: a wrong --out is told at once
    with platform(settings) as p:
        digest = export_customer(
            p, customer_id, out, purpose="portability", by=operator(), replace=force
        )
    print(f"exported to {out} (sha256 {digest})")
    return 0


# Termination: the domain's `Termination` says which step is next; here is only its I/O.

EXPORT_FILE = "export.zip"
TERMINATION_REASON = "termination of the subscription (R10)"


class Terminated(msgspec.Struct, frozen=True):
    """What a run of `customers terminate` ended with."""

    signed: SignedStatement
    resumed: bool  # an earlier run had started it
    already_done: bool  # an earlier run had finished it: only the files were written
    notes: list[str]


def fault_injector(settings: Settings) -> Callable[[str], None]:
    """For tests only: kill this process (SIGKILL, no clean-up) once the named step is
    recorded; honoured only in a data dir marked as a test one."""
    step = settings.fault_after_step
    if not step or not (settings.data_dir / TEST_DATA_DIR_MARKER).is_file():
        return lambda done: None

    def fault(done: str) -> None:
        if done == step:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return fault


def terminate_customer(
    p: Platform,
    customer_id: UUID,
    out_dir: Path,
    *,
    export: bool,
    by: str,
    force: bool = False,
    fault: Callable[[str], None] = lambda done: None,
) -> Terminated:
    """Takes the termination from wherever it stands to its signed statement, then writes
    the statement (and names the export) in `out_dir`."""
    p.accounts.customer(customer_id)  # NotFound for an unknown customer
    before = p.privacy.termination(customer_id)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _refuse_foreign_files(out_dir, before, force)
    progress = p.privacy.start_termination(customer_id, export=export, by=by)
    notes: list[str] = []
    last_write: int | None = None
    while (step := progress.next_step) is not None:
        if step is Step.EXPORT or (step is Step.KEYS and progress.export):
            # The keys go only once DIR holds the export recorded (written again if lost).
            _ensure_export(p, progress, out_dir / EXPORT_FILE, by=by, force=force, fault=fault)
            if step is Step.EXPORT:
                progress = _progress_of(p, customer_id)
                continue
        if step is Step.SUBSCRIPTION:
            last_write = p.privacy.terminate_subscription(customer_id)
        elif step is Step.KEYS:
            # Recordings stay at the provider, their references sealed under keys about
            # to go: ask it to delete them first (the request is recorded).
            recording_eraser(p.settings, p.privacy).delete_recordings(
                customer_id, TERMINATION_REASON
            )
            with _progress() as bar:
                bar.add_task("destroying keys…")
                last_write = p.privacy.destroy_customer_keys(customer_id, TERMINATION_REASON)
        elif step is Step.VIEWS:
            with _progress() as bar:
                bar.add_task("waiting for the views to forget…")
                p.views.catch_up(last_write)
                _vacuum_views(p)
            held = Holdings(p.sources()).per_kind(customer_id)
            checks = [ViewCheck(kind, n) for kind, n in held.items()]
            last_write = p.privacy.record_views_caught_up(customer_id, checks)
        elif step is Step.STATEMENT:
            signer = p.signer()
            draft = p.privacy.draft_statement(customer_id, signer.key_id)
            signed = sign(draft, signer)
            last_write = p.privacy.record_statement(customer_id, draft, signed.signature)
        fault(step.value)
        progress = _progress_of(p, customer_id)
    if progress.export:
        notes += _place_recorded_export(progress, out_dir / EXPORT_FILE, force=force)
    if progress.statement is None or progress.signature is None:
        raise Conflict(f"the termination of customer {customer_id} holds no statement")
    signed = SignedStatement(progress.statement, progress.signature)
    write(signed, out_dir, replace=force)
    return Terminated(
        signed,
        resumed=before is not None and before.next_step is not None,
        already_done=before is not None and before.next_step is None,
        notes=notes,
    )


def _progress_of(p: Platform, customer_id: UUID) -> TerminationProgress:
    progress = p.privacy.termination(customer_id)
    if progress is None:
        raise Conflict(f"the termination of customer {customer_id} has vanished")
    return progress


def _matches(path: Path, sha256: str | None) -> bool:
    return (
        sha256 is not None
        and not path.is_symlink()
        and path.is_file()
        and sha256_of(path) == sha256
    )


def _refuse_foreign_files(out_dir: Path, progress: TerminationProgress | None, force: bool) -> None:
    """Before any step: a file in DIR that is not this termination's needs --force."""
    if force:
        return
    # The bytes each file of ours holds; None: no statement signed yet, so any file is foreign.
    ours: Mapping[str, bytes | None] = {"statement.json": None, "statement.html": None}
    if progress is not None and progress.statement is not None and progress.signature is not None:
        ours = statement_files(SignedStatement(progress.statement, progress.signature))
    foreign = [
        name
        for name, content in ours.items()
        if os.path.lexists(out_dir / name)
        and (
            content is None
            or (out_dir / name).is_symlink()
            or (out_dir / name).read_bytes() != content
        )
    ]
    export = out_dir / EXPORT_FILE
    recorded = None if progress is None else progress.export_sha256
    if os.path.lexists(export) and not _matches(export, recorded):
        foreign.insert(0, EXPORT_FILE)
    if foreign:
        raise TargetExists(
            f"{out_dir} already holds {', '.join(foreign)}, not written by this termination;"
            " move them away or give --force to replace them"
        )


def _ensure_export(
    p: Platform,
    progress: TerminationProgress,
    path: Path,
    *,
    by: str,
    force: bool,
    fault: Callable[[str], None],
) -> None:
    """Before the keys go: the export recorded is the one in DIR, or it is written again."""
    customer_id = progress.customer_id
    if _matches(path, progress.export_sha256):
        return
    partial = partial_path(path)
    if _matches(partial, progress.export_sha256):
        move_into_place(partial, path, replace=force)  # recorded, then interrupted
        return
    p.privacy.may_write_export(customer_id)
    content = collect_export(p, customer_id, purpose="termination")

    def record(complete: Path) -> None:
        p.privacy.record_termination_export(customer_id, sha256_of(complete), content.counts, by)
        fault(Step.EXPORT.value)

    write_export(path, content.manifest, content.sections, replace=force, before_move=record)


def _place_recorded_export(progress: TerminationProgress, path: Path, *, force: bool) -> list[str]:
    """Once the keys are gone the export can only be the recorded one, or be missing."""
    if _matches(path, progress.export_sha256):
        return []
    partial = partial_path(path)
    if _matches(partial, progress.export_sha256):
        move_into_place(partial, path, replace=force)
        return []
    what = "is not the one recorded" if os.path.lexists(path) else "is missing"
    recorded = f" (sha256 {progress.export_sha256})" if progress.export_sha256 else ""
    return [
        f"{path} {what}{recorded}, and it cannot be made again: the customer's keys were"
        " destroyed, so its personal data can no longer be read"
    ]


def _vacuum_views(p: Platform) -> None:
    """Purged rows linger in table pages until vacuumed; plaintext should not."""
    for name in p.views.names:
        view = p.views.view(name)
        with view.datastore.get_connection() as conn:
            for table in view.t.values():
                conn.execute(sql.SQL("VACUUM {}").format(table))


def terminate_main(
    settings: Settings, customer_id: UUID, out_dir: Path, *, export: bool, force: bool = False
) -> int:
    with platform(settings) as p:
        done = terminate_customer(
            p,
            customer_id,
            out_dir,
            export=export,
            by=operator(),
            force=force,
            fault=fault_injector(settings),
        )
    d = done.signed.document
    statement = out_dir / "statement.json"
    if done.already_done:
        print(
            f"customer {customer_id} was terminated and erased already; its statement was"
            f" written to {statement} again"
        )
    else:
        print(
            f"customer {customer_id} terminated and erased{' (resumed)' if done.resumed else ''}:"
            f" {len(d.destroyed_key_ids)} keys destroyed, {d.unreadable_events} events now"
            f" unreadable; statement in {statement}"
        )
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
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
    if d.key_epoch is not None and not p.keys.epoch_is_gone(d.key_epoch.epoch_id):
        raise StatementInvalid(
            f"key epoch {d.key_epoch.epoch_id} it names as destroyed still exists (its key file"
            " or a tenant key wrapped under it)"
        )
    p.views.catch_up()
    held = Holdings(p.sources()).per_kind(d.customer_id)
    if any(held.values()):
        kinds = ", ".join(kind for kind, n in held.items() if n)
        raise StatementInvalid(f"views hold personal data of this customer again: {kinds}")
    if d.unreadable_events != p.keys.sealed_event_count(d.customer_id):
        raise StatementInvalid("the number of unreadable events does not match the database")
    _check_kept(p, d)
    return signed


def _check_kept(p: Platform, d: Statement) -> None:
    """What the statement says is kept under a legal obligation is kept, readable, until the
    day it names (after which the retention run destroys it), and is all there is."""
    kept = {k.key: k for k in d.kept_under_legal_obligation if k.key is not None}
    fiscal = fiscal_tenant_id(d.customer_id)
    live = {
        subject for tenant, subject in p.keys.subjects_with_prefix(["fiscal/"]) if tenant == fiscal
    }
    if unnamed := live - kept.keys():
        raise StatementInvalid(f"keys it does not name are kept: {', '.join(sorted(unnamed))}")
    today = p.clock.now().date()
    billing = Billing(clock=p.clock, sharing=p.accounts)
    for key, record in kept.items():
        if record.until is None or today >= date.fromisoformat(record.until):
            continue  # its time is over: the retention run destroys it
        if key not in live:
            raise StatementInvalid(f"{key} it says is kept until {record.until} is gone already")
        for ident in record.invoices:
            if billing.invoice(ident, by=OPERATOR).billed_to_name is None:
                raise StatementInvalid(f"invoice {ident} it says is kept cannot be read")


def verify_statement_main(settings: Settings, path: Path) -> int:
    with platform(settings) as p:
        signed = verify_statement(p, path)
    d = signed.document
    print(
        f"ok: statement for customer {d.customer_id} is signed by {d.signing_key}, and its claims"
        f" hold: {len(d.destroyed_key_ids)} keys destroyed, no view holds its personal data"
        + (
            f", key epoch {d.key_epoch.epoch_id} is gone"
            if d.key_epoch is not None
            else " (the statement predates key epochs)"
        )
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
        done = p.privacy.erase_subject(
            tenant, subject, "request of the data subject (GDPR art. 17)", trigger=Trigger.REQUEST
        )
        p.views.catch_up(done.notification_id)
        # A customer's user erased: was that its last admin who could act?
        customers_user = login is not None and tenant != PLATFORM_TENANT
        orphaned = customers_user and not p.accounts.has_active_admin(tenant)
    print(f"erased {subject}: {len(done.key_ids)} key(s) destroyed")
    if orphaned:
        print(
            f"customer {tenant} has no admin who can log in now: add one with `picasse users"
            f" add --customer {tenant} --login LOGIN --role customer_admin --email ADDRESS`"
        )
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
    force: bool = False,
) -> int:
    check_target(out, replace=force)  # refused before anything is recorded
    with platform(settings) as p:
        p.accounts.customer(customer_id)
        begin = datetime.combine(start, time.min, UTC)
        finish = datetime.combine(end, time.min, UTC) + timedelta(days=1)
        if end < start:
            raise InvalidInput("--to lies before --from", field="to")
        p.views.catch_up()
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
        write_export(out, manifest, {"traffic": records}, replace=force)
    print(f"disclosed {len(records)} traffic records to {authority}; written to {out}")
    return 0
