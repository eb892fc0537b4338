"""Charts drawn on the server as SVG: pages carry pictures without running any script."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import date, timedelta

from markupsafe import Markup, escape

from picasse.domain.messages import Channel, DeliveryStatus
from picasse.projections.traffic import DailyCount

# What a person asks about a delivery: did it arrive, is it still on its way, or not.
OUTCOMES: tuple[tuple[str, str, str], ...] = (  # key, label, colour
    ("delivered", "Delivered", "#2e9d6a"),
    ("pending", "In progress", "#8fa9cc"),
    ("failed", "Not delivered", "#d2534b"),
)
OUTCOME_OF = {
    DeliveryStatus.DELIVERED.value: "delivered",
    DeliveryStatus.QUEUED.value: "pending",
    DeliveryStatus.SENDING.value: "pending",
    DeliveryStatus.FAILED.value: "failed",
    DeliveryStatus.UNDELIVERED.value: "failed",
    DeliveryStatus.CANCELLED.value: "failed",  # not delivered: the customer withdrew it
}
CHANNELS: tuple[tuple[str, str], ...] = (
    (Channel.SMS.value, "SMS"),
    (Channel.EMAIL.value, "E-mail"),
    (Channel.VOICE.value, "Voice"),
)

WIDTH, HEIGHT = 960, 330
LEFT, RIGHT, TOP, BOTTOM = 62, 12, 58, 52  # margins around the panels
GAP = 26  # between panels
INK, MUTED, GRID = "#1f2933", "#616e7c", "#e4e7eb"
FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, DejaVu Sans, sans-serif'"


def outcome_totals(counts: Iterable[DailyCount]) -> Counter[str]:
    """Deliveries by outcome (delivered / pending / failed) over all the rows given."""
    totals: Counter[str] = Counter()
    for row in counts:
        totals[OUTCOME_OF.get(row.status, "pending")] += row.count
    return totals


def deliveries_chart(counts: Sequence[DailyCount], first: date, last: date) -> Markup:
    """Messages per day (first..last, UTC; one per recipient) as a stacked-bar panel per channel.

    The panels share one scale, so a channel's bars can be compared with another's.
    """
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    grid: dict[tuple[str, date], Counter[str]] = {}
    for row in counts:
        cell = grid.setdefault((row.channel, row.day), Counter())
        cell[OUTCOME_OF.get(row.status, "pending")] += row.count
    tallest = max((sum(cell.values()) for cell in grid.values()), default=0)
    top, step = _scale(tallest)

    plot_h = HEIGHT - TOP - BOTTOM
    panel_w = (WIDTH - LEFT - RIGHT - GAP * (len(CHANNELS) - 1)) / len(CHANNELS)
    slot = panel_w / len(days)
    bar_w = max(2.0, slot * 0.72)

    def y(value: float) -> float:
        return TOP + plot_h - plot_h * value / top

    total = sum(sum(cell.values()) for cell in grid.values())
    title = "Messages per day by channel and outcome"
    summary = (
        f"{total} messages (one per recipient) from {first:%d %b} to {last:%d %b %Y} (UTC); "
        + "; ".join(
            f"{label}: {sum(sum(c.values()) for (ch, _), c in grid.items() if ch == channel)}"
            for channel, label in CHANNELS
        )
    )
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' class='chart' viewBox='0 0 {WIDTH} {HEIGHT}'"
        f" width='{WIDTH}' height='{HEIGHT}' role='img' aria-labelledby='chart-title chart-desc'"
        f" data-chart='deliveries-per-day' {FONT}>",
        f"<title id='chart-title'>{escape(title)}</title>",
        f"<desc id='chart-desc'>{escape(summary)}</desc>",
    ]
    out += _legend()
    # The shared scale: gridlines across all panels, numbers on the left.
    for value in range(0, top + 1, step):
        out.append(
            f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y(value):.1f}' y2='{y(value):.1f}'"
            f" stroke='{GRID}' stroke-width='1'/>"
        )
        out.append(
            f"<text x='{LEFT - 8}' y='{y(value) + 4:.1f}' text-anchor='end' font-size='11'"
            f" fill='{MUTED}'>{value}</text>"
        )
    mid = TOP + plot_h / 2
    out.append(
        f"<text transform='translate(16 {mid:.1f}) rotate(-90)' text-anchor='middle'"
        f" font-size='12' fill='{MUTED}'>messages per day</text>"
    )
    for number, (channel, label) in enumerate(CHANNELS):
        x0 = LEFT + number * (panel_w + GAP)
        channel_total = sum(sum(c.values()) for (ch, _), c in grid.items() if ch == channel)
        out.append(
            f"<text x='{x0:.1f}' y='{TOP - 12}' font-size='13' font-weight='600' fill='{INK}'>"
            f"{escape(label)} <tspan fill='{MUTED}' font-weight='400'>· {channel_total}</tspan>"
            "</text>"
        )
        out.append(
            f"<line x1='{x0:.1f}' x2='{x0 + panel_w:.1f}' y1='{y(0):.1f}' y2='{y(0):.1f}'"
            f" stroke='{MUTED}' stroke-width='1'/>"
        )
        for index, day in enumerate(days):
            cell = grid.get((channel, day), Counter())
            bx = x0 + index * slot + (slot - bar_w) / 2
            out.append(_bar(channel, label, day, cell, bx, bar_w, y))
            if index % 2 == (len(days) - 1) % 2:  # every other day, ending on the last
                weight = " font-weight='700'" if day == last else ""
                out.append(
                    f"<text x='{bx + bar_w / 2:.1f}' y='{y(0) + 15:.1f}' text-anchor='middle'"
                    f" font-size='10' fill='{MUTED}'{weight}>{day.day}</text>"
                )
    out.append(
        f"<text x='{LEFT + (WIDTH - LEFT - RIGHT) / 2:.1f}' y='{HEIGHT - 10}' text-anchor='middle'"
        f" font-size='12' fill='{MUTED}'>day of the month, {first:%d %b} to {last:%d %b %Y}"
        " (UTC)</text>"
    )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text put in above is escaped


def _bar(
    channel: str,
    label: str,
    day: date,
    cell: Counter[str],
    x: float,
    width: float,
    y: Callable[[float], float],
) -> str:
    parts = [f"<g class='bar' data-channel='{channel}' data-day='{day.isoformat()}'>"]
    described = ", ".join(f"{cell[key]} {name.lower()}" for key, name, _ in OUTCOMES if cell[key])
    tip = f"{day:%a %d %b}, {label}: {described or 'nothing sent'}"
    parts.append(f"<title>{escape(tip)}</title>")
    base = 0
    for key, _, colour in OUTCOMES:
        if not cell[key]:
            continue
        top, bottom = y(base + cell[key]), y(base)
        parts.append(
            f"<rect class='segment' data-outcome='{key}' x='{x:.1f}' y='{top:.1f}'"
            f" width='{width:.1f}' height='{bottom - top:.1f}' fill='{colour}' rx='1.5'/>"
        )
        base += cell[key]
    parts.append("</g>")
    return "".join(parts)


def _legend() -> list[str]:
    out = []
    x = float(LEFT)
    for _, label, colour in OUTCOMES:
        out.append(
            f"<rect x='{x:.1f}' y='12' width='12' height='12' rx='2' fill='{colour}'/>"
            f"<text x='{x + 18:.1f}' y='22' font-size='12' fill='{INK}'>{escape(label)}</text>"
        )
        x += 18 + 8 * len(label) + 22
    return out


def _scale(tallest: int) -> tuple[int, int]:
    """A round top for the axis and the step between its gridlines (1, 2 or 5 times a power of ten)."""
    if tallest <= 4:
        return 4, 1
    raw = tallest / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return int(step * math.ceil(tallest / step)), int(step)
