"""Bytes → the email package's MIME tree, without the crash paths.

The tree is built with `policy.compat32` first: the feed parser then reads
Content-Type with the simple legacy parameter parser instead of the header
registry, which is about ten times faster on many-part messages and has fewer
ways to raise on hostile headers. Nothing downstream uses the policy's header
objects (`headers.RawHeaders` reads the stored raw values), so both policies
yield the same result; `policy.default` is the second attempt.

The bytes are fed to the parser in slices: `parsebytes` would first turn the whole message into
one string (four bytes per character once a single non-Latin-1 code point appears in it) and a
StringIO copy of it, about six times the message's size at peak; feeding slices keeps the parse
near the size of the tree it builds.
"""

from __future__ import annotations

from email import policy
from email.feedparser import BytesFeedParser
from email.parser import BytesParser
from typing import TYPE_CHECKING

from emailrouter.mime.errors import MalformedMessageError

if TYPE_CHECKING:
    from email.message import Message

    from emailrouter.mime.defects import DefectLog

_POLICIES = (("compat32", policy.compat32), ("default", policy.default))
_SLICE = 64 * 1024


def _feed(data: bytes | memoryview, parser_policy: policy.Policy) -> Message:
    parser = BytesFeedParser(policy=parser_policy)
    view = memoryview(data)
    for start in range(0, len(view), _SLICE):
        parser.feed(bytes(view[start : start + _SLICE]))
    return parser.close()


def parse_tree(data: bytes | memoryview, defects: DefectLog) -> tuple[Message, bool]:
    """The parsed tree, and whether its body structure is usable.

    When every policy fails (nesting so deep the feed parser's generators hit
    the recursion limit), only the header block is parsed and False is returned.
    """
    for name, parser_policy in _POLICIES:
        try:
            return _feed(data, parser_policy), True
        except RecursionError:
            defects.add("nesting-too-deep", "parser")
            break
        except Exception:
            defects.add("parser-fallback", name)
            continue
    try:
        return BytesParser(policy=policy.compat32).parsebytes(bytes(data), headersonly=True), False
    except Exception as error:
        raise MalformedMessageError(f"unreadable header block: {type(error).__name__}") from error
