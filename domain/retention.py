"""How long personal data is kept, and why: the periods are configuration, the reasons law.

Which kinds a period governs, its default and the setting that changes it all come from
the registry of personal data (`domain/personal.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from picasse.domain.personal import (
    DEFAULT_TRAFFIC_MONTHS,
    TRAFFIC_RETENTION_SETTING,
    Trigger,
    kinds_erased_on,
)

__all__ = [
    "DEFAULT_TRAFFIC_MONTHS",
    "RetentionPeriod",
    "fiscal_retention",
    "retention_periods",
    "traffic_retention",
]


class RetentionPeriod(msgspec.Struct, frozen=True):
    kinds: tuple[str, ...]  # the personal data kinds (subject key kinds) it governs
    months: int
    reason: str
    setting: str | None = None  # the environment variable that changes `months`


def retention_periods(months_by_setting: Mapping[str, int] | None = None) -> list[RetentionPeriod]:
    """One period per retention the registry declares for kinds erased by retention, its
    months as set (by setting name) or the registry's default."""
    given = months_by_setting or {}
    periods: dict[tuple[str | None, int, str], list[str]] = {}
    for kind in kinds_erased_on(Trigger.RETENTION):
        r = kind.retention
        if r.months is None:
            raise ValueError(f"kind {kind.kind!r} is erased by retention but has no period")
        periods.setdefault((r.setting, r.months, r.reason), []).append(kind.kind)
    return [
        RetentionPeriod(
            kinds=tuple(kinds),
            months=given.get(setting, default) if setting else default,
            reason=reason,
            setting=setting,
        )
        for (setting, default, reason), kinds in periods.items()
    ]


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
