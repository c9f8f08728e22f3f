"""Incoming mail: raw RFC 5322 / MIME bytes → `ParsedMessage`.

Entry point: `parse_message(raw, max_attachment_bytes=None)`. It raises
`MalformedMessageError` only for input that is not mail at all; everything
else is repaired best-effort and each repair is listed in `ParsedMessage.defects`
as `code` or `code:detail[:detail]`:

headers
    `header-8bit:<Header>`            raw 8-bit bytes in a header (decoded as UTF-8, else windows-1252)
    `header-duplicate:<Header>`       a header that may appear once appeared again (first one used)
    `encoded-word-invalid-chars:<H>`, `encoded-word-padding:<H>`   repaired RFC 2047 base64 words
    `message-id-unbracketed:<H>`      a bare id was given angle brackets
    `message-id-invalid:<H>`          no usable id (field is None)
    `references-truncated:<count>`    more than 32 References ids; the last 32 are kept
    `subject-truncated:<length>`      a subject over 1024 characters (raw header over 16 KiB) was cut
    `date-invalid`                    unparseable Date (field is None)
    `address-invalid:<Header>`        an address that could not be parsed was skipped
    `addresses-truncated:<Header>`    more than 1000 addresses in one header
    `from-missing`                    no From header
    `from-repaired:From`              a From without a parseable mailbox: its first addr-spec used
    `from-replaced-by-sender`, `from-replaced-by-return-path`   nothing usable in From
    `header-line-malformed`           a header-block line without a colon was skipped
    `header-obsolete-syntax:<Name>`   `Name : value` (RFC 5322 4.5) read as `Name: value`
    `parameter-invalid:<Header>`      a Content-Type/-Disposition parameter without `=`
charsets (`<where>` is `body` or a header name)
    `charset-unknown:<where>:<label>`            label Python does not know → UTF-8 / windows-1252
    `charset-guessed:<where>:windows-1252`       unlabelled non-UTF-8 bytes
    `charset-mislabelled:<where>:<used>`         e.g. iso-8859-1 with 0x80-0x9F bytes → windows-1252
    `charset-invalid-bytes:<where>:<codec>`      decoded with replacement characters
structure
    `mime-version-missing`            Content-Type without MIME-Version
    `content-type-invalid:<value>`    malformed Content-Type, treated as text/plain
    `multipart-boundary-missing`, `multipart-boundary-recovered`   boundary absent or wrong
    `nesting-too-deep:50`             parts nested deeper than 50 levels were skipped
    `nesting-too-deep:parser`         nesting defeated the email package; headers only
    `parser-fallback:<policy>`        the email package raised; another policy was used
    `body-unreadable:<error>`         body extraction failed unexpectedly; headers still parsed
    `mime-<defect>`                   the email package's own defects, e.g.
                                      `mime-close-boundary-not-found`, `mime-start-boundary-not-found`
    `mbox-from-line`, `leading-blank-lines`   skipped before the header block (nothing else may
                                      come first: other input, or a header block that is not
                                      text or names no message header, is not mail)
transfer encodings
    `base64-invalid-chars`, `base64-padding`, `base64-truncated`, `quoted-printable-invalid`
    `transfer-encoding-unknown:<name>`           content kept as it came
attachments
    `attachment-too-large:<filename>:<size>`     dropped (over max_attachment_bytes); never truncated
    `attached-message-unreadable`                a message/rfc822 part kept as raw payload
    `defects-truncated`                          more than 100 defects
"""

from __future__ import annotations

from emailrouter.mime.errors import MalformedMessageError, MimeError
from emailrouter.mime.models import Address, Attachment, ParsedMessage
from emailrouter.mime.parse import parse_message

__all__ = [
    "Address",
    "Attachment",
    "MalformedMessageError",
    "MimeError",
    "ParsedMessage",
    "parse_message",
]
