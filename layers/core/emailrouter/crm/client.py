"""A small Dataverse Web API client: OData headers, bearer token, retries within a deadline.

A 429 closes the client's :class:`ThrottleGate` for its Retry-After: service protection counts
per user, so after a 429 no request of this client, from any thread, is sent before Retry-After
has passed. A ``$batch`` whose parts include a 429 closes it too, for the longest Retry-After
among them (the throttled operations come back as CrmTransientError through `crm.batch`).
5xx, timeouts and dropped connections back off with full jitter, per request.

The retry budget is time, not a count of attempts: a request is retried for as long as the
caller's deadline allows (the Lambda's remaining time, see `crm.deadline`; 60 s from the start of
the request when none is set). Nothing waits past it: when a wait would end after the deadline,
CrmTransientError is raised at once and the message goes back to its queue. While the deadline is
ahead, the HTTP timeout is cut to the time left. Past it, a request that needs no wait is still
tried once with the configured timeout: a client kept in a warm container holds an earlier
invocation's deadline until its caller sets a new one, and must not refuse work for that alone.

One client per application user (per tenant) is what makes the gate right: a gate knows only
the 429s of its own client, so other containers of the same tenant learn theirs separately.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests

from emailrouter.crm.errors import (
    CrmAuthError,
    CrmConflictError,
    CrmEndpointError,
    CrmError,
    CrmNotFoundError,
    CrmRequestError,
    CrmTimeoutError,
    CrmTransientError,
)
from emailrouter.egress import ForbiddenHostError

if TYPE_CHECKING:
    from collections.abc import Callable

    from emailrouter.crm.auth import TokenProvider

_GUID_IN_URL = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")
RETRYABLE = {429, 500, 502, 503, 504}
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 8.0
DEFAULT_BUDGET_SECONDS = 60.0  # per request, when no deadline is set


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


class ThrottleGate:
    """The moment (monotonic) before which a client sends nothing, shared by all its threads.

    A 429 moves it to receipt time + Retry-After; it only ever moves later, so two threads
    throttled at once keep the longer wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opens_at = 0.0

    def close_until(self, moment: float) -> None:
        with self._lock:
            self._opens_at = max(self._opens_at, moment)

    def opens_at(self) -> float:
        with self._lock:
            return self._opens_at


