"""Rendering a CRM email as MIME: headers, threading, body structure, and hostile input.

Every test parses the rendered bytes back with the standard library, as a receiving client would.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest

from emailrouter.outbound.errors import (
    InvalidRecipientError,
    MessageTooLargeError,
    NoRecipientsError,
    RenderError,
)
from emailrouter.outbound.models import OutboundAttachment, OutboundEmail, Recipient
from emailrouter.outbound.plaintext import html_to_text
from emailrouter.outbound.render import SES_MAX_MESSAGE_BYTES, RenderedMessage
from emailrouter.outbound.render import render_mime as _render_mime
from emailrouter.outbound.router_id import verify

KEY = b"router-id-key-for-render-tests-0001"


def render_mime(email: OutboundEmail, **options: Any) -> RenderedMessage:
    """Rendered with a known signing key (the deployment's key lives in Secrets Manager)."""
    return _render_mime(email, router_key=KEY, **options)


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40


def _email(**changes: Any) -> OutboundEmail:
    email = OutboundEmail(
        tenant_id="acme",
        email_id="5f0c3a52-0000-0000-0000-000000000001",
        sender=Recipient("uma@acme.example", "Uma User"),
        subject="Quote for you",
        html_body="<p>Hello Carl,</p><p>see the quote.</p>",
        to=[Recipient("carl@client.example", "Carl Client")],
    )
    return dataclasses.replace(email, **changes)


def _parse(rendered: RenderedMessage) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(rendered.raw)
    assert isinstance(message, EmailMessage)
    return message


def _header_names(message: EmailMessage) -> set[str]:
    return {name.lower() for name in message}


def _parts(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if isinstance(part, EmailMessage)]


BASE_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "references",
    "x-emailrouter-id",
    "mime-version",
    "content-type",
}


PART_HEADERS = {"content-type", "content-transfer-encoding", "content-disposition", "content-id"}


# -- headers ---------------------------------------------------------------------------------


def test_headers_carry_sender_recipients_and_router_id() -> None:
    rendered = render_mime(
        _email(cc=[Recipient("dora@client.example", "Dora")]),
        date=datetime(2026, 11, 27, 5, 0, tzinfo=UTC),
    )

    message = _parse(rendered)
    assert message["From"].addresses[0].display_name == "Uma User"
    assert message["From"].addresses[0].addr_spec == "uma@acme.example"
    assert [a.addr_spec for a in message["To"].addresses] == ["carl@client.example"]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["dora@client.example"]
    assert message["Date"] == "Fri, 27 Nov 2026 05:00:00 +0000"
    assert message["MIME-Version"] == "1.0"
    router_id = str(message["X-EmailRouter-Id"]).strip()  # folded after the colon when long
    assert router_id.startswith("acme/5f0c3a52-0000-0000-0000-000000000001/")
    assert verify(router_id, [KEY]) == ("acme", "5f0c3a52-0000-0000-0000-000000000001")
    assert _header_names(message) == BASE_HEADERS | {"cc"}
    assert rendered.from_address == "uma@acme.example"
    assert rendered.size == len(rendered.raw)


def test_raw_output_is_seven_bit_with_crlf_line_ends() -> None:
    rendered = render_mime(_email(subject="Angebot für Sie", html_body="<p>Grüße, Zoë</p>"))

    assert rendered.raw.isascii()
    assert b"\n" not in rendered.raw.replace(b"\r\n", b"")


def test_tracking_token_is_appended_to_the_subject_as_crm_does() -> None:
    message = _parse(render_mime(_email(tracking_token="CRM:0001001")))

    assert message["Subject"] == "Quote for you CRM:0001001"


def test_tracking_token_already_in_the_subject_is_not_repeated() -> None:
    email = _email(subject="RE: Quote for you CRM:0001001", tracking_token="CRM:0001001")

    assert _parse(render_mime(email))["Subject"] == "RE: Quote for you CRM:0001001"


