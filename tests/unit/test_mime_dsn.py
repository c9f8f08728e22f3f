"""Delivery status notifications → ParsedMessage.delivery_report.

The samples live in tests/fixtures/mail/dsn (see its README); every expected
value here is read off the sample by hand, not computed by the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailrouter.mime import parse as parse_module
from emailrouter.mime.dsn import MAX_STATUSES
from emailrouter.mime.errors import MalformedMessageError
from emailrouter.mime.models import DeliveryReport, DeliveryStatus
from emailrouter.mime.parse import parse_message

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "mail" / "dsn"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def report_of(name: str) -> tuple[DeliveryReport, list[str]]:
    parsed = parse_message(sample(name))
    assert parsed.delivery_report is not None
    return parsed.delivery_report, parsed.defects


def dsn_defects(defects: list[str]) -> list[str]:
    return [defect for defect in defects if defect.startswith("dsn-")]


# --- Real-world shapes -----------------------------------------------------------------------------


def test_exchange_online_ndr() -> None:
    report, defects = report_of("exchange_online_ndr.eml")

    assert report == DeliveryReport(
        statuses=(
            DeliveryStatus(
                recipient="missing@fabrikam.com",
                action="failed",
                status="5.1.10",
                diagnostic="550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            ),
        ),
        original_message_id="<er-7f3a9c.1@crm.contoso.com>",
        original_references=("<ask-0@fabrikam.com>", "<ask-1@fabrikam.com>"),
        router_id="er-7f3a9c",
        reporting_mta="AM0PR01MB1234.eurprd01.prod.outlook.com",
    )
    assert defects == []


def test_exchange_ndr_still_yields_its_body_and_attachments() -> None:
    parsed = parse_message(sample("exchange_online_ndr.eml"))

    assert parsed.subject == "Undeliverable: Your quote Q-2026-0042"
    assert parsed.html_body == (
        "<html><body><p>Your message to <b>missing@fabrikam.com</b> couldn't be delivered.</p></body></html>"
    )
    assert [(a.filename, a.mimetype) for a in parsed.attachments] == [
        ("attachment-1.txt", "message/delivery-status"),
        ("Your quote Q-2026-0042.eml", "message/rfc822"),
    ]


def test_exchange_on_premises_with_odd_case_and_folded_fields() -> None:
    report, defects = report_of("exchange_onprem_odd_case.eml")

    assert report.reporting_mta == "EX01.corp.fabrikam.com"
    assert report.statuses == (
        DeliveryStatus(
            recipient="jane.doe@corp.fabrikam.com",
            action="failed",
            status="5.1.1",
            diagnostic="550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
        ),
        DeliveryStatus(
            recipient="bob@corp.fabrikam.com",
            action="failed",
            status="5.2.2",
            diagnostic=(
                "554 5.2.2 mailbox full; "
                "STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded"
            ),
        ),
    )
    assert report.original_message_id == "<er-order-1234@crm.contoso.com>"
    assert report.router_id == "er-order-1234"
    assert dsn_defects(defects) == []


def test_postfix_bounce_with_returned_headers_only() -> None:
    report, defects = report_of("postfix_bounce.eml")

    assert report == DeliveryReport(
        statuses=(
            DeliveryStatus(
                recipient="nobody@example.net",
                action="failed",
                status="5.1.1",
                diagnostic=(
                    "550 5.1.1 <nobody@example.net>: Recipient address rejected: "
                    "User unknown in virtual mailbox table"
                ),
            ),
        ),
        original_message_id="<er-5d1e.2@crm.contoso.com>",
        original_references=("<first@example.net>", "<er-5d1e.1@crm.contoso.com>"),
        router_id="er-5d1e",
        reporting_mta="mail.example.net",
    )
    assert dsn_defects(defects) == []


def test_postfix_delay_warning() -> None:
    report, _ = report_of("postfix_delayed.eml")

    assert report.statuses == (
        DeliveryStatus(
            recipient="sales@slow.example.org",
            action="delayed",
            status="4.4.1",
            diagnostic="connect to mx.slow.example.org[203.0.113.5]:25: Connection timed out",
        ),
    )
    assert report.original_message_id == "<er-slow.1@crm.contoso.com>"
    assert report.router_id is None


def test_gmail_style_bounce_joins_the_multi_line_diagnostic() -> None:
    report, defects = report_of("gmail_style.eml")

    assert report.reporting_mta == "googlemail.com"
    [status] = report.statuses
    assert (status.recipient, status.action, status.status) == ("nobody@example.org", "failed", "5.1.1")
    assert status.diagnostic == (
        "550-5.1.1 The email account that you tried to reach does not exist. Please try "
        "550-5.1.1 double-checking the recipient's email address for typos or "
        "550 5.1.1 unnecessary spaces. - gsmtp"
    )
    assert report.original_message_id == "<er-g1.1@crm.contoso.com>"
    assert report.router_id == "er-g1"
    assert dsn_defects(defects) == []


# --- RFC 6533 global reports ------------------------------------------------------------------------


def test_global_delivery_status_in_raw_utf8() -> None:
    report, defects = report_of("global_utf8.eml")

    assert report == DeliveryReport(
        statuses=(
            DeliveryStatus(
                recipient="jörg@bücher.example",
                action="failed",
                status="5.1.1",
                diagnostic="550 5.1.1 Empfänger unbekannt",
            ),
        ),
        original_message_id="<er-umlaut.1@crm.contoso.com>",
        router_id="er-umlaut",
        reporting_mta="mx.bücher.example",
    )
    assert dsn_defects(defects) == []


def test_global_delivery_status_and_returned_message_in_base64() -> None:
    report, defects = report_of("global_base64.eml")

    assert report.statuses == (
        DeliveryStatus(
            recipient="山田@例え.jp",
            action="failed",
            status="5.1.1",
            diagnostic="550 5.1.1 宛先が見つかりません",
        ),
    )
    assert report.original_message_id == "<er-jp.1@crm.contoso.com>"
    assert report.router_id == "er-jp"
    assert dsn_defects(defects) == []


def test_utf8_address_type_escapes_are_decoded() -> None:
    raw = (
        b"From: postmaster@example.com\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=global-delivery-status; boundary=g\r\n\r\n"
        b"--g\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--g\r\nContent-Type: message/global-delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Original-Recipient: utf-8; J\\x{00D6}RG@example.com\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"--g--\r\n"
    )

    report = parse_message(raw).delivery_report

    assert report is not None
    assert [status.recipient for status in report.statuses] == ["jörg@example.com"]


# --- Damaged reports --------------------------------------------------------------------------------


def test_missing_returned_message_gives_no_original_ids() -> None:
    report, defects = report_of("missing_original.eml")

    assert report == DeliveryReport(
        statuses=(DeliveryStatus(recipient="gone@example.com", action="failed", status="5.1.1"),),
        reporting_mta="mx.example.com",
    )
    assert report.original_message_id is None
    assert "dsn-original-missing" in defects


def test_every_status_part_is_read_and_a_banner_before_the_fields_is_skipped() -> None:
    report, defects = report_of("several_status_parts.eml")

    assert report.reporting_mta == "gw.client.example"
    assert report.statuses == (
        DeliveryStatus(recipient="carl@client.example", action="failed", status="5.1.1"),
        DeliveryStatus(recipient="dora@client.example", action="failed", status="5.2.2"),
    )
    assert report.original_message_id == "<x@acme.example>"
    assert dsn_defects(defects) == []


def test_recipient_blocks_without_blank_lines_are_split() -> None:
    report, defects = report_of("recipients_not_separated.eml")

    assert report.reporting_mta == "legacy.example.com"
    assert report.statuses == (
        DeliveryStatus(recipient="one@legacy.example.com", action="failed", status="5.1.1"),
        DeliveryStatus(
            recipient="two@legacy.example.com",
            action="failed",
            status="5.7.1",
            diagnostic="550 5.7.1 relaying denied",
        ),
        DeliveryStatus(
            recipient="three@inner.legacy.example.com",
            action="delivered",
            status="2.0.0",
            original_recipient="three@legacy.example.com",  # before its Final-Recipient
        ),
    )
    assert dsn_defects(defects) == []


def test_status_fields_in_a_text_plain_part_are_read_with_a_defect() -> None:
    report, defects = report_of("mislabelled_status_part.eml")

    assert report.statuses == (
        DeliveryStatus(
            recipient="someone@old.example.com",
            action="failed",
            status="5.0.0",
            diagnostic="550 no such user",
        ),
    )
    assert report.original_message_id == "<er-old.1@crm.contoso.com>"
    assert "dsn-status-mislabelled:text/plain" in defects


def test_broken_fields_keep_what_can_be_read() -> None:
    report, defects = report_of("broken_fields.eml")

    assert report.statuses == (
        DeliveryStatus(
            recipient="nostatus@broken.example.com",
            action="failed",
            status="5.1.1",
            diagnostic="550 5.1.1 user unknown",
        ),
        DeliveryStatus(recipient="noaction@broken.example.com", action="delayed", status="4.2.2"),
        # garbled@ has neither a readable Action nor a Status: beside recipients with a
        # definite action it says nothing and is dropped (its defects stay, below).
    )
    assert report.original_message_id is None
    assert report.router_id is None
    assert dsn_defects(defects) == [
        "dsn-recipient-missing",
        "dsn-field-missing:Status",
        "dsn-field-invalid:Action",
        "dsn-field-missing:Action",
        "dsn-field-invalid:Status",
    ]


def test_report_without_status_part_still_names_the_returned_message() -> None:
    report, defects = report_of("no_status_part.eml")

    assert report == DeliveryReport(
        statuses=(), original_message_id="<er-nostatus.1@crm.contoso.com>", router_id="er-nostatus"
    )
    assert "dsn-status-missing" in defects


def test_other_report_types_are_not_delivery_reports() -> None:
    parsed = parse_message(sample("read_receipt_not_a_dsn.eml"))

    assert parsed.delivery_report is None
    assert dsn_defects(parsed.defects) == []


@pytest.mark.parametrize(
    "content_type",
    [
        b"multipart/mixed; report-type=delivery-status; boundary=b",
        b"multipart/report; boundary=b",
        b"text/plain; report-type=delivery-status",
    ],
)
def test_only_multipart_report_of_delivery_status_is_read(content_type: bytes) -> None:
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Final-Recipient: rfc822; x@example.com\r\nAction: failed\r\nStatus: 5.0.0\r\n--b--\r\n"
    )

    assert parse_message(raw).delivery_report is None


def test_too_many_recipients_are_truncated_with_a_defect() -> None:
    blocks = b"".join(
        b"Final-Recipient: rfc822; r%d@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" % n
        for n in range(MAX_STATUSES + 5)
    )
    raw = (
        b"From: postmaster@example.com\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=m\r\n\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--m\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        + blocks
        + b"--m--\r\n"
    )

    parsed = parse_message(raw)

    assert parsed.delivery_report is not None
    assert len(parsed.delivery_report.statuses) == MAX_STATUSES
    assert parsed.delivery_report.statuses[-1].recipient == f"r{MAX_STATUSES - 1}@example.com"
    assert f"dsn-statuses-truncated:{MAX_STATUSES + 5}" in parsed.defects


def test_ordinary_mail_never_reaches_the_report_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise AssertionError("read_delivery_report called for ordinary mail")

    monkeypatch.setattr(parse_module, "read_delivery_report", fail)
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n"
    )

    assert parse_message(raw).delivery_report is None


SAMPLE_NAMES = sorted(path.name for path in SAMPLES.glob("*.eml"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLE_NAMES), st.data())
def test_mutated_reports_never_raise(name: str, data: st.DataObject) -> None:
    raw = bytearray(sample(name))
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(raw) - 1))
        operation = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        if operation == "replace":
            raw[position] = data.draw(st.integers(0, 255))
        elif operation == "delete":
            del raw[position : position + data.draw(st.integers(1, 30))]
        else:
            raw[position:position] = data.draw(
                st.sampled_from([b"\r\n", b"\r\n\r\n", b":", b";", b" ", b"\\x{D800}", b"\xff", b"--"])
            )

    try:
        parsed = parse_message(bytes(raw))
    except MalformedMessageError:
        return
    report = parsed.delivery_report
    assert not any(defect.startswith("dsn-unreadable") for defect in parsed.defects)
    if report is not None:
        for status in report.statuses:
            assert status.recipient and status.recipient == status.recipient.lower()
            assert "\n" not in status.diagnostic and "\r" not in status.diagnostic
            status.recipient.encode("utf-8")
            status.diagnostic.encode("utf-8")
        assert report.original_message_id is None or report.original_message_id.startswith("<")
        assert "\n" not in report.reporting_mta and "\r" not in report.reporting_mta


# --- Plain-text bounces and abuse reports ----------------------------------------------------------


def _plain(headers: str, body: str) -> bytes:
    return (headers.strip() + "\n\n" + body).replace("\n", "\r\n").encode()


def test_a_person_writing_about_undeliverable_mail_is_not_a_bounce() -> None:
    """Bounce wording alone is not enough: the message must come from a mail system."""
    parsed = parse_message(
        _plain(
            "From: Carl <carl@client.example>\nSubject: Undeliverable mail to your office?\nMessage-ID: <h@x.example>",
            "Hi, my last mail could not be delivered to help@acme.example - can you check?\n",
        )
    )

    assert parsed.delivery_report is None


def test_exim_failed_recipients_header_alone_makes_a_bounce() -> None:
    parsed = parse_message(
        _plain(
            "From: root@mx.client.example\nX-Failed-Recipients: carl@client.example\nSubject: Notice\n"
            "Message-ID: <n@mx.client.example>",
            "A message could not be handed on.\n\nMessage-ID: <sent-1@acme.example>\n",
        )
    )

    assert parsed.delivery_report is not None
    assert [s.recipient for s in parsed.delivery_report.statuses] == ["carl@client.example"]
    assert parsed.delivery_report.original_message_id == "<sent-1@acme.example>"


def test_delay_warning_in_plain_text_is_delayed_not_failed() -> None:
    parsed = parse_message(
        _plain(
            "From: MAILER-DAEMON@mx.client.example\nReturn-Path: <>\n"
            "Subject: Warning: message 1vQ delayed 24 hours\nMessage-ID: <w@mx.client.example>",
            "This message was created automatically by mail delivery software.\n"
            "A message that you sent has not yet been delivered to one or more of its recipients\n"
            "after more than 24 hours on the queue on mx.client.example.\n\n  carl@client.example\n"
            "    Delay reason: SMTP error 451 4.4.1 mailbox busy\n\nNo action is required on your part.\n"
            "Delivery attempts will continue for some time, and this warning may be repeated.\n",
        )
    )

    assert parsed.delivery_report is not None
    (status,) = parsed.delivery_report.statuses
    assert (status.recipient, status.action, status.status) == ("carl@client.example", "delayed", "4.4.1")


def test_abuse_report_names_type_complainer_and_reported_message() -> None:
    parsed = parse_message(
        _plain(
            "From: fbl@isp.example\nSubject: Abuse report\nMessage-ID: <a@isp.example>\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="b"',
            "--b\nContent-Type: text/plain\n\nSpam report.\n\n--b\nContent-Type: message/feedback-report\n\n"
            "Feedback-Type: abuse\nUser-Agent: ISP-FBL/1.0\nVersion: 1\n"
            "Original-Rcpt-To: <Carl@Client.Example>\n\n"
            "--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <sent-2@acme.example>\n"
            "X-EmailRouter-Id: acme/e-2/0123\n\n--b--\n",
        )
    )

    report = parsed.feedback_report
    assert report is not None and parsed.delivery_report is None
    assert (report.feedback_type, report.recipients, report.reporter) == (
        "abuse",
        ("carl@client.example",),
        "ISP-FBL/1.0",
    )
    assert (report.original_message_id, report.router_id) == ("<sent-2@acme.example>", "acme/e-2/0123")
