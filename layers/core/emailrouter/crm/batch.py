"""`$batch`: several Web API operations in one HTTP request (multipart/mixed, OData 4.0 §11.7).

Each operation still counts against service protection, so a batch saves HTTP round trips and
client CPU, not API requests. Operations are sent outside change sets with
`Prefer: odata.continue-on-error`, so one message's failure does not hold back the others: each
gets its own status, mapped to the same errors a standalone request raises.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emailrouter.crm.client import Response, _error
from emailrouter.crm.errors import CrmError
from emailrouter.crm.payload import encode_body

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient

MAX_OPERATIONS = 1000  # Dataverse's limit per $batch
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str  # relative to the service root, e.g. "emails"
    body: Any = None


def execute(client: DataverseClient, operations: list[Operation]) -> list[Response | CrmError]:
    """Run `operations` in as few `$batch` requests as the limit allows; one result per operation,
    in order: the Response, or the CrmError a standalone request would have raised."""
    results: list[Response | CrmError] = []
    for start in range(0, len(operations), MAX_OPERATIONS):
        results += _execute_one(client, operations[start : start + MAX_OPERATIONS])
    return results


def execute_change_set(client: DataverseClient, operations: list[Operation]) -> list[Response | CrmError]:
    """Run `operations` as one change set: all applied, or none (the failing one's error)."""
    inner = f"changeset_{uuid.uuid4().hex}"
    body = _parts(client, operations, inner, content_ids=True)
    boundary = f"batch_{uuid.uuid4().hex}"
    head = f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={inner}\r\n\r\n".encode()
    return _send(
        client, head + body + f"\r\n--{boundary}--\r\n".encode(), boundary, operations, change_set=True
    )


def _parts(
    client: DataverseClient, operations: list[Operation], boundary: str, *, content_ids: bool = False
) -> bytes:
    service_path = client.api_url.split("://", 1)[-1].split("/", 1)[-1]
    chunks: list[bytes] = []
    for number, operation in enumerate(operations, start=1):
        head = f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        if content_ids:
            head += f"Content-ID: {number}\r\n"
        head += f"\r\n{operation.method} /{service_path}{operation.path} HTTP/1.1\r\n"
        if operation.body is None:
            chunks.append((head + "\r\n").encode())
            continue
        payload = encode_body(operation.body)
        chunks.append(
            (head + "Content-Type: application/json; type=entry\r\n\r\n").encode() + payload + b"\r\n"
        )
    chunks.append(f"--{boundary}--".encode())
    return b"".join(chunks)


def _execute_one(client: DataverseClient, operations: list[Operation]) -> list[Response | CrmError]:
    boundary = f"batch_{uuid.uuid4().hex}"
    return _send(client, _parts(client, operations, boundary) + b"\r\n", boundary, operations)


def _send(
    client: DataverseClient, data: bytes, boundary: str, operations: list[Operation], change_set: bool = False
) -> list[Response | CrmError]:
    response = client.request(
        "POST",
        "$batch",
        data=data,
        headers={
            "Content-Type": f"multipart/mixed; boundary={boundary}",
            "Prefer": "odata.continue-on-error",
        },
    )
    parts = parse_response(response)
    if change_set and len(parts) == 1 and parts[0].status >= 400:
        failure = _error("POST", client.api_url + "$batch", parts[0])
        return [failure for _ in operations]
    if len(parts) != len(operations):
        raise CrmError(
            f"$batch answered {len(parts)} parts for {len(operations)} operations", response.status
        )
    return [
        part if part.status < 400 else _error(op.method, client.api_url + op.path, part)
        for op, part in zip(operations, parts, strict=True)
    ]


def parse_response(response: Response) -> list[Response]:
    """The inner responses of a `$batch` response, in order (change sets flattened)."""
    content_type = response.headers.get("content-type", "")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise CrmError(f"$batch response is not multipart: {content_type!r}", response.status)
    body = response.body.encode("utf-8", "surrogateescape") if isinstance(response.body, str) else b""
    return _parse_multipart(body, (match.group(1) or match.group(2)).encode())


def _parse_multipart(body: bytes, boundary: bytes) -> list[Response]:
    results: list[Response] = []
    for part in re.split(rb"(?:\r?\n)?--" + re.escape(boundary) + rb"(?:--)?[ \t]*(?:\r?\n|$)", body):
        if not part.strip():
            continue
        mime_head, _, http = part.partition(b"\r\n\r\n")
        nested = _BOUNDARY.search(mime_head.decode("ascii", "replace"))
        if nested is not None and b"multipart/mixed" in mime_head.lower():
            results += _parse_multipart(http, (nested.group(1) or nested.group(2)).encode())
            continue
        status = _STATUS_LINE.match(http)
        if status is None:
            continue
        head, _, content = http.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("utf-8", "replace").partition(":")
            headers[name.strip().lower()] = value.strip()
        content = content.rstrip(b"\r\n")
        parsed: Any = content.decode("utf-8", "replace")
        if content and "json" in headers.get("content-type", ""):
            with contextlib.suppress(ValueError):
                parsed = json.loads(content)
        results.append(Response(int(status.group(1)), headers, parsed))
    return results