def test_non_ascii_subject_and_display_names_round_trip_encoded() -> None:
    email = _email(
        subject="Angebot für Sie — 見積もり",
        sender=Recipient("uma@acme.example", "Uma Müller"),
        to=[Recipient("carl@client.example", 'Çarl, "the" Client'), Recipient("li@client.example", "李雷")],
        tracking_token="CRM:0001001",
    )

    rendered = render_mime(email)
    message = _parse(rendered)

    assert b"=?utf-8?" in rendered.raw  # RFC 2047 on the wire
    assert message["Subject"] == "Angebot für Sie — 見積もり CRM:0001001"
    assert message["From"].addresses[0].display_name == "Uma Müller"
    assert [a.display_name for a in message["To"].addresses] == ['Çarl, "the" Client', "李雷"]
    assert [a.addr_spec for a in message["To"].addresses] == ["carl@client.example", "li@client.example"]


def test_bcc_is_in_the_envelope_but_never_in_the_headers() -> None:
    email = _email(
        cc=[Recipient("dora@client.example")],
        bcc=[Recipient("secret@acme.example", "Secret Boss"), Recipient("CARL@client.example")],
    )

    rendered = render_mime(email)
    message = _parse(rendered)

    assert rendered.recipients == ["carl@client.example", "dora@client.example", "secret@acme.example"]
    assert "bcc" not in _header_names(message)
    assert b"secret@acme.example" not in rendered.raw
    assert b"Secret Boss" not in rendered.raw


def test_bcc_only_email_has_no_to_header_and_still_renders() -> None:
    rendered = render_mime(_email(to=[], bcc=[Recipient("hidden@client.example")]))

    assert rendered.recipients == ["hidden@client.example"]
    assert _header_names(_parse(rendered)) == BASE_HEADERS - {"to"}


def test_idn_domain_is_sent_as_punycode() -> None:
    rendered = render_mime(_email(to=[Recipient("info@bücher.example")]))

    assert rendered.recipients == ["info@xn--bcher-kva.example"]


# -- Message-ID and threading ------------------------------------------------------------------


def test_generated_message_id_uses_the_sender_domain_or_the_given_domain() -> None:
    default = render_mime(_email())
    custom = render_mime(_email(), domain="mail.router.example")

    assert default.message_id.startswith("<") and default.message_id.endswith("@acme.example>")
    assert custom.message_id.endswith("@mail.router.example>")
    assert _parse(default)["Message-ID"] == default.message_id
    assert render_mime(_email()).message_id != default.message_id


def test_malformed_message_id_domain_is_refused() -> None:
    with pytest.raises(RenderError, match="Message-ID"):
        render_mime(_email(), domain="acme.example>\r\nBcc: evil@attacker.example")


def test_message_id_given_by_the_crm_is_kept() -> None:
    rendered = render_mime(_email(message_id="<crm-1234@acme.example>"))

    assert rendered.message_id == "<crm-1234@acme.example>"
    assert _parse(rendered)["Message-ID"] == "<crm-1234@acme.example>"


def test_references_keep_the_thread_and_end_with_our_message_id() -> None:
    email = _email(
        message_id="<ours@acme.example>",
        in_reply_to="<parent@client.example>",
        references=["<root@client.example>", "<mid@acme.example> <root@client.example>"],
    )

    message = _parse(render_mime(email))

    assert message["In-Reply-To"] == "<parent@client.example>"
    assert message["References"].split() == [
        "<root@client.example>",
        "<mid@acme.example>",
        "<parent@client.example>",
        "<ours@acme.example>",
    ]


def test_references_of_a_new_email_is_just_our_message_id() -> None:
    rendered = render_mime(_email())

    assert _parse(rendered)["References"] == rendered.message_id
    assert "in-reply-to" not in _header_names(_parse(rendered))


def test_long_reference_chain_is_folded_within_line_limits() -> None:
    references = [f"<{'r' * 60}-{i}@client.example>" for i in range(200)]

    rendered = render_mime(_email(references=references))

    assert _parse(rendered)["References"].split()[-1] == rendered.message_id
    assert len(_parse(rendered)["References"].split()) == 201
    assert max(len(line) for line in rendered.raw.split(b"\r\n")) <= 998


