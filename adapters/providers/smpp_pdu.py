"""SMPP 3.4 protocol data units, and the splitting of a text into short messages.

The few PDUs an SMS sender needs (bind_transceiver, submit_sm, deliver_sm, enquire_link,
unbind, generic_nack and their responses), read and written here, for both sides: the
provider (`smpp.py`) speaks as an ESME, the tests' SMSC simulator as the SMSC.

A PDU is a 16-octet header (length, command id, command status, sequence number, each a
big-endian 32-bit integer) and a body of integers, NUL-terminated C-strings and, at the
end, optional tag-length-value parameters.

Texts go out in the GSM 03.38 default alphabet (one septet per octet, unpacked:
data_coding 0) when every character has a place in it, else in UCS-2 (data_coding 8).
A text too long for one short message is split into segments, each with a user data
header (UDH, esm_class 0x40) naming an 8-bit reference, the count and the segment's
number: 160 septets fit one message and 153 one segment; 70 UCS-2 characters one
message and 67 one segment. No character (an escaped GSM one, a UTF-16 surrogate pair)
is split between two segments.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct(">IIII")
MAX_PDU_OCTETS = 64 * 1024  # a peer announcing more is not speaking SMPP

# Command ids
GENERIC_NACK = 0x80000000
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
RESPONSE_BIT = 0x80000000

# Command status codes (SMPP 3.4 section 5.1.3) that we act on
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RSUBMITFAIL = 0x45
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RX_P_APPN = 0x65
ESME_RX_R_APPN = 0x66

# esm_class bits
ESM_UDHI = 0x40
ESM_DELIVERY_RECEIPT = 0x04

# Optional parameters (TLV tags)
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_MESSAGE_STATE = 0x0427

# message_state values (SMPP 3.4 section 5.2.28)
STATE_DELIVERED = 2
STATE_EXPIRED = 3
STATE_DELETED = 4
STATE_UNDELIVERABLE = 5
STATE_ACCEPTED = 6
STATE_UNKNOWN = 7
STATE_REJECTED = 8

DATA_CODING_GSM = 0x00
DATA_CODING_UCS2 = 0x08


class PduError(Exception):
    """The peer sent bytes that are not an SMPP PDU we can read."""


@dataclass
class Pdu:
    command_id: int
    sequence: int
    status: int = ESME_ROK
    body: bytes = b""

    def encode(self) -> bytes:
        return (
            HEADER.pack(HEADER.size + len(self.body), self.command_id, self.status, self.sequence)
            + self.body
        )

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)


async def read_pdu(reader: asyncio.StreamReader) -> Pdu:
    """The next PDU; `asyncio.IncompleteReadError` when the peer closed the connection."""
    header = await reader.readexactly(HEADER.size)
    length, command_id, status, sequence = HEADER.unpack(header)
    if not HEADER.size <= length <= MAX_PDU_OCTETS:
        raise PduError(f"PDU length {length} out of range")
    body = await reader.readexactly(length - HEADER.size)
    return Pdu(command_id, sequence, status, body)


# Bodies


def c_string(text: str | bytes) -> bytes:
    raw = text.encode("ascii") if isinstance(text, str) else text
    return raw + b"\x00"


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def c_string(self) -> bytes:
        end = self.body.find(b"\x00", self.at)
        if end < 0:
            raise PduError("C-string without its NUL")
        value = self.body[self.at : end]
        self.at = end + 1
        return value

    def byte(self) -> int:
        if self.at >= len(self.body):
            raise PduError("body too short")
        value = self.body[self.at]
        self.at += 1
        return value

    def octets(self, count: int) -> bytes:
        if self.at + count > len(self.body):
            raise PduError("body too short")
        value = self.body[self.at : self.at + count]
        self.at += count
        return value

    def tlvs(self) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        while self.at + 4 <= len(self.body):
            tag, length = struct.unpack_from(">HH", self.body, self.at)
            self.at += 4
            found[tag] = self.octets(length)
        return found


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def bind_body(system_id: str, password: str) -> bytes:
    return (
        c_string(system_id)
        + c_string(password)
        + c_string("")  # system_type
        + bytes([0x34, 0, 0])  # interface_version 3.4, addr_ton, addr_npi
        + c_string("")  # address_range
    )


def read_bind(body: bytes) -> tuple[str, str]:
    """(system_id, password) of a bind PDU."""
    reader = _Reader(body)
    return reader.c_string().decode("ascii", "replace"), reader.c_string().decode(
        "ascii", "replace"
    )


@dataclass
class ShortMessage:
    """The body of a submit_sm or a deliver_sm (they share one layout)."""

    source: str
    destination: str
    short_message: bytes
    esm_class: int = 0
    data_coding: int = DATA_CODING_GSM
    registered_delivery: int = 0
    source_ton: int = 5  # alphanumeric, as sender ids usually are
    source_npi: int = 0
    destination_ton: int = 1  # international
    destination_npi: int = 1  # E.164
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:  # numbers and content stay out of every log line
        return f"ShortMessage(esm_class={self.esm_class:#x}, data_coding={self.data_coding})"

    def encode(self) -> bytes:
        if len(self.short_message) > 254:
            raise ValueError("a short message holds at most 254 octets")
        return (
            c_string("")  # service_type
            + bytes([self.source_ton, self.source_npi])
            + c_string(self.source)
            + bytes([self.destination_ton, self.destination_npi])
            + c_string(self.destination)
            + bytes([self.esm_class, 0, 0])  # esm_class, protocol_id, priority_flag
            + c_string("")  # schedule_delivery_time
            + c_string("")  # validity_period
            + bytes([self.registered_delivery, 0, self.data_coding, 0, len(self.short_message)])
            + self.short_message
            + b"".join(tlv(tag, value) for tag, value in self.tlvs.items())
        )

    @classmethod
    def decode(cls, body: bytes) -> ShortMessage:
        reader = _Reader(body)
        reader.c_string()  # service_type
        source_ton, source_npi = reader.byte(), reader.byte()
        source = reader.c_string().decode("ascii", "replace")
        destination_ton, destination_npi = reader.byte(), reader.byte()
        destination = reader.c_string().decode("ascii", "replace")
        esm_class = reader.byte()
        reader.byte()  # protocol_id
        reader.byte()  # priority_flag
        reader.c_string()  # schedule_delivery_time
        reader.c_string()  # validity_period
        registered_delivery = reader.byte()
        reader.byte()  # replace_if_present_flag
        data_coding = reader.byte()
        reader.byte()  # sm_default_msg_id
        short_message = reader.octets(reader.byte())
        return cls(
            source=source,
            destination=destination,
            short_message=short_message,
            esm_class=esm_class,
            data_coding=data_coding,
            registered_delivery=registered_delivery,
            source_ton=source_ton,
            source_npi=source_npi,
            destination_ton=destination_ton,
            destination_npi=destination_npi,
            tlvs=reader.tlvs(),
        )


def message_id_body(message_id: str) -> bytes:
    """The body of a submit_sm_resp or deliver_sm_resp."""
    return c_string(message_id)


def read_message_id(body: bytes) -> str:
    if not body:
        return ""
    return _Reader(body).c_string().decode("ascii", "replace")


# GSM 03.38: the default alphabet and its extension table (reached through ESC, 0x1B)

_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_GSM_CODE = {char: code for code, char in enumerate(_GSM_BASIC) if char != "\x1b"}
_GSM_CHAR = {code: char for char, code in _GSM_CODE.items()}
_GSM_EXTENDED_CHAR = {code: char for char, code in _GSM_EXTENDED.items()}
ESCAPE = 0x1B

# Septets per character of the GSM default alphabet: 2 for those of its extension table.
_GSM_SIZE = {**dict.fromkeys(_GSM_CODE, 1), **dict.fromkeys(_GSM_EXTENDED, 2)}
GSM_SINGLE, GSM_SEGMENT = 160, 153  # septets
UCS2_SINGLE, UCS2_SEGMENT = 70, 67  # UTF-16 code units
MAX_SEGMENTS = 255


def gsm_septets(char: str) -> bytes | None:
    """The unpacked septets of one character in the GSM default alphabet, or None."""
    code = _GSM_CODE.get(char)
    if code is not None:
        return bytes([code])
    extended = _GSM_EXTENDED.get(char)
    if extended is not None:
        return bytes([ESCAPE, extended])
    return None


def decode_gsm(septets: bytes) -> str:
    chars = []
    escaped = False
    for code in septets:
        if escaped:
            chars.append(_GSM_EXTENDED_CHAR.get(code, " "))
            escaped = False
        elif code == ESCAPE:
            escaped = True
        else:
            chars.append(_GSM_CHAR.get(code, "?"))
    return "".join(chars)


@dataclass(frozen=True)
class Encoded:
    """A text as short messages: the data_coding, and each segment's user data (no UDH)."""

    data_coding: int
    parts: tuple[bytes, ...]


