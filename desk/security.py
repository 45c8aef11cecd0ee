"""Who the reviewer is, and that a decision comes from the desk's own page.

- `--auth token` (local): a login token (printed at start, or minted by
  `python -m desk.login_link`) is exchanged once, at /login, for a session: a row in the
  database (`sessions`, holding the reviewer and its CSRF token) the server can revoke,
  named by a random id in a signed cookie (HttpOnly, SameSite=Strict). Sign-out revokes
  it; a session older than a shift ends.
- `--auth iap` (Cloud Run behind Identity-Aware Proxy): every request carries IAP's signed
  header `x-goog-iap-jwt-assertion`; the desk verifies it (ES256 only, IAP's public keys,
  the expected audience and issuer, a plausible lifetime) and takes the reviewer from its
  email claim. The CSRF token is then an HMAC of the reviewer under the desk's secret.
- Pub/Sub push (the fines push endpoint): `PushTokenVerifier` checks the OIDC token of the
  subscription's dedicated service account.
"""

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

SESSION_COOKIE = "desk_session"
SESSION_MAX_AGE_S = 12 * 3600  # one shift (default of --shift_hours)
IAP_SIGN_OUT = "/?gcp-iap-mode=CLEAR_LOGIN_COOKIE"  # IAP clears its own cookies and re-asks
IAP_HEADER = "x-goog-iap-jwt-assertion"
IAP_ISSUER = "https://cloud.google.com/iap"
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"  # {key id: PEM public key}
IAP_MAX_LIFETIME_S = 600  # IAP's signed-headers guide: at most 10 minutes (+ 2 x skew)
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"  # {key id: X.509 PEM}
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
GOOGLE_ID_TOKEN_LIFETIME_S = 3600  # Google-issued ID tokens last an hour
KEYS_TTL_S = 3600.0
KEYS_MIN_REFETCH_S = 30.0  # at most one fetch per 30 s however many unknown key ids come
CLOCK_SKEW_S = 30
log = logging.getLogger(__name__)
_REVIEWER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@'+-]{0,63}")


def valid_reviewer(name: str) -> bool:
    return _REVIEWER.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Session:
    reviewer: str
    csrf: str
    session_id: str | None = None  # token mode: the server-side session's id


def digest(secret_value: str) -> str:
    """How the database keeps a session id or login token: its SHA-256, never the value."""
    return hashlib.sha256(secret_value.encode("utf-8")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Session cookies as `payload.mac`, HMAC-SHA256 under the desk's secret: the payload
    names the server-side session (its id) and when the cookie was issued."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, session_id: str) -> str:
        body = {"s": session_id, "t": int(self._clock())}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._mac(payload)}"

    def loads(self, cookie: str | None, max_age_s: float = SESSION_MAX_AGE_S) -> str | None:
        """The session id the cookie names, when its signature holds and it is younger
        than `max_age_s`; else None. The session itself is then looked up (revoked?)."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(payload).encode()):
            return None
        try:
            body = json.loads(_unb64(payload))
            session_id, issued = str(body["s"]), int(body["t"])
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= self._clock() - issued <= max_age_s:
            return None
        return session_id

    def csrf_for(self, reviewer: str) -> str:
        """A stable CSRF token for a reviewer who has no cookie session (IAP)."""
        return _b64(hmac.new(self._secret, f"csrf:{reviewer}".encode(), hashlib.sha256).digest())


def new_session(reviewer: str) -> Session:
    return Session(reviewer, secrets.token_urlsafe(32), secrets.token_urlsafe(32))


def tokens_equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8")
    )


def same_origin(origin: str, host: str) -> bool:
    """Whether a request's Origin header names the host it was sent to."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host


KeySet = Mapping[str, str]  # {key id: PEM public key or X.509 certificate}


def fetch_keys(url: str) -> KeySet:
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    keys = response.json()
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ValueError(f"{url} is no {{key id: PEM}} mapping")
    return keys


