"""`--auth iap` and Pub/Sub push: the desk verifies signed tokens with keys made here.

- IAP's assertion: ES256 with IAP's key by `kid`, audience, issuer; any other algorithm
  (none, HS256 keyed with the public key, RS256) is refused, and so is an implausible
  lifetime (issued in the future, expired, longer than IAP's 10 minutes plus skew).
- The key cache, against a key file served on loopback: a new key id is fetched at once
  (a rotation), made-up key ids cause at most one fetch per interval, a failed fetch keeps
  the keys held.
- PushTokenVerifier: a Google-style RS256 ID token of the push service account, with the
  audience, issuer, email and email_verified it must carry, and an X.509 key file.
"""

import base64
import datetime
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from google.auth import crypt, jwt

from desk.security import (
    CLOCK_SKEW_S,
    IAP_HEADER,
    IAP_ISSUER,
    CachedKeys,
    IapVerifier,
    PushTokenVerifier,
)
from tests.unit.desk_fakes import fine_row, make_app

AUDIENCE = "/projects/123456/global/backendServices/789"


def _pems(private) -> tuple[bytes, str]:
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, public.decode()


def key_pair(kid: str) -> tuple[crypt.Signer, str]:
    pem, public = _pems(ec.generate_private_key(ec.SECP256R1()))
    return crypt.ES256Signer.from_string(pem, key_id=kid), public


def rsa_pair(kid: str) -> tuple[crypt.Signer, str, rsa.RSAPrivateKey]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem, public = _pems(private)
    return crypt.RSASigner.from_string(pem, key_id=kid), public, private


SIGNER, PUBLIC = key_pair("k1")
OTHER_SIGNER, _ = key_pair("k1")  # same key id, another key: a forgery
KEYS = {"k1": PUBLIC}


def assertion(signer=SIGNER, **claims) -> str:
    now = int(time.time())
    payload = {
        "iss": IAP_ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "sub": "accounts.google.com:1",
        "email": "accounts.google.com:ana@city.gov",
    }
    payload.update(claims)
    return jwt.encode(signer, {k: v for k, v in payload.items() if v is not None}).decode()


def test_a_valid_assertion_names_the_reviewer():
    verifier = IapVerifier(AUDIENCE, lambda: KEYS)
    assert verifier.reviewer(assertion()) == "ana@city.gov"
    assert verifier.reviewer(assertion(email="bob@city.gov")) == "bob@city.gov"


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "not-a-jwt",
        assertion(aud="/projects/1/global/backendServices/2"),
        assertion(iss="https://accounts.google.com"),
        assertion(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        assertion(signer=OTHER_SIGNER),
        assertion(email=None),
        assertion(email="<script>@x"),
    ],
    ids=[
        "absent",
        "empty",
        "garbage",
        "audience",
        "issuer",
        "expired",
        "forged",
        "no email",
        "bad email",
    ],
)
def test_anything_else_is_refused(token):
    assert IapVerifier(AUDIENCE, lambda: KEYS).reviewer(token) is None


def test_an_unknown_key_id_is_refused():
    signer, _ = key_pair("k2")
    assert IapVerifier(AUDIENCE, lambda: KEYS).reviewer(assertion(signer=signer)) is None


def test_the_desk_behind_iap_answers_401_without_a_valid_assertion():
    app, store, *_ = make_app(auth="iap", iap_audience=AUDIENCE, iap_keys=lambda: KEYS)
    store.fines.append(fine_row())
    # The desk's state is made in the app's lifespan, which TestClient runs inside `with`.
    with TestClient(app, follow_redirects=False) as client:
        assert client.get("/queue").status_code == 401
        assert (
            client.get("/queue", headers={IAP_HEADER: assertion(signer=OTHER_SIGNER)}).status_code
            == 401
        )
        assert client.get(f"/login?token={'x'}").status_code == 404  # no token login behind IAP
        page = client.get("/queue", headers={IAP_HEADER: assertion()})
        assert page.status_code == 200 and ">ana@city.gov<" in page.text
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        started = client.post("/next", data={"csrf": csrf}, headers={IAP_HEADER: assertion()})
        assert started.status_code == 303 and started.headers["location"].startswith("/fines/")
        assert store.claims_[0]["reviewer"] == "ana@city.gov"
        # Another reviewer's page token is not Ana's.
        bob = client.get("/queue", headers={IAP_HEADER: assertion(email="bob@city.gov")}).text
        bob_csrf = bob.split('name="csrf" value="')[1].split('"')[0]
        refused = client.post("/next", data={"csrf": bob_csrf}, headers={IAP_HEADER: assertion()})
        assert bob_csrf != csrf and refused.status_code == 403


def test_iap_needs_an_audience():
    with pytest.raises(ValueError, match="iap_audience"):
        IapVerifier("", lambda: KEYS)


