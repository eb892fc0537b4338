"""JetStream's answers to the relay's publishes: a lost one must not stall it for ever."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from picasse.adapters.nats.jobs import published


def test_an_answer_that_never_comes_counts_as_a_failed_publish_and_is_given_up() -> None:
    async def run() -> asyncio.Future[None]:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with pytest.raises(nats.errors.TimeoutError):
            await published([lost], timeout=0)  # none left to wait: no clock involved
        return lost

    assert asyncio.run(run()).cancelled()


def test_the_first_refusal_is_raised_once_every_answer_is_in() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        taken, refused = loop.create_future(), loop.create_future()
        taken.set_result("ack")
        refused.set_exception(nats.errors.NoRespondersError())
        await published([taken])  # all taken: nothing raised
        with pytest.raises(nats.errors.NoRespondersError):
            await published([taken, refused])

    asyncio.run(run())
