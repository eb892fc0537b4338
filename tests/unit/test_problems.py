"""The one error mapping: an overflow the parsers missed is still the input's fault (400),
never a 500 logged as unhandled (issue 11, finding 7)."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pytest
from litestar.exceptions import ValidationException

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


@pytest.mark.parametrize(
    ("message", "key", "detail", "field"),
    [
        ("Invalid enum value 'Anna de Vries'", "channel", "channel: Invalid enum value", "channel"),
        ("Invalid value 'anna@example.nl'", "to.0", "to.0: Invalid value", "to.0"),
        ("Expected `int` <= 200", "limit", "limit: Expected `int` <= 200", "limit"),
        (
            "Object contains unknown field `bogus`",
            "data",
            "Object contains unknown field `bogus`",
            None,
        ),
    ],
)
def test_a_validation_error_names_its_field_and_why_but_never_the_value_sent(
    message: str, key: str, detail: str, field: str | None
) -> None:
    error = ValidationException(
        detail="Validation failed for POST /v1/messages",
        extra=[{"message": message, "key": key, "source": "body"}],
    )
    problem, _ = problem_for(error)
    assert (problem.status, problem.code, problem.detail, problem.field) == (
        400, "invalid-input", detail, field,
    )  # fmt: skip


def test_a_validation_error_with_several_faults_counts_the_others() -> None:
    faults = [{"message": "Expected `int`", "key": k, "source": "query"} for k in ("a", "b", "c")]
    problem, _ = problem_for(ValidationException(detail="Validation failed", extra=faults))
    assert (problem.detail, problem.field) == ("a: Expected `int` (and 2 more)", "a")
