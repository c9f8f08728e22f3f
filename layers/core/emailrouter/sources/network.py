"""What the POP3 and IMAP sources share: the egress check, TLS, and mapping socket failures.

The server's name is resolved once, by `vet_host`; the session connects to those vetted
addresses (`connect_vetted`) and keeps the name for SNI and the certificate check, so a DNS
answer that changes between the check and the connection (rebinding) changes nothing.

Both protocols fail the same ways at the transport level (refused, reset, timed out, closed
mid-response), and those must reach the poller as TransientSourceError so the mailbox is retried
on the next poll rather than marked broken. Server replies are scrubbed of the password before
they go into an exception, because exception text ends up in logs and in mailbox health.
"""

from __future__ import annotations

import socket
import ssl
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from emailrouter.egress import ForbiddenHostError, vetted_addresses
from emailrouter.sources.errors import SourceConfigurationError, TransientSourceError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from emailrouter.egress import IPAddress, Resolver

Security = Literal["none", "ssl", "starttls"]
SECURITY_MODES: tuple[Security, ...] = ("none", "ssl", "starttls")


def vet_host(host: str, *, allow_private: bool, resolver: Resolver | None = None) -> list[IPAddress]:
    """The addresses to connect to for `host`, resolved once. A forbidden host is a
    configuration error; an unresolvable one transient."""
    try:
        return vetted_addresses(host, allow_private=allow_private, resolver=resolver)
    except ForbiddenHostError as exc:
        raise SourceConfigurationError(str(exc)) from exc
    except OSError as exc:
        raise TransientSourceError(f"cannot resolve mail server {host!r}: {exc}") from exc


def connect_vetted(addresses: list[IPAddress], port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the first of `addresses` that answers (as `create_connection` tries
    each address of a name), never to anything resolved anew."""
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout)
        except OSError as exc:
            last = exc
    raise last or OSError("no address to connect to")


def check_security(security: str) -> Security:
    """Validate the configured transport security, so a typo fails loudly rather than in plain text."""
    for mode in SECURITY_MODES:
        if security == mode:
            return mode
    raise SourceConfigurationError(f"security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")


def check_credentials(username: str, password: str) -> None:
    """Refuse line breaks in credentials: both protocols are line-based, so a CR or LF would let a
    tenant's stored password inject further commands into the session."""
    for value, name in ((username, "username"), (password, "password")):
        if any(ch in value for ch in "\r\n\0"):
            raise SourceConfigurationError(f"the mailbox {name} contains a line break or NUL")
    if not username:
        raise SourceConfigurationError("the mailbox username is empty")


def tls_context() -> ssl.SSLContext:
    """Certificate and host name verification on, as for any client talking to the internet."""
    return ssl.create_default_context()


def scrub(text: str | bytes, secret: str) -> str:
    """Server text made safe for an exception message: decoded, and without `secret` in it."""
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if secret:
        decoded = decoded.replace(secret, "***")
    return decoded.strip()


@contextmanager
def transport_errors(what: str) -> Iterator[None]:
    """Turn socket-level failures inside the block into TransientSourceError.

    EOFError is what poplib/imaplib raise when the server closes the connection mid-response.
    """
    try:
        yield
    except ssl.SSLCertVerificationError as exc:
        raise SourceConfigurationError(f"{what}: TLS certificate not trusted: {exc.verify_message}") from exc
    except TimeoutError as exc:
        raise TransientSourceError(f"{what}: timed out") from exc
    except (OSError, EOFError) as exc:
        raise TransientSourceError(f"{what}: {type(exc).__name__}: {exc}") from exc
