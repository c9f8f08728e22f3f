"""Transport-neutral request/response values and the OData header conventions.

The same :class:`ApiRequest` → :class:`ApiResponse` path serves a plain HTTP request and each
operation inside a ``$batch``, so inner parts get exactly the status, headers and body a standalone
call would (fact sheet §10.2).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any

from emulators.dataverse.errors import DataverseError

JSON_CONTENT_TYPE = "application/json; odata.metadata=minimal"
MAX_PAGE_SIZE = 5000


class Headers(dict[str, str]):
    """Case-insensitive lookup over request headers (keys stored lower-case)."""

    @classmethod
    def of(cls, pairs: Any) -> Headers:
        headers = cls()
        for name, value in pairs:
            headers[name.lower()] = value
        return headers

    def value(self, name: str) -> str | None:
        return self.get(name.lower())


@dataclass
class ApiRequest:
    method: str
    path: str  # below the service root, e.g. "emails(…)" or "$batch"; already percent-decoded
    query: str  # raw query string, still percent-encoded
    headers: Headers
    body: bytes = b""
    token: str = ""


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    entity_url: str | None = None  # set when the operation created a row ($batch Content-ID references)
    operation_statuses: list[int] | None = None  # a $batch's inner statuses, in request order
    operation_retry_after: int | None = None  # a $batch's longest Retry-After among its inner 429s

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> ApiResponse:
        merged = {"Content-Type": JSON_CONTENT_TYPE, "OData-Version": "4.0", **(headers or {})}
        return cls(status, merged, json.dumps(payload, separators=(",", ":")).encode())

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> ApiResponse:
        return cls(status, {"OData-Version": "4.0", **(headers or {})})

    @classmethod
    def text(cls, payload: str, status: int = 200) -> ApiResponse:
        return cls(status, {"Content-Type": "text/plain", "OData-Version": "4.0"}, payload.encode())

    @classmethod
    def error(cls, error: DataverseError) -> ApiResponse:
        return cls.json(error.status, error.body(), error.headers)


@dataclass
class Preferences:
    """What the client asked for in ``Prefer`` (several values may share one header, comma-separated)."""

    return_representation: bool = False
    annotations: list[str] = field(default_factory=list)
    annotations_raw: str | None = None
    max_page_size: int | None = None
    continue_on_error: bool = False

    @classmethod
    def parse(cls, header: str | None) -> Preferences:
        prefs = cls()
        for item in _split_prefer(header or ""):
            name, _, value = item.partition("=")
            name, value = name.strip().lower(), value.strip()
            if name == "return" and value.lower() == "representation":
                prefs.return_representation = True
            elif name == "odata.include-annotations":
                prefs.annotations_raw = value
                prefs.annotations = [a.strip() for a in value.strip('"').split(",") if a.strip()]
            elif name == "odata.maxpagesize" and value.isdigit():
                size = int(value)
                if 0 < size <= MAX_PAGE_SIZE:  # larger values are ignored by the service
                    prefs.max_page_size = size
            elif name == "odata.continue-on-error":
                prefs.continue_on_error = True
        return prefs

    def wants_annotation(self, name: str) -> bool:
        """Annotation filters match by name with ``*`` wildcards; ``-name`` excludes."""
        included = False
        for pattern in self.annotations:
            if pattern.startswith("-"):
                if fnmatch.fnmatchcase(name, pattern[1:]):
                    return False
            elif fnmatch.fnmatchcase(name, pattern):
                included = True
        return included


def _split_prefer(header: str) -> list[str]:
    """Split on commas outside double quotes (annotation lists are quoted comma lists)."""
    return [p for p in re.findall(r'(?:[^,"]|"[^"]*")+', header) if p.strip()]
