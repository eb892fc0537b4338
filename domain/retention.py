"""How long personal data is kept, and why: the periods are configuration, the reasons law.

Which kinds a period governs, its default and the setting that changes it all come from
the registry of personal data (`domain/personal.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

import msgspec

from picasse.domain.personal import (
    DEFAULT_PING_DAYS,
    DEFAULT_TRAFFIC_MONTHS,
    PING_RETENTION_SETTING,
    TRAFFIC_RETENTION_SETTING,
    PersonalDataKind,
    Trigger,
    kinds_erased_on,
)

__all__ = [
    "DEFAULT_TRAFFIC_MONTHS",
    "RetentionPeriod",
    "fiscal_retention",
    "ping_retention",
    "retention_periods",
    "traffic_retention",
]


class RetentionPeriod(msgspec.Struct, frozen=True):
    kinds: tuple[str, ...]  # the personal data kinds (subject key kinds) it governs
    months: int  # 0 for a period counted in days
    reason: str
    setting: str | None = None  # the environment variable that changes `months` or `days`
    days: int = 0  # > 0: counted in days, one key per day

    @property
    def length(self) -> str:
        return f"{self.days} days" if self.days else f"{self.months} months"


def retention_periods(given: Mapping[str, int] | None = None) -> list[RetentionPeriod]:
    """One period per retention the registry declares for kinds erased by retention, its
    months or days as set (by setting name) or the registry's default."""
    chosen = given or {}
    periods: dict[tuple[str | None, bool, int, str], list[str]] = {}
    for kind in kinds_erased_on(Trigger.RETENTION):
        r = kind.retention
        if not dated_keys(kind):  # kept per subject after its own event: its own job
            continue
        if r.months is None and r.days is None:
            raise ValueError(f"kind {kind.kind!r} is erased by retention but has no period")
        in_days = r.days is not None
        default = r.days if r.days is not None else r.months
        assert default is not None
        periods.setdefault((r.setting, in_days, default, r.reason), []).append(kind.kind)
    out = []
    for (setting, in_days, default, reason), kinds in periods.items():
        length = chosen.get(setting, default) if setting else default
        out.append(
            RetentionPeriod(
                kinds=tuple(kinds),
                months=0 if in_days else length,
                days=length if in_days else 0,
                reason=reason,
                setting=setting,
            )
        )
    return out


def dated_keys(kind: PersonalDataKind) -> bool:
    """Whether a kind's keys are named by year, month or day (`traffic/<YYYY-MM>`), so that a
    period destroys whole keys by their names; else each subject's key is kept for the
    period after its own event (`visitor/<visitor id>`, after the visit)."""
    return kind.subject.endswith(("<YYYY>", "<YYYY-MM>", "<YYYY-MM-DD>"))


def ping_retention(days: int = DEFAULT_PING_DAYS) -> RetentionPeriod:
    """The period of raw location pings (30 days by default, R8)."""
    (period,) = [
        p
        for p in retention_periods({PING_RETENTION_SETTING: days})
        if p.setting == PING_RETENTION_SETTING
    ]
    return period


def cutoff(period: RetentionPeriod, now: datetime) -> str:
    """The newest month or day whose keys the period destroys, as of `now`."""
    if period.days:
        return (now.date() - timedelta(days=period.days)).isoformat()
    return months_before(f"{now.year:04d}-{now.month:02d}", period.months)


def subject_expired(subject: str, now: datetime, period: RetentionPeriod) -> bool:
    """Whether a subject key of the period's kinds (`traffic/2026-05`, `fiscal/2026`,
    `location/<user>/2026-11-02`) is past it as of `now`."""
    tail = subject.rpartition("/")[2]
    if period.days:
        try:
            return date.fromisoformat(tail).isoformat() <= cutoff(period, now)
        except ValueError:
            return False
    return expired(tail, f"{now.year:04d}-{now.month:02d}", period)


def traffic_retention(months: int = DEFAULT_TRAFFIC_MONTHS) -> RetentionPeriod:
    """The period of the kinds kept as long as traffic (six months by default, R5)."""
    (period,) = [
        p
        for p in retention_periods({TRAFFIC_RETENTION_SETTING: months})
        if p.setting == TRAFFIC_RETENTION_SETTING
    ]
    return period


def months_before(month: str, count: int) -> str:
    """'2026-11' minus 6 → '2026-05'."""
    year, number = (int(part) for part in month.split("-"))
    total = year * 12 + (number - 1) - count
    return f"{total // 12:04d}-{total % 12 + 1:02d}"


def expired(subject_month: str, current_month: str, period: RetentionPeriod) -> bool:
    """A month's keys go once the month lies `months` or more before the current one; a
    year's (a fiscal year, `YYYY`) once that many months have passed since its end."""
    if len(subject_month) == 4 and subject_month.isdigit():
        subject_month = f"{int(subject_month) + 1:04d}-01"
    return subject_month <= months_before(current_month, period.months)


def fiscal_retention() -> RetentionPeriod:
    """The period of invoices' billing names and addresses (seven years, tax law)."""
    (period,) = [p for p in retention_periods() if "fiscal" in p.kinds]
    return period
