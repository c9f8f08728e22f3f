"""Errors of the outbound path: rendering a CRM email as MIME, and handing it to SES.

The workflow maps them to outcomes in one place (`outbound.send`):

- `RenderError` and its subclasses: the email itself is unsendable; mark it Failed with the reason.
- `ThrottledError`: SES refused *for now*; nothing was sent, give the email back and retry later.
- `PermanentSendError`: SES refused this message; mark it Failed with `.reason`.
- `TransientSendError`: the call failed in a way that leaves SES's decision unknown (connection
  dropped, read timeout); never resend blindly, settle it from SES events.
"""

from __future__ import annotations


class OutboundError(Exception):
    """Base class of every outbound error."""


class RenderError(OutboundError):
    """The CRM email cannot be rendered as a sendable MIME message."""


class InvalidRecipientError(RenderError):
    """A party's address is not a plain ``local@domain`` address (or carries injection attempts)."""

    def __init__(self, party: str, address: str, problem: str = "is not a valid email address") -> None:
        self.party = party
        self.address = address
        self.problem = problem
        super().__init__(f"{party} address {address!r} {problem}")


class NoRecipientsError(RenderError):
    """The email has no To, Cc or Bcc recipient."""


class MessageTooLargeError(RenderError):
    """The rendered message is bigger than SES accepts."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        super().__init__(f"rendered message is {size} bytes; the limit is {max_bytes} bytes")


class SendError(OutboundError):
    """SES did not accept the message."""


class ThrottledError(SendError):
    """SES rate or quota limit: nothing was sent; retry later (not a failure of the email)."""


class TransientSendError(SendError):
    """The call to SES failed on the network; whether SES accepted the message is unknown."""


class PermanentSendError(SendError):
    """SES refused the message; retrying the same message will not help."""

    def __init__(self, reason: str, *, code: str = "") -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)
