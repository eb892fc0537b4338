"""POST /v1/messages carries every send: what Litestar does for it per request stays little."""

from __future__ import annotations

from litestar.di import Dependency

from picasse.adapters.http.api import send_message


def test_the_send_route_asks_litestar_for_one_dependency_at_most() -> None:
    # Two dependencies or more that need nothing of each other are resolved in a task group
    # of their own on every request (litestar-org/litestar#4563): on the send route that
    # was some 70-80 us of CPU a send. The caller comes from the request instead.
    dependencies = [
        name
        for name, parameter in send_message.parsed_fn_signature.parameters.items()
        if any(isinstance(meta, Dependency) for meta in parameter.metadata)
    ]
    assert dependencies == ["messages"]
