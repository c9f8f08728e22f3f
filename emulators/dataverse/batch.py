"""``POST $batch``: multipart/mixed framing, change sets, Content-ID references (fact sheet §10).

Each operation runs through the same :class:`DataverseService` as a standalone call, so inner status
lines, headers and bodies are the real ones. A change set runs in one store transaction and is rolled
back if any of its operations fails. Response boundaries are server-chosen. An optional
``operation_fault`` hook may answer an operation in the service's place (injected faults of scope
``operation``); the response records every operation's status for the request journal.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from emulators.dataverse.errors import DataverseError
from emulators.dataverse.protocol import ApiRequest, ApiResponse, Headers, Preferences
from emulators.dataverse.service import DataverseService

MAX_OPERATIONS = 1000
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_SERVICE_PATH = re.compile(r"^/?api/data/v9\.\d/")
_REFERENCE = re.compile(r"^\$([A-Za-z0-9_.-]+)(.*)$", re.DOTALL)


@dataclass
class BatchOperation:
    method: str
    url: str
    headers: Headers
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    operations: list[BatchOperation]


BatchItem = BatchOperation | ChangeSet


def malformed(detail: str) -> DataverseError:
    return DataverseError("0x80048d19", f"The batch request is malformed: {detail}")


def boundary_of(content_type: str | None) -> str:
    if not content_type or not content_type.lower().startswith("multipart/mixed"):
        raise malformed("Content-Type must be multipart/mixed with a boundary.")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise malformed("the multipart boundary is missing from Content-Type.")
    return match.group(1) or match.group(2)


def split_parts(body: bytes, boundary: str) -> list[bytes]:
    """The encapsulated parts between ``--boundary`` lines; the CRLF before a delimiter belongs to it."""
    delimiter = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary.encode()) + rb"(--)?[ \t]*(?:\r?\n|$)")
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match.group(1):
            return parts
        start = match.end()
    raise malformed(f"the closing delimiter '--{boundary}--' was not found.")


def _split_head(data: bytes) -> tuple[Headers, bytes]:
    """Header lines up to the first blank line, then the rest (no header lines: all of it is rest)."""
    for newline in (b"\r\n", b"\n"):
        if data.startswith(newline):
            return Headers(), data[len(newline) :]
    match = re.search(rb"\r?\n\r?\n", data)
    head, rest = (data, b"") if match is None else (data[: match.start()], data[match.end() :])
    headers = Headers()
    for line in head.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _parse_operation(mime_headers: Headers, content: bytes) -> BatchOperation:
    text_start = content.lstrip(b"\r\n")
    line_end = re.search(rb"\r?\n", text_start)
    request_line = (text_start[: line_end.start()] if line_end else text_start).decode("utf-8", "replace")
    pieces = request_line.split()
    if len(pieces) < 2:
        raise malformed(f"'{request_line}' is not an HTTP request line.")
    headers, body = _split_head(text_start[line_end.end() :] if line_end else b"")
    content_id = mime_headers.value("Content-ID") or headers.value("Content-ID")
    return BatchOperation(pieces[0].upper(), pieces[1], headers, body, content_id)


def parse_batch(content_type: str | None, body: bytes) -> list[BatchItem]:
    items: list[BatchItem] = []
    for part in split_parts(body, boundary_of(content_type)):
        headers, content = _split_head(part)
        part_type = (headers.value("Content-Type") or "").lower()
        if part_type.startswith("multipart/mixed"):
            inner = [_split_head(p) for p in split_parts(content, boundary_of(headers.value("Content-Type")))]
            for inner_headers, _ in inner:
                if (inner_headers.value("Content-Type") or "").lower().startswith("multipart/"):
                    raise malformed("change sets cannot be nested.")
            items.append(ChangeSet([_parse_operation(h, c) for h, c in inner]))
        elif part_type.startswith("application/http"):
            items.append(_parse_operation(headers, content))
        else:
            raise malformed(f"unexpected part Content-Type '{part_type}'.")
    return items


def operations_of(items: list[BatchItem]) -> list[BatchOperation]:
    ops: list[BatchOperation] = []
    for item in items:
        ops.extend(item.operations if isinstance(item, ChangeSet) else [item])
    return ops


def set_name_of(url: str) -> str:
    """The entity set an operation URL addresses (for request accounting)."""
    if url.startswith("$"):
        return "$content-id"
    path = _SERVICE_PATH.sub("", urllib.parse.urlsplit(url).path)
    return path.lstrip("/").split("/")[0].split("(")[0]


class _ChangeSetFailed(Exception):
    def __init__(self, operation: BatchOperation, response: ApiResponse) -> None:
        super().__init__(response.status)
        self.operation = operation
        self.response = response


OperationFault = Callable[[BatchOperation], ApiResponse | None]


class BatchExecutor:
    """Runs a parsed batch against the service and renders the multipart response."""

    def __init__(self, service: DataverseService, operation_fault: OperationFault | None = None) -> None:
        self.service = service
        self.operation_fault = operation_fault

    def execute(self, request: ApiRequest, items: list[BatchItem]) -> ApiResponse:
        if len(operations_of(items)) > MAX_OPERATIONS:
            raise DataverseError(
                "0x80060888",
                f"The number of requests in a batch exceeds the limit of {MAX_OPERATIONS}.",
                status=400,
            )
        continue_on_error = Preferences.parse(request.headers.value("Prefer")).continue_on_error
        boundary = f"batchresponse_{uuid.uuid4()}"
        rendered: list[bytes] = []
        answered: list[ApiResponse] = []
        for item in items:
            if isinstance(item, ChangeSet):
                part, failure = self._run_change_set(request, item, answered)
            else:
                response = self._run(request, item, {})
                answered.append(response)
                part = _http_part(response, None)
                failure = response.status if response.status >= 400 else None
            if failure is not None and not continue_on_error:
                return _multipart(failure, boundary, [part], {}, answered)
            rendered.append(part)
        applied = {"Preference-Applied": "odata.continue-on-error"} if continue_on_error else {}
        return _multipart(200, boundary, rendered, applied, answered)

    def _run_change_set(
        self, request: ApiRequest, change_set: ChangeSet, answered: list[ApiResponse]
    ) -> tuple[bytes, int | None]:
        references: dict[str, str] = {}
        done: list[tuple[BatchOperation, ApiResponse]] = []
        try:
            with self.service.store.transaction():
                for operation in change_set.operations:
                    if operation.method == "GET":
                        error = DataverseError(
                            "0x80060888", "GET requests are not allowed inside a change set.", status=400
                        )
                        raise _ChangeSetFailed(operation, ApiResponse.error(error))
                    response = self._run(request, operation, references)
                    answered.append(response)
                    if response.status >= 400:
                        raise _ChangeSetFailed(operation, response)
                    done.append((operation, response))
                    if operation.content_id and response.entity_url:
                        references[operation.content_id] = response.entity_url
        except _ChangeSetFailed as failed:
            # The whole change set is rolled back and answered by the failing operation alone.
            return _http_part(failed.response, failed.operation.content_id), failed.response.status
        boundary = f"changesetresponse_{uuid.uuid4()}"
        inner = b"".join(
            b"--" + boundary.encode() + b"\r\n" + _http_part(r, op.content_id) + b"\r\n" for op, r in done
        )
        inner += b"--" + boundary.encode() + b"--"
        head = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
        return head + inner, None

    def _run(self, outer: ApiRequest, operation: BatchOperation, references: dict[str, str]) -> ApiResponse:
        try:
            url = _resolve_url(operation.url, references)
            body = _resolve_body(operation.body, references)
        except DataverseError as error:
            return ApiResponse.error(error)
        split = urllib.parse.urlsplit(url)
        path = urllib.parse.unquote(split.path)
        if _SERVICE_PATH.match(path):
            path = _SERVICE_PATH.sub("", path)
        elif path.startswith("/"):
            return ApiResponse.error(
                DataverseError("0x80060888", f"Resource not found for the segment '{path}'.", 404)
            )
        if path.split("/")[0] == "$batch":
            return ApiResponse.error(
                DataverseError("0x80060888", "Batch requests cannot be nested.", status=400)
            )
        if self.operation_fault is not None and (injected := self.operation_fault(operation)) is not None:
            return injected
        inner = ApiRequest(operation.method, path, split.query, operation.headers, body, outer.token)
        response = self.service.handle(inner)
        if "OData-EntityId" in response.headers:
            response.headers = {**response.headers, "Location": response.headers["OData-EntityId"]}
        return response


def _unknown_reference(name: str) -> DataverseError:
    return DataverseError(
        "0x80060888", f"Content-ID Reference: '${name}' does not exist in the batch context.", status=400
    )


def _resolve_url(url: str, references: dict[str, str]) -> str:
    match = _REFERENCE.match(url)
    if match is None:
        return url
    name, rest = match.group(1), match.group(2)
    if name not in references:
        raise _unknown_reference(name)
    return references[name] + rest


def _resolve_body(body: bytes, references: dict[str, str]) -> bytes:
    """Replace ``"$n"`` values of ``@odata.bind`` / ``@odata.id`` with the referenced entity URI."""
    if b'"$' not in body:
        return body
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if (
                    key.endswith(("@odata.bind", "@odata.id"))
                    and isinstance(value, str)
                    and value.startswith("$")
                ):
                    match = _REFERENCE.match(value)
                    name = match.group(1) if match else value[1:]
                    if name not in references:
                        raise _unknown_reference(name)
                    out[key] = references[name] + (match.group(2) if match else "")
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return json.dumps(walk(document)).encode()


def _http_part(response: ApiResponse, content_id: str | None) -> bytes:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    status = HTTPStatus(response.status)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    return (head + "\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode() + response.body


def _multipart(
    status: int, boundary: str, parts: list[bytes], headers: dict[str, str], answered: list[ApiResponse]
) -> ApiResponse:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    merged = {"Content-Type": f"multipart/mixed; boundary={boundary}", "OData-Version": "4.0", **headers}
    waits = [int(r.headers.get("Retry-After", "0")) for r in answered if r.status == 429]
    if status == 429 and waits:  # stopped at a throttled operation: the batch itself says how long
        merged["Retry-After"] = str(max(waits))
    return ApiResponse(
        status,
        merged,
        body,
        operation_statuses=[r.status for r in answered],
        operation_retry_after=max(waits) if waits else None,
    )
