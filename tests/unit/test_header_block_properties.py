"""Property tests of the header block: input that does not start with a text header block never
becomes an email, and real messages whose header block is damaged in the ways real mail is
(a line without a colon, whitespace before a colon, an mbox envelope line, blank lines before
it, other line ends, transport headers added) keep every header the undamaged message had."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailrouter.mime.errors import MalformedMessageError
from emailrouter.mime.parse import parse_message

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "mail" / "tracking"


def _corpus() -> list[bytes]:
    messages = []
    for path in sorted(CORPUS.glob("*.eml")):
        text = Template(path.read_text(encoding="utf-8")).safe_substitute(
            {"n": "1", "subject": "Maintenance contract", "token": "CRM:0001234"}
        )
        messages.append(text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8"))
    return messages


REAL = _corpus()
# How files that are not mail begin (PNG, JPEG, GIF, ZIP, PDF, gzip, ELF, a NUL).
SIGNATURES = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"PK\x03\x04",
    b"%PDF-1.7\n",
    b"\x1f\x8b",
    b"\x7fELF",
    b"\x00",
]


def identity(raw: bytes) -> tuple[object, ...]:
    parsed = parse_message(raw)
    return parsed.message_id, parsed.subject, parsed.sender, parsed.to, parsed.cc, parsed.date


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(real message, the same message with its header block damaged)."""
    raw = draw(st.sampled_from(REAL))
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for _ in range(draw(st.integers(1, 4))):
        damage = draw(st.sampled_from(["no-colon", "obsolete", "transport"]))
        starts = [i for i in range(1, len(lines) + 1) if i == len(lines) or lines[i][:1] not in b" \t"]
        at = draw(st.sampled_from(starts))  # between fields, not inside a folded one
        if damage == "no-colon":
            word = draw(st.from_regex(rb"\A[a-z]{1,8}( [A-Za-z-]{1,12}:? ?[a-z@.]{0,12})?\Z"))
            lines.insert(at, word)
        elif damage == "obsolete":
            index = draw(st.integers(0, len(lines) - 1))
            lines[index] = re.sub(
                rb"^([\x21-\x39\x3b-\x7e]+):", lambda m: m.group(1) + b" :", lines[index], count=1
            )
        else:
            lines.insert(at, b"Received: from relay.example by mx.example; Fri, 27 Nov 2026 10:00:05 +0000")
    prefix = draw(
        st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"From MAILER-DAEMON Fri Nov 27 10:00:00 2026\r\n"])
    )
    damaged_raw = prefix + b"\r\n".join(lines) + b"\r\n\r\n" + body
    if draw(st.booleans()):
        damaged_raw = damaged_raw.replace(b"\r\n", b"\n")
    return raw, damaged_raw


@SETTINGS
@given(damaged())
def test_a_damaged_header_block_keeps_every_header_the_message_had(pair: tuple[bytes, bytes]) -> None:
    original, broken = pair
    expected = identity(original)
    assert any(expected), "the corpus message itself has a readable header block"
    assert identity(broken) == expected


@SETTINGS
@given(st.sampled_from(SIGNATURES), st.binary(max_size=400), st.sampled_from(REAL))
def test_input_that_does_not_start_with_a_header_block_is_never_mail(
    signature: bytes, noise: bytes, real: bytes
) -> None:
    """A binary file (its signature, a NUL as every such format has early on, anything) with a
    whole message inside it after its own bytes is still no message."""
    with pytest.raises(MalformedMessageError):
        parse_message(signature + b"\x00" + noise + b"\r\n" + real)


@SETTINGS
@given(st.sampled_from(REAL), st.binary(min_size=40, max_size=400))
def test_a_header_block_that_is_not_text_is_never_mail(real: bytes, binary: bytes) -> None:
    """A first line that looks like a header, then bytes no header block holds."""
    control = bytes(range(0x00, 0x09)) + bytes(range(0x0E, 0x1A))
    garbage = control + binary + control
    with pytest.raises(MalformedMessageError):
        parse_message(real.split(b"\r\n", 1)[0] + b"\r\n" + garbage + b"\r\n\r\nbody")


@SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes_become_mail_only_when_they_start_with_a_named_header(data: bytes) -> None:
    try:
        parsed = parse_message(data)
    except MalformedMessageError:
        return
    first = next(
        line
        for line in re.split(rb"\r\n|\r|\n", data)
        if line.strip(b" \t") and not line.startswith(b"From ")
    )
    assert b":" in first, first
    assert parsed is not None
