"""A template's placeholders are plain names, filled and nothing more: what else Python's
format syntax could do (padding to any width, conversions, positions) is refused as
invalid input, never a server error or a gigabyte of padding (issue 11, finding 7)."""

from __future__ import annotations

from uuid import UUID

import pytest

from picasse.adapters.clock import ManualClock
from picasse.domain.errors import InvalidInput
from picasse.domain.messaging import Messages
from tests.unit.test_messaging import _email, world  # noqa: F401 (a fixture)


@pytest.mark.parametrize(
    "template",
    ["Hi {name:>999999999999}", "Hi {name:>99999999}", "Hi {name!r}", "Hi {}", "Hi {0}",
     "Hi {name.upper}", "Hi {name[0]}", "Hi {name:{name}}"],
)  # fmt: skip
def test_a_placeholder_other_than_a_plain_name_is_refused_and_records_nothing(
    world: tuple[Messages, UUID, ManualClock],  # noqa: F811
    template: str,
) -> None:
    messages, customer_id, _ = world
    before = messages.recorder.max_notification_id()

    with pytest.raises(InvalidInput) as refused:
        messages.send(customer_id, _email(body=None, template=template, variables={"name": "A"}))

    assert refused.value.field == "template"
    assert messages.recorder.max_notification_id() == before
