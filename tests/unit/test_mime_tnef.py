"""TNEF (winmail.dat) inside mail: its files replace it, its body fills an empty MIME body.

The TNEF streams are built by the small writer below, which follows the
published format (MS-OXTNEF) and not the reader under test: a signature, a
legacy key, then attributes of `level, id, type, length, data, checksum`,
where the MAPI property lists carry typed, length-prefixed, 4-byte-padded values.
"""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tnefparse import TNEF

from emailrouter.mime import bodies
from emailrouter.mime.parse import parse_message

# --- A TNEF writer ---------------------------------------------------------------------------------

SIGNATURE = 0x223E9F78
LEVEL_MESSAGE = 0x01
LEVEL_ATTACHMENT = 0x02

# Attribute types (atp*) and ids (att*), MS-OXTNEF 2.1.3
ATP_STRING = 0x0001
ATP_TEXT = 0x0002
ATP_BYTE = 0x0006
ATP_WORD = 0x0007
ATP_DWORD = 0x0008
ATT_SUBJECT = 0x8004
ATT_MESSAGE_CLASS = 0x8008
ATT_BODY = 0x800C
ATT_ATTACH_DATA = 0x800F
ATT_ATTACH_TITLE = 0x8010
ATT_ATTACH_RENDDATA = 0x9002
ATT_MAPI_PROPS = 0x9003
ATT_ATTACHMENT = 0x9005
ATT_TNEF_VERSION = 0x9006
ATT_OEM_CODEPAGE = 0x9007

# MAPI property types and tags
PT_LONG = 0x0003
PT_OBJECT = 0x000D
PT_STRING8 = 0x001E
PT_UNICODE = 0x001F
PT_BINARY = 0x0102
PR_RTF_COMPRESSED = 0x1009
PR_BODY_HTML = 0x1013
PR_INTERNET_CPID = 0x3FDE
PR_ATTACH_DATA_OBJ = 0x3701
PR_ATTACH_LONG_FILENAME = 0x3707
PR_ATTACH_MIME_TAG = 0x370E
PR_ATTACH_CONTENT_ID = 0x3712
IID_IMESSAGE = bytes.fromhex("0703020000000000c000000000000046")


def attribute(level: int, attribute_id: int, attribute_type: int, data: bytes) -> bytes:
    """One TNEF attribute: level, id (low word) and type (high word), length, data, checksum."""
    checksum = sum(data) & 0xFFFF
    return (
        struct.pack("<BHHI", level, attribute_id, attribute_type, len(data))
        + data
        + struct.pack("<H", checksum)
    )


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def prop_variable(prop_type: int, prop_id: int, data: bytes) -> bytes:
    """A single-valued variable-length MAPI property: tag, value count 1, length, padded bytes."""
    return struct.pack("<HHII", prop_type, prop_id, 1, len(data)) + _padded(data)


def prop_unicode(prop_id: int, text: str) -> bytes:
    return prop_variable(PT_UNICODE, prop_id, text.encode("utf-16-le") + b"\x00\x00")


def prop_long(prop_id: int, value: int) -> bytes:
    return struct.pack("<HHi", PT_LONG, prop_id, value)


def mapi_props(*props: bytes) -> bytes:
    return struct.pack("<I", len(props)) + b"".join(props)


def message_header(codepage: int = 1252) -> list[bytes]:
    """The attributes Outlook writes first: TNEF version, OEM codepage, message class."""
    return [
        attribute(LEVEL_MESSAGE, ATT_TNEF_VERSION, ATP_DWORD, struct.pack("<I", 0x00010000)),
        attribute(LEVEL_MESSAGE, ATT_OEM_CODEPAGE, ATP_BYTE, struct.pack("<II", codepage, 0)),
        attribute(LEVEL_MESSAGE, ATT_MESSAGE_CLASS, ATP_WORD, b"IPM.Note\x00"),
    ]