def encode_text(text: str) -> Encoded:
    """The text in GSM 03.38 when it can be, else UCS-2; split when one message is too few."""
    units = [gsm_septets(char) for char in text]
    if all(unit is not None for unit in units):
        return Encoded(DATA_CODING_GSM, _split([u for u in units if u], GSM_SINGLE, GSM_SEGMENT))
    utf16 = [char.encode("utf-16-be") for char in text]
    return Encoded(DATA_CODING_UCS2, _split(utf16, UCS2_SINGLE * 2, UCS2_SEGMENT * 2))


def segment_count(text: str) -> int:
    """How many short messages the text takes (GSM 03.38 or UCS-2, split as `encode_text`
    splits it): the count an SMS is billed by, whichever provider sends it. Counted from
    each character's size alone, without encoding; a text longer than any concatenation
    can carry is counted too, not refused here."""
    sizes = [_GSM_SIZE.get(char, 0) for char in text]
    if 0 not in sizes:
        return len(_part_starts(sizes, GSM_SINGLE, GSM_SEGMENT))
    sizes = [2 if char <= "\uffff" else 4 for char in text]  # UTF-16: a pair beyond the BMP
    return len(_part_starts(sizes, UCS2_SINGLE * 2, UCS2_SEGMENT * 2))


def _part_starts(sizes: list[int], single: int, segment: int) -> list[int]:
    """Where each part begins (indexes of units, each of the given size in octets): all in
    one part when they fit `single`, else whole units packed into parts of `segment` at
    most; a unit is never split."""
    if sum(sizes) <= single:
        return [0]
    starts, used = [0], 0
    for index, size in enumerate(sizes):
        if used + size > segment:
            starts.append(index)
            used = 0
        used += size
    return starts


