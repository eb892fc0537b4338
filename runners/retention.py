"""`picasse retention run`: destroys the keys of months (traffic, content: R5) and days (location
pings: R8) past their retention periods, every period the registry declares, and the keys of
visitors whose retention after their visit is over (R13).

The same work runs every hour as periodic jobs of `picasse scheduler` (`RetentionJob`,
`VisitorRetentionJob`). Retention also removes the SMPP provider's records of SMSC ids
whose receipt never came (`adapters/postgres/smsc_ids.py`, after `KEPT_FOR`): ids only,
no personal data, but nothing is kept for ever.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from picasse.adapters.postgres.keystore import PostgresKeyStore
from picasse.adapters.postgres.smsc_ids import KEPT_FOR, SmscIdTable
from picasse.adapters.postgres.store import factory_of
from picasse.domain.conferencing import Conferences
from picasse.domain.errors import InvalidInput
from picasse.domain.personal import VISITS, Trigger, subject_name
from picasse.domain.privacy import Privacy
from picasse.domain.retention import (
    RetentionPeriod,
    cutoff,
    retention_periods,
    subject_expired,
)
from picasse.domain.visitors import Visitors
from picasse.runners import servers
from picasse.runners.settings import Settings
from picasse.runners.wiring import (
    clock_from,
    ensure_master_key,
    open_privacy,
    reach_database,
    recording_eraser,
    smsc_id_table,
)


def due(keys: PostgresKeyStore, period: RetentionPeriod, now: datetime) -> list[tuple[UUID, str]]:
    """The (customer, subject) keys whose month or day is past the period."""
    found = keys.subjects_with_prefix([f"{kind}/" for kind in period.kinds])
    return [(tenant, subject) for tenant, subject in found if subject_expired(subject, now, period)]


def run_retention(
    privacy: Privacy,
    period: RetentionPeriod,
    *,
    now: datetime,
    dry_run: bool,
    recordings: Conferences | None = None,
) -> list[tuple[UUID, str]]:
    """`recordings`: asks the telephony provider to delete the recordings of each content
    month before its key goes (their references are sealed under it)."""
    keys = factory_of(privacy).keys
    erased = due(keys, period, now)
    if not dry_run and recordings is not None:
        for tenant, subject in erased:
            kind, _, month = subject.partition("/")
            if kind == "content":
                recordings.delete_recordings(tenant, f"retention: {period.reason}", month)
    if not dry_run:
        # One replacement of the wrapping keys for the whole run, not one per month key.
        with keys.batched_replacement():
            for tenant, subject in erased:
                privacy.erase_subject(
                    tenant, subject, f"retention: {period.reason}", trigger=Trigger.RETENTION
                )
    privacy.record_retention_run(
        cutoff(period, now),
        dry_run,
        [f"{tenant}/{subject}" for tenant, subject in erased],
        period.reason,
    )
    return erased


def periods_of(settings: Settings) -> list[RetentionPeriod]:
    """Every period the registry declares, at the lengths the settings give."""
    return retention_periods(
        {
            "PICASSE_TRAFFIC_RETENTION_MONTHS": settings.traffic_retention_months,
            "PICASSE_PING_RETENTION_DAYS": settings.ping_retention_days,
        }
    )


class RetentionJob:
    """Retention as a periodic job of the scheduler: hourly, as of the scheduler's clock."""

    name = "retention"  # also the role: one process applies retention at a time
    every = timedelta(hours=1)

    def __init__(
        self,
        privacy: Privacy,
        periods: list[RetentionPeriod],
        recordings: Conferences | None = None,
        smsc_ids: SmscIdTable | None = None,
    ) -> None:
        self.privacy = privacy
        self.periods = periods
        self.recordings = recordings
        self.smsc_ids = smsc_ids

    def run(self, now: datetime) -> str:
        done = []
        for period in self.periods:
            erased = run_retention(
                self.privacy, period, now=now, dry_run=False, recordings=self.recordings
            )
            done.append(
                f"erased {len(erased)} key(s) of {'/'.join(period.kinds)}"
                f" (retention {period.length})"
            )
        if self.smsc_ids is not None:
            done.append(_pruned(self.smsc_ids.prune(now)))
        return "; ".join(done)


def _pruned(count: int) -> str:
    return f"removed {count} SMSC id record(s) older than {KEPT_FOR.days} days"


def visitors_due(visitors: Visitors, now: datetime) -> list[tuple[UUID, UUID]]:
    """(customer, visitor) of every visitor whose key is live and whose retention is over."""
    keys = factory_of(visitors).keys
    tenants = sorted({tenant for tenant, _ in keys.subjects_with_prefix(["visitor/"])})
    return [(tenant, v) for tenant in tenants for v in visitors.past_retention(tenant, now)]


def run_visitor_retention(
    privacy: Privacy, visitors: Visitors, *, now: datetime, dry_run: bool
) -> list[tuple[UUID, UUID]]:
    """Destroys the key of each visitor past the retention its site set (default 28 days
    after the visit); the visit and its counts stay."""
    erased = visitors_due(visitors, now)
    if not dry_run and erased:
        keys = factory_of(privacy).keys
        with keys.batched_replacement():
            for tenant, visitor_id in erased:
                privacy.erase_subject(
                    tenant,
                    subject_name("visitor", visitor_id),
                    f"retention: {VISITS.reason}",
                    trigger=Trigger.RETENTION,
                )
        for _, visitor_id in erased:
            visitors.record_erased(visitor_id, "retention")
    return erased


class VisitorRetentionJob:
    """Visitors' retention as a periodic job of the scheduler: hourly, on its clock."""

    name = "visitor-retention"  # also the role: one process applies it at a time
    every = timedelta(hours=1)

    def __init__(self, privacy: Privacy, visitors: Visitors) -> None:
        self.privacy = privacy
        self.visitors = visitors

    def run(self, now: datetime) -> str:
        erased = run_visitor_retention(self.privacy, self.visitors, now=now, dry_run=False)
        return f"erased {len(erased)} visitor key(s)"


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
    privacy = open_privacy(settings, database_url)
    try:
        now = as_of or clock.now()
        recordings = recording_eraser(settings, privacy)
        for period in periods_of(settings):
            erased = run_retention(privacy, period, now=now, dry_run=dry_run, recordings=recordings)
            _report(erased, period, dry_run)
        if not dry_run:
            print(_pruned(smsc_id_table(privacy, clock).prune(now)))
        visitors = Visitors(clock=clock, sharing=privacy)
        gone = run_visitor_retention(privacy, visitors, now=now, dry_run=dry_run)
        for tenant, visitor_id in gone:
            print(
                f"{'would erase' if dry_run else 'erased'} visitor/{visitor_id} of customer {tenant}"
            )
        return 0
    finally:
        privacy.close()


def _report(erased: list[tuple[UUID, str]], period: RetentionPeriod, dry_run: bool) -> None:
    verb = "would erase" if dry_run else "erased"
    for tenant, subject in erased:
        print(f"{verb} {subject} of customer {tenant}")
    print(
        f"{verb} {len(erased)} key(s) of {'/'.join(period.kinds)}"
        f" (retention {period.length}): {period.reason}"
    )
