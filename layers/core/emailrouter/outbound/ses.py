"""Hand a rendered message to Amazon SES v2 (SendEmail, Raw content) and classify failures.

Failures are sorted by what the caller must do next (see `outbound.errors`):
throttling → `ThrottledError` (nothing sent, retry later); a refusal → `PermanentSendError`;
a broken connection or timeout → `TransientSendError` (SES may have accepted the message).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, ParamValidationError
from botocore.exceptions import ConnectionError as BotoConnectionError

from emailrouter.outbound.errors import PermanentSendError, ThrottledError, TransientSendError

if TYPE_CHECKING:
    from emailrouter.outbound.render import RenderedMessage

# Codes that mean "slow down": SES v2 uses TooManyRequestsException for API rate; the sending
# quota errors ("Maximum sending rate exceeded", "Daily message quota exceeded") are documented
# as a throttling error whose code is unconfirmed for v2, so accept every spelling (fact sheet A1.2).
THROTTLING_CODES = frozenset(
    {"TooManyRequestsException", "LimitExceededException", "Throttling", "ThrottlingException"}
)
_QUOTA_MESSAGES = ("maximum sending rate exceeded", "daily message quota exceeded")
# The known refusals: the message or the account/configuration is wrong; resending won't help.
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "NotFoundException",
        "BadRequestException",
    }
)
_SES_ID = re.compile(r"^<?([^<>@\s]+)@(?:email|[a-z0-9-]+)\.amazonses\.com>?$", re.IGNORECASE)

# One attempt per call: botocore's automatic retries would resend after a read timeout, and a
# message SES already accepted must never go out twice. Throttling is retried by the queue.
_NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


class SesSender:
    """Sends rendered messages through SES v2 with the envelope taken from the message.

    `client` is a boto3 ``sesv2`` client; the default is built with retries disabled (see
    `_NO_RETRIES`). A client passed in should be configured the same way.
    """

    def __init__(self, client: Any = None, *, configuration_set: str | None = None) -> None:
        self._client = client if client is not None else boto3.client("sesv2", config=_NO_RETRIES)
        self._configuration_set = configuration_set
        members = self._client.meta.service_model.operation_model("SendEmail").input_shape.members
        # TenantName (SES tenants) arrived in botocore in 2025; older models would reject it.
        self.supports_tenant_name: bool = "TenantName" in members

    @property
    def region(self) -> str:
        """The client's region (SES's assigned Message-ID is regional)."""
        return str(self._client.meta.region_name)

    def send(
        self,
        rendered: RenderedMessage,
        *,
        from_address: str,
        tenant_name: str | None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Send `rendered` as-is and return SES's MessageId (``0100…-000000``).

        All envelope recipients (To, Cc and Bcc) go in ``Destination.ToAddresses``: for Raw
        content the Destination is only the SMTP envelope; the visible To/Cc are the message's
        own headers. `tenant_name` scopes the send to an SES tenant when the installed botocore
        knows the parameter (it is dropped otherwise; see `supports_tenant_name`).
        Every message goes through the sender's configuration set (the deployment's: its event
        destination is what settles interrupted sends); `tags` become SES message tags, which
        SES copies into every event about the message (`mail.tags`).
        """
        request: dict[str, Any] = {
            "FromEmailAddress": from_address,
            "Destination": {"ToAddresses": list(rendered.recipients)},
            "Content": {"Raw": {"Data": rendered.raw}},
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        if tags:
            request["EmailTags"] = [{"Name": name, "Value": value} for name, value in tags.items()]
        if tenant_name and self.supports_tenant_name:
            request["TenantName"] = tenant_name
        try:
            response = self._client.send_email(**request)
        except ClientError as error:
            raise classify_client_error(error) from error
        except (BotoConnectionError, HTTPClientError) as error:
            # Covers EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError and
            # ReadTimeoutError. Only the first two prove nothing was sent; the caller treats
            # them all as "outcome unknown" and never resends blindly.
            raise TransientSendError(f"{type(error).__name__}: {error}") from error
        except ParamValidationError as error:
            raise PermanentSendError(f"ParamValidation: {error}", code="ParamValidation") from error
        return str(response["MessageId"])


def classify_client_error(error: ClientError) -> ThrottledError | PermanentSendError | TransientSendError:
    """The outbound error for an SES ``ClientError`` (see the module docstring)."""
    details = error.response.get("Error", {})
    code = str(details.get("Code") or "Unknown")
    message = str(details.get("Message") or "")
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    described = f"{code}: {message}" if message else code
    if code in THROTTLING_CODES or status == 429 or message.lower().startswith(_QUOTA_MESSAGES):
        return ThrottledError(described)
    if code in PERMANENT_CODES or 400 <= status < 500:
        return PermanentSendError(described, code=code)
    # 5xx (InternalFailure, ServiceUnavailable …): SES may or may not have taken the message.
    return TransientSendError(described)


def ses_assigned_message_id(ses_message_id: str, region: str | None = None) -> str:
    """The Message-ID header SES gives the delivered message: ``<{MessageId}@{domain}>``.

    SES replaces the Message-ID we render (SES developer guide, "Amazon SES header fields";
    fact sheet A1.1). The header is the API's MessageId at an amazonses.com host:
    ``email.amazonses.com`` in us-east-1 and ``{region}.amazonses.com`` elsewhere, e.g.
    ``<0102018c…-000000@eu-west-1.amazonses.com>``. Observed in delivered mail, not documented
    by AWS (fact sheet: "[obs; regional form unconfirmed]") — so correlation of replies should
    also match on the MessageId alone (`ses_message_id_from_header`).

    >>> ses_assigned_message_id("0100018c-x-000000", "us-east-1")
    '<0100018c-x-000000@email.amazonses.com>'
    >>> ses_assigned_message_id("0102018c-x-000000", "eu-west-1")
    '<0102018c-x-000000@eu-west-1.amazonses.com>'
    """
    host = "email" if region in (None, "", "us-east-1") else region
    return f"<{ses_message_id}@{host}.amazonses.com>"


def ses_message_id_from_header(value: str) -> str | None:
    """The SES MessageId inside an SES Message-ID header value (any amazonses.com host), else None.

    >>> ses_message_id_from_header("<0100018c-x-000000@email.amazonses.com>")
    '0100018c-x-000000'
    >>> ses_message_id_from_header("<abc@acme.example>") is None
    True
    """
    match = _SES_ID.match(value.strip())
    return match.group(1) if match else None
