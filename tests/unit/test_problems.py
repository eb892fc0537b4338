"""The one error mapping: an overflow the parsers missed is still the input's fault (400),
never a 500 logged as unhandled (issue 11, finding 7)."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pytest

from picasse.adapters.http.problems import problem_for


def test_an_overflow_is_a_400_out_of_range_problem_and_not_logged_as_unhandled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        date(9999, 12, 31) + timedelta(days=1)
    except OverflowError as error:
        overflow = error

    with caplog.at_level(logging.WARNING):
        problem, _ = problem_for(overflow)

    assert (problem.status, problem.code) == (400, "out-of-range")
    assert "unhandled" not in caplog.text