# -- body ----------------------------------------------------------------------------------------


def test_body_is_alternative_of_generated_text_and_the_html() -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        "<div>Hello&nbsp;Carl &amp; Co,</div><p>line one<br>line two</p>"
        "<ul><li>first</li><li>second</li></ul><p>Grüße &lt;Uma&gt;</p></body></html>"
    )

    message = _parse(render_mime(_email(html_body=html)))

    assert message.get_content_type() == "multipart/alternative"
    plain, rich = list(message.iter_parts())
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == (
        "Hello Carl & Co,\n\nline one\nline two\n\n- first\n- second\n\nGrüße <Uma>"
    )
    assert rich.get_content_type() == "text/html"
    assert rich.get_content().replace("\r\n", "\n").rstrip("\n") == html


def test_inline_image_goes_in_related_with_its_content_id_referenced_from_html() -> None:
    email = _email(
        html_body='<p>Logo:</p><img src="cid:logo@acme" alt="ACME">',
        attachments=[OutboundAttachment("logo.png", "image/png", PNG, content_id="<logo@acme>")],
    )

    message = _parse(render_mime(email))

    assert message.get_content_type() == "multipart/alternative"
    plain, related = list(message.iter_parts())
    assert related.get_content_type() == "multipart/related"
    html_part, image = list(related.iter_parts())
    assert html_part.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo@acme>"
    assert f"cid:{image['Content-ID'].strip('<>')}" in html_part.get_content()
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == PNG
    assert "ACME" in plain.get_content()
    assert all(_header_names(part) <= PART_HEADERS for part in _parts(message)[1:])


def test_attachments_go_in_mixed_and_non_ascii_filenames_round_trip() -> None:
    email = _email(
        html_body='<p>See attached</p><img src="cid:logo">',
        attachments=[
            OutboundAttachment("Angebot für Zoë — 2026.pdf", "application/pdf", PDF),
            OutboundAttachment("logo.png", "image/png", PNG, content_id="logo"),
            OutboundAttachment("notes.txt", "text/plain", "Grüße\n".encode()),
        ],
    )

    rendered = render_mime(email)
    message = _parse(rendered)

    assert message.get_content_type() == "multipart/mixed"
    body, pdf, notes = list(message.iter_parts())
    assert body.get_content_type() == "multipart/alternative"
    assert b"filename*" in rendered.raw  # RFC 2231 on the wire
    assert pdf.get_filename() == "Angebot für Zoë — 2026.pdf"
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_content() == PDF
    assert notes.get_filename() == "notes.txt"
    assert notes.get_payload(decode=True) == "Grüße\n".encode()
    related = list(body.iter_parts())[1]
    assert list(related.iter_parts())[1]["Content-ID"] == "<logo>"


def test_unusable_mimetypes_become_octet_stream() -> None:
    email = _email(
        attachments=[
            OutboundAttachment("a.bin", "not a type", b"1"),
            OutboundAttachment("m.eml", "message/rfc822", b"Subject: x\r\n\r\nbody"),
        ]
    )

    parts = list(_parse(render_mime(email)).iter_parts())[1:]

    assert [p.get_content_type() for p in parts] == ["application/octet-stream"] * 2
    assert parts[1].get_content() == b"Subject: x\r\n\r\nbody"


# -- line lengths and size -------------------------------------------------------------------------


def test_every_line_fits_in_998_bytes_for_long_single_line_bodies_and_subjects() -> None:
    email = _email(
        subject="S" * 3000 + " " + "ü" * 1000,
        html_body="<p>" + "x" * 5000 + "</p><p>" + "é" * 5000 + "</p>",
        to=[Recipient(f"r{i}@client.example", "Name " * 20) for i in range(40)],
        attachments=[OutboundAttachment("n" * 400 + ".pdf", "application/pdf", PDF)],
        tracking_token="CRM:0001001",
    )

    rendered = render_mime(email)
    message = _parse(rendered)

    assert max(len(line) for line in rendered.raw.split(b"\r\n")) <= 998
    assert message["Subject"] == "S" * 3000 + " " + "ü" * 1000 + " CRM:0001001"
    body = next(iter(message.iter_parts()))
    plain, rich = body.iter_parts()
    assert "x" * 5000 in plain.get_content()
    assert "é" * 5000 in rich.get_content()


