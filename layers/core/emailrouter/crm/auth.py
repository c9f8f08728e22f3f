"""Bearer tokens for Dataverse: client credentials through msal, or a static token locally."""

from __future__ import annotations

from typing import Any, Protocol

import msal

from emailrouter.crm.errors import CrmAuthError


class TokenProvider(Protocol):
    def token(self) -> str: ...


class StaticTokenProvider:
    """A fixed token (the local stack's emulator accepts a configured one)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token


class ClientCredentialsTokenProvider:
    """An Entra ID application token for `<org url>/.default`; msal caches and renews it."""

    def __init__(
        self,
        org_url: str,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        authority_host: str = "https://login.microsoftonline.com",
        app: Any | None = None,
    ) -> None:
        self._scopes = [f"{org_url.rstrip('/')}/.default"]
        self._app = app or msal.ConfidentialClientApplication(
            client_id,
            client_credential=client_secret,
            authority=f"{authority_host}/{tenant_id}",
        )

    def token(self) -> str:
        result = self._app.acquire_token_for_client(scopes=self._scopes)
        if "access_token" not in result:
            # error_description names the problem (AADSTS code); it never contains the secret.
            raise CrmAuthError(
                f"token request refused: {result.get('error')}: {result.get('error_description', '')}"
            )
        return str(result["access_token"])


def token_provider_from_secret(org_url: str, secret: dict[str, Any]) -> TokenProvider:
    """Pick the provider from the secret's shape: {"token"} or {"tenant_id","client_id","client_secret"}."""
    if "token" in secret:
        return StaticTokenProvider(str(secret["token"]))
    try:
        return ClientCredentialsTokenProvider(
            org_url, str(secret["tenant_id"]), str(secret["client_id"]), str(secret["client_secret"])
        )
    except KeyError as missing:
        raise CrmAuthError(f"CRM credential secret lacks {missing}") from None
