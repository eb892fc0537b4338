"""How texts become short messages: GSM 03.38 or UCS-2, and where they are split."""

from hypothesis import given, settings
from hypothesis import strategies as st

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


# Characters of each kind: GSM, GSM's extension table (two septets), outside GSM (UCS-2),
# and beyond the BMP (a surrogate pair in UTF-16).
_MIXED = "aZ09 @£\n€{}[]~\\^|\fЖ中😀🇳🇱"


@given(st.text(alphabet=_MIXED, max_size=700) | st.text(alphabet="ab€", max_size=400))
@settings(max_examples=400, deadline=None)
def test_the_billed_count_is_the_number_of_parts_the_encoder_makes(text: str) -> None:
    assert pdu.segment_count(text) == len(pdu.encode_text(text).parts)


def test_the_count_at_each_boundary() -> None:
    counts = {
        "a" * 160: 1, "a" * 161: 2, "a" * 306: 2, "a" * 307: 3,
        "€" * 80: 1, "€" * 81: 2, "a" * 158 + "€": 1, "a" * 159 + "€": 2,
        "Ж" * 70: 1, "Ж" * 71: 2, "Ж" * 134: 2, "Ж" * 135: 3, "x" * 68 + "😀": 1, "x" * 69 + "😀": 2, "": 1,
    }  # fmt: skip
    assert {text: pdu.segment_count(text) for text in counts} == counts


def test_a_text_longer_than_any_concatenation_is_counted_not_refused() -> None:
    assert pdu.segment_count("a" * 153 * 300) == 300
