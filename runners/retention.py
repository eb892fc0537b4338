"""`picasse retention run`: destroys traffic and content keys of months past the retention period (R5)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from picasse.adapters.postgres.keystore import PostgresKeyStore
from picasse.domain.messages import traffic_month
from picasse.domain.privacy import Privacy
from picasse.domain.retention import RetentionPeriod, expired, months_before, traffic_retention
from picasse.runners import servers
from picasse.runners.settings import Settings
from picasse.runners.signals import stop_requested
from picasse.runners.wiring import ensure_master_key, open_privacy


def due(keys: PostgresKeyStore, period: RetentionPeriod, now: datetime) -> list[tuple[UUID, str]]:
    """The (customer, subject) keys whose month is past the period."""
    current = traffic_month(now)
    found = keys.subjects_with_prefix([f"{kind}/" for kind in period.kinds])
    return [
        (tenant, subject)
        for tenant, subject in found
        if expired(subject.partition("/")[2], current, period)
    ]


def run_retention(
    privacy: Privacy, period: RetentionPeriod, *, now: datetime, dry_run: bool
) -> list[tuple[UUID, str]]:
    keys: PostgresKeyStore = privacy.factory.keys  # type: ignore[attr-defined]
    erased = due(keys, period, now)
    if not dry_run:
        for tenant, subject in erased:
            privacy.erase_subject(tenant, subject, f"retention: {period.reason}")
    privacy.record_retention_run(
        months_before(traffic_month(now), period.months),
        dry_run,
        [f"{tenant}/{subject}" for tenant, subject in erased],
        period.reason,
    )
    return erased


def main(
    settings: Settings,
    *,
    dry_run: bool = False,
    as_of: datetime | None = None,
    every: float | None = None,
) -> int:
    database_url = servers.postgres_url(settings)
    ensure_master_key(settings)
    period = traffic_retention(settings.traffic_retention_months)
    privacy = open_privacy(settings, database_url)
    clock: Callable[[], datetime] = (lambda: as_of) if as_of else (lambda: datetime.now(UTC))
    try:
        if every is None:
            _report(run_retention(privacy, period, now=clock(), dry_run=dry_run), period, dry_run)
            return 0
        with stop_requested() as stop:
            print("retention running", flush=True)
            while not stop.requested:
                run_retention(privacy, period, now=clock(), dry_run=dry_run)
                stop.wait(every)
            return 0
    finally:
        privacy.close()


def _report(erased: list[tuple[UUID, str]], period: RetentionPeriod, dry_run: bool) -> None:
    verb = "would erase" if dry_run else "erased"
    for tenant, subject in erased:
        print(f"{verb} {subject} of customer {tenant}")
    print(f"{verb} {len(erased)} month key(s); retention {period.months} months: {period.reason}")
