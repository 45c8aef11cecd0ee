"""Pub/Sub push authentication: the OIDC token a push subscription sends with each message.

A push subscription created with `--push-auth-service-account SA --push-auth-token-audience
AUD` sends `Authorization: Bearer TOKEN`, a JWT Google signs (RS256) for that service
account. `PushTokenVerifier` accepts it only when the signature verifies against Google's
certificates, the issuer is Google's, the audience is `--push_audience`, and the `email`
claim is `--push_service_account` with `email_verified` true (docs/desk.md, Ingest).
"""

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"  # {key id: PEM certificate}
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
CERTS_TTL_S = 3600.0
CLOCK_SKEW_S = 30


def google_certs() -> Mapping[str, str]:
    response = requests.get(GOOGLE_CERTS_URL, timeout=10)
    response.raise_for_status()
    return response.json()


class PushTokenVerifier:
    """`claims(authorization)`: the token's claims, or None unless valid for this desk.

    The same interface as desk/security.py's verifier of the same name on the desk-ops
    branch (IAP's key handling); one of the two goes when both are merged.
    """

    def __init__(
        self,
        audience: str,
        service_account_email: str,
        fetch_certs: Callable[[], Mapping[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience or not service_account_email:
            raise ValueError("a push verifier needs an audience and a service account")
        self.audience = audience
        self.service_account = service_account_email.lower()
        self._fetch = fetch_certs or google_certs
        self._clock = clock
        self._certs: Mapping[str, str] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _keys(self, key_id: str | None) -> Mapping[str, str]:
        """Google's certificates, cached; fetched again when stale or when the token names
        a key not among them (Google rotates its keys)."""
        with self._lock:
            stale = self._clock() - self._fetched_at > CERTS_TTL_S
            if stale or (key_id is not None and key_id not in self._certs):
                self._certs = dict(self._fetch())
                self._fetched_at = self._clock()
            return self._certs

    def claims(self, authorization: str | None) -> Mapping[str, Any] | None:
        """The token's claims when it is a valid push token for this desk, else None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header = jwt.decode_header(token)
            if header.get("alg") != "RS256":
                return None
            claims = jwt.decode(
                token,
                certs=self._keys(header.get("kid")),
                audience=self.audience,
                clock_skew_in_seconds=CLOCK_SKEW_S,
            )
        except (ValueError, auth_exceptions.GoogleAuthError, requests.RequestException):
            return None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            return None
        email = claims.get("email")
        if not isinstance(email, str) or email.lower() != self.service_account:
            return None
        if claims.get("email_verified") is not True:
            return None
        return claims
