"""SMS over SMPP 3.4, to an SMS aggregator or a carrier's SMSC.

`PICASSE_SMS_SMPP_URL` names the SMSC: ``smpp://system_id:password@host:port``, or
``smpps://…`` for TLS; ``?source=<sender id>`` sets the sender when a delivery has none.

Each worker process keeps one bound transceiver session (`bind_transceiver`) to it. A
session that drops, or that the SMSC unbinds, is bound again after a back-off that
doubles from `rebind_seconds` up to `rebind_max_seconds` (and starts afresh once a bind
succeeds). `enquire_link` every `enquire_seconds` keeps it alive and finds a dead one;
at most `window` `submit_sm` await their answer at once.

A text is sent in the GSM 03.38 alphabet when it can be, else in UCS-2, split into
concatenated segments when it is longer than one short message (see `smpp_pdu`). Each
segment asks for a delivery receipt. `Sent.segments` tells how many went: the count that
is billed. The SMSC's id of the first segment is the delivery's provider reference.

Receipts come back as `deliver_sm` naming the SMSC's id (`receipted_message_id`, or
the ``id:`` of the receipt text), on whatever session is bound when the SMSC sends them:
perhaps a restarted worker's, or another worker's. So which delivery and segment each id
belongs to is kept in a `SegmentLedger` (`adapters/postgres/smsc_ids.py` in the
workers), written as the SMSC's answer is read, before this session reads anything after
it and before the send is reported accepted; no text, no number. A receipt marks its
segment there. A delivery is delivered once every one of its segments is; a segment that
fails fails the delivery at once, with that segment's reason: the phone got the message
with a part missing, which is not the message (the other segments' receipts are then
dropped). A receipt for an id the ledger does not know is looked up a few times more (the
session that took the segment may be a moment from writing it down), then acknowledged
and dropped: not ours, or long forgotten. A ledger that cannot be read has the SMSC send
the receipt again later.

The `ReceiptSink` records the outcome as a receipt of this provider for the id of the
delivery's first segment, so the rule of the HTTP receipts holds: it counts only for a
delivery handed to this provider under that id. A sink that cannot record it yet (the
worker has not written the hand-over) is asked again a few times; then the SMSC is told
to send it again later. Once recorded (or refused for good), the attempt's rows go.

What the SMSC answers (command status codes) becomes a reason code; receipt texts are
read for their ``stat:`` and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import ssl
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from picasse.adapters.providers import (
    Delivery,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from picasse.adapters.providers import smpp_pdu as pdu
from picasse.adapters.providers.sms import RefusedCredentials
from picasse.domain.messages import FailureReason

log = logging.getLogger(__name__)

# (our reference, provider name, provider reference, failure or None for delivered) →
# True once recorded (or never to be recorded); False: not yet, ask again later.
ReceiptSink = Callable[[str, str, str, FailureReason | None], Awaitable[bool]]


class SegmentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One segment the SMSC took, as the ledger keeps it."""

    reference: str  # ours: the delivery's
    first_id: str  # the SMSC's id of the attempt's first segment: the provider reference
    segment: int  # 1-based
    segments: int  # of the whole message
    state: Literal["awaited", "delivered", "failed"]
    failure: FailureReason | None = None  # a failed segment's reason


class Heard(msgspec.Struct, frozen=True, kw_only=True):
    """What the ledger knows once a segment's receipt is marked."""

    news: bool  # the segment was awaited: not a receipt heard before
    segments: list[SegmentRecord]  # every segment of its attempt so far, in order


class SegmentLedger(Protocol):
    """The durable (provider, SMSC id) → (delivery, segment) record; blocking calls."""

    def taken(
        self,
        provider: str,
        smsc_id: str,
        *,
        reference: str,
        first_id: str,
        segment: int,
        segments: int,
    ) -> None: ...

    def heard(self, provider: str, smsc_id: str, failure: FailureReason | None) -> Heard | None: ...

    def unheard(self, provider: str, smsc_id: str) -> None: ...

    def ended(self, provider: str, first_id: str) -> None: ...


