"""The messages chart is a picture drawn on the server: bars in proportion, on a round scale."""

from __future__ import annotations

import math
import uuid
import xml.etree.ElementTree as ET
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from picasse.adapters.http.charts import _scale, deliveries_chart
from picasse.projections.traffic import DailyCount

SVG = "{http://www.w3.org/2000/svg}"
LAST = date(2026, 11, 30)
FIRST = LAST - timedelta(days=13)
CUSTOMER = uuid.uuid4()


def _bars(counts: list[DailyCount]) -> list[ET.Element]:
    svg = ET.fromstring(str(deliveries_chart(counts, FIRST, LAST)))
    return [g for g in svg.iter(f"{SVG}g") if g.get("class") == "bar"]


def _heights(bar: ET.Element) -> dict[str, float]:
    return {
        rect.get("data-outcome", ""): float(rect.get("height", "0"))
        for rect in bar.iter(f"{SVG}rect")
    }


def test_every_day_of_every_channel_has_its_place_in_the_chart() -> None:
    bars = _bars([])
    assert len(bars) == 3 * 14
    assert {b.get("data-channel") for b in bars} == {"sms", "email", "voice"}
    assert {b.get("data-day") for b in bars} == {
        (FIRST + timedelta(days=n)).isoformat() for n in range(14)
    }


def test_a_bar_is_stacked_by_outcome_in_proportion_to_the_counts() -> None:
    counts = [
        DailyCount(LAST, CUSTOMER, "sms", "delivered", 6),
        DailyCount(LAST, CUSTOMER, "sms", "undelivered", 1),
        DailyCount(LAST, CUSTOMER, "sms", "failed", 1),
        DailyCount(LAST, CUSTOMER, "sms", "queued", 4),
        DailyCount(FIRST, CUSTOMER, "email", "delivered", 3),
    ]
    bars = {(b.get("data-channel"), b.get("data-day")): b for b in _bars(counts)}
    sms = _heights(bars["sms", LAST.isoformat()])
    assert sms.keys() == {"delivered", "pending", "failed"}
    assert math.isclose(sms["delivered"], 3 * sms["failed"], rel_tol=0.02)
    assert math.isclose(sms["pending"], 2 * sms["failed"], rel_tol=0.02)
    email = _heights(bars["email", FIRST.isoformat()])
    assert math.isclose(email["delivered"], sms["delivered"] / 2, rel_tol=0.02)  # one scale
    assert _heights(bars["voice", LAST.isoformat()]) == {}


def test_each_bar_says_its_numbers_in_words_for_a_tooltip() -> None:
    counts = [DailyCount(LAST, CUSTOMER, "voice", "delivered", 2)]
    (bar,) = [
        b
        for b in _bars(counts)
        if b.get("data-channel") == "voice" and b.get("data-day") == LAST.isoformat()
    ]
    assert bar.findtext(f"{SVG}title") == "Mon 30 Nov, Voice: 2 delivered"


@given(st.integers(min_value=0, max_value=10**7))
def test_the_scale_is_round_and_just_covers_the_tallest_bar(tallest: int) -> None:
    top, step = _scale(tallest)
    assert top >= tallest and top % step == 0
    assert top // step <= 5  # a few gridlines, not dozens
    digits = str(step).rstrip("0")
    assert digits in {"1", "2", "5"}
