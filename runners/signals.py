"""The one way a Picasse process learns that it should stop: SIGTERM or SIGINT.

Every long-running process (`up`, relay, worker, project, retention, api) enters
`stop_requested()` once in its main thread and hands the `StopRequest` to whatever
waits: threads call `wait(timeout)`, asyncio code awaits `stopped()`. The handler only
sets a flag and writes one byte to a pipe, never takes a lock: a handler that took a
lock the interrupted main thread holds would hang the process for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After a stop signal a process gets this long to finish before SIGALRM ends it: a
# process stuck waiting (say on a database that is gone) must not outlive `up`.
DEFAULT_DEADLINE = 35.0


class StopRequest:
    """Set once a stop signal came; readable from any thread and from an event loop."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.requested = False
        self.signal: int | None = None
        # The byte written is never read: the pipe stays readable once a stop came, so
        # any number of waiters, in any thread, see it.
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._write_end, False)
        os.set_inheritable(self._read_end, False)
        os.set_inheritable(self._write_end, False)

    def request(self, signum: int | None = None) -> None:
        """Ask for a stop (the signal handler does; so may code that decides to stop)."""
        if not self.requested:
            self.signal = signum
        self.requested = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_end, b"!")

    def is_set(self) -> bool:  # so it can stand where a threading.Event is expected
        return self.requested

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for a stop; whether one was requested."""
        if not self.requested:
            with contextlib.suppress(InterruptedError):
                select.select([self._read_end], [], [], timeout)
        return self.requested

    async def stopped(self) -> None:
        """Return once a stop is requested (for asyncio code)."""
        if self.requested:
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(self._read_end, readable)
        try:
            await done
        finally:
            loop.remove_reader(self._read_end)

    def as_event(self) -> asyncio.Event:
        """An asyncio.Event of the running loop that is set once a stop is requested."""
        event = asyncio.Event()

        async def follow() -> None:
            await self.stopped()
            event.set()

        task = asyncio.get_running_loop().create_task(follow())
        _background.add(task)
        task.add_done_callback(_background.discard)
        return event

    def close(self) -> None:
        for fd in (self._read_end, self._write_end):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.deadline is not None and not self.requested:
            signal.alarm(max(1, round(self.deadline)))  # async-signal-safe, takes no lock
        self.request(signum)


_background: set[asyncio.Task[None]] = set()


@contextlib.contextmanager
def stop_requested(deadline: float | None = DEFAULT_DEADLINE) -> Iterator[StopRequest]:
    """SIGTERM and SIGINT request a stop while inside; the old handlers come back after.

    Enter it in the main thread, before anything slow: a signal during start-up is then
    a request like any other, seen by the first `wait` or `requested` check. `deadline`:
    seconds the process has to stop after the signal (None: no limit, for `up`, whose
    own stop is bounded by its children's).
    """
    stop = StopRequest(deadline)
    previous = {signum: signal.signal(signum, stop._handle) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.close()


class _Interrupted(KeyboardInterrupt):
    """SIGTERM turned into what Ctrl-C raises."""


@contextlib.contextmanager
def stop_interrupts() -> Iterator[None]:
    """For short commands that clean up on the way out: SIGTERM unwinds like Ctrl-C
    (KeyboardInterrupt), so `finally` blocks run. Outside the main thread it does nothing."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are the main thread's
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