def _split(units: list[bytes], single: int, segment: int) -> tuple[bytes, ...]:
    """The units (a character's octets each) joined into the parts `_part_starts` makes."""
    starts = _part_starts([len(unit) for unit in units], single, segment)
    if len(starts) > MAX_SEGMENTS:
        raise ValueError(f"a text of more than {MAX_SEGMENTS} segments")
    ends = [*starts[1:], len(units)]
    return tuple(b"".join(units[start:end]) for start, end in zip(starts, ends, strict=True))


def udh(reference: int, total: int, number: int) -> bytes:
    """The concatenation header (IEI 0x00, 8-bit reference) of segment `number` of `total`."""
    return bytes([0x05, 0x00, 0x03, reference & 0xFF, total, number])


def read_udh(user_data: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """((reference, total, number) or None, the text's octets) of user data with a UDH."""
    length = user_data[0]
    header, rest = user_data[1 : 1 + length], user_data[1 + length :]
    at = 0
    concatenation = None
    while at + 2 <= len(header):
        iei, size = header[at], header[at + 1]
        value = header[at + 2 : at + 2 + size]
        if iei == 0x00 and size == 3:
            concatenation = (value[0], value[1], value[2])
        at += 2 + size
    return concatenation, rest


def decode_text(data_coding: int, octets: bytes) -> str:
    if data_coding == DATA_CODING_UCS2:
        return octets.decode("utf-16-be", "replace")
    return decode_gsm(octets)
