"""Errors raised by the MIME parser.

The parser repairs almost everything and records what it repaired in
`ParsedMessage.defects`; only input that cannot be mail at all raises.
"""

from __future__ import annotations


class MimeError(Exception):
    """Base class of the errors raised by `emailrouter.mime`."""


class MalformedMessageError(MimeError, ValueError):
    """The input is not an email message: empty, not bytes, or no header block at all.

    The pipeline quarantines such input with this error's message as the reason.
    """
