"""SesSender against moto's SES v2 over HTTP, and against real sockets that misbehave.

Where moto keeps what was sent: the sesv2 backend hands Raw sends to the SES v1 backend, so
they appear in ``GET {moto}/moto-api/data.json`` under ``["ses"]["RawMessage"]`` (there is no
sesv2 key) as ``{"id", "source", "destinations", "raw_data"}``. ``raw_data`` is the MIME as a
str; ``destinations`` is our envelope followed by every To/Cc/Bcc header address that moto
re-parses from the message (as ``Name <addr>``). moto accepts ``TenantName`` and
``ConfigurationSetName`` but ignores both (no NotFoundException for unknown ones).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.stub import Stubber

from emailrouter.outbound.errors import PermanentSendError, ThrottledError, TransientSendError
from emailrouter.outbound.models import OutboundAttachment, OutboundEmail, Recipient
from emailrouter.outbound.render import RenderedMessage, render_mime
from emailrouter.outbound.ses import SesSender, ses_assigned_message_id, ses_message_id_from_header

SENDER = "uma@acme.example"


def _rendered() -> RenderedMessage:
    return render_mime(
        OutboundEmail(
            tenant_id="acme",
            email_id="e-1",
            sender=Recipient(SENDER, "Uma Müller"),
            subject="Quote for you",
            html_body="<p>Hello</p>",
            to=[Recipient("carl@client.example", "Carl")],
            cc=[Recipient("dora@client.example")],
            bcc=[Recipient("boss@acme.example")],
            attachments=[OutboundAttachment("Zoë.pdf", "application/pdf", b"%PDF-1.7 " * 100)],
            tracking_token="CRM:0001001",
        ),
        router_key=b"router-id-key-for-ses-sender-tests",
    )


def _sent_raw_messages(moto_endpoint: str) -> list[dict[str, Any]]:
    data = requests.get(f"{moto_endpoint}/moto-api/data.json", timeout=10).json()
    return list(data.get("ses", {}).get("RawMessage", []))


def _capture_requests(client: Any) -> list[dict[str, Any]]:
    """The SendEmail parameters as botocore builds the request (the real client, just observed)."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(dict(params))

    client.meta.events.register("before-parameter-build.sesv2.SendEmail", record)
    return seen


# -- against moto ---------------------------------------------------------------------------------


def test_rendered_message_is_sent_raw_with_the_full_envelope(aws: boto3.Session, moto_endpoint: str) -> None:
    client = aws.client("sesv2")
    client.create_email_identity(EmailIdentity="acme.example")
    rendered = _rendered()

    ses_id = SesSender(client).send(rendered, from_address=SENDER, tenant_name=None)

    sent = _sent_raw_messages(moto_endpoint)
    assert [m["id"] for m in sent] == [ses_id]
    assert sent[0]["source"] == SENDER
    assert sent[0]["raw_data"].encode() == rendered.raw
    envelope = sent[0]["destinations"][: len(rendered.recipients)]
    assert envelope == ["carl@client.example", "dora@client.example", "boss@acme.example"]
    delivered = BytesParser(policy=policy.default).parsebytes(sent[0]["raw_data"].encode())
    assert delivered["Subject"] == "Quote for you CRM:0001001"
    assert "Bcc" not in delivered


def test_configuration_set_and_tenant_name_are_passed_to_ses(aws: boto3.Session, moto_endpoint: str) -> None:
    client = aws.client("sesv2")
    client.create_email_identity(EmailIdentity="acme.example")
    requests_made = _capture_requests(client)
    sender = SesSender(client, configuration_set="mail-events")

    sender.send(_rendered(), from_address=SENDER, tenant_name="acme")

    assert sender.supports_tenant_name  # botocore >= 1.38 models TenantName; moto accepts and ignores it
    assert requests_made[0]["ConfigurationSetName"] == "mail-events"
    assert requests_made[0]["TenantName"] == "acme"
    assert requests_made[0]["Destination"] == {
        "ToAddresses": ["carl@client.example", "dora@client.example", "boss@acme.example"]
    }
    assert len(_sent_raw_messages(moto_endpoint)) == 1


def test_without_tenant_or_configuration_set_neither_is_sent(aws: boto3.Session) -> None:
    client = aws.client("sesv2")
    client.create_email_identity(EmailIdentity="acme.example")
    requests_made = _capture_requests(client)

    SesSender(client).send(_rendered(), from_address=SENDER, tenant_name=None)

    assert "TenantName" not in requests_made[0]
    assert "ConfigurationSetName" not in requests_made[0]


