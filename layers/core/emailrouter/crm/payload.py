"""Request bodies as bytes, with attachments' Base64 written straight into them.

A 40 MB message's attachments would otherwise exist as bytes, as a Base64 string, inside the
JSON string and again as the encoded request; here the content is encoded once, into the
request bytes.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any


class AttachmentBody:
    """An attachment's content in a request body; `encode_body` writes it as Base64."""

    __slots__ = ("content",)

    def __init__(self, content: bytes) -> None:
        self.content = content


def encode_body(body: Any) -> bytes:
    """`body` as compact UTF-8 JSON; AttachmentBody values become Base64 strings."""
    contents: list[bytes] = []
    marker = f"att-{uuid.uuid4().hex}"

    def placeholder(value: object) -> str:
        if isinstance(value, AttachmentBody):
            contents.append(value.content)
            return f"{marker}:{len(contents) - 1}"
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")

    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=placeholder)
    if not contents:
        return text.encode()
    parts = text.split(f'"{marker}:')
    out = bytearray(parts[0].encode())
    for part in parts[1:]:
        index, _, rest = part.partition('"')
        out += b'"'
        out += base64.b64encode(contents[int(index)])
        out += b'"'
        out += rest.encode()
    return bytes(out)