def test_message_over_the_size_limit_is_refused_with_its_size() -> None:
    email = _email(attachments=[OutboundAttachment("big.pdf", "application/pdf", PDF * 100)])

    with pytest.raises(MessageTooLargeError) as raised:
        render_mime(email, max_bytes=100_000)

    assert raised.value.size > 100_000
    assert raised.value.max_bytes == 100_000
    assert str(raised.value.size) in str(raised.value)
    assert SES_MAX_MESSAGE_BYTES == 40_000_000


# -- refusals --------------------------------------------------------------------------------------


def test_email_without_recipients_is_refused() -> None:
    with pytest.raises(NoRecipientsError):
        render_mime(_email(to=[]))


def test_more_recipients_than_ses_accepts_is_refused() -> None:
    many = [Recipient(f"r{i}@client.example") for i in range(51)]

    with pytest.raises(RenderError, match="51 recipients"):
        render_mime(_email(to=many))


@pytest.mark.parametrize(
    "address",
    [
        "carl",
        "carl@",
        "@client.example",
        "carl smith@client.example",
        "carl@client.example, evil@attacker.example",
        "<carl@client.example>",
        "carl@client.example>\r\nBcc: evil@attacker.example",
        "carl@client.example\nX-Injected: 1",
        "carl\x00@client.example",
        "carl@client..example",
        "carl@-client.example",
        "zoë@client.example",
        'carl"@client.example',
    ],
)
def test_invalid_recipient_address_is_refused_naming_the_party(address: str) -> None:
    email = _email(cc=[Recipient(address, "Carl Bad")])

    with pytest.raises(InvalidRecipientError) as raised:
        render_mime(email)

    assert raised.value.party == "Cc (Carl Bad)"
    assert "Cc (Carl Bad)" in str(raised.value)


def test_invalid_sender_address_is_refused() -> None:
    with pytest.raises(InvalidRecipientError, match="From"):
        render_mime(_email(sender=Recipient("uma@acme.example\r\nBcc: evil@attacker.example")))


# -- header injection -------------------------------------------------------------------------------

