"""How texts become short messages: GSM 03.38 or UCS-2, and where they are split."""

from picasse.adapters.providers import smpp_pdu as pdu


def test_160_gsm_characters_fit_one_message_and_161_take_two_segments_of_153() -> None:
    assert pdu.encode_text("a" * 160).parts == (b"a" * 160,)
    parts = pdu.encode_text("a" * 161).parts
    assert [len(p) for p in parts] == [153, 8]


def test_an_escaped_gsm_character_counts_two_and_is_never_split() -> None:
    encoded = pdu.encode_text("a" * 152 + "€" + "b" * 10)
    assert encoded.data_coding == pdu.DATA_CODING_GSM
    assert [len(p) for p in encoded.parts] == [152, 12]
    assert "".join(pdu.decode_gsm(p) for p in encoded.parts) == "a" * 152 + "€" + "b" * 10


def test_one_character_outside_gsm_makes_the_text_ucs2_split_at_67() -> None:
    encoded = pdu.encode_text("Ж" * 140)
    assert encoded.data_coding == pdu.DATA_CODING_UCS2
    assert [len(p) // 2 for p in encoded.parts] == [67, 67, 6]
    assert len(pdu.encode_text("Ж" * 70).parts) == 1


def test_a_surrogate_pair_stays_in_one_segment() -> None:
    parts = pdu.encode_text("x" * 66 + "😀" + "y" * 4).parts
    assert [p.decode("utf-16-be") for p in parts] == ["x" * 66, "😀yyyy"]


def test_a_concatenation_header_reads_back() -> None:
    header = pdu.udh(200, 3, 2)
    assert pdu.read_udh(header + b"text") == ((200, 3, 2), b"text")