# --- the algorithm and the lifetime ---------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, payload: dict, sign=lambda signed: b"") -> str:
    signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signed}.{_b64(sign(signed.encode()))}"


def claims(**changes) -> dict:
    now = int(time.time())
    payload = {"iss": IAP_ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600,
               "email": "accounts.google.com:ana@city.gov"}  # fmt: skip
    payload.update(changes)
    return payload


RSA_SIGNER, RSA_PUBLIC, _ = rsa_pair("r1")


@pytest.mark.parametrize(
    "token",
    [
        unsigned({"alg": "none", "kid": "k1"}, claims()),
        unsigned({"alg": "none"}, claims()),
        # HS256 keyed with IAP's public key: the classic algorithm confusion
        unsigned(
            {"alg": "HS256", "kid": "k1"},
            claims(),
            lambda s: hmac.new(PUBLIC.encode(), s, hashlib.sha256).digest(),
        ),
        # a valid RS256 signature by a key the key set holds, but IAP signs ES256 only
        jwt.encode(RSA_SIGNER, claims()).decode(),
        unsigned({"alg": "ES256"}, claims()),  # no key id
    ],
    ids=["none", "none without kid", "HS256 with the public key", "RS256", "no kid"],
)
def test_only_es256_by_a_named_key_is_accepted(token):
    keys = {"k1": PUBLIC, "r1": RSA_PUBLIC}
    assert IapVerifier(AUDIENCE, lambda: keys).reviewer(token) is None
    assert IapVerifier(AUDIENCE, lambda: keys).reviewer(assertion()) == "ana@city.gov"


def test_the_lifetime_must_be_plausible():
    verify = IapVerifier(AUDIENCE, lambda: KEYS).reviewer
    now = int(time.time())
    skew = CLOCK_SKEW_S
    # within the skew either way, and the longest lifetime IAP's guide allows: accepted
    assert verify(assertion(iat=now + skew - 5, exp=now + 600)) == "ana@city.gov"
    assert verify(assertion(iat=now - 600, exp=now + 2 * skew)) == "ana@city.gov"
    assert verify(assertion(iat=now - 100, exp=now - 100 + 600 + 2 * skew)) == "ana@city.gov"
    # issued in the future, expired, or living longer than 10 minutes + 2 x skew: refused
    assert verify(assertion(iat=now + skew + 60, exp=now + 600)) is None
    assert verify(assertion(iat=now - 700, exp=now - skew - 5)) is None
    assert verify(assertion(iat=now - 100, exp=now - 100 + 600 + 2 * skew + 1)) is None
    assert verify(assertion(iat=now, exp=now + 24 * 3600)) is None
    assert verify(assertion(iat=now, exp=now)) is None  # no lifetime at all
    assert verify(assertion(iat="now", exp=now + 600)) is None
    assert verify(assertion(iat=None)) is None


# --- the key cache against a key file on loopback ---------------------------------------------