def file_attachment(
    title: bytes, content: bytes, *, long_name: str | None = None, extra_props: tuple[bytes, ...] = ()
) -> list[bytes]:
    """An attach-by-value file: rendering data first, then title, data and its MAPI properties."""
    rendering = struct.pack("<HIHHI", 0x0001, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0)
    props = list(extra_props)
    if long_name is not None:
        props.insert(0, prop_unicode(PR_ATTACH_LONG_FILENAME, long_name))
    attributes = [
        attribute(LEVEL_ATTACHMENT, ATT_ATTACH_RENDDATA, ATP_BYTE, rendering),
        attribute(LEVEL_ATTACHMENT, ATT_ATTACH_TITLE, ATP_STRING, title + b"\x00"),
        attribute(LEVEL_ATTACHMENT, ATT_ATTACH_DATA, ATP_BYTE, content),
    ]
    if props:
        attributes.append(attribute(LEVEL_ATTACHMENT, ATT_ATTACHMENT, ATP_BYTE, mapi_props(*props)))
    return attributes


def html_body_props(html: bytes, codepage: int = 65001) -> bytes:
    """attMAPIProps carrying PR_BODY_HTML and the internet codepage it is written in."""
    props = mapi_props(prop_long(PR_INTERNET_CPID, codepage), prop_variable(PT_BINARY, PR_BODY_HTML, html))
    return attribute(LEVEL_MESSAGE, ATT_MAPI_PROPS, ATP_BYTE, props)


def rtf_body_props() -> bytes:
    """attMAPIProps carrying only PR_RTF_COMPRESSED (an uncompressed `MELA` stream)."""
    rtf = b"{\\rtf1\\ansi Hello from RTF}"
    stream = struct.pack("<II", len(rtf) + 12, len(rtf)) + b"MELA" + struct.pack("<I", 0) + rtf
    props = mapi_props(prop_variable(PT_BINARY, PR_RTF_COMPRESSED, stream))
    return attribute(LEVEL_MESSAGE, ATT_MAPI_PROPS, ATP_BYTE, props)


def tnef_stream(*attributes: bytes | list[bytes], key: int = 0x1F2E) -> bytes:
    """Signature, key, then the attributes in order (lists are flattened)."""
    body = b"".join(b"".join(item) if isinstance(item, list) else item for item in attributes)
    return struct.pack("<IH", SIGNATURE, key) + body


def mail_with_tnef(
    blob: bytes,
    *,
    body: bytes | None = b"See attached.",
    content_type: bytes = b'application/ms-tnef; name="winmail.dat"',
) -> bytes:
    """A multipart/mixed message: an optional text/plain body, then the TNEF part in base64."""
    encoded = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    parts = [b"From: Outlook User <user@contoso.com>\r\nSubject: TNEF\r\nMIME-Version: 1.0\r\n"]
    parts.append(b'Content-Type: multipart/mixed; boundary="tnef-b"\r\n\r\n')
    if body is not None:
        parts.append(b'--tnef-b\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\n' + body + b"\r\n")
    parts.append(
        b"--tnef-b\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="winmail.dat"\r\n\r\n'
        + encoded
    )
    parts.append(b"--tnef-b--\r\n")
    return b"".join(parts)


PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
DOCX = b"PK\x03\x04" + bytes(range(40)) + b"PK\x05\x06" + b"\x00" * 18  # ends in NULs, as ZIPs do


def two_files_with_html() -> bytes:
    return tnef_stream(
        message_header(),
        html_body_props(b"<html><body><p>Gr\xc3\xbc\xc3\x9fe aus dem Vertrieb</p></body></html>"),
        file_attachment(b"REPORT~1.PDF", PDF, long_name="Quarterly report.pdf"),
        file_attachment(b"UBERSI~1.DOC", DOCX, long_name="Übersicht 2026.docx"),
    )


# --- The writer agrees with tnefparse ------------------------------------------------------------


def test_tnefparse_reads_what_the_writer_writes() -> None:
    parsed = TNEF(two_files_with_html())

    assert parsed.key == 0x1F2E
    assert all(obj.good_checksum for obj in parsed.objects)
    assert [(a.long_filename(), a.data) for a in parsed.attachments] == [
        ("Quarterly report.pdf", PDF),
        ("Übersicht 2026.docx", DOCX),
    ]
    assert parsed.htmlbody == "<html><body><p>Grüße aus dem Vertrieb</p></body></html>"


