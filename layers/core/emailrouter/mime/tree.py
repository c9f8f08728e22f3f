"""Bytes → the email package's MIME tree, without the crash paths.

The tree is built with `policy.compat32` first: the feed parser then reads
Content-Type with the simple legacy parameter parser instead of the header
registry, which is about ten times faster on many-part messages and has fewer
ways to raise on hostile headers. Nothing downstream uses the policy's header
objects (`headers.RawHeaders` reads the stored raw values), so both policies
yield the same result; `policy.default` is the second attempt.
"""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING

from emailrouter.mime.errors import MalformedMessageError

if TYPE_CHECKING:
    from email.message import Message

    from emailrouter.mime.defects import DefectLog

_POLICIES = (("compat32", policy.compat32), ("default", policy.default))


def parse_tree(data: bytes, defects: DefectLog) -> tuple[Message, bool]:
    """The parsed tree, and whether its body structure is usable.

    When every policy fails (nesting so deep the feed parser's generators hit
    the recursion limit), only the header block is parsed and False is returned.
    """
    for name, parser_policy in _POLICIES:
        try:
            return BytesParser(policy=parser_policy).parsebytes(data), True
        except RecursionError:
            defects.add("nesting-too-deep", "parser")
            break
        except Exception:
            defects.add("parser-fallback", name)
            continue
    try:
        return BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True), False
    except Exception as error:
        raise MalformedMessageError(f"unreadable header block: {type(error).__name__}") from error
