"""The HTTP server and :class:`DataverseEmulator`, the object tests and the local stack hold.

Request path for ``/api/data/v9.2/…``: authenticate the bearer token → injected faults → service
protection (a ``$batch`` costs one per inner operation) → the Web API operation → accounting and
the request journal. Everything listens on loopback only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from emulators.dataverse.accounting import RequestLog
from emulators.dataverse.batch import BatchExecutor, BatchOperation, operations_of, parse_batch, set_name_of
from emulators.dataverse.control import fault_rules, handle_control, rate_limit_of
from emulators.dataverse.errors import (
    DataverseError,
    query_error,
    request_limit_exceeded,
    resource_not_found,
    unauthorized,
    unexpected_error,
    url_too_long,
)
from emulators.dataverse.faults import FaultInjector, FaultRule
from emulators.dataverse.journal import JournalEntry, RequestJournal, caller_of
from emulators.dataverse.protocol import ApiRequest, ApiResponse, Headers
from emulators.dataverse.schema import table_for_set
from emulators.dataverse.seeding import default_rows
from emulators.dataverse.seeding import seed as seed_rows
from emulators.dataverse.service import DataverseService, Identity
from emulators.dataverse.store import Store
from emulators.dataverse.throttling import RateLimit, RequestRateLimiter

SERVICE_PATH = "/api/data/v9.2/"
MAX_URL_CHARS = 32_768  # the Web API's URL limit outside $batch (fact sheet §1: ≈32 KB)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
logger = logging.getLogger(__name__)


class _Dropped:
    """Sentinel: close the connection without answering (the "drop" fault)."""


DROP = _Dropped()


class DataverseEmulator:
    """A Dataverse Web API v9.2 endpoint on loopback.

    >>> with DataverseEmulator() as dv:
    ...     dv.seed({"contacts": [{"fullname": "Ann", "emailaddress1": "ann@example.com"}]})
    ...     # requests.get(dv.api_url + "contacts", headers={"Authorization": "Bearer test-token"})
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: tuple[str, ...] | list[str] = ("test-token",),
        org_name: str = "demo",
        rate_limit: tuple[int, float] | RateLimit | None = None,
    ) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the Dataverse emulator listens on loopback only, not {host!r}")
        self.host = host
        self.port = port
        self.tokens = frozenset(tokens)
        self.org_name = org_name
        self.store = Store()
        self.service = DataverseService(self.store, Identity())
        self.batch = BatchExecutor(self.service, self._operation_fault)
        self.faults = FaultInjector()
        self.log = RequestLog()
        self.journal = RequestJournal()
        self._limiter: RequestRateLimiter | None = None
        self.set_rate_limit(rate_limit)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> DataverseEmulator:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = int(self._server.server_address[1])
        self.service.service_root = self.api_url
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="dataverse-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> DataverseEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The organization URL (what a client config calls the Dataverse URL)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + SERVICE_PATH

    # ------------------------------------------------------------ arranging

    def seed(self, data: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
        """Insert rows directly (keys and ``_x_value`` lookups allowed); returns keys per set."""
        return seed_rows(self.service, data)

    def reset(self) -> None:
        """Forget every row, fault, counter and throttle window; restore the organization's own rows."""
        self.store.clear()
        self.faults.clear()
        self.service.next_link_root = None
        self.log.reset()
        self.journal.reset()
        if self._limiter is not None:
            self._limiter = RequestRateLimiter(self._limiter.limit)
        seed_rows(self.service, default_rows(self.service, self.org_name))

    def set_faults(self, rules: list[FaultRule | dict[str, Any]], seed: int | None = None) -> None:
        self.faults.configure(fault_rules(rules), seed=seed)

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_next_link_root(self, root: str | None) -> None:
        """Answer paged queries with ``@odata.nextLink`` under another service root (e.g.
        ``http://localhost:1/api/data/v9.2/``), as a compromised or misconfigured org might;
        None restores the emulator's own."""
        self.service.next_link_root = root

    def set_rate_limit(self, limit: tuple[int, float] | RateLimit | None) -> None:
        """``(requests, window_seconds)`` per token, or None for no service protection limit."""
        parsed = rate_limit_of(limit)
        self._limiter = None if parsed is None else RequestRateLimiter(parsed)

    def stats(self) -> dict[str, Any]:
        return self.log.snapshot()

    def journal_entries(self) -> list[JournalEntry]:
        """Every Web API request so far by arrival (monotonic clock), with caller and Retry-After."""
        return self.journal.entries()

    def rows(self, set_name: str) -> list[dict[str, Any]]:
        """Every stored row of a set, raw (lookup annotations included), as copies."""
        if table_for_set(set_name) is None:
            raise KeyError(f"unknown entity set {set_name!r}")
        return [dict(row) for row in self.store.all(set_name)]

    @property
    def identity(self) -> Identity:
        return self.service.identity

    # ------------------------------------------------------------ the Web API

    def handle_api(
        self, method: str, raw_path: str, query: str, headers: Headers, body: bytes
    ) -> ApiResponse | _Dropped:
        arrived = time.time()
        arrived_monotonic = time.monotonic()
        path = urllib.parse.unquote(raw_path)
        relative = path[len(SERVICE_PATH) :] if path.startswith(SERVICE_PATH) else None
        set_name = set_name_of(relative or "") if relative is not None else ""
        operations: list[tuple[str, str]] | None = None
        token = _bearer(headers.value("Authorization"))
        caller = caller_of(token) if token in self.tokens else None
        fault: str | None = None
        try:
            if token is None or token not in self.tokens:
                raise unauthorized()
            for rule in self.faults.pick(method, raw_path + ("?" + query if query else "")):
                self.log.record_fault(rule.kind)
                if rule.kind == "latency":
                    time.sleep(rule.delay_ms / 1000)
                    continue
                fault = rule.kind
                if rule.kind == "redirect":
                    response = ApiResponse(307, {"Location": rule.location, "Content-Type": "text/plain"})
                    self.log.record(arrived, method, path, set_name, 307)
                    self.journal.record(
                        arrived=arrived_monotonic,
                        answered=time.monotonic(),
                        caller=caller,
                        method=method,
                        path=path,
                        status=307,
                        fault=fault,
                    )
                    return response
                if rule.kind == "drop":
                    self.log.record(arrived, method, path, set_name, 0)
                    self.journal.record(
                        arrived=arrived_monotonic,
                        answered=time.monotonic(),
                        caller=caller,
                        method=method,
                        path=path,
                        status=0,
                        fault=fault,
                    )
                    return DROP
                raise _injected_error(rule)
            if relative is None:
                raise resource_not_found(path.rsplit("/", 1)[-1] or path)
            if len(raw_path) + len(query) + 1 > MAX_URL_CHARS:
                raise url_too_long(MAX_URL_CHARS)
            request = ApiRequest(method, relative, query, headers, body, token)
            items = None
            if relative.strip("/") == "$batch":
                if method != "POST":
                    raise DataverseError("0x80060888", "$batch requires POST.", status=405)
                items = parse_batch(headers.value("Content-Type"), body)
                operations = [(op.method, set_name_of(op.url)) for op in operations_of(items)]
            self._admit(token, len(operations) if operations is not None else 1)
            response = (
                self.batch.execute(request, items) if items is not None else self.service.handle(request)
            )
            if self._limiter is not None:
                remaining = self._limiter.remaining(token)
                response.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] = str(remaining)
        except DataverseError as error:
            response = ApiResponse.error(error)
        except Exception:
            logger.exception("dataverse emulator failed on %s %s", method, raw_path)
            response = ApiResponse.error(unexpected_error(500))
        retry_after = _retry_after_of(response)
        if response.status == 429 or 429 in (response.operation_statuses or ()):
            self.log.record_throttle(arrived, retry_after or 0)
        self.log.record(arrived, method, path, set_name, response.status, operations)
        self.journal.record(
            arrived=arrived_monotonic,
            answered=time.monotonic(),
            caller=caller,
            method=method,
            path=path,
            status=response.status,
            retry_after=retry_after,
            fault=fault,
            operations=len(operations) if operations is not None else 1,
            operation_statuses=response.operation_statuses,
        )
        return response

    def _operation_fault(self, operation: BatchOperation) -> ApiResponse | None:
        """Faults of scope ``operation``: the answer for one operation inside a ``$batch``, or None."""
        for rule in self.faults.pick(operation.method, operation.url, scope="operation"):
            self.log.record_fault(rule.kind)
            if rule.kind == "latency":
                time.sleep(rule.delay_ms / 1000)
                continue
            return ApiResponse.error(_injected_error(rule))
        return None

    def _admit(self, token: str, cost: int) -> None:
        limiter = self._limiter
        if limiter is None:
            return
        retry_after = limiter.admit(token, cost)
        if retry_after is not None:
            raise request_limit_exceeded(limiter.limit.requests, limiter.limit.window_seconds, retry_after)