def test_tnefparse_reads_the_legacy_body_and_title() -> None:
    blob = tnef_stream(
        message_header(),
        attribute(LEVEL_MESSAGE, ATT_SUBJECT, ATP_STRING, b"Angebot\x00"),
        attribute(LEVEL_MESSAGE, ATT_BODY, ATP_TEXT, b"Sehr geehrte Damen und Herren\r\n\x00"),
        file_attachment(b"notes.txt", b"plain notes"),
    )

    parsed = TNEF(blob)

    assert parsed.body == b"Sehr geehrte Damen und Herren\r\n\x00"
    assert [(a.name, a.data) for a in parsed.attachments] == [("notes.txt", b"plain notes")]
    assert [(obj.name, obj.data) for obj in parsed.msgprops if obj.name == ATT_SUBJECT] == [
        (ATT_SUBJECT, "Angebot")
    ]


# --- Files replace winmail.dat -------------------------------------------------------------------


def test_tnef_files_replace_winmail_dat_and_the_mime_body_is_kept() -> None:
    parsed = parse_message(mail_with_tnef(two_files_with_html()))

    assert [(a.filename, a.mimetype, a.content, a.inline) for a in parsed.attachments] == [
        ("Quarterly report.pdf", "application/pdf", PDF, False),
        (
            "Übersicht 2026.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            DOCX,
            False,
        ),
    ]
    assert parsed.text_body == "See attached."  # the MIME body wins over the TNEF HTML
    assert not any(defect.startswith("tnef") for defect in parsed.defects)


def test_winmail_dat_sent_as_octet_stream_is_recognised_by_its_name() -> None:
    raw = mail_with_tnef(two_files_with_html(), content_type=b'application/octet-stream; name="winmail.dat"')

    parsed = parse_message(raw)

    assert [a.filename for a in parsed.attachments] == ["Quarterly report.pdf", "Übersicht 2026.docx"]


def test_title_in_the_oem_codepage_is_decoded_when_there_is_no_long_filename() -> None:
    blob = tnef_stream(message_header(), file_attachment("Übersicht.pdf".encode("cp1252"), PDF))

    parsed = parse_message(mail_with_tnef(blob))

    assert [(a.filename, a.mimetype) for a in parsed.attachments] == [("Übersicht.pdf", "application/pdf")]


def test_unknown_extension_uses_the_senders_mime_tag_else_octet_stream() -> None:
    tagged = (prop_variable(PT_STRING8, PR_ATTACH_MIME_TAG, b"application/x-custom\x00"),)
    blob = tnef_stream(
        message_header(),
        file_attachment(b"data.zzq", b"one", extra_props=tagged),
        file_attachment(b"other.zzq", b"two"),
        file_attachment(b"", b"three"),
    )

    parsed = parse_message(mail_with_tnef(blob))

    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("data.zzq", "application/x-custom", b"one"),
        ("other.zzq", "application/octet-stream", b"two"),
        ("attachment-1.bin", "application/octet-stream", b"three"),
    ]


def test_content_id_makes_an_extracted_image_inline() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    props = (prop_unicode(PR_ATTACH_CONTENT_ID, "image001.png@01DC0000.12345670"),)
    blob = tnef_stream(
        message_header(),
        html_body_props(b'<p>Logo: <img src="cid:image001.png@01DC0000.12345670"></p>'),
        file_attachment(b"image001.png", png, extra_props=props),
    )

    parsed = parse_message(mail_with_tnef(blob, body=None))

    [image] = parsed.attachments
    assert (image.filename, image.mimetype, image.content_id, image.inline) == (
        "image001.png",
        "image/png",
        "image001.png@01DC0000.12345670",
        True,
    )


def test_extracted_files_obey_the_attachment_size_limit() -> None:
    parsed = parse_message(mail_with_tnef(two_files_with_html()), max_attachment_bytes=len(PDF))

    assert [a.filename for a in parsed.attachments] == ["Quarterly report.pdf"]
    assert f"attachment-too-large:Übersicht 2026.docx:{len(DOCX)}" in parsed.defects


