"""How each delivery provider is doing, as a worker sees it: its state and per-minute counts.

`Counted` wraps one provider (a leaf of a failover chain: the HTTP gateway, Twilio, an
SMPP session) and counts what it answers, per channel and minute of the worker's clock,
into a `ProviderCounters` of the worker. Nothing of a delivery is kept: no number, no
text, no reference; only the provider's name, the channel, counts and a state word.

State: a provider that keeps a session says so itself through a `bound` attribute
("bound" / "unbound", e.g. SMPP); for the others the last answer tells: "reachable" when
it answered (taking or refusing a message), "unreachable" when it did not or could not
take any (timeouts, connection errors, 5xx, throttling, refused credentials), "idle"
before the first delivery.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import msgspec

from picasse.adapters.providers import (
    Delivery,
    DeliveryError,
    Provider,
    Sent,
    TemporaryFailure,
)
from picasse.adapters.providers.sms import FailoverSms, RefusedCredentials, start_session
from picasse.domain.clock import Clock

KEPT_MINUTES = 15  # the counts a worker keeps in memory (and publishes)


class MinuteCount(msgspec.Struct, frozen=True):
    minute: datetime  # the start of the minute, on the worker's clock
    sent: int
    failed: int


class ProviderSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One provider as one worker last saw it."""

    provider: str
    channel: str
    state: str  # bound, unbound, reachable, unreachable or idle
    minutes: list[MinuteCount]


class _Tally:
    def __init__(self) -> None:
        self.state = "idle"
        self.minutes: dict[datetime, list[int]] = {}  # minute → [sent, failed]


class ProviderCounters:
    """A worker's counts per (provider, channel): written by `Counted`, read to publish."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._providers: dict[tuple[str, str], Provider] = {}

    def watch(self, provider: Provider, channel: str) -> None:
        key = (provider.name, channel)
        self._tallies.setdefault(key, _Tally())
        self._providers[key] = provider

    def count(self, provider: str, channel: str, *, sent: bool, reachable: bool) -> None:
        tally = self._tallies.setdefault((provider, channel), _Tally())
        now = self.clock.now()
        minute = now.replace(second=0, microsecond=0)
        counts = tally.minutes.setdefault(minute, [0, 0])
        counts[0 if sent else 1] += 1
        tally.state = "reachable" if reachable else "unreachable"
        oldest = minute - timedelta(minutes=KEPT_MINUTES)
        for old in [m for m in tally.minutes if m < oldest]:
            del tally.minutes[old]

    def snapshots(self) -> Iterator[ProviderSnapshot]:
        for (name, channel), tally in sorted(self._tallies.items()):
            bound = getattr(self._providers.get((name, channel)), "bound", None)
            state = tally.state if bound is None else ("bound" if bound else "unbound")
            yield ProviderSnapshot(
                provider=name,
                channel=channel,
                state=state,
                minutes=[
                    MinuteCount(minute, sent, failed)
                    for minute, (sent, failed) in sorted(tally.minutes.items())
                ],
            )


class Counted:
    """A provider whose answers are counted; otherwise the provider itself."""

    def __init__(self, provider: Provider, counters: ProviderCounters, channel: str) -> None:
        self.provider = provider
        self.name = provider.name
        self.counters = counters
        counters.watch(provider, channel)

    def __repr__(self) -> str:
        return f"Counted({self.provider!r})"

    @property
    def bound(self) -> bool | None:
        return getattr(self.provider, "bound", None)

    def start(self) -> None:
        start_session(self.provider)

    async def send(self, delivery: Delivery) -> Sent:
        try:
            sent = await self.provider.send(delivery)
        except DeliveryError as failure:
            # It answered, refusing this message (a bad number): it is there and working.
            reachable = not isinstance(failure, TemporaryFailure | RefusedCredentials)
            self.counters.count(self.name, delivery.channel, sent=False, reachable=reachable)
            raise
        self.counters.count(self.name, delivery.channel, sent=True, reachable=True)
        return sent

    async def close(self) -> None:
        await self.provider.close()


def counted(provider: Provider, counters: ProviderCounters, channel: str) -> Provider:
    """`provider` with each provider inside it counted on its own (each of a failover's)."""
    if isinstance(provider, FailoverSms):
        inner = (counted(p, counters, channel) for p in provider.providers)
        return FailoverSms(*inner, name=provider.name)
    return Counted(provider, counters, channel)
