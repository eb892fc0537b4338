"""The customer's attendance pages under /app: a user's own consent, and for its admins who is
on which site now and everyone's hours per day, as a table and a chart drawn on the server.

No map and no coordinates: the pages read entries and exits only (R8).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect
from markupsafe import Markup, escape

from picasse.adapters.http.pages import (
    SEE_OTHER,
    Dashboard,
    PageGuard,
    _caller,
    _today,
    caller_page,
)
from picasse.domain.access import Viewer
from picasse.domain.attendance import Attendance, OnSite
from picasse.domain.errors import DomainError

CHART_DAYS = 7
COLOURS = ("#3b6fb6", "#2e9d6a", "#d2834b", "#8a5cb8", "#c2455b", "#4aa3a8", "#8c7a3a", "#616e7c")


def _sees_own_attendance(viewer: Viewer) -> bool:
    return viewer.sees_attendance_of(viewer.customer_id)


admins_see = PageGuard(_sees_own_attendance, "attendance is for the customer's admins")


def _own(request: Request[Any, Any, Any]) -> UUID:
    customer_id = _caller(request).customer_id
    if customer_id is None:  # customers_only, on the router, let none such in
        raise DomainError("these pages are for a customer's users")
    return customer_id


@get("/location", include_in_schema=False, sync_to_thread=True)
def location_page(
    request: Request[Any, Any, Any], attendance: NamedDependency[Attendance]
) -> Response[str]:
    """The caller's own consent to location processing: give it or withdraw it."""
    customer_id = _own(request)
    return caller_page(
        request,
        "app_location.html",
        on=attendance.is_on(customer_id),
        consent=attendance.consent(customer_id, _caller(request).user_id),
    )


@post("/location/consent", include_in_schema=False, sync_to_thread=True)
def give_consent_page(
    request: Request[Any, Any, Any], attendance: NamedDependency[Attendance]
) -> Response[Any]:
    attendance.give_consent(_own(request), _caller(request).user_id)
    return Redirect("/app/location", status_code=SEE_OTHER)


@post("/location/withdraw", include_in_schema=False, sync_to_thread=True)
def withdraw_consent_page(
    request: Request[Any, Any, Any], attendance: NamedDependency[Attendance]
) -> Response[Any]:
    attendance.withdraw_consent(_own(request), _caller(request).user_id)
    return Redirect("/app/location", status_code=SEE_OTHER)


@get("/attendance", include_in_schema=False, sync_to_thread=True, guards=[admins_see])
def attendance_page(
    request: Request[Any, Any, Any],
    attendance: NamedDependency[Attendance],
    dashboard: NamedDependency[Dashboard],
    site: Annotated[UUID | None, QueryParameter(description="the site")] = None,
    day: Annotated[date | None, QueryParameter(name="date", description="the day")] = None,
) -> Response[str]:
    customer_id = _own(request)
    sites = attendance.sites.sites(customer_id)
    chosen = next((s for s in sites if s.id == site), sites[0] if sites else None)
    last = day or _today(dashboard)
    days = [last - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    logins = {u.id: str(u.login) for u in dashboard.accounts.users(customer_id=customer_id)}
    on_site: list[OnSite] = []
    hours: dict[UUID, dict[date, float]] = {}  # per user, per day
    if chosen is not None:
        on_site = attendance.attendance(customer_id, chosen.id, last).on_site
        for d in days:
            for h in attendance.attendance(customer_id, chosen.id, d).hours:
                hours.setdefault(h.user_id, {})[d] = h.hours
    people = sorted(hours, key=lambda u: logins.get(u, str(u)))
    return caller_page(
        request,
        "app_attendance.html",
        on=attendance.is_on(customer_id),
        sites=sites,
        chosen=chosen,
        day=last,
        days=days,
        on_site=on_site,
        hours=hours,
        people=people,
        logins=logins,
        chart=hours_chart(days, [(logins.get(u, str(u)), hours[u]) for u in people]),
    )


def hours_chart(days: list[date], rows: list[tuple[str, dict[date, float]]]) -> Markup:
    """Hours per user per day as grouped bars (one colour per user), drawn as SVG."""
    width, height, left, bottom, top = 960, 260, 48, 40, 16
    plot_h = height - bottom - top
    tallest = max([h for _, per_day in rows for h in per_day.values()] + [8.0])
    scale = plot_h / tallest
    slot = (width - left - 10) / len(days)
    bar = max(2.0, min(22.0, (slot - 12) / max(1, len(rows))))
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}'"
        f" role='img' aria-label='Hours on site per user per day' class='chart'>"
    ]
    for hours in range(0, int(tallest) + 1, 2):
        y = top + plot_h - hours * scale
        parts.append(
            f"<line x1='{left}' x2='{width - 10}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e4e7eb'/>"
            f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' font-size='11'"
            f" fill='#616e7c'>{hours} h</text>"
        )
    for i, d in enumerate(days):
        x0 = left + i * slot + 6
        parts.append(
            f"<text x='{x0 + (slot - 12) / 2:.1f}' y='{height - bottom + 16}' font-size='11'"
            f" text-anchor='middle' fill='#616e7c'>{d.isoformat()}</text>"
        )
        for n, (label, per_day) in enumerate(rows):
            value = per_day.get(d, 0.0)
            if value <= 0:
                continue
            h = value * scale
            parts.append(
                f"<rect x='{x0 + n * bar:.1f}' y='{top + plot_h - h:.1f}' width='{bar - 1:.1f}'"
                f" height='{h:.1f}' fill='{COLOURS[n % len(COLOURS)]}'>"
                f"<title>{escape(label)}: {value:.2f} h on {d.isoformat()}</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it is escaped above)


ROUTES: tuple[Any, ...] = (location_page, give_consent_page, withdraw_consent_page, attendance_page)
