"""How long personal data is kept, and why: the periods are configuration, the reasons law."""

from __future__ import annotations

import msgspec


class RetentionPeriod(msgspec.Struct, frozen=True):
    kinds: tuple[str, ...]  # the personal data kinds (subject key kinds) it governs
    months: int
    reason: str


DEFAULT_TRAFFIC_MONTHS = 6


def traffic_retention(months: int = DEFAULT_TRAFFIC_MONTHS) -> RetentionPeriod:
    return RetentionPeriod(
        kinds=("traffic", "content"),
        months=months,
        reason=(
            "R5: traffic data (who sent when to which numbers and addresses) and message"
            " content are kept six months for delivery, billing and complaints, then erased"
        ),
    )


def months_before(month: str, count: int) -> str:
    """'2026-11' minus 6 → '2026-05'."""
    year, number = (int(part) for part in month.split("-"))
    total = year * 12 + (number - 1) - count
    return f"{total // 12:04d}-{total % 12 + 1:02d}"


def expired(subject_month: str, current_month: str, period: RetentionPeriod) -> bool:
    """A month's keys go once the month lies `months` or more before the current one."""
    return subject_month <= months_before(current_month, period.months)