class KeyFile:
    """An HTTP server on 127.0.0.1 (a free port) serving `keys` as JSON, counting requests;
    `status` other than 200 makes it fail."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.status = 200
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps(owner.keys).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/public_key"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def key_file() -> Iterator[KeyFile]:
    served = KeyFile()
    yield served
    served.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rotated_key_is_fetched_at_once_and_made_up_ids_fetch_at_most_once_per_interval(
    key_file,
):
    clock = Clock()
    cache = CachedKeys(key_file.url, ttl_s=3600, min_refetch_s=30, clock=clock)
    verify = IapVerifier(AUDIENCE, cache).reviewer
    key_file.keys = {"k1": PUBLIC}
    assert verify(assertion()) == "ana@city.gov"
    assert verify(assertion()) == "ana@city.gov"
    assert key_file.requests == 1  # cached
    # IAP rotates: a key id the cache has not seen is fetched at once, without waiting the hour
    clock.now += 60
    new_signer, new_public = key_pair("k2")
    key_file.keys = {"k1": PUBLIC, "k2": new_public}
    assert verify(assertion(signer=new_signer, email="bob@city.gov")) == "bob@city.gov"
    assert key_file.requests == 2
    # an attacker's made-up key ids: one fetch in the interval, however many tokens
    clock.now += 60
    for n in range(50):
        forged, _ = key_pair(f"random-{n}")
        assert verify(assertion(signer=forged)) is None
    assert key_file.requests == 3 and cache.fetches == 3
    clock.now += 31
    assert verify(assertion(signer=key_pair("random-x")[0])) is None
    assert key_file.requests == 4
    # known keys are answered from the cache meanwhile
    assert verify(assertion(signer=new_signer)) == "ana@city.gov"
    assert key_file.requests == 4


def test_keys_expire_after_the_ttl_and_a_failed_fetch_keeps_those_held(key_file):
    clock = Clock()
    cache = CachedKeys(key_file.url, ttl_s=3600, min_refetch_s=30, clock=clock)
    verify = IapVerifier(AUDIENCE, cache).reviewer
    key_file.keys = {"k1": PUBLIC}
    assert verify(assertion()) == "ana@city.gov"
    clock.now += 3601
    key_file.status = 500
    assert verify(assertion()) == "ana@city.gov"  # Google unreachable: the held key still works
    assert key_file.requests == 2
    clock.now += 31
    key_file.status = 200
    key_file.keys = {}  # a key retired by IAP stops working once the file drops it
    assert verify(assertion()) is None
    assert key_file.requests == 3


def test_no_key_file_at_all_refuses_everyone(key_file):
    key_file.status = 503
    cache = CachedKeys(key_file.url, min_refetch_s=30, clock=Clock())
    assert IapVerifier(AUDIENCE, cache).reviewer(assertion()) is None
    assert cache() == {}


# --- Pub/Sub push tokens --------------------------------------------------------------------

PUSH_AUDIENCE = "https://section-speed-desk-push-123456789012.us-central1.run.app/push/fines"
PUSH_SA = "section-speed-desk-push@my-project.iam.gserviceaccount.com"
G_SIGNER, G_PUBLIC, G_PRIVATE = rsa_pair("g1")
G_OTHER, _, _ = rsa_pair("g1")  # same key id, another key: a forgery


def id_token(signer=G_SIGNER, **changes) -> str:
    now = int(time.time())
    payload = {"iss": "https://accounts.google.com", "aud": PUSH_AUDIENCE, "iat": now,
               "exp": now + 3600, "sub": "1138", "azp": "1138", "email": PUSH_SA,
               "email_verified": True}  # fmt: skip
    payload.update(changes)
    body = {k: v for k, v in payload.items() if v is not None}
    return "Bearer " + jwt.encode(signer, body).decode()


def push_verifier(keys=None) -> PushTokenVerifier:
    return PushTokenVerifier(PUSH_AUDIENCE, PUSH_SA, fetch_certs=keys or (lambda: {"g1": G_PUBLIC}))


def test_the_push_service_accounts_token_is_accepted():
    found = push_verifier().claims(id_token())
    assert found is not None
    assert (found["email"], found["aud"], found["iss"]) == (
        PUSH_SA, PUSH_AUDIENCE, "https://accounts.google.com"
    )  # fmt: skip
    assert push_verifier().claims(id_token(iss="accounts.google.com"))["sub"] == "1138"
    assert push_verifier().claims(id_token(email=PUSH_SA.upper())) is not None


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer not-a-jwt",
        id_token().replace("Bearer ", "Basic "),
        id_token().removeprefix("Bearer "),  # no scheme
        id_token(aud="https://section-speed-desk-abc-uc.a.run.app"),
        id_token(aud=PUSH_AUDIENCE + "/more"),
        id_token(aud=PUSH_AUDIENCE.removesuffix("/fines")),
        id_token(aud=[PUSH_AUDIENCE, "https://elsewhere.example"]),
        id_token(iss="https://cloud.google.com/iap"),
        id_token(email="someone-else@my-project.iam.gserviceaccount.com"),
        id_token(email=None),
        id_token(email_verified=False),
        id_token(email_verified="true"),
        id_token(email_verified=None),
        id_token(signer=G_OTHER),
        id_token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        id_token(iat=int(time.time()), exp=int(time.time()) + 2 * 3600),
        id_token(signer=key_pair("g1")[0]),  # ES256: Google signs ID tokens RS256
        "Bearer " + unsigned({"alg": "none", "kid": "g1"}, {"aud": PUSH_AUDIENCE}),
    ],
    ids=[
        "absent",
        "empty",
        "bearer only",
        "garbage",
        "basic",
        "no scheme",
        "audience",
        "audience extended",
        "audience cut",
        "audience list",
        "issuer",
        "other account",
        "no email",
        "unverified",
        "verified as text",
        "verified missing",
        "forged",
        "expired",
        "too long",
        "ES256",
        "none",
    ],
)
def test_any_other_push_token_is_refused(authorization):
    assert push_verifier().claims(authorization) is None


def test_push_tokens_are_checked_against_googles_x509_key_file(key_file):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "g1")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(G_PRIVATE.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=2))
        .sign(G_PRIVATE, hashes.SHA256())
    )
    key_file.keys = {"g1": certificate.public_bytes(serialization.Encoding.PEM).decode()}
    verifier = push_verifier(CachedKeys(key_file.url, clock=Clock()))
    assert verifier.claims(id_token())["email"] == PUSH_SA
    assert verifier.claims(id_token(signer=G_OTHER)) is None
    assert key_file.requests == 1


def test_a_push_verifier_needs_its_audience_and_account():
    with pytest.raises(ValueError, match="audience"):
        PushTokenVerifier("", PUSH_SA)
    with pytest.raises(ValueError, match="audience"):
        PushTokenVerifier(PUSH_AUDIENCE, "")
