"""Who the reviewer is, and that a decision comes from the desk's own page.

- `--auth token` (local): a random token printed at start is exchanged once, at /login,
  for a signed session cookie (HttpOnly, SameSite=Strict) naming the reviewer and holding
  the session's CSRF token.
- `--auth iap` (Cloud Run behind Identity-Aware Proxy): every request carries IAP's signed
  header `x-goog-iap-jwt-assertion`; the desk verifies it (ES256, IAP's public keys, the
  expected audience and issuer) and takes the reviewer from its email claim. The CSRF token
  is then an HMAC of the reviewer under the desk's secret.
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

SESSION_COOKIE = "desk_session"
SESSION_MAX_AGE_S = 12 * 3600  # one shift
IAP_HEADER = "x-goog-iap-jwt-assertion"
IAP_ISSUER = "https://cloud.google.com/iap"
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"  # {key id: PEM public key}
IAP_KEYS_TTL_S = 3600.0
CLOCK_SKEW_S = 30
_REVIEWER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@'+-]{0,63}")


def valid_reviewer(name: str) -> bool:
    return _REVIEWER.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Session:
    reviewer: str
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Session cookies as `payload.mac`, HMAC-SHA256 under the desk's secret."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, session: Session) -> str:
        body = {"r": session.reviewer, "c": session.csrf, "t": int(self._clock())}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._mac(payload)}"

    def loads(self, cookie: str | None) -> Session | None:
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(payload).encode()):
            return None
        try:
            body = json.loads(_unb64(payload))
            reviewer, csrf, issued = str(body["r"]), str(body["c"]), int(body["t"])
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= self._clock() - issued <= SESSION_MAX_AGE_S or not valid_reviewer(reviewer):
            return None
        return Session(reviewer, csrf)

    def csrf_for(self, reviewer: str) -> str:
        """A stable CSRF token for a reviewer who has no cookie session (IAP)."""
        return _b64(hmac.new(self._secret, f"csrf:{reviewer}".encode(), hashlib.sha256).digest())


def new_session(reviewer: str) -> Session:
    return Session(reviewer, secrets.token_urlsafe(32))


def tokens_equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8")
    )


def same_origin(origin: str, host: str) -> bool:
    """Whether a request's Origin header names the host it was sent to."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host


KeySet = Mapping[str, str]


class CachedKeys:
    """IAP's public keys, fetched over HTTPS and kept for an hour."""

    def __init__(self, url: str = IAP_KEYS_URL, ttl_s: float = IAP_KEYS_TTL_S) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._keys: KeySet = {}
        self._fetched = float("-inf")

    def __call__(self) -> KeySet:
        with self._lock:
            if time.monotonic() - self._fetched > self.ttl_s:
                response = requests.get(self.url, timeout=5)
                response.raise_for_status()
                self._keys = dict(response.json())
                self._fetched = time.monotonic()
            return self._keys


class IapVerifier:
    """Verifies IAP's JWT assertion and returns the reviewer's email, or None."""

    def __init__(self, audience: str, keys: Callable[[], KeySet] | None = None) -> None:
        if not audience:
            raise ValueError("--iap_audience is required with --auth iap")
        self.audience = audience
        self._keys = keys or CachedKeys()

    def reviewer(self, assertion: str | None) -> str | None:
        if not assertion:
            return None
        try:
            claims = jwt.decode(
                assertion,
                certs=dict(self._keys()),
                audience=self.audience,
                clock_skew_in_seconds=CLOCK_SKEW_S,
            )
        except (ValueError, auth_exceptions.GoogleAuthError, requests.RequestException):
            return None
        email = claims.get("email")
        if claims.get("iss") != IAP_ISSUER or not isinstance(email, str):
            return None
        # IAP prefixes the email with its identity source ("accounts.google.com:").
        email = email.rsplit(":", 1)[-1]
        return email if valid_reviewer(email) else None
