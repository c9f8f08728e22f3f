"""parse_message: raw mail bytes → ParsedMessage, with repairs recorded as defects.

Every expectation here is written by hand from the raw input, not computed by
the code under test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emailrouter.mime.errors import MalformedMessageError
from emailrouter.mime.models import Address, Attachment
from emailrouter.mime.parse import parse_message

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "inbound"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


# --- Message-ID, In-Reply-To, References ---------------------------------------------------------


def test_message_id_keeps_brackets_and_drops_comments_and_whitespace() -> None:
    raw = b"From: a@example.com\r\nMessage-ID: (sent by Outlook)\r\n  < abc.123@mail.example.com >\r\n\r\nx"

    parsed = parse_message(raw)

    assert parsed.message_id == "<abc.123@mail.example.com>"


def test_missing_message_id_is_none() -> None:
    parsed = parse_message(b"From: a@example.com\r\nSubject: no id\r\n\r\nbody")

    assert parsed.message_id is None


def test_message_id_without_brackets_is_bracketed_with_a_defect() -> None:
    parsed = parse_message(b"From: a@example.com\nMessage-ID: bare-id@example.com\n\nx")

    assert parsed.message_id == "<bare-id@example.com>"
    assert "message-id-unbracketed:Message-ID" in parsed.defects


def test_in_reply_to_takes_the_first_id_and_references_keep_order_without_duplicates() -> None:
    raw = (
        b"From: a@example.com\r\n"
        b"In-Reply-To: <parent@x.example> (Jane's message of Friday)\r\n"
        b"References: <root@x.example> <mid@x.example>\r\n"
        b"\t<parent@x.example> <root@x.example>\r\n"
        b"\r\nbody"
    )

    parsed = parse_message(raw)

    assert parsed.in_reply_to == "<parent@x.example>"
    assert parsed.references == ["<root@x.example>", "<mid@x.example>", "<parent@x.example>"]


def test_references_keep_only_the_last_32_ids() -> None:
    ids = b" ".join(b"<r%d@x.example>" % n for n in range(1, 41))
    raw = b"From: a@example.com\r\nReferences: " + ids + b"\r\n\r\nbody"

    parsed = parse_message(raw)

    assert len(parsed.references) == 32
    assert parsed.references[0] == "<r9@x.example>"
    assert parsed.references[-1] == "<r40@x.example>"
    assert "references-truncated:40" in parsed.defects


# --- Subject --------------------------------------------------------------------------------------


def test_subject_decodes_encoded_words_in_several_charsets_and_unfolds() -> None:
    raw = (
        b"From: a@example.com\r\n"
        b"Subject: =?utf-8?B?R3LDvMOfZQ==?= =?iso-8859-1?Q?_aus_M=FCnchen?=\r\n"
        b" und =?koi8-r?B?8NLJ18XU?= =?shift_jis?B?grGC8YLJgr+CzQ==?=\r\n"
        b"\r\nbody"
    )

    parsed = parse_message(raw)

    # Whitespace between adjacent encoded words is not part of the text (RFC 2047 6.2).
    assert parsed.subject == "Grüße aus München und Приветこんにちは"


def test_subject_multibyte_character_split_across_encoded_words_is_joined() -> None:
    # "é" is C3 A9 in UTF-8; the sender split it between two encoded words.
    raw = b"From: a@example.com\nSubject: =?utf-8?Q?caf=C3?= =?utf-8?Q?=A9?=\n\nx"

    parsed = parse_message(raw)

    assert parsed.subject == "café"


def test_subject_control_characters_and_line_breaks_are_removed() -> None:
    raw = b"From: a@example.com\r\nSubject: Hello\x00\x07 =?utf-8?Q?new=0Aline=0D?=\tand\x1b tab\r\n\r\nx"

    parsed = parse_message(raw)

    assert parsed.subject == "Hello newline and tab"


def test_subject_with_raw_utf8_bytes_is_decoded_as_utf8() -> None:
    raw = b"From: a@example.com\r\nSubject: Caf\xc3\xa9 \xe2\x82\xac\r\n\r\nx"

    parsed = parse_message(raw)

    assert parsed.subject == "Café €"
    assert "header-8bit:Subject" in parsed.defects


def test_subject_with_raw_non_utf8_bytes_falls_back_to_windows_1252() -> None:
    raw = b"From: a@example.com\r\nSubject: \x93Caf\xe9\x94 \x80 5\r\n\r\nx"

    parsed = parse_message(raw)

    assert parsed.subject == "\u201cCafé\u201d € 5"


def test_missing_subject_is_an_empty_string() -> None:
    parsed = parse_message(b"From: a@example.com\r\n\r\nbody")

    assert parsed.subject == ""


# --- Addresses ------------------------------------------------------------------------------------


def test_addresses_are_lower_cased_with_decoded_display_names() -> None:
    raw = (
        b"From: =?utf-8?Q?Ren=C3=A9e_M=C3=BCller?= <Renee.Mueller@Example.COM>\r\n"
        b'To: "Support Queue" <Support@Fabrikam.com>, sales@FABRIKAM.com\r\n'
        b"Cc: Jane Doe <jane@example.org>\r\n"
        b"Bcc: hidden@example.org\r\n"
        b"Reply-To: =?iso-8859-1?Q?Andr=E9?= <andre@example.fr>\r\n"
        b"\r\nbody"
    )

    parsed = parse_message(raw)

    assert parsed.sender == Address("renee.mueller@example.com", "Renée Müller")
    assert parsed.to == [Address("support@fabrikam.com", "Support Queue"), Address("sales@fabrikam.com")]
    assert parsed.cc == [Address("jane@example.org", "Jane Doe")]
    assert parsed.bcc == [Address("hidden@example.org")]
    assert parsed.reply_to == [Address("andre@example.fr", "André")]


def test_encoded_comma_in_a_display_name_does_not_split_the_address() -> None:
    raw = b"From: a@example.com\nTo: =?utf-8?q?M=C3=BCller=2C_Hans?= <hans@example.de>, b@example.de\n\nx"

    parsed = parse_message(raw)

    assert parsed.to == [Address("hans@example.de", "Müller, Hans"), Address("b@example.de")]


def test_invalid_addresses_are_skipped_with_a_defect_and_valid_ones_kept() -> None:
    raw = b"From: a@example.com\nTo: Good <good@example.com>, not an address, x@y@z, <>, ok@example.com\n\nx"

    parsed = parse_message(raw)

    assert parsed.to == [Address("good@example.com", "Good"), Address("ok@example.com")]
    assert "address-invalid:To" in parsed.defects


def test_group_syntax_is_flattened_and_empty_groups_yield_nothing() -> None:
    raw = (
        b"From: a@example.com\n"
        b"To: undisclosed-recipients:;\n"
        b"Cc: Sales Team: one@example.com, Two <two@example.com>;, three@example.com\n"
        b"\nx"
    )

    parsed = parse_message(raw)

    assert parsed.to == []
    assert parsed.cc == [
        Address("one@example.com"),
        Address("two@example.com", "Two"),
        Address("three@example.com"),
    ]
    assert not any(d.startswith("address-invalid") for d in parsed.defects)


def test_garbled_from_gives_no_sender_and_a_defect_never_an_exception() -> None:
    parsed = parse_message(b"From: <<<@@@>>> \x00\r\nSubject: s\r\n\r\nx")

    assert parsed.sender is None
    assert "address-invalid:From" in parsed.defects


def test_missing_from_falls_back_to_the_sender_header() -> None:
    parsed = parse_message(b"Sender: Robot <Robot@Example.com>\r\nSubject: s\r\n\r\nx")

    assert parsed.sender == Address("robot@example.com", "Robot")
    assert "from-missing" in parsed.defects


# --- Date -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Fri, 27 Nov 2026 00:00:00 -0500", "2026-11-27T05:00:00Z"),
        (b"Fri, 27 Nov 2026 07:00:00 +0200 (CEST)", "2026-11-27T05:00:00Z"),
        (b"27 Nov 26 05:00 GMT", "2026-11-27T05:00:00Z"),
        (b"Fri, 27 Nov 2026 05:00:00 -0000", "2026-11-27T05:00:00Z"),
        (b"Fri,\r\n 27 Nov 2026 05:00:00 +0000", "2026-11-27T05:00:00Z"),
    ],
)
def test_date_is_converted_to_iso_8601_utc(header: bytes, expected: str) -> None:
    parsed = parse_message(b"From: a@example.com\r\nDate: " + header + b"\r\n\r\nx")

    assert parsed.date == expected


@pytest.mark.parametrize("header", [b"yesterday", b"Fri, 27 Nov 2026 05:00:00 +9999", b"", b"32 Foo 2026"])
def test_unparseable_date_is_none_with_a_defect(header: bytes) -> None:
    parsed = parse_message(b"From: a@example.com\r\nDate: " + header + b"\r\n\r\nx")

    assert parsed.date is None
    assert "date-invalid" in parsed.defects


def test_missing_date_is_none_without_a_defect() -> None:
    parsed = parse_message(b"From: a@example.com\r\n\r\nx")

    assert parsed.date is None
    assert "date-invalid" not in parsed.defects


# --- Selected headers -----------------------------------------------------------------------------


def test_selected_headers_are_decoded_first_value_only_and_others_dropped() -> None:
    raw = (
        b"From: a@example.com\r\n"
        b"Thread-Index: AQHZabcd\r\n"
        b"Thread-Topic: =?utf-8?Q?R=C3=BCckfrage?=\r\n"
        b"AUTO-SUBMITTED: auto-replied\r\n"
        b"X-Auto-Response-Suppress: All\r\n"
        b"Precedence: bulk\r\n"
        b"Precedence: list\r\n"
        b"List-Id: Sales <sales.lists.example.com>\r\n"
        b"X-Loop: crm@example.com\r\n"
        b"X-EmailRouter-Id: er-123\r\n"
        b"X-Mailer: Microsoft Outlook 16.0\r\n"
        b"Return-Path: <bounce@example.com>\r\n"
        b"X-Spam-Score: 9\r\n"
        b"Content-Type: text/plain;\r\n charset=utf-8\r\n"
        b"\r\nx"
    )

    parsed = parse_message(raw)

    assert parsed.headers == {
        "Thread-Index": "AQHZabcd",
        "Thread-Topic": "Rückfrage",
        "Auto-Submitted": "auto-replied",
        "X-Auto-Response-Suppress": "All",
        "Precedence": "bulk",
        "List-Id": "Sales <sales.lists.example.com>",
        "X-Loop": "crm@example.com",
        "X-EmailRouter-Id": "er-123",
        "X-Mailer": "Microsoft Outlook 16.0",
        "Return-Path": "<bounce@example.com>",
        "Content-Type": "text/plain; charset=utf-8",
    }


# --- Bodies ---------------------------------------------------------------------------------------


def test_multipart_alternative_prefers_html_and_keeps_the_plain_text() -> None:
    raw = (
        b"From: a@example.com\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="alt"\r\n'
        b"\r\n"
        b"--alt\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Hello plain\r\n"
        b"--alt\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p>Hello <b>html</b></p>\r\n"
        b"--alt--\r\n"
    )

    parsed = parse_message(raw)

    assert parsed.html_body == "<p>Hello <b>html</b></p>"
    assert parsed.text_body == "Hello plain"
    assert parsed.attachments == []
    assert parsed.defects == []


def test_plain_text_only_becomes_escaped_html_with_line_breaks() -> None:
    raw = b"From: a@example.com\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIf a < b & c > d\r\n<script>x</script>\r\nbye\r\n"

    parsed = parse_message(raw)

    assert parsed.text_body == "If a < b & c > d\n<script>x</script>\nbye"
    assert parsed.html_body == (
        "<div>If a &lt; b &amp; c &gt; d<br>&lt;script&gt;x&lt;/script&gt;<br>bye</div>"
    )


def test_html_only_message_gets_a_text_rendering() -> None:
    raw = (
        b"From: a@example.com\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><style>p{}</style></head><body><p>Dear &amp; valued</p><p>customer</p></body></html>"
    )

    parsed = parse_message(raw)

    assert parsed.html_body.startswith("<html><head>")
    assert parsed.text_body == "Dear & valued\n\ncustomer"


def test_message_without_content_type_or_mime_version_is_plain_text() -> None:
    parsed = parse_message(b"From: a@example.com\nSubject: old school\n\nJust text.\n")

    assert parsed.text_body == "Just text."
    assert parsed.html_body == "<div>Just text.</div>"
    assert parsed.defects == []


def test_missing_mime_version_still_parses_multipart_with_a_defect() -> None:
    raw = (
        b"From: a@example.com\n"
        b"Content-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nhi\n"
        b"--b\nContent-Type: application/pdf; name=a.pdf\n\n%PDF-1.7\n"
        b"--b--\n"
    )

    parsed = parse_message(raw)

    assert parsed.text_body == "hi"
    assert [(a.filename, a.content) for a in parsed.attachments] == [("a.pdf", b"%PDF-1.7")]
    assert "mime-version-missing" in parsed.defects


def test_bare_lf_and_crlf_line_endings_give_the_same_result() -> None:
    crlf = (
        b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Line\r\n endings\r\n"
        b"Date: Fri, 27 Nov 2026 05:00:00 +0000\r\n\r\none\r\ntwo\r\n"
    )
    lf = crlf.replace(b"\r\n", b"\n")

    with_crlf, with_lf = parse_message(crlf), parse_message(lf)

    assert with_crlf.subject == with_lf.subject == "Line endings"
    assert with_crlf.text_body == with_lf.text_body == "one\ntwo"
    assert with_crlf.html_body == with_lf.html_body == "<div>one<br>two</div>"
    assert with_crlf.fingerprint == with_lf.fingerprint


def test_malformed_content_type_is_treated_as_plain_text_with_a_defect() -> None:
    raw = b'From: a@example.com\r\nContent-Type: texthtml;; charset="utf-8\r\n\r\n<b>not html</b>'

    parsed = parse_message(raw)

    assert parsed.text_body == "<b>not html</b>"
    assert parsed.html_body == "<div>&lt;b&gt;not html&lt;/b&gt;</div>"
    assert "content-type-invalid:texthtml" in parsed.defects


def test_multipart_without_boundary_parameter_is_recovered_from_the_body() -> None:
    raw = (
        b"From: a@example.com\n"
        b"Content-Type: multipart/mixed\n\n"
        b"--found\nContent-Type: text/plain\n\nthe body\n"
        b"--found\nContent-Type: image/gif\nContent-Disposition: attachment; filename=dot.gif\n\nGIF89a\n"
        b"--found--\n"
    )

    parsed = parse_message(raw)

    assert parsed.text_body == "the body"
    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("dot.gif", "image/gif", b"GIF89a")
    ]
    assert "multipart-boundary-missing" in parsed.defects
    assert "multipart-boundary-recovered" in parsed.defects


def test_multipart_with_no_boundary_anywhere_keeps_the_body_as_text() -> None:
    raw = b"From: a@example.com\nContent-Type: multipart/mixed\n\nno parts here\n"

    parsed = parse_message(raw)

    assert parsed.text_body == "no parts here"
    assert "multipart-boundary-missing" in parsed.defects


def _nested(levels: int) -> bytes:
    head, tail = b"", b""
    for level in range(levels):
        head += b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (level, level + 1)
        tail = b"\n--b%d--\n" % (level + 1) + tail
    return (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b0\n\n"
        + head
        + b"--b%d\nContent-Type: text/plain\n\ndeep body\n" % levels
        + tail
        + b"--b0--\n"
    )


def test_moderate_nesting_is_walked_to_the_body() -> None:
    parsed = parse_message(_nested(20))

    assert parsed.text_body == "deep body"
    assert not any(d.startswith("nesting-too-deep") for d in parsed.defects)


def test_nesting_beyond_the_bound_stops_with_a_defect() -> None:
    parsed = parse_message(_nested(80))

    assert parsed.text_body == ""
    assert "nesting-too-deep:50" in parsed.defects


def test_nesting_that_defeats_the_email_package_gives_headers_and_a_defect() -> None:
    parsed = parse_message(_nested(1200))

    assert parsed.sender == Address("a@example.com")
    assert "nesting-too-deep:parser" in parsed.defects


def test_nesting_past_the_part_cap_is_over_the_limit_before_the_email_package_reads_it() -> None:
    parsed = parse_message(_nested(3000))

    assert parsed.sender == Address("a@example.com")
    assert parsed.over_limit == "more than 1000 MIME parts"


# --- Charsets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "payload", "expected"),
    [
        (b"utf-8", "Grüße €".encode(), "Grüße €"),
        (b"koi8-r", "Привет".encode("koi8-r"), "Привет"),
        (b"shift_jis", "こんにちは".encode("shift_jis"), "こんにちは"),
        (b"iso-2022-jp", "日本語".encode("iso-2022-jp"), "日本語"),
        (b"big5", "中文".encode("big5"), "中文"),
        (b"windows-1251", "Добрый".encode("cp1251"), "Добрый"),
        # gb2312 labels routinely carry GBK-only characters (镕 is not in GB2312)
        (b"gb2312", "朱镕基".encode("gbk"), "朱镕基"),
        (b"ks_c_5601-1987", "안녕".encode("cp949"), "안녕"),
        (b"utf-16", "Hi €".encode("utf-16"), "Hi €"),
    ],
)
def test_body_charsets_python_knows_are_decoded(charset: bytes, payload: bytes, expected: str) -> None:
    raw = b"From: a@example.com\r\nContent-Type: text/plain; charset=" + charset + b"\r\n\r\n" + payload

    parsed = parse_message(raw)

    assert parsed.text_body == expected


def test_iso_8859_1_with_c1_bytes_is_decoded_as_windows_1252() -> None:
    parsed = parse_message(corpus("latin1_mislabelled_windows1252.eml"))

    assert parsed.text_body == "Le prix est \u201c 50 € \u201d, déjà négocié."
    assert parsed.subject == "Prix € 50"
    assert parsed.sender == Address("andre@example.fr", "André Dupont")
    assert "charset-mislabelled:body:windows-1252" in parsed.defects


def test_iso_8859_1_without_c1_bytes_stays_latin_1() -> None:
    raw = b"From: a@example.com\nContent-Type: text/plain; charset=ISO-8859-1\n\n\xa9 Caf\xe9"

    parsed = parse_message(raw)

    assert parsed.text_body == "© Café"
    assert not any(d.startswith("charset") for d in parsed.defects)


def test_unknown_charset_falls_back_to_utf8() -> None:
    raw = b"From: a@example.com\nContent-Type: text/plain; charset=x-klingon\n\nCaf\xc3\xa9"

    parsed = parse_message(raw)

    assert parsed.text_body == "Café"
    assert "charset-unknown:body:x-klingon" in parsed.defects


def test_missing_charset_with_non_utf8_bytes_falls_back_to_windows_1252() -> None:
    raw = b"From: a@example.com\nContent-Type: text/plain\n\n\x93Caf\xe9\x94"

    parsed = parse_message(raw)

    assert parsed.text_body == "\u201cCafé\u201d"
    assert "charset-guessed:body:windows-1252" in parsed.defects


def test_declared_charset_with_invalid_bytes_uses_replacement_characters() -> None:
    raw = b"From: a@example.com\nContent-Type: text/plain; charset=utf-8\n\nok \xff\xfe end"

    parsed = parse_message(raw)

    assert parsed.text_body == "ok \ufffd\ufffd end"
    assert "charset-invalid-bytes:body:utf-8" in parsed.defects


def test_non_charset_codec_names_are_not_used_to_decode() -> None:
    # "rot13" and "base64" are Python codecs, but not charsets: treated as unknown.
    raw = b"From: a@example.com\nContent-Type: text/plain; charset=rot13\n\nHello"

    parsed = parse_message(raw)

    assert parsed.text_body == "Hello"


def test_html_without_charset_parameter_uses_its_meta_charset() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: text/html\n\n"
        b'<html><head><meta charset="koi8-r"></head><body>\xf0\xd2\xc9\xd7\xc5\xd4</body></html>'
    )

    parsed = parse_message(raw)

    assert parsed.text_body == "Привет"


# --- Transfer encodings ---------------------------------------------------------------------------


def test_base64_with_missing_padding_and_junk_characters_is_decoded_with_defects() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: base64\n\n"
        b"SGVsbG8s!IHdv\ncmxk*IQ\n"  # "Hello, world!" without its "==" and with two stray bytes
    )

    parsed = parse_message(raw)

    assert parsed.text_body == "Hello, world!"
    assert "base64-invalid-chars" in parsed.defects
    assert "base64-padding" in parsed.defects


def test_base64_with_padding_in_the_middle_decodes_both_halves() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: application/octet-stream; name=blob.bin\n"
        b"Content-Transfer-Encoding: base64\n\n"
        b"AAE=\nAgM=\n"
    )

    parsed = parse_message(raw)

    assert parsed.attachments[0].content == b"\x00\x01\x02\x03"
    assert "base64-padding" in parsed.defects


def test_base64_with_a_dangling_character_drops_it_with_a_defect() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
        b"SGVsbG8hX\n"  # "SGVsbG8h" is "Hello!"; one more character cannot encode a byte
    )

    parsed = parse_message(raw)

    assert parsed.text_body == "Hello!"
    assert "base64-truncated" in parsed.defects


def test_quoted_printable_with_invalid_escapes_keeps_them_literally() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n"
        b"Caf=C3=A9 costs 5=ZZ, soft=\nbreak =e2=82=ac"
    )

    parsed = parse_message(raw)

    assert parsed.text_body == "Café costs 5=ZZ, softbreak €"
    assert "quoted-printable-invalid" in parsed.defects


def test_unknown_transfer_encoding_keeps_the_bytes_with_a_defect() -> None:
    raw = b"From: a@example.com\nContent-Type: text/plain\nContent-Transfer-Encoding: x-rot13\n\nUryyb"

    parsed = parse_message(raw)

    assert parsed.text_body == "Uryyb"
    assert "transfer-encoding-unknown:x-rot13" in parsed.defects


# --- Attachments ----------------------------------------------------------------------------------


def test_rfc2231_filenames_are_decoded_including_continuations() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: application/pdf\n"
        b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.pdf\n\n%PDF\n"
        b"--b\nContent-Type: image/jpeg\n"
        b"Content-Disposition: attachment;\n filename*0*=iso-8859-1''Caf%E9%20;\n filename*1=photo.jpg\n\nJPEG\n"
        b"--b--\n"
    )

    parsed = parse_message(raw)

    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("€ rates.pdf", "application/pdf", b"%PDF"),
        ("Café photo.jpg", "image/jpeg", b"JPEG"),
    ]


def test_rfc2047_encoded_filenames_are_decoded() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
        b'--b\nContent-Type: application/pdf; name="=?iso-8859-1?Q?r=E9sum=E9.pdf?="\n\n%PDF\n'
        b'--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename="=?utf-8?B?0JfQsNGP0LLQutCwLnBkZg==?="\n\n%PDF\n'
        b"--b--\n"
    )

    parsed = parse_message(raw)

    assert [a.filename for a in parsed.attachments] == ["résumé.pdf", "Заявка.pdf"]


def test_attachments_without_filename_get_names_from_their_mimetype() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nbody text\n"
        b"--b\nContent-Type: application/pdf\n\n%PDF\n"
        b"--b\nContent-Type: image/jpeg\nContent-Disposition: attachment\n\nJPEG\n"
        b"--b\nContent-Type: application/x-made-up\n\n??\n"
        b"--b\nContent-Type: text/plain\nContent-Disposition: attachment\n\nnotes\n"
        b"--b--\n"
    )

    parsed = parse_message(raw)

    assert parsed.text_body == "body text"
    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("attachment-1.pdf", "application/pdf", b"%PDF"),
        ("attachment-2.jpg", "image/jpeg", b"JPEG"),
        ("attachment-3.bin", "application/x-made-up", b"??"),
        ("attachment-4.txt", "text/plain", b"notes"),
    ]


def test_filenames_lose_paths_and_control_characters() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
        b'--b\nContent-Type: text/plain\nContent-Disposition: attachment; filename="../../etc/pass\\x01wd"\n\nx\n'
        b'--b\nContent-Type: text/plain\nContent-Disposition: attachment; filename="C:\\\\Users\\\\me\\\\report.txt"\n\ny\n'
        b"--b--\n"
    ).replace(b"\\x01", b"\x01")

    parsed = parse_message(raw)

    assert [a.filename for a in parsed.attachments] == ["passwd", "report.txt"]


def test_inline_images_keep_their_content_id_without_brackets() -> None:
    parsed = parse_message(corpus("apple_mail_inline_images.eml"))

    assert parsed.html_body == '<html><body>Before<img src="cid:photo1@contoso.com">After</body></html>'
    assert parsed.text_body == "Before\n\nAfter"
    assert parsed.attachments == [
        Attachment(
            filename="IMG_0001.png",
            mimetype="image/png",
            content=b"\x89PNG\r\n\x1a\n",
            content_id="photo1@contoso.com",
            inline=True,
        )
    ]


def test_content_id_without_disposition_counts_as_inline_and_attachment_disposition_does_not() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: multipart/related; boundary=b\n\n"
        b'--b\nContent-Type: text/html\n\n<img src="cid:one">\n'
        b"--b\nContent-Type: image/gif\nContent-ID: <one>\n\nGIF1\n"
        b"--b\nContent-Type: image/gif\nContent-ID: <two>\nContent-Disposition: attachment; filename=two.gif\n\nGIF2\n"
        b"--b--\n"
    )

    parsed = parse_message(raw)

    assert [(a.filename, a.content_id, a.inline) for a in parsed.attachments] == [
        ("attachment-1.gif", "one", True),
        ("two.gif", "two", False),
    ]


def test_calendar_invite_is_kept_as_invite_ics_and_html_is_the_body() -> None:
    parsed = parse_message(corpus("outlook_meeting_request.eml"))

    assert parsed.subject == "Quartalsgespräch"
    assert parsed.html_body == "<html><body><p>Lasst uns das Quartal besprechen.</p></body></html>"
    assert parsed.text_body == "Lasst uns das Quartal besprechen."
    assert parsed.headers["Thread-Index"] == "AdtA1B2c3d4e5f6g7h8i9j0k"
    assert parsed.headers["Thread-Topic"] == "Quartalsgespräch"
    assert parsed.date == "2026-11-27T05:00:00Z"
    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("invite.ics", "text/calendar", b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n")
    ]


def test_smime_signed_message_takes_its_body_from_the_first_part_and_keeps_the_signature() -> None:
    parsed = parse_message(corpus("smime_signed.eml"))

    assert parsed.html_body == "<p>Quote attached.</p>"
    assert parsed.text_body == "Quote attached."
    assert [(a.filename, a.mimetype, a.content) for a in parsed.attachments] == [
        ("smime.p7s", "application/pkcs7-signature", b"\x01\x02\x03\x04")
    ]


def test_attached_message_is_kept_as_an_eml_named_after_its_subject() -> None:
    parsed = parse_message(corpus("forwarded_message.eml"))

    assert parsed.text_body == "See the customer's message below."
    [attached] = parsed.attachments
    assert attached.filename == "Bestellung über 1234.eml"
    assert attached.mimetype == "message/rfc822"
    assert attached.content.startswith(b"From: customer@example.net\r\nTo: LeeG@contoso.com\r\n")
    assert attached.content.endswith(b"\r\n\r\nPlease ship order 1234.")


def test_attached_message_without_subject_gets_a_generated_eml_name() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nsee attached\n"
        b"--b\nContent-Type: message/rfc822\n\nFrom: x@example.com\n\ninner\n"
        b"--b--\n"
    )

    parsed = parse_message(raw)

    assert [(a.filename, a.content) for a in parsed.attachments] == [
        ("attachment-1.eml", b"From: x@example.com\n\ninner")
    ]
    assert parsed.text_body == "see attached"  # the inner body is not mixed into ours


def test_attachment_larger_than_the_limit_is_dropped_with_a_defect() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nbody\n"
        b"--b\nContent-Type: application/pdf; name=big.pdf\n\n0123456789A\n"
        b"--b\nContent-Type: application/pdf; name=exact.pdf\n\n0123456789\n"
        b"--b--\n"
    )

    parsed = parse_message(raw, max_attachment_bytes=10)

    assert [a.filename for a in parsed.attachments] == ["exact.pdf"]
    assert "attachment-too-large:big.pdf:11" in parsed.defects


def test_without_a_limit_every_attachment_is_kept() -> None:
    raw = (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: application/pdf; name=big.pdf\n\n" + b"x" * 5000 + b"\n--b--\n"
    )

    parsed = parse_message(raw)

    assert [(a.filename, len(a.content)) for a in parsed.attachments] == [("big.pdf", 5000)]


# --- Size and fingerprint -------------------------------------------------------------------------


def test_size_is_the_length_of_the_raw_bytes() -> None:
    raw = b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"

    assert parse_message(raw).size == 41


def test_fingerprint_survives_refolding_reencoding_and_recipient_order() -> None:
    original = (
        b"From: Ann <ann@example.com>\r\nTo: b@example.com, c@example.com\r\n"
        b"Subject: Quarterly report for November\r\nDate: Fri, 27 Nov 2026 05:00:00 +0000\r\n"
        b"\r\nHello Bob,\r\nhere it is.\r\n"
    )
    refolded = (
        b'From: "Ann" <ANN@example.com>\nTo: c@example.com,\n b@example.com\n'
        b"Subject: =?utf-8?q?Quarterly_report?=\n for November\nDate: Fri, 27 Nov 2026 06:00:00 +0100\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n"
        b"\nSGVsbG8gQm9iLApoZXJlIGl0IGlzLgo=\n"
    )

    first, second = parse_message(original), parse_message(refolded)

    assert re.fullmatch(r"[0-9a-f]{64}", first.fingerprint)
    assert first.fingerprint == second.fingerprint
    assert parse_message(original).fingerprint == first.fingerprint


def test_fingerprint_changes_when_the_body_changes() -> None:
    one = b"From: a@example.com\r\nSubject: s\r\n\r\nbody one"
    two = b"From: a@example.com\r\nSubject: s\r\n\r\nbody two"

    assert parse_message(one).fingerprint != parse_message(two).fingerprint


# --- What is not mail -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\r\n\t",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
        bytes(range(256)) * 4,
        b"just a line of text\nand another\n\nSubject: too late\n",
    ],
    ids=["empty", "whitespace", "png", "binary", "no-header-block"],
)
def test_input_that_is_not_mail_raises_malformed_message_error(raw: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        parse_message(raw)


def test_non_bytes_input_raises_malformed_message_error() -> None:
    with pytest.raises(MalformedMessageError):
        parse_message("From: a@example.com\n\nx")  # type: ignore[arg-type]


def test_malformed_message_error_is_a_value_error() -> None:
    assert issubclass(MalformedMessageError, ValueError)


def test_mbox_envelope_line_and_leading_blank_lines_are_tolerated() -> None:
    mbox = parse_message(b"From MAILER-DAEMON Fri Nov 27 05:00:00 2026\nFrom: a@example.com\nSubject: s\n\nx")
    blank = parse_message(b"\r\n\r\nFrom: a@example.com\r\nSubject: s\r\n\r\nx")

    assert (mbox.sender, mbox.subject) == (Address("a@example.com"), "s")
    assert "mbox-from-line" in mbox.defects
    assert (blank.sender, blank.subject) == (Address("a@example.com"), "s")
    assert "leading-blank-lines" in blank.defects


def test_bytearray_input_is_accepted() -> None:
    parsed = parse_message(bytearray(b"From: a@example.com\r\nSubject: s\r\n\r\nx"))

    assert parsed.subject == "s"