@dataclass(frozen=True)
class SessionReceipts:
    """What a provider that hears receipts on its own session needs: where segments are
    recorded, and who records a delivery's receipt."""

    ledger: SegmentLedger
    record: ReceiptSink


# submit_sm_resp command status → (temporary?, reason). Statuses not named here are
# temporary `provider-unavailable`: retrying cannot lose a message, refusing could.
_SUBMIT_STATUSES: dict[int, tuple[bool, FailureReason]] = {
    pdu.ESME_RTHROTTLED: (True, FailureReason.THROTTLED),
    pdu.ESME_RMSGQFUL: (True, FailureReason.THROTTLED),
    pdu.ESME_RSYSERR: (True, FailureReason.PROVIDER_UNAVAILABLE),
    pdu.ESME_RX_T_APPN: (True, FailureReason.PROVIDER_UNAVAILABLE),
    pdu.ESME_RSUBMITFAIL: (True, FailureReason.PROVIDER_UNAVAILABLE),
    pdu.ESME_RINVBNDSTS: (True, FailureReason.CONNECTION_LOST),
    pdu.ESME_RINVDSTADR: (False, FailureReason.INVALID_RECIPIENT),
    pdu.ESME_RINVSRCADR: (False, FailureReason.SENDER_REFUSED),
    pdu.ESME_RINVMSGLEN: (False, FailureReason.CONTENT_REFUSED),
    pdu.ESME_RX_P_APPN: (False, FailureReason.REJECTED_BY_GATEWAY),
    pdu.ESME_RX_R_APPN: (False, FailureReason.REJECTED_BY_GATEWAY),
}
_BIND_REFUSED = frozenset({pdu.ESME_RINVPASWD, pdu.ESME_RINVSYSID, pdu.ESME_RBINDFAIL})

# A receipt's state: None delivered; a reason failed; absent from both: not final yet.
_STATE_REASONS: dict[int, FailureReason] = {
    pdu.STATE_EXPIRED: FailureReason.TIMED_OUT,
    pdu.STATE_DELETED: FailureReason.REJECTED_BY_GATEWAY,
    pdu.STATE_UNDELIVERABLE: FailureReason.RECIPIENT_UNREACHABLE,
    pdu.STATE_UNKNOWN: FailureReason.UNKNOWN,
    pdu.STATE_REJECTED: FailureReason.REJECTED_BY_GATEWAY,
}
_STAT_WORDS = {
    "DELIVRD": pdu.STATE_DELIVERED,
    "EXPIRED": pdu.STATE_EXPIRED,
    "DELETED": pdu.STATE_DELETED,
    "UNDELIV": pdu.STATE_UNDELIVERABLE,
    "ACCEPTD": pdu.STATE_ACCEPTED,
    "UNKNOWN": pdu.STATE_UNKNOWN,
    "REJECTD": pdu.STATE_REJECTED,
}
_RECEIPT_ID = re.compile(rb"\bid:(\S+)")
_RECEIPT_STAT = re.compile(rb"\bstat:(\w+)")

RECEIPT_ASKS = 5  # times the sink is asked before the SMSC is told to send it again


class SessionLost(Exception):
    """The session closed before an answer came."""


