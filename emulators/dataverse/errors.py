"""Dataverse error responses: a hex platform code, the HTTP status it maps to, and a message.

Dataverse reports every failure as ``{"error": {"code": "0x8004…", "message": "…"}}`` and derives the
HTTP status from the code (fact sheet §9.2). Raising :class:`DataverseError` anywhere in the emulator
produces exactly that shape, so the wire format lives in one place.
"""

from __future__ import annotations

from typing import Any

# Hex code -> HTTP status, from the platform's exception map (fact sheet §9.2). Codes used with more
# than one status (0x80060888) are given an explicit status where they are raised.
STATUS_BY_CODE: dict[str, int] = {
    "0x80040203": 400,
    "0x80044331": 400,
    "0x80048d19": 400,
    "0x80060888": 400,
    "0x80040204": 401,
    "0x80040220": 403,
    "0x80040217": 404,
    "0x80060891": 404,
    "0x80040227": 405,
    "0x80060882": 412,
    "0x80040237": 412,
    "0x8004418A": 413,
    "0x80072322": 429,
    "0x80040216": 500,
}

PAYLOAD_HELP = "For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293"


class DataverseError(Exception):
    """A failure the Web API reports as a JSON error body with a hex code."""

    def __init__(
        self, code: str, message: str, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS_BY_CODE.get(code, 400)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def resource_not_found(segment: str) -> DataverseError:
    return DataverseError("0x80060888", f"Resource not found for the segment '{segment}'.", status=404)


def record_not_found(logical_name: str, key: str) -> DataverseError:
    return DataverseError("0x80040217", f"{logical_name} With Id = {key} Does Not Exist")


def property_not_found(name: str, logical_name: str) -> DataverseError:
    return DataverseError(
        "0x80060888",
        f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{logical_name}'.",
        status=400,
    )


def invalid_payload(set_name: str, detail: str) -> DataverseError:
    """The OData reader's complaint about a request body (undeclared property, bad JSON, bad bind)."""
    return DataverseError(
        "0x80048d19",
        f"Error identified in Payload provided by the user for Entity :'{set_name}', {PAYLOAD_HELP}  ----> "
        f"InnerException : Microsoft.OData.ODataException: {detail}",
    )


def url_too_long(limit: int) -> DataverseError:
    return DataverseError("0x80060888", f"The request URL is longer than {limit} characters.", status=414)


def query_error(message: str) -> DataverseError:
    return DataverseError("0x80060888", message, status=400)


def invalid_argument(message: str) -> DataverseError:
    return DataverseError("0x80040203", message)


def duplicate_record() -> DataverseError:
    return DataverseError("0x80040237", "A record with matching key values already exists.")


def version_mismatch() -> DataverseError:
    return DataverseError(
        "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."
    )


def method_not_allowed(method: str, logical_name: str) -> DataverseError:
    verb = {"POST": "Create", "PATCH": "Update", "PUT": "Update", "DELETE": "Delete"}.get(method, method)
    return DataverseError(
        "0x80040227",
        f"The '{verb}' method does not support entities of type '{logical_name}'. "
        "MessageProcessorCache returned MessageProcessor.Empty.",
        status=405,
    )


def string_too_long(column: str, logical_name: str, max_length: int) -> DataverseError:
    return DataverseError(
        "0x80044331",
        f"A validation error occurred.  The length of the '{column}' attribute of the '{logical_name}' "
        f"entity exceeded the maximum allowed length of '{max_length}'.",
    )


def request_limit_exceeded(limit: int, window_seconds: float, retry_after: int) -> DataverseError:
    return DataverseError(
        "0x80072322",
        f"Number of requests exceeded the limit of {limit} over time window of {window_seconds:g} seconds.",
        headers={"Retry-After": str(retry_after)},
    )


def unauthorized() -> DataverseError:
    return DataverseError(
        "0x80040204",
        "The user is not authenticated: a valid bearer token is required.",
        status=401,
        headers={
            "WWW-Authenticate": "Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize"
        },
    )


def unexpected_error(status: int = 500) -> DataverseError:
    message = "An unexpected error occurred." if status == 500 else "The service is temporarily unavailable."
    return DataverseError("0x80040216", message, status=status)
