"""SES configuration-set event publishing for the local stack.

Real SES publishes Send, Delivery, Bounce and Complaint events for every message sent with a
configuration set to the set's event destination (here the `SesEventsTopic` SNS topic, which
the template subscribes the `SesEventsQueue` to). moto records raw sends but never publishes
events, and the outbound path depends on them: a Send/Delivery event proves SES accepted a
message whose send was interrupted; a permanent Bounce marks the CRM email Failed. So this
module plays SES's part: it reads what moto recorded (``GET /moto-api/data.json`` →
``ses.RawMessage``) and publishes, through SNS Publish (SNS→SQS delivery stays moto's own),
the events SES would publish, in the documented JSON shape
(https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html).

Outcomes follow the SES mailbox simulator
(https://docs.aws.amazon.com/ses/latest/DeveloperGuide/mailbox-simulator.html); every address
outside ``simulator.amazonses.com`` is delivered:

=========================================  ==================================================
``success@simulator.amazonses.com``        Delivery
``bounce@simulator.amazonses.com``         Bounce Permanent/General, ``smtp; 550 5.1.1 user unknown``
``complaint@simulator.amazonses.com``      Delivery, then Complaint (``abuse``)
``suppressionlist@simulator.amazonses.com`` Bounce Permanent/OnAccountSuppressionList
``ooto@simulator.amazonses.com``           Delivery (the auto-reply is mail to the sender, not an event)
=========================================  ==================================================

The simulator supports labels (``bounce+label1@simulator.amazonses.com``); they are honoured.

What moto does not keep, and how it is stood in for:
- the configuration set and SendEmail's ``EmailTags``: the set name comes from the
  ``X-SES-CONFIGURATION-SET`` header, else the constructor, else ``SES_CONFIGURATION_SET``;
  tags come only from an ``X-SES-MESSAGE-TAGS`` header (SES's documented raw-mail alternative),
  so events carry none of the router's EmailTags — ``parse_ses_event`` correlates by the
  ``X-EmailRouter-Id`` header instead;
- the send time: ``mail.timestamp`` is when `pump()` first saw the message;
- the caller's IP and identity: no ``ses:source-ip`` / ``ses:caller-identity`` tags, no
  ``sourceArn`` (moto does not say which identity authorized the send).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_string
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from email.utils import format_datetime, formataddr, getaddresses, parseaddr
from typing import Any

import boto3
import requests

SIMULATOR_DOMAIN = "simulator.amazonses.com"
CONFIGURATION_SET_ENV = "SES_CONFIGURATION_SET"

# Values SES's simulator reports (observed in published events); illustrative, not contractual.
_BOUNCE_REPORTING_MTA = "dsn; a8-96.smtp-out.amazonses.com"
_DELIVERY_REPORTING_MTA = "a8-96.smtp-out.amazonses.com"
_DELIVERY_SMTP_RESPONSE = "250 2.6.0 Message received"
_REMOTE_MTA_IP = "192.0.2.25"  # TEST-NET-1: nothing real answered
_SUPPRESSED_DIAGNOSTIC = (
    "Amazon SES did not send the message to this address because it is on the suppression list "
    "for your account. For more information about removing addresses from the suppression list, "
    "see the Amazon SES Developer Guide at "
    "https://docs.aws.amazon.com/ses/latest/DeveloperGuide/sending-email-suppression-list.html"
)
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def ses_timestamp(moment: datetime) -> str:
    """`2024-01-01T00:41:02.669Z`: SES event timestamps are ISO 8601 UTC with milliseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def feedback_id() -> str:
    """An id shaped like SES's feedbackId / MessageId (`0100` + 12 hex, a UUID, `-000000`)."""
    return f"0100{secrets.token_hex(6)}-{uuid.uuid4()}-000000"