def test_unverified_sender_is_a_permanent_failure(aws: boto3.Session, moto_endpoint: str) -> None:
    client = aws.client("sesv2")

    with pytest.raises(PermanentSendError) as raised:
        SesSender(client).send(_rendered(), from_address=SENDER, tenant_name=None)

    assert "MessageRejected" in raised.value.reason
    assert raised.value.code == "MessageRejected"
    assert _sent_raw_messages(moto_endpoint) == []


# -- SES refusals (botocore's Stubber stands in for SES responses moto cannot produce) ----------


@pytest.mark.parametrize(
    ("code", "status", "message", "expected"),
    [
        ("TooManyRequestsException", 429, "Too many requests", ThrottledError),
        ("LimitExceededException", 400, "Limit exceeded", ThrottledError),
        ("Throttling", 400, "Maximum sending rate exceeded.", ThrottledError),
        ("ThrottlingException", 400, "Daily message quota exceeded.", ThrottledError),
        ("MessageRejected", 400, "Daily message quota exceeded.", ThrottledError),
        ("MessageRejected", 400, "Email address is not verified.", PermanentSendError),
        ("MailFromDomainNotVerifiedException", 400, "MAIL FROM not verified", PermanentSendError),
        ("AccountSuspendedException", 400, "Suspended", PermanentSendError),
        ("SendingPausedException", 400, "Paused", PermanentSendError),
        ("NotFoundException", 404, "Configuration set does not exist", PermanentSendError),
        ("BadRequestException", 400, "Bad tag", PermanentSendError),
        ("InternalFailure", 500, "Internal failure", TransientSendError),
        ("ServiceUnavailable", 503, "Unavailable", TransientSendError),
    ],
)
def test_ses_errors_are_classified_by_what_the_caller_must_do(
    code: str, status: int, message: str, expected: type[Exception]
) -> None:
    client = boto3.client("sesv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("send_email", code, message, http_status_code=status)

        with pytest.raises(expected) as raised:
            SesSender(client).send(_rendered(), from_address=SENDER, tenant_name=None)

    assert type(raised.value) is expected
    assert code in str(raised.value) and message in str(raised.value)
    if isinstance(raised.value, PermanentSendError):
        assert raised.value.reason == f"{code}: {message}"


# -- the network (real sockets) ------------------------------------------------------------------


class _MisbehavingServer:
    """A TCP server that accepts connections and either closes them at once or never answers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.recv(65536)
            if self.mode == "close":
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._sock.close()


@pytest.fixture(params=["close", "silent"])
def misbehaving(request: pytest.FixtureRequest) -> Iterator[_MisbehavingServer]:
    server = _MisbehavingServer(request.param)
    yield server
    server.close()


def _client(endpoint: str, **config: Any) -> Any:
    return boto3.client(
        "sesv2",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}, **config),
    )


def test_dropped_connection_or_timeout_leaves_the_outcome_unknown(misbehaving: _MisbehavingServer) -> None:
    client = _client(misbehaving.url, read_timeout=0.5, connect_timeout=1)

    with pytest.raises(TransientSendError) as raised:
        SesSender(client).send(_rendered(), from_address=SENDER, tenant_name=None)

    expected = {"close": "ConnectionClosedError", "silent": "ReadTimeoutError"}[misbehaving.mode]
    assert str(raised.value).startswith(expected)


def test_unreachable_endpoint_is_a_transient_error() -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"

    with pytest.raises(TransientSendError, match="EndpointConnectionError"):
        SesSender(_client(url, connect_timeout=1)).send(_rendered(), from_address=SENDER, tenant_name=None)


def test_default_client_makes_exactly_one_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries dropped connections by default; a resend could deliver the mail twice."""
    server = _MisbehavingServer("close")
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    try:
        sender = SesSender()
        with pytest.raises(TransientSendError):
            sender.send(_rendered(), from_address=SENDER, tenant_name=None)
    finally:
        server.close()

    assert server.connections == 1
    assert sender.region == "eu-west-1"


# -- the Message-ID SES assigns -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "header"),
    [
        ("us-east-1", "<0100018c-abc-000000@email.amazonses.com>"),
        ("eu-west-1", "<0100018c-abc-000000@eu-west-1.amazonses.com>"),
        (None, "<0100018c-abc-000000@email.amazonses.com>"),
    ],
)
def test_ses_assigned_message_id_and_its_reverse(region: str | None, header: str) -> None:
    assert ses_assigned_message_id("0100018c-abc-000000", region) == header
    assert ses_message_id_from_header(header) == "0100018c-abc-000000"


def test_non_ses_message_id_has_no_ses_id() -> None:
    assert ses_message_id_from_header("<abc@acme.example>") is None
    assert ses_message_id_from_header("<abc@amazonses.com.evil.example>") is None