@dataclass(frozen=True)
class SmppUrl:
    host: str
    port: int
    system_id: str
    password: str
    tls: bool
    source: str

    def __repr__(self) -> str:  # the password stays out of every log line
        return (
            f"SmppUrl({'smpps' if self.tls else 'smpp'}://{self.system_id}@{self.host}:{self.port})"
        )

    @classmethod
    def parse(cls, url: str) -> SmppUrl:
        """Raises ValueError, never quoting the password, unless `url` is an SMPP URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("smpp", "smpps"):
            raise ValueError("the SMPP URL must start with smpp:// or smpps://")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the SMPP URL has no valid port") from None
        if not parts.hostname or not parts.username or port is None:
            raise ValueError("the SMPP URL must be smpp://system_id:password@host:port")
        source = parse_qs(parts.query).get("source", [""])[0]
        return cls(
            host=parts.hostname,
            port=port,
            system_id=unquote(parts.username),
            password=unquote(parts.password or ""),
            tls=parts.scheme == "smpps",
            source=source,
        )


class Session:
    """One bound transceiver connection: requests matched to answers by sequence number."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_deliver: Callable[[Session, pdu.Pdu], Coroutine[Any, Any, None]],  # run as a task
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_deliver = on_deliver
        self._sequence = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[pdu.Pdu]] = {}
        self._on_answer: dict[int, Callable[[pdu.Pdu], Awaitable[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reading = asyncio.create_task(self._read())

    async def request(
        self,
        command_id: int,
        body: bytes,
        timeout: float,
        on_answer: Callable[[pdu.Pdu], Awaitable[None]] | None = None,
    ) -> pdu.Pdu:
        """Sends one request; its answer, or SessionLost / TimeoutError. `on_answer` runs
        as the answer is read, and the session reads no later PDU until it is done (a
        receipt can follow the answer on the wire before the caller wakes up)."""
        if self.closed.is_set():
            raise SessionLost()
        sequence = next(self._sequence)
        answer: asyncio.Future[pdu.Pdu] = asyncio.get_running_loop().create_future()
        self._waiting[sequence] = answer
        if on_answer is not None:
            self._on_answer[sequence] = on_answer
        try:
            await self.write(pdu.Pdu(command_id, sequence, body=body))
            return await asyncio.wait_for(answer, timeout)
        finally:
            self._waiting.pop(sequence, None)
            self._on_answer.pop(sequence, None)
            if answer.done() and not answer.cancelled():
                answer.exception()  # seen: a lost session is the SessionLost raised here

    async def write(self, unit: pdu.Pdu) -> None:
        try:
            self._writer.write(unit.encode())
            await self._writer.drain()
        except (OSError, RuntimeError):
            self.close()
            raise SessionLost() from None

    async def _read(self) -> None:
        try:
            while True:
                unit = await pdu.read_pdu(self._reader)
                if unit.command_id == pdu.GENERIC_NACK or unit.is_response:
                    answer = self._waiting.get(unit.sequence)
                    if answer is not None and not answer.done():
                        on_answer = self._on_answer.pop(unit.sequence, None)
                        if on_answer is not None:
                            await on_answer(unit)
                        if not answer.done():  # the caller may have given up meanwhile
                            answer.set_result(unit)
                elif unit.command_id == pdu.ENQUIRE_LINK:
                    await self.write(pdu.Pdu(pdu.ENQUIRE_LINK_RESP, unit.sequence))
                elif unit.command_id == pdu.UNBIND:
                    await self.write(pdu.Pdu(pdu.UNBIND_RESP, unit.sequence))
                    break
                elif unit.command_id == pdu.DELIVER_SM:
                    task = asyncio.create_task(self._on_deliver(self, unit))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    nack = pdu.Pdu(pdu.GENERIC_NACK, unit.sequence, pdu.ESME_RINVCMDID)
                    await self.write(nack)
        except (asyncio.IncompleteReadError, OSError, SessionLost, pdu.PduError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(SessionLost())
        with contextlib.suppress(Exception):
            self._writer.close()

    async def unbind(self, timeout: float) -> None:
        """Says goodbye (unbind), then closes, whatever the SMSC answers."""
        with contextlib.suppress(SessionLost, TimeoutError):
            await self.request(pdu.UNBIND, b"", timeout)
        self.close()
        if self._reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        for task in list(self._tasks):
            task.cancel()


@dataclass
class _Tracked:
    """One delivery's segments the SMSC took so far (their ids, in order)."""

    reference: str
    ids: list[str] = field(default_factory=list)


class SmppProvider:
    """SMS through one SMSC over SMPP 3.4; `name` is what `Sent.provider` says."""

    def __init__(
        self,
        name: str,
        url: SmppUrl,
        *,
        receipts: SessionReceipts | None = None,
        window: int = 10,
        timeout: float = 10.0,
        enquire_seconds: float = 30.0,
        rebind_seconds: float = 1.0,
        rebind_max_seconds: float = 60.0,
        receipt_retry_seconds: float = 0.5,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._receipts = receipts
        self._window = asyncio.Semaphore(window)
        self._timeout = timeout
        self._enquire_seconds = enquire_seconds
        self._rebind_seconds = rebind_seconds
        self._rebind_max_seconds = rebind_max_seconds
        self._receipt_retry_seconds = receipt_retry_seconds
        self._tls_context = tls_context
        self._session: Session | None = None
        self._bound = asyncio.Event()
        self._refused = False
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False
        # Deliveries the SMSC took some segments of, then refused one for now: the retry
        # sends only the rest.
        self._partial: dict[str, _Tracked] = {}
        self.binds = 0  # sessions bound so far (tests and health read it)

    def __repr__(self) -> str:
        return f"SmppProvider(name={self.name!r}, url={self.url!r})"

    @property
    def bound(self) -> bool:
        return self._bound.is_set()

    async def send(self, delivery: Delivery) -> Sent:
        encoded = pdu.encode_text(delivery.body)
        total = len(encoded.parts)
        reference_byte = zlib.crc32(delivery.reference.encode()) & 0xFF  # the same on retries
        tracked = self._partial.get(delivery.reference) or _Tracked(delivery.reference)
        for number, part in enumerate(
            encoded.parts[len(tracked.ids) :], start=len(tracked.ids) + 1
        ):
            user_data = part if total == 1 else pdu.udh(reference_byte, total, number) + part
            message = pdu.ShortMessage(
                source=delivery.sender or self.url.source,
                source_ton=5 if not (delivery.sender or self.url.source).isdigit() else 1,
                destination=delivery.to.removeprefix("+"),
                short_message=user_data,
                esm_class=pdu.ESM_UDHI if total > 1 else 0,
                data_coding=encoded.data_coding,
                registered_delivery=1 if self._receipts is not None else 0,
            )
            try:
                await self._submit(message, tracked, number, total)
            except PermanentFailure:
                self._partial.pop(delivery.reference, None)
                if tracked.ids and self._receipts is not None:  # no receipt will settle it
                    await self._forget(tracked.ids[0])
                raise
            if number < total:
                self._partial[delivery.reference] = tracked
        self._partial.pop(delivery.reference, None)
        return Sent(
            provider=self.name, provider_reference=tracked.ids[0], final=False, segments=total
        )

    async def _submit(
        self, message: pdu.ShortMessage, tracked: _Tracked, number: int, total: int
    ) -> str:
        """Submits segment `number` of `total`; the SMSC's id for it, added to `tracked`
        and written to the ledger as the answer is read, so a receipt right behind it on
        the wire (or on another session) finds its delivery."""

        async def taken(answer: pdu.Pdu) -> None:
            if answer.status == pdu.ESME_ROK and answer.command_id == pdu.SUBMIT_SM_RESP:
                await self._track(tracked, pdu.read_message_id(answer.body), number, total)

        session = await self._bound_session()
        async with self._window:
            try:
                answer = await session.request(
                    pdu.SUBMIT_SM, message.encode(), self._timeout, taken
                )
            except SessionLost:
                raise TemporaryFailure(FailureReason.CONNECTION_LOST) from None
            except TimeoutError:
                raise TemporaryFailure(FailureReason.TIMED_OUT) from None
        if answer.status == pdu.ESME_ROK and answer.command_id == pdu.SUBMIT_SM_RESP:
            return pdu.read_message_id(answer.body)
        if answer.status == pdu.ESME_RINVBNDSTS:
            session.close()  # the SMSC forgot our bind: bind again
        temporary, reason = _SUBMIT_STATUSES.get(
            answer.status, (True, FailureReason.PROVIDER_UNAVAILABLE)
        )
        raise (TemporaryFailure if temporary else PermanentFailure)(reason)

    def start(self) -> None:
        """Starts binding (and keeping bound) now rather than at the first send, so that
        receipts for what an earlier process sent come in. Call it on the running loop."""
        if self._keeper is None or self._keeper.done():
            self._stopping = False
            self._keeper = asyncio.create_task(self._keep_bound())

    async def _bound_session(self) -> Session:
        self.start()
        try:
            await asyncio.wait_for(self._bound.wait(), self._timeout)
        except TimeoutError:
            if self._refused:
                raise RefusedCredentials() from None
            raise TemporaryFailure(FailureReason.UNREACHABLE) from None
        assert self._session is not None
        return self._session

    async def _keep_bound(self) -> None:
        """Binds, keeps the session alive, and binds again after a back-off when it drops."""
        pause = self._rebind_seconds
        while not self._stopping:
            try:
                session = await self._bind()
            except (OSError, TimeoutError, SessionLost, pdu.PduError, RefusedCredentials) as error:
                self._refused = isinstance(error, RefusedCredentials)
                log.warning(
                    "%s: cannot bind (%s); again in %.1f s", self.name, type(error).__name__, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._rebind_max_seconds)
                continue
            self._refused = False
            pause = self._rebind_seconds
            self._session = session
            self.binds += 1
            self._bound.set()
            await self._enquire_until_closed(session)
            self._bound.clear()
            if not self._stopping:
                log.warning("%s: session lost; binding again", self.name)

    async def _bind(self) -> Session:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.url.host,
                self.url.port,
                ssl=(self._tls_context or ssl.create_default_context()) if self.url.tls else None,
            ),
            self._timeout,
        )
        session = Session(reader, writer, self._on_deliver)
        session.start()
        answer = await session.request(
            pdu.BIND_TRANSCEIVER,
            pdu.bind_body(self.url.system_id, self.url.password),
            self._timeout,
        )
        if answer.status != pdu.ESME_ROK:
            session.close()
            if answer.status in _BIND_REFUSED:
                raise RefusedCredentials()
            raise SessionLost()
        return session

    async def _enquire_until_closed(self, session: Session) -> None:
        while not session.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.closed.wait(), self._enquire_seconds)
                return
            try:
                await session.request(pdu.ENQUIRE_LINK, b"", self._timeout)
            except (SessionLost, TimeoutError):
                session.close()

    # Receipts

    async def _track(self, tracked: _Tracked, message_id: str, number: int, total: int) -> None:
        tracked.ids.append(message_id)
        if self._receipts is None:
            return
        try:
            await asyncio.to_thread(
                self._receipts.ledger.taken,
                self.name,
                message_id,
                reference=tracked.reference,
                first_id=tracked.ids[0],
                segment=number,
                segments=total,
            )
        except Exception:
            # The SMSC has the segment: failing the send would send it twice. Only its
            # receipt will find no delivery.
            log.warning("%s: could not record an SMSC id; its receipt will be dropped",
                        self.name, exc_info=True)  # fmt: skip

    async def _forget(self, first_id: str) -> None:
        assert self._receipts is not None
        try:
            await asyncio.to_thread(self._receipts.ledger.ended, self.name, first_id)
        except Exception:  # the retention job removes what is left
            log.warning("%s: could not forget settled SMSC ids", self.name, exc_info=True)

    async def _on_deliver(self, session: Session, unit: pdu.Pdu) -> None:
        status = pdu.ESME_ROK
        try:
            message = pdu.ShortMessage.decode(unit.body)
        except pdu.PduError:
            status = pdu.ESME_RINVMSGLEN
        else:
            if message.esm_class & pdu.ESM_DELIVERY_RECEIPT and not await self._receipt(message):
                status = pdu.ESME_RX_T_APPN  # the SMSC sends it again later
            # Anything else (a reply from a phone) is acknowledged and dropped: we take
            # no incoming messages.
        with contextlib.suppress(SessionLost):
            await session.write(pdu.Pdu(pdu.DELIVER_SM_RESP, unit.sequence, status, b"\x00"))

    async def _receipt(self, message: pdu.ShortMessage) -> bool:
        """True when the receipt is settled (recorded, or nothing to record)."""
        found = _read_receipt(message)
        if found is None:
            return True
        message_id, state = found
        if self._receipts is None:
            return True
        if state == pdu.STATE_DELIVERED:
            failure = None
        elif state in _STATE_REASONS:
            failure = _STATE_REASONS[state]
        else:
            return True  # enroute, accepted: the final receipt is still to come
        try:
            heard = await self._hear(message_id, failure)
        except Exception:
            log.warning("%s: cannot read the SMSC ids now; receipt deferred", self.name,
                        exc_info=True)  # fmt: skip
            return False
        if heard is None:
            log.info("%s: receipt for an SMSC id we do not know: dropped", self.name)
            return True
        if not heard.news:
            return True  # the SMSC sent it again (our answer was lost): it counted already
        segments = heard.segments
        failed = next((s for s in segments if s.state == "failed"), None)
        if failed is not None:
            failure = failed.failure or FailureReason.UNKNOWN
        elif len(segments) < segments[0].segments or any(s.state != "delivered" for s in segments):
            return True  # more segments to hear about (or still to send)
        first = segments[0]
        if await self._settle(first.reference, first.first_id, failure):
            await self._forget(first.first_id)
            return True
        await asyncio.to_thread(self._receipts.ledger.unheard, self.name, message_id)
        return False

    async def _hear(self, message_id: str, failure: FailureReason | None) -> Heard | None:
        """Marks the segment's receipt in the ledger. An id it does not know is looked up a
        few more times: the worker whose session took the segment may be a moment from
        writing it down when the SMSC sends the receipt on another session."""
        assert self._receipts is not None
        pause = self._receipt_retry_seconds
        for ask in range(RECEIPT_ASKS):
            heard = await asyncio.to_thread(
                self._receipts.ledger.heard, self.name, message_id, failure
            )
            if heard is not None or ask + 1 == RECEIPT_ASKS:
                return heard
            await asyncio.sleep(pause)
            pause *= 2
        return None

    async def _settle(
        self, reference: str, provider_reference: str, failure: FailureReason | None
    ) -> bool:
        """Asks the sink to record the delivery's receipt, a few times; True once it did."""
        assert self._receipts is not None
        pause = self._receipt_retry_seconds
        for ask in range(RECEIPT_ASKS):
            if await self._receipts.record(reference, self.name, provider_reference, failure):
                return True
            if ask + 1 < RECEIPT_ASKS:
                await asyncio.sleep(pause)
                pause *= 2
        return False

    async def close(self) -> None:
        self._stopping = True
        session = self._session
        if session is not None and not session.closed.is_set():
            await session.unbind(self._timeout)
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        self._bound.clear()


def _read_receipt(message: pdu.ShortMessage) -> tuple[str, int] | None:
    """(the SMSC's message id, its message_state) of a receipt, or None if unreadable.
    The receipt's text is read for these two and dropped."""
    raw_id = message.tlvs.get(pdu.TAG_RECEIPTED_MESSAGE_ID)
    raw_state = message.tlvs.get(pdu.TAG_MESSAGE_STATE)
    text = message.short_message
    if raw_id is None:
        found = _RECEIPT_ID.search(text)
        raw_id = found.group(1) if found else None
    if raw_id is None:
        return None
    if raw_state:
        state = raw_state[0]
    else:
        stat = _RECEIPT_STAT.search(text)
        state = (
            _STAT_WORDS.get(stat.group(1).decode("ascii", "replace"), pdu.STATE_UNKNOWN)
            if stat
            else pdu.STATE_UNKNOWN
        )
    return raw_id.rstrip(b"\x00").decode("ascii", "replace"), state


def smpp_from_settings(
    url: str, *, receipts: SessionReceipts | None = None, tls_ca: Path | None = None
) -> SmppProvider:
    """The SMPP provider `PICASSE_SMS_SMPP_URL` names, its smpps:// session verified
    against `tls_ca` (PICASSE_SMS_SMPP_CA, a PEM file) when given, else the system's CAs.
    ValueError, in one line, when the URL names none or the CA cannot be used."""
    parsed = SmppUrl.parse(url)
    context = None
    if tls_ca is not None:
        if not parsed.tls:
            raise ValueError("PICASSE_SMS_SMPP_CA is for smpps:// URLs; the SMPP URL is smpp://")
        try:
            context = ssl.create_default_context(cafile=str(tls_ca))
        except (OSError, ssl.SSLError) as error:  # missing, unreadable, or not PEM
            reason = error.strerror or type(error).__name__
            raise ValueError(f"PICASSE_SMS_SMPP_CA: cannot load {tls_ca}: {reason}") from None
    return SmppProvider("sms-smpp", parsed, receipts=receipts, tls_context=context)
