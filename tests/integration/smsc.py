"""An SMSC simulator for tests: a minimal SMPP 3.4 server on our PDU layer, in its own thread.

It binds transceivers with one system_id and password, takes `submit_sm`, answers with
message ids, and sends a delivery receipt (`deliver_sm`) for each segment on the session
that is bound when the receipt is due. Knobs: answer the next submissions with a status
(`answer_next`), refuse destinations (`refuse`), unbind or drop the connection after a
number of taken segments, the receipt state per destination (`receipt_state`), and hold
receipts back until told (`hold_receipts`, `release_receipts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from picasse.adapters.providers import smpp_pdu as pdu
from tests.ports import free_port


@dataclass(frozen=True)
class Segment:
    message_id: str
    destination: str
    data_coding: int
    concatenation: tuple[int, int, int] | None  # (reference, total, number)
    text: str


class Smsc:
    def __init__(
        self,
        system_id: str = "picasse",
        password: str = "secret",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.tls = tls  # a server context: the SMSC speaks SMPP over TLS (smpps://)
        self.system_id = system_id
        self.password = password
        self.port = free_port()
        self.taken: list[Segment] = []
        self.binds = 0
        self.receipt_answers: list[int] = []
        self.refused: set[str] = set()
        self.receipt_state: dict[str, str] = {}  # destination → stat word; DELIVRD otherwise
        self.unbind_after: int | None = None  # taken segments, then the SMSC unbinds
        self.drop_after: int | None = None  # taken segments, then the connection drops
        self.hold_receipts = False  # receipts wait for `release_receipts`
        self._answers: list[int] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._sessions: list[asyncio.StreamWriter] = []
        self._receipts: list[pdu.ShortMessage] = []
        self._unanswered: dict[int, tuple[pdu.ShortMessage, asyncio.StreamWriter]] = {}
        self._receipts_ready: asyncio.Event | None = None

    @property
    def url(self) -> str:
        scheme = "smpps" if self.tls else "smpp"
        return f"{scheme}://{self.system_id}:{self.password}@127.0.0.1:{self.port}"

    def answer_next(self, count: int, status: int) -> None:
        with self._lock:
            self._answers.extend([status] * count)

    def release_receipts(self) -> None:
        """Sends the held receipts, and those due later, on the newest bound session."""
        self.hold_receipts = False
        self._loop.call_soon_threadsafe(self._receipts_ready.set)  # type: ignore[union-attr]

    def refuse(self, destination: str) -> None:
        self.refused.add(destination.removeprefix("+"))

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def __exit__(self, *exc: object, tb: TracebackType | None = None) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._receipts_ready = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)
        self._sender = asyncio.create_task(self._send_receipts())

    async def _stop(self) -> None:
        self._sender.cancel()
        for writer in self._sessions:
            writer.close()
        if self._server is not None:
            self._server.close()

    def messages(self) -> dict[str, list[str]]:
        """Destination → the texts it got, segments joined by their concatenation headers."""
        with self._lock:
            taken = list(self.taken)
        texts: dict[str, list[str]] = defaultdict(list)
        parts: dict[tuple[str, int, int], dict[int, str]] = defaultdict(dict)
        for segment in taken:
            if segment.concatenation is None:
                texts[segment.destination].append(segment.text)
                continue
            reference, total, number = segment.concatenation
            got = parts[(segment.destination, reference, total)]
            assert number not in got, f"segment {number} of {segment.destination} came twice"
            got[number] = segment.text
        for (destination, _, total), got in parts.items():
            assert sorted(got) == list(range(1, total + 1)), f"{destination} misses segments"
            texts[destination].append("".join(got[n] for n in range(1, total + 1)))
        return dict(texts)

    def wait_for(self, condition: Callable[[], object], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("the SMSC simulator waited in vain")
            time.sleep(0.02)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bound = False
        try:
            while True:
                unit = await pdu.read_pdu(reader)
                if unit.command_id == pdu.BIND_TRANSCEIVER:
                    system_id, password = pdu.read_bind(unit.body)
                    ok = (system_id, password) == (self.system_id, self.password)
                    status = pdu.ESME_ROK if ok else pdu.ESME_RINVPASWD
                    body = pdu.c_string("simulator")
                    writer.write(
                        pdu.Pdu(pdu.BIND_TRANSCEIVER_RESP, unit.sequence, status, body).encode()
                    )
                    if ok:
                        bound = True
                        self.binds += 1
                        self._sessions.append(writer)
                        self._receipts_ready.set()  # type: ignore[union-attr]
                elif unit.command_id == pdu.ENQUIRE_LINK:
                    writer.write(pdu.Pdu(pdu.ENQUIRE_LINK_RESP, unit.sequence).encode())
                elif unit.command_id == pdu.UNBIND:
                    writer.write(pdu.Pdu(pdu.UNBIND_RESP, unit.sequence).encode())
                    break
                elif unit.command_id == pdu.SUBMIT_SM and bound:
                    if not await self._submit(unit, reader, writer):
                        break
                elif unit.command_id == pdu.DELIVER_SM_RESP:
                    self._answered(unit)
                elif unit.command_id == pdu.UNBIND_RESP:
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if writer in self._sessions:
                self._sessions.remove(writer)
            self._ended(writer)
            writer.close()

    async def _submit(
        self, unit: pdu.Pdu, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answers one submit_sm; False when the session is over (unbound or dropped)."""
        if writer not in self._sessions:
            return True  # unbinding: takes nothing more
        message = pdu.ShortMessage.decode(unit.body)
        with self._lock:
            answer = self._answers.pop(0) if self._answers else None
            count = len(self.taken)
        if self.drop_after is not None and count >= self.drop_after:
            self.drop_after = None
            # Gone without an answer to this one (nothing taken); the answers already
            # written go out first, as they would have left before the line dropped. A
            # plain close with submissions still unread would reset the connection and
            # could throw those answers away: end our side (EOF after them) instead and
            # ignore what still comes until the client hangs up.
            self._sessions.remove(writer)
            writer.write_eof()
            await writer.drain()
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            return False
        if answer is None and message.destination in self.refused:
            answer = pdu.ESME_RINVDSTADR
        if answer is not None:
            writer.write(pdu.Pdu(pdu.SUBMIT_SM_RESP, unit.sequence, answer).encode())
            return True
        concatenation = None
        user_data = message.short_message
        if message.esm_class & pdu.ESM_UDHI:
            concatenation, user_data = pdu.read_udh(user_data)
        message_id = f"S{next(self._ids):06d}"
        with self._lock:
            self.taken.append(
                Segment(
                    message_id,
                    message.destination,
                    message.data_coding,
                    concatenation,
                    pdu.decode_text(message.data_coding, user_data),
                )
            )
        writer.write(
            pdu.Pdu(
                pdu.SUBMIT_SM_RESP, unit.sequence, body=pdu.message_id_body(message_id)
            ).encode()
        )
        if message.registered_delivery & 1:
            self._queue_receipt(message_id, message.destination)
        if self.unbind_after is not None and count + 1 >= self.unbind_after:
            self.unbind_after = None
            self._sessions.remove(writer)  # takes nothing more, sends no more receipts
            writer.write(pdu.Pdu(pdu.UNBIND, 999_999).encode())
        return True

    def _queue_receipt(self, message_id: str, destination: str) -> None:
        stat = self.receipt_state.get(destination, "DELIVRD")
        state = {"DELIVRD": pdu.STATE_DELIVERED, "UNDELIV": pdu.STATE_UNDELIVERABLE}[stat]
        text = f"id:{message_id} sub:001 dlvrd:001 submit date:2601011200 done date:2601011200 stat:{stat} err:000 text:"
        self._receipts.append(
            pdu.ShortMessage(
                source=destination,
                destination="Picasse",
                short_message=text.encode(),
                esm_class=pdu.ESM_DELIVERY_RECEIPT,
                tlvs={
                    pdu.TAG_RECEIPTED_MESSAGE_ID: message_id.encode() + b"\x00",
                    pdu.TAG_MESSAGE_STATE: bytes([state]),
                },
            )
        )
        self._receipts_ready.set()  # type: ignore[union-attr]

    async def _send_receipts(self) -> None:
        """Each receipt goes out on the newest bound session; one answered `try later`, or
        left unanswered by a session that ended, is sent again."""
        sequence = itertools.count(1_000_000)
        while True:
            await self._receipts_ready.wait()  # type: ignore[union-attr]
            self._receipts_ready.clear()  # type: ignore[union-attr]
            if not self._sessions or not self._receipts or self.hold_receipts:
                continue
            writer = self._sessions[-1]
            batch, self._receipts = self._receipts, []
            for receipt in batch:
                number = next(sequence)
                self._unanswered[number] = (receipt, writer)
                writer.write(pdu.Pdu(pdu.DELIVER_SM, number, body=receipt.encode()).encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    def _answered(self, unit: pdu.Pdu) -> None:
        self.receipt_answers.append(unit.status)
        receipt, _ = self._unanswered.pop(unit.sequence, (None, None))
        if receipt is not None and unit.status != pdu.ESME_ROK:
            self._loop.call_later(0.05, self._again, [receipt])

    def _ended(self, writer: asyncio.StreamWriter) -> None:
        lost = [n for n, (_, w) in self._unanswered.items() if w is writer]
        self._again([self._unanswered.pop(n)[0] for n in lost])

    def _again(self, receipts: list[pdu.ShortMessage]) -> None:
        self._receipts.extend(receipts)
        self._receipts_ready.set()  # type: ignore[union-attr]
