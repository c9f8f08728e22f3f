"""A small Dataverse Web API client: OData headers, bearer token, retries within a deadline.

429 waits at least its Retry-After; 5xx, timeouts and dropped connections back off with full
jitter. Nothing is retried past the caller's deadline (the Lambda's remaining time): then the
error surfaces as CrmTransientError and the message goes back to its queue.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from emailrouter.crm.errors import (
    CrmAuthError,
    CrmConflictError,
    CrmError,
    CrmNotFoundError,
    CrmRequestError,
    CrmTransientError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from emailrouter.crm.auth import TokenProvider

_GUID_IN_URL = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")
RETRYABLE = {429, 500, 502, 503, 504}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON, or text

    @property
    def entity_id(self) -> str | None:
        """The GUID from OData-EntityId (204 create) or None."""
        match = _GUID_IN_URL.search(self.headers.get("odata-entityid", ""))
        return match.group(1).lower() if match else None


def odata_literal(value: str) -> str:
    """A string literal for $filter: single quotes, embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


class DataverseClient:
    def __init__(
        self,
        org_url: str,
        tokens: TokenProvider,
        *,
        api_version: str = "v9.2",
        session: requests.Session | None = None,
        timeout: float = 20.0,
        max_attempts: int = 6,
        deadline: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.org_url = org_url.rstrip("/")
        self.api_url = f"{self.org_url}/api/data/{api_version}/"
        self._tokens = tokens
        self._session = session or requests.Session()
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._deadline = deadline or (lambda: time.monotonic() + 600)
        self._sleep = sleep
        self.requests_sent = 0

    def set_deadline(self, deadline: Callable[[], float]) -> None:
        """`deadline()` returns the monotonic time by which every retry must be over."""
        self._deadline = deadline

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._tokens.token()}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
        }
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        url = path if path.startswith("http") else self.api_url + path.lstrip("/")
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                self.requests_sent += 1
                raw = self._session.request(
                    method,
                    url,
                    json=json_body,
                    data=data,
                    headers=self._headers(headers),
                    timeout=self._timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                failure: CrmError = CrmTransientError(f"{method} {_short(url)}: {type(error).__name__}")
            else:
                response = _response(raw)
                if response.status < 400:
                    return response
                failure = _error(method, url, response)
                if response.status == 429:
                    wait = _retry_after(response.headers)
            if not isinstance(failure, CrmTransientError) or attempt >= self._max_attempts:
                raise failure
            if wait is None:
                wait = random.uniform(0, min(8.0, 0.25 * 2**attempt))
            if time.monotonic() + wait >= self._deadline():
                raise failure
            self._sleep(wait)

    def get(self, path: str, *, headers: dict[str, str] | None = None) -> Any:
        return self.request("GET", path, headers=headers).body

    def get_all(self, path: str, *, page_size: int = 500) -> list[dict[str, Any]]:
        """Every row of a collection query, following @odata.nextLink."""
        rows: list[dict[str, Any]] = []
        next_url: str | None = path
        while next_url:
            body = self.request("GET", next_url, headers={"Prefer": f"odata.maxpagesize={page_size}"}).body
            rows.extend(body.get("value", []))
            next_url = body.get("@odata.nextLink")
        return rows

    def create(self, entity_set: str, body: dict[str, Any]) -> str:
        """POST a row (deep insert allowed); returns its id from OData-EntityId."""
        response = self.request(
            "POST", entity_set, json_body=body, headers={"Content-Type": "application/json"}
        )
        entity_id = response.entity_id
        if entity_id is None:
            raise CrmError(f"create in {entity_set} returned no OData-EntityId", response.status)
        return entity_id

    def update(
        self, entity_set: str, entity_id: str, body: dict[str, Any], *, etag: str | None = None
    ) -> None:
        headers = {"Content-Type": "application/json", "If-Match": etag or "*"}
        self.request("PATCH", f"{entity_set}({entity_id})", json_body=body, headers=headers)


def _short(url: str) -> str:
    return url.split("?", 1)[0]


def _response(raw: requests.Response) -> Response:
    headers = {key.lower(): value for key, value in raw.headers.items()}
    body: Any = raw.text
    if "json" in headers.get("content-type", "") and raw.content:
        try:
            body = raw.json()
        except ValueError:
            body = raw.text
    return Response(raw.status_code, headers, body)


def _retry_after(headers: dict[str, str]) -> float:
    try:
        return max(0.0, float(headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _error(method: str, url: str, response: Response) -> CrmError:
    code, message = "", ""
    if isinstance(response.body, dict):
        error = response.body.get("error") or {}
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    text = f"{method} {_short(url)} → {response.status} {code} {message}".strip()
    status = response.status
    kind: type[CrmError]
    if status in RETRYABLE:
        kind = CrmTransientError
    elif status in (401, 403):
        kind = CrmAuthError
    elif status == 404:
        kind = CrmNotFoundError
    elif status == 412:
        kind = CrmConflictError
    else:
        kind = CrmRequestError
    return kind(text, status, code)


def entity_path(entity_set: str, entity_id: str) -> str:
    return f"{entity_set}({quote(entity_id)})"
