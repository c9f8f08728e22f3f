"""Property tests: whatever bytes arrive, parse_message returns a well-formed result or
raises MalformedMessageError; nothing else escapes."""

from __future__ import annotations

import re
from email.header import Header
from email.utils import formataddr

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailrouter.mime.errors import MalformedMessageError
from emailrouter.mime.models import Address, Attachment, ParsedMessage
from emailrouter.mime.parse import parse_message

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")

HEADER_NAMES = [
    "From",
    "To",
    "Cc",
    "Bcc",
    "Reply-To",
    "Sender",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "Content-ID",
    "MIME-Version",
    "Thread-Index",
    "Auto-Submitted",
    "X-Loop",
    "Return-Path",
]
CHARSET_LABELS = [
    "utf-8",
    "UTF8",
    "iso-8859-1",
    "us-ascii",
    "windows-1252",
    "koi8-r",
    "shift_jis",
    "iso-2022-jp",
    "gb2312",
    "utf-16",
    "utf-7",
    "x-unknown",
    "rot13",
    "base64",
    "undefined",
    "unicode_escape",
    "",
    '"',
    "utf-8\x00",
    "*",
]
FRAGMENTS = [
    "=?",
    "?=",
    "=?utf-8?b?",
    "=?utf-8?q?",
    "=?x-bogus?q?",
    "=?utf-8?q?a=0Ab=0D=00?=",
    "=?utf-8?b?Cg0A?=",
    "=?utf-16?b?2D0=?=",
    "?b?",
    "\r\n",
    "\n",
    "\r",
    "\r\n ",
    "\t",
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\u0085",
    "\u2028",
    '"',
    "<",
    ">",
    "@",
    ",",
    ";",
    ":",
    "(",
    ")",
    "\\",
    "*0*=",
    "''",
    "%",
    "=",
    "é",
    "€",
    "😀",
]

header_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=12).map("".join)
header_value = st.one_of(
    header_text.map(lambda text: text.encode("utf-8", errors="surrogatepass")),
    st.binary(max_size=40),
)
header_name = st.one_of(
    st.sampled_from(HEADER_NAMES),
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
        min_size=1,
        max_size=12,
    ),
)
headers = st.lists(st.tuples(header_name, header_value), min_size=1, max_size=12)


def _assert_well_formed(parsed: ParsedMessage, raw: bytes) -> None:
    """Every field has its declared type and the invariants the pipeline relies on."""
    assert isinstance(parsed, ParsedMessage)
    assert parsed.message_id is None or re.fullmatch(r"<[^<>\s]+>", parsed.message_id)
    assert isinstance(parsed.subject, str)
    assert not re.search(r"[\r\n\x00]", parsed.subject)
    addresses = [*parsed.to, *parsed.cc, *parsed.bcc, *parsed.reply_to]
    if parsed.sender is not None:
        addresses.append(parsed.sender)
    for address in addresses:
        assert isinstance(address, Address)
        assert address.email == address.email.lower()
        assert not re.search(r"\s", address.email)
        assert "@" in address.email
        assert isinstance(address.name, str) and not re.search(r"[\r\n]", address.name)
    assert parsed.date is None or _ISO_UTC.fullmatch(parsed.date)
    assert parsed.in_reply_to is None or parsed.in_reply_to.startswith("<")
    assert len(parsed.references) <= 32 and all(isinstance(ref, str) for ref in parsed.references)
    assert isinstance(parsed.html_body, str) and isinstance(parsed.text_body, str)
    for attachment in parsed.attachments:
        assert isinstance(attachment, Attachment)
        assert isinstance(attachment.content, bytes)
        assert attachment.filename and "/" not in attachment.filename and "\\" not in attachment.filename
        assert "/" in attachment.mimetype
        assert attachment.content_id is None or ("<" not in attachment.content_id)
    for name, value in parsed.headers.items():
        assert isinstance(name, str) and isinstance(value, str) and not re.search(r"[\r\n]", value)
    assert all(isinstance(defect, str) for defect in parsed.defects)
    assert not any(defect.startswith("body-unreadable") for defect in parsed.defects)  # the safety net
    assert parsed.size == len(raw)
    # The fingerprint identifies messages without a Message-ID; with one it is not needed.
    assert (
        _FINGERPRINT.fullmatch(parsed.fingerprint) if parsed.message_id is None else parsed.fingerprint == ""
    )
    # Everything must survive JSON/UTF-8 on the way to Dataverse: no lone surrogates.
    texts = [parsed.subject, parsed.html_body, parsed.text_body, *parsed.headers.values(), *parsed.defects]
    texts += [a.name for a in addresses] + [a.filename for a in parsed.attachments]
    for text in texts:
        text.encode("utf-8")


def _parse_or_malformed(raw: bytes) -> ParsedMessage | None:
    try:
        parsed = parse_message(raw, max_attachment_bytes=64)
    except MalformedMessageError:
        return None
    _assert_well_formed(parsed, raw)
    return parsed