def _injected_error(rule: FaultRule) -> DataverseError:
    if rule.kind == "429":
        return request_limit_exceeded(6000, 300, rule.retry_after)
    if rule.kind == "400":
        return query_error("Syntax error: the request was refused by an injected fault.")
    error = unexpected_error(int(rule.kind))
    if rule.kind == "503":
        error.headers["Retry-After"] = str(rule.retry_after)
    return error


def _retry_after_of(response: ApiResponse) -> int | None:
    """The response's Retry-After, or for a $batch answered 200 the longest one among its 429 parts."""
    if "Retry-After" in response.headers:
        return int(response.headers["Retry-After"])
    return response.operation_retry_after


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], emulator: DataverseEmulator
    ):
        self.emulator = emulator
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Send head and body as one segment: unbuffered writes plus Nagle cost ~40 ms per response.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        body = self._read_body()
        split = urllib.parse.urlsplit(self.path)
        emulator = self.server.emulator
        if split.path.startswith("/_emulator/"):
            response = handle_control(emulator, self.command, split.path[len("/_emulator/") :], body)
        elif split.path.startswith("/api/data/"):
            headers = Headers.of(self.headers.items())
            outcome = emulator.handle_api(self.command, split.path, split.query, headers, body)
            if isinstance(outcome, _Dropped):
                self._drop()
                return
            response = outcome
        else:
            response = ApiResponse(
                404, {"Content-Type": "application/json"}, json.dumps({"error": "not found"}).encode()
            )
        self._send(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, response: ApiResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status not in (204, 304):
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body and response.status not in (204, 304):
            self.wfile.write(response.body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