class DataverseClient:
    def __init__(
        self,
        org_url: str,
        tokens: TokenProvider,
        *,
        api_version: str = "v9.2",
        session: requests.Session | None = None,
        timeout: float = 20.0,
        max_attempts: int | None = None,
        deadline: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.org_url = org_url.rstrip("/")
        self.api_url = f"{self.org_url}/api/data/{api_version}/"
        self._tokens = tokens
        self._session = session or requests.Session()
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._clock = clock
        self._deadline = deadline
        self._sleep = sleep
        self.gate = ThrottleGate()
        self._counter_lock = threading.Lock()
        self.requests_sent = 0

    def set_deadline(self, deadline: Callable[[], float] | None) -> None:
        """`deadline()` returns the monotonic time by which every retry must be over
        (`crm.deadline.lambda_deadline(context)` in a handler); it is read when a request starts.
        None: each request gets DEFAULT_BUDGET_SECONDS."""
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
        """Send once the gate is open; retry transient failures until the deadline (or
        `max_attempts`, when set).

        Raises CrmTransientError without waiting when the gate opens, or the back-off ends,
        after the deadline; other CrmError classes at once (they are not worth retrying).
        """
        url = self._own_url(method, path)
        deadline = self._deadline() if self._deadline is not None else self._clock() + DEFAULT_BUDGET_SECONDS
        failure: CrmError | None = None
        attempt = 0
        while True:
            self._wait_for_gate(method, url, failure, deadline)
            timeout = self._timeout_for(failure, deadline)
            attempt += 1
            try:
                with self._counter_lock:
                    self.requests_sent += 1
                raw = self._session.request(
                    method,
                    url,
                    json=json_body,
                    data=data,
                    headers=self._headers(headers),
                    timeout=timeout,
                    allow_redirects=False,
                )
            except ForbiddenHostError as error:  # a vetted session refused the address (crm.transport)
                raise CrmEndpointError(f"{method} {_origin_text(url)}: {error}") from None
            except (requests.ConnectionError, requests.Timeout) as error:
                failure = CrmTimeoutError(f"{method} {_short(url)}: {type(error).__name__}")
            else:
                response = _response(raw)
                if 300 <= response.status < 400:
                    raise CrmEndpointError(
                        f"{method} {_short(url)} → {response.status}: the organization redirects to "
                        f"{_origin_text(response.headers.get('location', ''))}, which is not followed; "
                        "check the organization URL",
                        response.status,
                    )
                if _is_batch(url):
                    self._hold_for_throttled_parts(response)
                if response.status < 400:
                    return response
                failure = _error(method, url, response)
                if response.status == 429:
                    self.gate.close_until(self._clock() + _retry_after(response.headers))
            if not isinstance(failure, CrmTransientError) or attempt == self._max_attempts:
                raise failure
            if failure.status != 429:  # a 429 waits at the gate, at the top of the loop
                self._back_off(attempt, failure, deadline)

    def _own_url(self, method: str, path: str) -> str:
        """The URL for `path` (relative to the service root, or absolute as an @odata.nextLink is).
        An absolute URL must have the org URL's scheme, host and port: the bearer token goes
        nowhere else."""
        if "://" not in path.split("?", 1)[0]:
            return self.api_url + path.lstrip("/")
        if _origin(path) != _origin(self.org_url):
            raise CrmEndpointError(
                f"{method} {_origin_text(path)}: not the organization's {_origin_text(self.org_url)}; "
                "a link to another scheme, host or port is not followed"
            )
        return path

    def _hold_for_throttled_parts(self, response: Response) -> None:
        """Close the gate for the longest Retry-After among a `$batch` response's 429 parts."""
        if not isinstance(response.body, str) or " 429 " not in response.body:
            return
        # crm.batch builds on this module and owns the multipart parsing; import it when needed.
        from emailrouter.crm.batch import parse_response

        try:
            parts = parse_response(response)
        except CrmError:
            return
        waits = [_retry_after(part.headers) for part in parts if part.status == 429]
        if waits:
            self.gate.close_until(self._clock() + max(waits))

    def _wait_for_gate(self, method: str, url: str, failure: CrmError | None, deadline: float) -> None:
        """Sleep until the gate opens (it may move while we sleep); refuse if that is past the deadline."""
        while (wait := self.gate.opens_at() - self._clock()) > 0:
            if self._clock() + wait >= deadline:
                if failure is not None and failure.status == 429:
                    raise failure
                raise CrmTransientError(
                    f"{method} {_short(url)}: throttled by Dataverse for {wait:.1f} s more, "
                    "past this invocation's deadline",
                    429,
                )
            self._sleep(wait)

    def _timeout_for(self, failure: CrmError | None, deadline: float) -> float:
        """The HTTP timeout for the next attempt: the configured one, cut to the time left. A retry
        with no time left is refused; a first attempt past the deadline keeps the configured one."""
        left = deadline - self._clock()
        if left > 0:
            return min(self._timeout, left)
        if failure is not None:
            raise failure
        return self._timeout

    def _back_off(self, attempt: int, failure: CrmError, deadline: float) -> None:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]; refuse a wait past the deadline."""
        wait = random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))
        if self._clock() + wait >= deadline:
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
        self.request("PATCH", entity_path(entity_set, entity_id), json_body=body, headers=headers)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in; ("", "", None) if unreadable."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ("", "", None)
    scheme = parts.scheme.lower()
    return (scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme))


def _origin_text(url: str) -> str:
    """scheme://host:port of a URL, for errors: never its path or query."""
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}" if host else "an unreadable location"


def _short(url: str) -> str:
    return url.split("?", 1)[0]


def _is_batch(url: str) -> bool:
    return _short(url).rstrip("/").endswith("/$batch")


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
    """`entity_set(key)` with the key percent-encoded: it can only ever name one row."""
    return f"{entity_set}({quote(entity_id, safe='')})"
