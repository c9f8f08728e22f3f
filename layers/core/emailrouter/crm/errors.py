"""Errors from the Dataverse Web API, by what the caller should do about them."""

from __future__ import annotations


class CrmError(Exception):
    """Base class. `status` is the HTTP status, `code` Dataverse's hex error code when given."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class CrmAuthError(CrmError):
    """401/403: the application user or its token is wrong; an admin must act."""


class CrmEndpointError(CrmAuthError):
    """The org pointed us elsewhere (a redirect, an @odata.nextLink to another scheme, host or port):
    nothing is sent there, the bearer token least of all. Handled as an auth problem: the org URL
    or the org itself is wrong, and an admin must act."""


class CrmTransientError(CrmError):
    """429, 5xx, timeouts and dropped connections that outlived the retry budget: retry later."""


class CrmTimeoutError(CrmTransientError):
    """The organization did not answer in time: a request timed out or its connection failed or
    dropped, as often as the time left allowed. What the CRM circuit breaker counts."""


class CrmNotFoundError(CrmError):
    pass


class CrmConflictError(CrmError):
    """412: an ETag no longer matches, or a row with that key already exists."""


class CrmRequestError(CrmError):
    """4xx other than the above: the request itself is wrong (a bug or bad data)."""