def test_attached_outlook_item_is_kept_as_tnef() -> None:
    inner = tnef_stream(message_header(), attribute(LEVEL_MESSAGE, ATT_BODY, ATP_TEXT, b"inner body"))
    rendering = struct.pack("<HIHHI", 0x0001, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0)
    # tnefparse names an attached item by PR_DISPLAY_NAME only when it follows the data.
    embedded = mapi_props(
        prop_variable(PT_OBJECT, PR_ATTACH_DATA_OBJ, IID_IMESSAGE + inner),
        prop_unicode(0x3001, "Re: Angebot"),
    )
    blob = tnef_stream(
        message_header(),
        attribute(LEVEL_ATTACHMENT, ATT_ATTACH_RENDDATA, ATP_BYTE, rendering),
        attribute(LEVEL_ATTACHMENT, ATT_ATTACHMENT, ATP_BYTE, embedded),
    )

    parsed = parse_message(mail_with_tnef(blob))

    [item] = parsed.attachments
    assert (item.filename, item.mimetype) == ("Re_ Angebot", "application/ms-tnef")
    assert item.content.startswith(struct.pack("<I", SIGNATURE))


# --- The TNEF body --------------------------------------------------------------------------------


def test_tnef_html_body_becomes_the_body_when_the_mime_body_is_empty() -> None:
    parsed = parse_message(mail_with_tnef(two_files_with_html(), body=None))

    assert parsed.html_body == "<html><body><p>Grüße aus dem Vertrieb</p></body></html>"
    assert parsed.text_body == "Grüße aus dem Vertrieb"
    assert [a.filename for a in parsed.attachments] == ["Quarterly report.pdf", "Übersicht 2026.docx"]


def test_tnef_html_without_codepage_is_decoded_by_its_meta_charset() -> None:
    html = b'<html><head><meta charset="iso-8859-1"></head><body>Caf\xe9</body></html>'
    props = mapi_props(prop_variable(PT_BINARY, PR_BODY_HTML, html))
    blob = tnef_stream(message_header(), attribute(LEVEL_MESSAGE, ATT_MAPI_PROPS, ATP_BYTE, props))

    parsed = parse_message(mail_with_tnef(blob, body=None))

    assert parsed.text_body == "Café"


def test_tnef_plain_body_in_the_oem_codepage_becomes_the_body() -> None:
    text = "Grüße\r\nIhr Vertrieb\r\n".encode("cp1252") + b"\x00"
    blob = tnef_stream(message_header(), attribute(LEVEL_MESSAGE, ATT_BODY, ATP_TEXT, text))

    parsed = parse_message(mail_with_tnef(blob, body=None))

    assert parsed.text_body == "Grüße\nIhr Vertrieb"
    assert parsed.html_body == "<div>Grüße<br>Ihr Vertrieb</div>"
    assert parsed.attachments == []


def test_rtf_only_body_keeps_winmail_dat_when_there_is_no_other_body() -> None:
    blob = tnef_stream(message_header(), rtf_body_props(), file_attachment(b"a.pdf", PDF))

    parsed = parse_message(mail_with_tnef(blob, body=None))

    assert [(a.filename, a.mimetype) for a in parsed.attachments] == [
        ("winmail.dat", "application/ms-tnef"),
        ("a.pdf", "application/pdf"),
    ]
    assert parsed.attachments[0].content == blob
    assert "tnef-body-rtf-only" in parsed.defects
    assert parsed.html_body == ""


def test_rtf_only_body_is_dropped_when_the_mime_parts_carry_the_text() -> None:
    blob = tnef_stream(message_header(), rtf_body_props(), file_attachment(b"a.pdf", PDF))

    parsed = parse_message(mail_with_tnef(blob))

    assert [a.filename for a in parsed.attachments] == ["a.pdf"]
    assert parsed.text_body == "See attached."
    assert "tnef-body-rtf-only" not in parsed.defects


def test_tnef_with_nothing_inside_is_kept_as_it_came() -> None:
    blob = tnef_stream(message_header())

    parsed = parse_message(mail_with_tnef(blob))

    assert [(a.filename, a.content) for a in parsed.attachments] == [("winmail.dat", blob)]
    assert "tnef-empty" in parsed.defects


# --- Corrupt TNEF never raises --------------------------------------------------------------------


def _kept_with_defect(blob: bytes, defect: str) -> None:
    parsed = parse_message(mail_with_tnef(blob))

    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("winmail.dat", "application/ms-tnef", blob)
    ]
    assert defect in parsed.defects
    assert parsed.text_body == "See attached."


def test_wrong_signature_keeps_winmail_dat_with_a_defect() -> None:
    _kept_with_defect(b"PK\x03\x04 not tnef at all", "tnef-invalid:signature")