@st.composite
def mime_messages(draw: st.DrawFn) -> bytes:
    """A multipart message with random headers, charsets, encodings and bodies."""
    newline = draw(st.sampled_from([b"\r\n", b"\n"]))
    boundary = draw(st.sampled_from([b"b1", b"=_Part_0", b"----x", b"a b", b""]))
    top = draw(headers)
    top.append(
        (
            "Content-Type",
            b"multipart/"
            + draw(st.sampled_from([b"mixed", b"alternative", b"related", b"signed", b"digest"]))
            + b'; boundary="'
            + boundary
            + b'"',
        )
    )
    lines = [name.encode() + b": " + value for name, value in draw(st.permutations(top))]
    body = b""
    for _ in range(draw(st.integers(0, 4))):
        content_type = draw(
            st.sampled_from(
                [
                    b"text/plain",
                    b"text/html",
                    b"text/calendar",
                    b"image/png",
                    b"message/rfc822",
                    b"application/pkcs7-signature",
                    b"multipart/mixed",
                    b"bogus",
                ]
            )
        )
        charset = draw(st.sampled_from(CHARSET_LABELS)).encode("utf-8")
        encoding = draw(st.sampled_from([b"base64", b"quoted-printable", b"8bit", b"x-uue", b""]))
        part_headers = [
            b"Content-Type: " + content_type + b"; charset=" + charset,
            b"Content-Transfer-Encoding: " + encoding,
        ]
        if draw(st.booleans()):
            part_headers.append(
                b"Content-Disposition: attachment; filename*=utf-8''" + draw(st.binary(max_size=10))
            )
        if draw(st.booleans()):
            part_headers.append(b"Content-ID: <" + draw(st.binary(max_size=8)) + b">")
        body += b"--" + boundary + newline + newline.join(part_headers) + newline + newline
        body += draw(st.binary(max_size=80)) + newline
    if draw(st.booleans()):
        body += b"--" + boundary + b"--" + newline
    raw = newline.join(lines) + newline + newline + body
    cut = draw(st.integers(0, len(raw)))
    return raw[:cut] if draw(st.booleans()) else raw


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """`base` with random byte insertions, deletions and duplicated slices."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if operation == "insert":
            data[position:position] = draw(
                st.one_of(st.binary(min_size=1, max_size=6), st.sampled_from([f.encode() for f in FRAGMENTS]))
            )
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            start = draw(st.integers(0, len(data)))
            data[position:position] = data[start : start + draw(st.integers(1, 60))]
    return bytes(data)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_malformed(raw: bytes) -> None:
    _parse_or_malformed(raw)


@SETTINGS
@given(headers, st.binary(max_size=200), st.sampled_from([b"\r\n", b"\n"]))
def test_random_header_values_with_control_chars_never_break_the_parser(
    header_list: list[tuple[str, bytes]], body: bytes, newline: bytes
) -> None:
    raw = newline.join(name.encode() + b": " + value for name, value in header_list) + newline * 2 + body

    _parse_or_malformed(raw)


@SETTINGS
@given(mime_messages())
def test_generated_multipart_messages_parse_or_raise_malformed(raw: bytes) -> None:
    _parse_or_malformed(raw)


@SETTINGS
@given(mutated(mime_messages()))
def test_mutated_messages_parse_or_raise_malformed(raw: bytes) -> None:
    _parse_or_malformed(raw)


@SETTINGS
@given(mime_messages())
def test_parsing_is_deterministic(raw: bytes) -> None:
    first = _parse_or_malformed(raw)
    second = _parse_or_malformed(raw)

    assert (first is None) == (second is None)
    if first is not None and second is not None:
        assert first.fingerprint == second.fingerprint
        assert first.defects == second.defects


printable_text = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S"), exclude_characters="\x85") | st.just(" "),
    max_size=60,
)


@SETTINGS
@given(printable_text)
def test_rfc2047_encoded_subject_round_trips(subject: str) -> None:
    encoded = Header(subject, "utf-8").encode(maxlinelen=40).encode("ascii")
    raw = b"From: a@example.com\r\nSubject: " + encoded.replace(b"\n", b"\r\n") + b"\r\n\r\nx"

    parsed = parse_message(raw)

    assert parsed.subject == re.sub(" +", " ", subject).strip()


plain_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzÄÖÜäöüßéèñøåæ ", max_size=20)
local_parts = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-", min_size=1, max_size=12
).filter(lambda local: not local.startswith(".") and not local.endswith(".") and ".." not in local)
domains = st.sampled_from(["example.com", "Example.ORG", "mail.contoso.co.uk"])


@SETTINGS
@given(st.lists(st.tuples(plain_names, local_parts, domains), min_size=1, max_size=5))
def test_formatted_addresses_round_trip_lower_cased_with_names(entries: list[tuple[str, str, str]]) -> None:
    header = ", ".join(
        formataddr((name, f"{local}@{domain}"), charset="utf-8") for name, local, domain in entries
    )
    raw = b"From: a@example.com\r\nTo: " + header.encode("ascii") + b"\r\n\r\nx"

    parsed = parse_message(raw)

    expected: dict[str, str] = {}
    for name, local, domain in entries:
        expected.setdefault(f"{local}@{domain}".lower(), re.sub(" +", " ", name).strip())
    assert [(address.email, address.name) for address in parsed.to] == list(expected.items())
