"""``X-EmailRouter-Id``: which tenant's CRM email a message is, in a form only the router can make.

Every recipient of mail the router sends sees the header, so it cannot be trusted as it stands:
a delivery report quoting it could otherwise fail any email and suppress any address. The value
is ``<tenant_id>/<email_id>/<signature>``, the signature an HMAC-SHA256 (first 128 bits, hex)
over both ids under the deployment's key. The key is a secret in Secrets Manager that the
template creates (``RouterIdKeySecret``; the local stack makes its own) and functions find
through ``ROUTER_ID_KEY_SECRET``. Nobody without the key can produce the signature of another
email or tenant; a value without a valid signature (the unsigned ``<tenant>/<email>`` of
earlier versions included) names nothing.

Rotating the key (a new secret version) keeps headers of mail already sent verifiable: the
previous version (``AWSPREVIOUS``) is still accepted, the current one signs.

Example:
    >>> value = sign("acme", "e-1", b"k" * 32)
    >>> value.startswith("acme/e-1/"), verify(value, [b"k" * 32])
    (True, ('acme', 'e-1'))
    >>> verify("acme/e-1", [b"k" * 32]) is None
    True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

from emailrouter import aws
from emailrouter.config import get_settings

HEADER = "X-EmailRouter-Id"
SIGNATURE_HEX_DIGITS = 32  # 128 bits
_DOMAIN = b"X-EmailRouter-Id v2\x00"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
_VALUE = re.compile(r"^([A-Za-z0-9._:-]{1,128})/([A-Za-z0-9._:-]{1,128})/([0-9a-f]{32})$")
_CACHE_SECONDS = 300


class RouterIdKeyError(Exception):
    """The deployment's signing key is not configured or cannot be read."""


def safe_id(value: str) -> str:
    """An id reduced to characters that cannot break the header (ids are such already)."""
    return _UNSAFE.sub("-", value)[:128]


def _signature(tenant_id: str, email_id: str, key: bytes) -> str:
    message = _DOMAIN + tenant_id.encode() + b"\x00" + email_id.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:SIGNATURE_HEX_DIGITS]


def sign(tenant_id: str, email_id: str, key: bytes) -> str:
    """The header value for the tenant's email."""
    tenant, email = safe_id(tenant_id), safe_id(email_id)
    return f"{tenant}/{email}/{_signature(tenant, email, key)}"


def verify(value: str, keys: list[bytes]) -> tuple[str, str] | None:
    """(tenant_id, email_id) when `value` carries a valid signature under one of `keys`."""
    match = _VALUE.match(value.strip())
    if match is None:
        return None
    tenant, email, signature = match.groups()
    for key in keys:
        if hmac.compare_digest(_signature(tenant, email, key), signature):
            return tenant, email
    return None


class DeploymentKeys:
    """The signing key (current secret version) and the ones still accepted (previous version),
    read from Secrets Manager and kept for a few minutes. Never logged, never in an error."""

    def __init__(self, secret_id: str | None = None, client: Any | None = None) -> None:
        self._secret_id = secret_id
        self._client = client
        self._keys: list[bytes] = []
        self._loaded_at = 0.0

    def signing_key(self) -> bytes:
        return self.accepted()[0]

    def accepted(self) -> list[bytes]:
        if not self._keys or time.monotonic() - self._loaded_at > _CACHE_SECONDS:
            self._keys = self._load()
            self._loaded_at = time.monotonic()
        return self._keys

    def _load(self) -> list[bytes]:
        secret_id = self._secret_id or get_settings().router_id_key_secret
        if not secret_id:
            raise RouterIdKeyError("ROUTER_ID_KEY_SECRET is not set: the deployment has no router id key")
        client = self._client or aws.client("secretsmanager")
        keys: list[bytes] = []
        for stage in ("AWSCURRENT", "AWSPREVIOUS"):
            try:
                value = client.get_secret_value(SecretId=secret_id, VersionStage=stage)
            except client.exceptions.ResourceNotFoundException:
                if stage == "AWSCURRENT":
                    raise RouterIdKeyError(f"router id key secret {secret_id!r} not found") from None
                continue
            except Exception as error:
                raise RouterIdKeyError(
                    f"cannot read router id key secret {secret_id!r}: {type(error).__name__}"
                ) from None
            text = str(value.get("SecretString") or "")
            if len(text) < 32:
                raise RouterIdKeyError(f"router id key secret {secret_id!r} is shorter than 32 characters")
            keys.append(text.encode())
        return keys


_keys: dict[str, DeploymentKeys] = {}


def deployment_keys() -> DeploymentKeys:
    """The process's keys for the configured secret (one reader per secret id)."""
    secret_id = get_settings().router_id_key_secret
    if secret_id not in _keys:
        _keys[secret_id] = DeploymentKeys(secret_id or None)
    return _keys[secret_id]