def test_truncated_stream_keeps_winmail_dat_with_a_defect() -> None:
    blob = two_files_with_html()

    _kept_with_defect(blob[: len(blob) - 30], "tnef-invalid:truncated")


def test_damaged_attribute_keeps_winmail_dat_with_a_defect() -> None:
    blob = bytearray(two_files_with_html())
    blob[len(blob) // 2] ^= 0xFF

    _kept_with_defect(bytes(blob), "tnef-invalid:checksum")


def test_stream_cut_inside_an_attribute_header_keeps_winmail_dat() -> None:
    blob = tnef_stream(message_header())[:-6] + b"\x01\x06\x90"

    _kept_with_defect(blob, "tnef-invalid:truncated")


def test_property_count_beyond_its_bytes_is_refused_before_the_reader_loops_on_it() -> None:
    # tnefparse would iterate 2^32 - 1 times over a list holding one property.
    props = struct.pack("<I", 0xFFFFFFFF) + prop_long(0x0E07, 1)
    blob = tnef_stream(message_header(), attribute(LEVEL_MESSAGE, ATT_MAPI_PROPS, ATP_BYTE, props))

    _kept_with_defect(blob, "tnef-invalid:property-count")


def test_string_attribute_before_the_codepage_keeps_winmail_dat() -> None:
    # tnefparse decodes string attributes with the OEM codepage it has seen so far: none yet.
    blob = tnef_stream(
        attribute(LEVEL_MESSAGE, ATT_SUBJECT, ATP_STRING, b"early\x00"),
        message_header(),
        file_attachment(b"a.pdf", PDF),
    )

    _kept_with_defect(blob, "tnef-invalid:TypeError")


def test_attachment_attribute_before_any_rendering_data_keeps_winmail_dat() -> None:
    blob = tnef_stream(
        message_header(), attribute(LEVEL_ATTACHMENT, ATT_ATTACH_DATA, ATP_BYTE, b"orphan data bytes")
    )

    _kept_with_defect(blob, "tnef-invalid:UnboundLocalError")  # tnefparse has no attachment to add it to


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_tnef_never_raises(data: st.DataObject) -> None:
    blob = bytearray(two_files_with_html())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(6, len(blob) - 1))
        if data.draw(st.booleans()):
            blob[position] = data.draw(st.integers(0, 255))
        else:
            del blob[position : position + data.draw(st.integers(1, 40))]

    parsed = parse_message(mail_with_tnef(bytes(blob)))

    for attachment in parsed.attachments:
        assert attachment.filename and "/" not in attachment.filename
        assert "/" in attachment.mimetype
    assert parsed.text_body == "See attached."


def test_mail_without_tnef_never_reaches_the_tnef_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise AssertionError("read_tnef called for mail without TNEF")

    monkeypatch.setattr(bodies, "read_tnef", fail)
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b'--b\r\nContent-Type: application/octet-stream; name="data.dat"\r\n\r\nxyz\r\n--b--\r\n'
    )

    assert [a.filename for a in parse_message(raw).attachments] == ["data.dat"]


# --- Other Outlook attachments stay attachments --------------------------------------------------


def test_outlook_msg_attachment_is_kept_with_its_name() -> None:
    msg = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 24  # an OLE compound file header
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nForwarding the customer's mail.\r\n"
        b'--b\r\nContent-Type: application/vnd.ms-outlook; name="Anfrage Kunde.msg"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="Anfrage Kunde.msg"\r\n\r\n'
        + base64.b64encode(msg)
        + b"\r\n--b\r\nContent-Type: application/vnd.ms-outlook\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(msg)
        + b"\r\n--b--\r\n"
    )

    parsed = parse_message(raw)

    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("Anfrage Kunde.msg", "application/vnd.ms-outlook", msg),
        ("attachment-1.msg", "application/vnd.ms-outlook", msg),
    ]
    assert parsed.text_body == "Forwarding the customer's mail."


def test_message_that_is_only_a_calendar_invite_keeps_it_as_invite_ics() -> None:
    raw = (
        b"From: organizer@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/calendar; method=REQUEST; charset="utf-8"\r\n\r\n'
        b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
    )

    parsed = parse_message(raw)

    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("invite.ics", "text/calendar", b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n")
    ]
    assert parsed.html_body == ""