class CachedKeys:
    """Public keys by key id, fetched over HTTPS, kept `ttl_s` and refetched early on a miss.

    Google rotates the keys: a token naming a key id the cache does not hold makes it
    fetch again, at most once per `min_refetch_s`, so tokens with made-up key ids cannot
    make the desk hammer Google. A failed fetch keeps the keys already held (a rotation
    adds the new key before the old one stops signing) and is retried after
    `min_refetch_s`.
    """

    def __init__(
        self,
        url: str = IAP_KEYS_URL,
        ttl_s: float = KEYS_TTL_S,
        min_refetch_s: float = KEYS_MIN_REFETCH_S,
        fetch: Callable[[str], KeySet] = fetch_keys,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.min_refetch_s = min_refetch_s
        self.fetches = 0  # attempts, successful or not
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet = {}
        self._fetched = float("-inf")  # last successful fetch
        self._attempted = float("-inf")  # last attempt

    def _refresh(self, now: float) -> None:
        self._attempted = now
        self.fetches += 1
        try:
            self._keys = dict(self._fetch(self.url))
            self._fetched = now
        except (requests.RequestException, ValueError) as error:
            held = len(self._keys)
            log.warning("keys from %s not fetched (%s); keeping %d", self.url, error, held)

    def key(self, kid: str) -> str | None:
        """The key named `kid`, or None when the keys, fetched again if allowed, lack it."""
        with self._lock:  # one fetch at a time: concurrent misses wait for it
            now = self._clock()
            wanted = now - self._fetched > self.ttl_s or kid not in self._keys
            if wanted and now - self._attempted >= self.min_refetch_s:
                self._refresh(now)
            return self._keys.get(kid)

    def __call__(self) -> KeySet:
        with self._lock:
            now = self._clock()
            if now - self._fetched > self.ttl_s and now - self._attempted >= self.min_refetch_s:
                self._refresh(now)
            return dict(self._keys)


KeySource = CachedKeys | Callable[[], KeySet]


def _lookup(keys: KeySource, kid: str) -> str | None:
    if isinstance(keys, CachedKeys):
        return keys.key(kid)
    return keys().get(kid)  # a plain mapping source (tests, or a caller's own cache)


def _verified_claims(
    token: str,
    keys: KeySource,
    algorithm: str,
    audience: str,
    max_lifetime_s: int,
    clock: Callable[[], float],
) -> Mapping[str, Any] | None:
    """The token's claims when its signature, algorithm, audience and times hold, else None.

    Only `algorithm` is accepted (never `none`, HS256 or another key type); the key is the
    one its `kid` names; `iat` may not be in the future and `exp` not in the past beyond
    CLOCK_SKEW_S, and `exp - iat` may not exceed the issuer's documented lifetime plus
    twice the skew.
    """
    try:
        header = jwt.decode_header(token)
    except (ValueError, TypeError, auth_exceptions.GoogleAuthError):
        return None
    kid = header.get("kid")
    if header.get("alg") != algorithm or not isinstance(kid, str):
        return None
    try:
        key = _lookup(keys, kid)
    except (requests.RequestException, ValueError):
        return None
    if key is None:
        return None
    try:
        claims = jwt.decode(
            token, certs={kid: key}, audience=audience, clock_skew_in_seconds=CLOCK_SKEW_S
        )
    except (ValueError, TypeError, auth_exceptions.GoogleAuthError):
        return None
    issued, expires = claims.get("iat"), claims.get("exp")
    if not all(type(t) in (int, float) for t in (issued, expires)):
        return None
    now = clock()
    if issued > now + CLOCK_SKEW_S or expires < now - CLOCK_SKEW_S:
        return None
    if not 0 < expires - issued <= max_lifetime_s + 2 * CLOCK_SKEW_S:
        return None
    return claims


class IapVerifier:
    """Verifies IAP's JWT assertion and returns the reviewer's email, or None.

    As IAP's signed-headers guide asks (docs/desk.md, Deploy on Google Cloud): ES256 only,
    a key from IAP's key file by `kid`, the expected audience, issuer
    https://cloud.google.com/iap, `iat` not in the future and `exp` not past (30 s skew
    each), a lifetime of at most 10 minutes plus twice the skew.
    """

    def __init__(
        self,
        audience: str,
        keys: KeySource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience:
            raise ValueError("--iap_audience is required with --auth iap")
        self.audience = audience
        self._keys = keys if keys is not None else CachedKeys()
        self._clock = clock

    def reviewer(self, assertion: str | None) -> str | None:
        if not assertion:
            return None
        claims = _verified_claims(
            assertion, self._keys, "ES256", self.audience, IAP_MAX_LIFETIME_S, self._clock
        )
        if claims is None:
            return None
        email = claims.get("email")
        if claims.get("iss") != IAP_ISSUER or not isinstance(email, str):
            return None
        # IAP prefixes the email with its identity source ("accounts.google.com:").
        email = email.rsplit(":", 1)[-1]
        return email if valid_reviewer(email) else None


class PushTokenVerifier:
    """Verifies the OIDC token Pub/Sub sends with a push request (the fines push endpoint).

        verifier = PushTokenVerifier(audience, service_account_email)
        claims = verifier.claims(request.headers.get("authorization"))
        if claims is None: answer 401 (Pub/Sub retries the message later)

    `claims(authorization)` takes the request's `Authorization` header ("Bearer TOKEN")
    and returns the token's claims, or None unless all of these hold: RS256 signed by one of
    Google's OAuth 2.0 keys (GOOGLE_CERTS_URL, cached like IAP's, refetched on an unknown
    key id), issuer accounts.google.com, `aud` equal to `audience` (the subscription's
    --push-auth-token-audience), `email` equal to `service_account_email` (the
    subscription's --push-auth-service-account) with `email_verified` true, `iat` and
    `exp` within CLOCK_SKEW_S of now and a lifetime of at most an hour (Google ID tokens').

    `fetch_certs` replaces the key source: a CachedKeys, or any callable returning
    {key id: PEM}. On Cloud Run the push service must not run Cloud Run's own invoker check
    (it forwards the token with its signature removed), so this is the check
    (docs/desk.md, Deploy on Google Cloud).
    """

    def __init__(
        self,
        audience: str,
        service_account_email: str,
        fetch_certs: KeySource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience or not service_account_email:
            raise ValueError("a push verifier needs an audience and a service account")
        self.audience = audience
        self.service_account_email = service_account_email.lower()
        self._keys = fetch_certs if fetch_certs is not None else CachedKeys(GOOGLE_CERTS_URL)
        self._clock = clock

    def claims(self, authorization: str | None) -> Mapping[str, Any] | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        claims = _verified_claims(
            token.strip(), self._keys, "RS256", self.audience, GOOGLE_ID_TOKEN_LIFETIME_S,
            self._clock,
        )  # fmt: skip
        if claims is None or claims.get("iss") not in GOOGLE_ISSUERS:
            return None
        email = claims.get("email")
        if not isinstance(email, str) or email.lower() != self.service_account_email:
            return None
        if claims.get("email_verified") is not True:
            return None
        return claims
