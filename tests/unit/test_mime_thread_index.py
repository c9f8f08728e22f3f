"""Thread-Index: Outlook's conversation index, decoded and walked up to its root.

The indexes are built here from the documented layout (PidTagConversationIndex):
a 22-byte header block (reserved 0x01, the top five bytes of a big-endian
FILETIME, a GUID) and one 5-byte child block per reply.
"""

from __future__ import annotations

import base64
import struct
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailrouter.mime.defects import DefectLog
from emailrouter.mime.parse import parse_message
from emailrouter.mime.thread_index import ancestors, decode_thread_index, is_valid_index

FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
CONVERSATION = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")


def header_block(moment: datetime, conversation: uuid.UUID = CONVERSATION) -> bytes:
    """0x01, the five most significant bytes of the FILETIME (big-endian), the GUID (big-endian fields)."""
    filetime = int((moment - FILETIME_EPOCH).total_seconds() * 10_000_000)
    return b"\x01" + struct.pack(">Q", filetime)[:5] + conversation.bytes


def child_block(delta_seconds: int, random_nibble: int = 0x7, sequence: int = 0) -> bytes:
    """DC bit 0, bits 48..18 of the time delta, a random nibble and a sequence nibble."""
    delta = delta_seconds * 10_000_000
    value = ((delta >> 18) & 0x7FFFFFFF) << 8 | (random_nibble << 4) | sequence
    return value.to_bytes(5, "big")


ROOT = header_block(datetime(2026, 11, 27, 5, 0, tzinfo=UTC))
REPLY = ROOT + child_block(3600)
REPLY_TO_REPLY = REPLY + child_block(7200, random_nibble=0xA)


def header(index: bytes) -> bytes:
    return base64.b64encode(index)


def parse_with_thread_index(value: bytes) -> tuple[bytes | None, list[str]]:
    parsed = parse_message(b"From: a@example.com\r\nThread-Index: " + value + b"\r\n\r\nbody")
    return parsed.thread_index, parsed.defects


def test_root_index_is_22_bytes_and_starts_with_the_reserved_byte() -> None:
    assert len(ROOT) == 22 and ROOT[0] == 0x01
    assert len(REPLY_TO_REPLY) == 32


@pytest.mark.parametrize("index", [ROOT, REPLY, REPLY_TO_REPLY])
def test_valid_thread_index_is_decoded_to_its_bytes(index: bytes) -> None:
    thread_index, defects = parse_with_thread_index(header(index))

    assert thread_index == index
    assert not any(defect.startswith("thread-index") for defect in defects)


def test_folded_thread_index_is_unfolded() -> None:
    encoded = header(REPLY_TO_REPLY)

    thread_index, _ = parse_with_thread_index(encoded[:20] + b"\r\n " + encoded[20:])

    assert thread_index == REPLY_TO_REPLY


def test_missing_padding_is_tolerated() -> None:
    encoded = header(ROOT)  # 22 bytes → 32 characters ending in "=="
    assert encoded.endswith(b"==")

    thread_index, defects = parse_with_thread_index(encoded.rstrip(b"="))

    assert thread_index == ROOT
    assert not any(defect.startswith("thread-index") for defect in defects)


def test_absent_thread_index_is_none_without_a_defect() -> None:
    parsed = parse_message(b"From: a@example.com\r\n\r\nbody")

    assert parsed.thread_index is None
    assert not any(defect.startswith("thread-index") for defect in parsed.defects)


@pytest.mark.parametrize("value", [b"not base64!", b"AQHZ*abc", b"AQHZa", b"AQ==HZab", b"  "])
def test_bad_base64_is_none_with_a_defect(value: bytes) -> None:
    thread_index, defects = parse_with_thread_index(value)

    assert thread_index is None
    assert "thread-index-invalid:base64" in defects


@pytest.mark.parametrize(
    ("index", "length"),
    [(ROOT[:21], 21), (ROOT + b"\x01", 23), (REPLY + b"\x00\x00\x00\x00", 31), (b"\x01\x02\x03", 3)],
)
def test_wrong_length_is_none_with_a_defect(index: bytes, length: int) -> None:
    thread_index, defects = parse_with_thread_index(header(index))

    assert thread_index is None
    assert f"thread-index-invalid:length:{length}" in defects


def test_the_selected_header_keeps_the_raw_value_even_when_invalid() -> None:
    parsed = parse_message(b"From: a@example.com\r\nThread-Index: AQHZabcd\r\n\r\nbody")

    assert parsed.headers["Thread-Index"] == "AQHZabcd"
    assert parsed.thread_index is None
    assert "thread-index-invalid:length:6" in parsed.defects


def test_decode_thread_index_of_none_is_none() -> None:
    defects = DefectLog()

    assert decode_thread_index(None, defects) is None
    assert defects.as_list() == []


def test_ancestors_are_nearest_first_down_to_the_root() -> None:
    assert ancestors(REPLY_TO_REPLY) == [REPLY_TO_REPLY, REPLY, ROOT]
    assert ancestors(ROOT) == [ROOT]


@pytest.mark.parametrize("index", [b"", ROOT[:21], ROOT + b"\x00"])
def test_ancestors_of_an_invalid_index_raise(index: bytes) -> None:
    assert not is_valid_index(index)
    with pytest.raises(ValueError, match="conversation index"):
        ancestors(index)


@given(st.binary(min_size=22, max_size=22), st.lists(st.binary(min_size=5, max_size=5), max_size=20))
def test_any_well_shaped_index_round_trips_and_its_ancestors_are_its_prefixes(
    root: bytes, children: list[bytes]
) -> None:
    index = root + b"".join(children)

    thread_index, _ = parse_with_thread_index(header(index))

    assert thread_index == index
    chain = ancestors(index)
    assert len(chain) == len(children) + 1
    assert chain[-1] == root
    assert all(index.startswith(prefix) for prefix in chain)
    assert [len(prefix) for prefix in chain] == sorted((len(prefix) for prefix in chain), reverse=True)