def simulator_scenario(address: str) -> str | None:
    """`bounce` for `Bounce+x@Simulator.AmazonSES.com`; None outside the mailbox simulator."""
    local, _, domain = address.rpartition("@")
    if domain.lower() != SIMULATOR_DOMAIN:
        return None
    return local.split("+", 1)[0].lower()


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One raw send as moto recorded it: `{id, source, destinations, raw_data}`."""

    message_id: str
    source: str
    destinations: tuple[str, ...]
    raw_data: str

    @classmethod
    def from_moto(cls, entry: dict[str, Any]) -> SentMessage:
        return cls(
            message_id=str(entry["id"]),
            source=str(entry.get("source") or ""),
            destinations=tuple(str(d) for d in entry.get("destinations") or ()),
            raw_data=str(entry.get("raw_data") or ""),
        )


def _header_recipients(message: Message) -> list[str]:
    """The To/Cc/Bcc addresses exactly as moto appends them to the envelope (first header of
    each name, `formataddr` of each parsed address), so they can be told apart from it."""
    values = [message[name] for name in ("TO", "CC", "BCC") if name in message]
    return [formataddr((name, address)) for name, address in getaddresses(values) if address]


def envelope_recipients(sent: SentMessage, message: Message) -> list[str]:
    """SES's envelope: the Destination given to SendEmail, else the header recipients.

    moto stores the Destination followed by every header recipient; the header tail is cut
    when it is recognisable, then addresses are bare and deduplicated case-insensitively."""
    destinations = list(sent.destinations)
    tail = _header_recipients(message)
    if tail and len(destinations) > len(tail) and destinations[-len(tail) :] == tail:
        destinations = destinations[: -len(tail)]
    recipients: list[str] = []
    seen: set[str] = set()
    for destination in destinations:
        address = parseaddr(destination)[1] or destination.strip()
        if address and address.lower() not in seen:
            seen.add(address.lower())
            recipients.append(address)
    return recipients


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).strip()


def _decoded(value: str) -> str:
    """RFC 2047 words decoded, for commonHeaders (headers keep the value as submitted)."""
    try:
        return str(make_header(decode_header(_unfold(value))))
    except (ValueError, LookupError):  # malformed encoded word or unknown charset
        return _unfold(value)


def _address_list(message: Message, name: str) -> list[str]:
    values = [_decoded(v) for v in message.get_all(name) or []]
    result = []
    for display, address in getaddresses(values):
        if not address:
            continue
        if display:
            quoted = f'"{display}"' if re.search(r'[,;:<>@"()\[\]\\]', display) else display
            result.append(f"{quoted} <{address}>")
        else:
            result.append(address)
    return result


def _message_tags(message: Message) -> dict[str, list[str]]:
    """`X-SES-MESSAGE-TAGS: k1=v1, k2=v2` → `{"k1": ["v1"], "k2": ["v2"]}`."""
    tags: dict[str, list[str]] = {}
    for value in message.get_all("X-SES-MESSAGE-TAGS") or []:
        for pair in _unfold(value).split(","):
            key, sep, tag_value = pair.partition("=")
            if sep and key.strip():
                tags[key.strip()] = [tag_value.strip()]
    return tags


class LocalSesEventPublisher:
    """Publishes the events SES would publish for the mail moto has recorded as sent.

    Call `pump()` repeatedly (the local runner does, once per loop); each message's events are
    published once. Example::

        publisher = LocalSesEventPublisher(endpoint, resources["SesEventsTopic"], "eu-west-1")
        publisher.pump()  # → 2 for one message to success@simulator.amazonses.com
    """

    def __init__(
        self,
        moto_endpoint: str,
        topic_arn: str,
        region: str,
        sns_client: Any = None,
        account_id: str = "123456789012",
        configuration_set: str | None = None,
        in_process: bool = False,
    ) -> None:
        self.moto_endpoint = moto_endpoint.rstrip("/")
        # The local stack runs moto in this process: read its record of sent mail directly
        # instead of serialising all of moto's state (data.json) on every pump.
        self.in_process = in_process
        self.topic_arn = topic_arn
        self.region = region
        self.account_id = account_id
        self.configuration_set = configuration_set or os.environ.get(CONFIGURATION_SET_ENV) or None
        self._sns = sns_client or boto3.session.Session(region_name=region).client(
            "sns", endpoint_url=self.moto_endpoint
        )
        self._done: set[str] = set()
        # Events built but not yet all published (a failed Publish resumes where it stopped,
        # without republishing the ones that went out).
        self._pending: dict[str, list[dict[str, Any]]] = {}

    def sent_messages(self) -> list[SentMessage]:
        """Every raw message moto has recorded, oldest first."""
        if self.in_process:
            from moto.core.model_instances import model_data

            tracked = model_data.get("ses", {}).get("RawMessage")
            instances = getattr(tracked, "instances_tracked", []) if tracked is not None else []
            return [
                SentMessage.from_moto(
                    {
                        "id": instance.id,
                        "source": instance.source,
                        "destinations": instance.destinations,
                        "raw_data": instance.raw_data,
                    }
                )
                for instance in instances
            ]
        response = requests.get(f"{self.moto_endpoint}/moto-api/data.json", timeout=10)
        response.raise_for_status()
        entries = response.json().get("ses", {}).get("RawMessage", [])
        return [SentMessage.from_moto(entry) for entry in entries]

    def pump(self) -> int:
        """Publish the events of every message not handled before; returns how many were published."""
        published = 0
        for sent in self.sent_messages():
            if sent.message_id in self._done:
                continue
            if sent.message_id not in self._pending:
                self._pending[sent.message_id] = self.events_for(sent)
            queue = self._pending[sent.message_id]
            while queue:
                self._sns.publish(TopicArn=self.topic_arn, Message=json.dumps(queue[0]))
                queue.pop(0)
                published += 1
            del self._pending[sent.message_id]
            self._done.add(sent.message_id)
        return published

    # ---- event construction -----------------------------------------------------------------
    def events_for(self, sent: SentMessage, now: datetime | None = None) -> list[dict[str, Any]]:
        """The Send event, then each recipient's outcome as the mailbox simulator produces it."""
        accepted = now or datetime.now(UTC)
        message = message_from_string(sent.raw_data, policy=compat32)
        recipients = envelope_recipients(sent, message)
        mail = self.mail_object(sent, message, recipients, accepted)
        events: list[dict[str, Any]] = [{"eventType": "Send", "mail": mail, "send": {}}]
        for recipient in recipients:
            scenario = simulator_scenario(recipient)
            if scenario == "bounce":
                events.append(self._bounce(mail, recipient, suppressed=False))
            elif scenario == "suppressionlist":
                events.append(self._bounce(mail, recipient, suppressed=True))
            else:  # success, ooto, complaint and every address outside the simulator
                events.append(self._delivery(mail, recipient, accepted))
                if scenario == "complaint":
                    events.append(self._complaint(mail, recipient, accepted))
        return events

    def mail_object(
        self, sent: SentMessage, message: Message, recipients: list[str], accepted: datetime
    ) -> dict[str, Any]:
        """The `mail` object common to every event of one message (headers included, as with
        an event destination that includes original headers)."""
        headers = [{"name": name, "value": _unfold(str(value))} for name, value in message.items()]
        common: dict[str, Any] = {"from": _address_list(message, "From")}
        common["date"] = _decoded(message["Date"]) if message["Date"] else format_datetime(accepted)
        for key, name in (("to", "To"), ("cc", "Cc")):
            addresses = _address_list(message, name)
            if addresses:
                common[key] = addresses
        common["messageId"] = sent.message_id  # SES's id, not the submitted Message-ID
        common["subject"] = _decoded(message["Subject"]) if message["Subject"] else ""
        from_address = (common["from"] and parseaddr(common["from"][0])[1]) or parseaddr(sent.source)[1]
        tags = _message_tags(message)
        configuration_set = (
            _unfold(message["X-SES-CONFIGURATION-SET"])
            if message["X-SES-CONFIGURATION-SET"]
            else self.configuration_set
        )
        if configuration_set:
            tags["ses:configuration-set"] = [configuration_set]
        if "@" in from_address:
            tags["ses:from-domain"] = [from_address.rpartition("@")[2].lower()]
        return {
            "timestamp": ses_timestamp(accepted),
            "source": sent.source,
            "sendingAccountId": self.account_id,
            "messageId": sent.message_id,
            "destination": recipients,
            "headersTruncated": False,
            "headers": headers,
            "commonHeaders": common,
            "tags": tags,
        }

    @staticmethod
    def _delivery(mail: dict[str, Any], recipient: str, accepted: datetime) -> dict[str, Any]:
        return {
            "eventType": "Delivery",
            "mail": mail,
            "delivery": {
                "timestamp": ses_timestamp(datetime.now(UTC)),
                "processingTimeMillis": max(0, int((datetime.now(UTC) - accepted).total_seconds() * 1000)),
                "recipients": [recipient],
                "smtpResponse": _DELIVERY_SMTP_RESPONSE,
                "reportingMTA": _DELIVERY_REPORTING_MTA,
                "remoteMtaIp": _REMOTE_MTA_IP,
            },
        }

    @staticmethod
    def _bounce(mail: dict[str, Any], recipient: str, suppressed: bool) -> dict[str, Any]:
        if suppressed:
            sub_type, diagnostic, reporting = (
                "OnAccountSuppressionList",
                _SUPPRESSED_DIAGNOSTIC,
                "dns; amazonses.com",
            )
        else:
            sub_type, diagnostic, reporting = (
                "General",
                "smtp; 550 5.1.1 user unknown",
                _BOUNCE_REPORTING_MTA,
            )
        return {
            "eventType": "Bounce",
            "mail": mail,
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": sub_type,
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": diagnostic,
                    }
                ],
                "timestamp": ses_timestamp(datetime.now(UTC)),
                "feedbackId": feedback_id(),
                "reportingMTA": reporting,
            },
        }

    @staticmethod
    def _complaint(mail: dict[str, Any], recipient: str, accepted: datetime) -> dict[str, Any]:
        return {
            "eventType": "Complaint",
            "mail": mail,
            "complaint": {
                "feedbackId": feedback_id(),
                "complaintSubType": None,
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": ses_timestamp(datetime.now(UTC)),
                "userAgent": "Amazon SES Mailbox Simulator",
                "complaintFeedbackType": "abuse",
                "arrivalDate": ses_timestamp(accepted),
            },
        }
