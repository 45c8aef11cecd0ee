"""`--auth iap`: the desk verifies IAP's ES256 assertion with an injected key set (no network)."""

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from google.auth import crypt, jwt

from desk.security import IAP_HEADER, IAP_ISSUER, IapVerifier
from tests.unit.desk_fakes import fine_row, make_app

AUDIENCE = "/projects/123456/global/backendServices/789"


def key_pair(kid: str) -> tuple[crypt.Signer, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return crypt.ES256Signer.from_string(pem, key_id=kid), public.decode()


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
    client = TestClient(app, follow_redirects=False)
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
