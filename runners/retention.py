"""`picasse retention run`: destroys traffic and content keys of months past the retention
period (R5), and the fiscal keys of years whose seven years of tax law are over.

The same work runs every hour as a periodic job of `picasse scheduler` (`RetentionJob`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from picasse.adapters.postgres.keystore import PostgresKeyStore
from picasse.domain.errors import InvalidInput
from picasse.domain.messages import traffic_month
from picasse.domain.personal import Trigger
from picasse.domain.privacy import Privacy
from picasse.domain.retention import (
    RetentionPeriod,
    expired,
    fiscal_retention,
    months_before,
    traffic_retention,
)
from picasse.runners import servers
from picasse.runners.settings import Settings
from picasse.runners.wiring import clock_from, ensure_master_key, open_privacy, reach_database


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
        # One replacement of the wrapping keys for the whole run, not one per month key.
        with keys.batched_replacement():
            for tenant, subject in erased:
                privacy.erase_subject(
                    tenant, subject, f"retention: {period.reason}", trigger=Trigger.RETENTION
                )
    privacy.record_retention_run(
        months_before(traffic_month(now), period.months),
        dry_run,
        [f"{tenant}/{subject}" for tenant, subject in erased],
        period.reason,
    )
    return erased


class RetentionJob:
    """Retention as a periodic job of the scheduler: hourly, as of the scheduler's clock."""

    name = "retention"  # also the role: one process applies retention at a time
    every = timedelta(hours=1)

    def __init__(self, privacy: Privacy, period: RetentionPeriod, *more: RetentionPeriod) -> None:
        self.privacy = privacy
        self.period = period
        self.more = more  # other periods (the fiscal keys' seven years), applied after

    def run(self, now: datetime) -> str:
        erased = run_retention(self.privacy, self.period, now=now, dry_run=False)
        said = f"erased {len(erased)} month key(s); retention {self.period.months} months"
        for period in self.more:
            gone = run_retention(self.privacy, period, now=now, dry_run=False)
            said += f"; {len(gone)} {'/'.join(period.kinds)} key(s) of {period.months} months"
        return said


def main(settings: Settings, *, dry_run: bool = False, as_of: datetime | None = None) -> int:
    """Apply retention once, as of `as_of` or the clock's now."""
    clock = clock_from(settings)
    if as_of is not None and not dry_run and as_of > clock.now():
        # Applying the policy as of a future time would erase live traffic and content.
        raise InvalidInput(
            f"--as-of {as_of.isoformat()} lies in the future: give --dry-run to see what would"
            " be erased then",
            field="as_of",
        )
    database_url = servers.postgres_url(settings)
    reach_database(database_url)
    ensure_master_key(settings)
    period = traffic_retention(settings.traffic_retention_months)
    privacy = open_privacy(settings, database_url)
    try:
        now = as_of or clock.now()
        _report(run_retention(privacy, period, now=now, dry_run=dry_run), period, dry_run)
        fiscal = fiscal_retention()
        _report(run_retention(privacy, fiscal, now=now, dry_run=dry_run), fiscal, dry_run)
        return 0
    finally:
        privacy.close()


def _report(erased: list[tuple[UUID, str]], period: RetentionPeriod, dry_run: bool) -> None:
    verb = "would erase" if dry_run else "erased"
    for tenant, subject in erased:
        print(f"{verb} {subject} of customer {tenant}")
    what = "month" if "traffic" in period.kinds else "/".join(period.kinds)
    print(f"{verb} {len(erased)} {what} key(s); retention {period.months} months: {period.reason}")