INJECTIONS = [
    "\r\nBcc: evil@attacker.example",
    "\nX-Injected: yes",
    "\rX-Injected: yes",
    "\x00X-Injected: yes",
    "\u2028X-Injected: yes",
    "\x85X-Injected: yes",
    "\r\n\r\n<p>forged body</p>",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_subject_cannot_start_a_header(payload: str) -> None:
    message = _parse(render_mime(_email(subject=f"Hello{payload}")))

    assert _header_names(message) == BASE_HEADERS
    assert message["Subject"].startswith("Hello ")
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_tracking_token_cannot_start_a_header(payload: str) -> None:
    message = _parse(render_mime(_email(tracking_token=f"CRM:0001001{payload}")))

    assert _header_names(message) == BASE_HEADERS
    assert message["Subject"].startswith("Quote for you CRM:0001001 ")


@pytest.mark.parametrize("payload", INJECTIONS)
def test_display_names_cannot_start_a_header(payload: str) -> None:
    email = _email(
        sender=Recipient("uma@acme.example", f"Uma{payload}"),
        to=[Recipient("carl@client.example", f"Carl{payload}")],
    )

    rendered = render_mime(email)
    message = _parse(rendered)

    assert _header_names(message) == BASE_HEADERS
    assert rendered.recipients == ["carl@client.example"]
    assert message["From"].addresses[0].addr_spec == "uma@acme.example"
    assert message["From"].addresses[0].display_name.startswith("Uma ")
    assert [a.addr_spec for a in message["To"].addresses] == ["carl@client.example"]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_attachment_filename_and_content_id_cannot_start_a_header(payload: str) -> None:
    email = _email(
        html_body='<img src="cid:logo">',
        attachments=[
            OutboundAttachment(f"report{payload}.pdf", "application/pdf", PDF),
            OutboundAttachment(f"logo{payload}.png", f"image/png{payload}", PNG, content_id=f"logo{payload}"),
        ],
    )

    message = _parse(render_mime(email))

    assert _header_names(message) == BASE_HEADERS
    for part in _parts(message)[1:]:
        assert _header_names(part) <= PART_HEADERS
    pdf = list(message.iter_parts())[1]
    assert pdf.get_filename() is not None and pdf.get_filename().startswith("report ")
    assert pdf.get_content() == PDF
    image = next(p for p in _parts(message) if p.get_content_maintype() == "image")
    assert "\n" not in image["Content-ID"] and " " not in image["Content-ID"]
    assert image.get_content() == PNG


@pytest.mark.parametrize("payload", INJECTIONS)
def test_crm_message_ids_cannot_start_a_header(payload: str) -> None:
    email = _email(
        message_id=f"<ours@acme.example>{payload}",
        in_reply_to=f"<parent@client.example>{payload}",
        references=[f"<root@client.example>{payload}"],
    )

    message = _parse(render_mime(email))

    assert _header_names(message) == BASE_HEADERS | {"in-reply-to"}
    assert "\n" not in message["References"]


def test_router_id_is_reduced_to_safe_characters() -> None:
    message = _parse(render_mime(_email(tenant_id="acme\r\nX-Injected: 1", email_id="id/1 2")))

    assert str(message["X-EmailRouter-Id"]).strip().startswith("acme--X-Injected:-1/id-1-2/")
    assert _header_names(message) == BASE_HEADERS


def test_router_id_header_stays_on_one_line_even_beyond_78_characters() -> None:
    """Scripts and bounces that quote the original read headers line by line."""
    rendered = render_mime(_email(tenant_id="a-tenant-with-a-rather-long-identifier"))

    (line,) = [raw for raw in rendered.raw.split(b"\r\n") if raw.lower().startswith(b"x-emailrouter-id:")]
    value = line.split(b":", 1)[1].strip().decode()
    assert len(line) > 78
    assert verify(value, [KEY]) == (
        "a-tenant-with-a-rather-long-identifier",
        "5f0c3a52-0000-0000-0000-000000000001",
    )


def test_router_id_is_signed_so_no_recipient_can_name_another_email() -> None:
    """The header every recipient sees verifies only under the deployment's key, and only for
    the email it was made for: neither changing the ids nor another key passes."""
    first = str(_parse(render_mime(_email()))["X-EmailRouter-Id"]).strip()
    second = str(
        _parse(render_mime(_email(email_id="5f0c3a52-0000-0000-0000-000000000002")))["X-EmailRouter-Id"]
    )

    assert verify(first, [KEY]) == ("acme", "5f0c3a52-0000-0000-0000-000000000001")
    assert first.rsplit("/", 1)[1] != second.rsplit("/", 1)[1]
    assert verify(second.replace("000000000002", "000000000001"), [KEY]) is None
    assert verify(first.replace("acme/", "other/"), [KEY]) is None
    assert verify(first, [b"another-deployment-key-000000000000"]) is None
    assert verify("acme/5f0c3a52-0000-0000-0000-000000000001", [KEY]) is None  # unsigned (old) form


# -- plain text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("plain words", "plain words"),
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<ol><li>one</li><li>two</li></ol>", "- one\n- two"),
        ("&lt;tag&gt; &amp; &quot;q&quot; &#233;&#x20AC;", '<tag> & "q" é€'),
        ("<script>alert(1)</script><style>p{}</style>shown", "shown"),
        ('<a href="https://acme.example/q/1">the quote</a>', "the quote <https://acme.example/q/1>"),
        ('<a href="https://acme.example">https://acme.example</a>', "https://acme.example"),
        ("<table><tr><td>x</td><td>y</td></tr><tr><td>z</td></tr></table>", "x  y\nz"),
        ("  lots \n\n of   space  ", "lots of space"),
    ],
)
def test_plain_text_keeps_words_and_line_structure(html: str, text: str) -> None:
    assert html_to_text(html) == text
