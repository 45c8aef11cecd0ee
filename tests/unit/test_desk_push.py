"""POST /push/fines: the fines topic's push subscription, authenticated by the OIDC token
of the desk's push service account (a local RSA key stands in for Google's)."""

import base64
import json
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from google.auth import crypt, jwt

from tests.unit.desk_fakes import fine_row, make_app

AUDIENCE = "https://desk.example/push/fines"
ACCOUNT = "desk-push@project.iam.gserviceaccount.com"


def key_pair(kid: str) -> tuple[crypt.RSASigner, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return crypt.RSASigner.from_string(private, kid), public


SIGNER, PUBLIC = key_pair("google-1")
OTHER, _ = key_pair("google-1")


def token(signer=SIGNER, **claims) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": ACCOUNT,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
        "sub": "1234",
        **claims,
    }
    return jwt.encode(signer, payload).decode()


def envelope(record: dict) -> dict:
    data = base64.b64encode(json.dumps(record).encode()).decode()
    return {"message": {"data": data, "messageId": "1"}, "subscription": "projects/p/s/x"}


def test_a_push_with_the_desks_token_is_ingested_once_and_others_are_401():
    app, store, *_ = make_app(push_audience=AUDIENCE, push_service_account=ACCOUNT,
                              push_certs=lambda: {"google-1": PUBLIC})  # fmt: skip
    fine = fine_row()
    refused = {
        "no token": None,
        "other key": token(OTHER),
        "other audience": token(aud="https://elsewhere"),
        "other account": token(email="someone@project.iam.gserviceaccount.com"),
        "unverified email": token(email_verified=False),
        "other issuer": token(iss="https://evil.example"),
        "expired": token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    }
    with TestClient(app) as client:
        for what, value in refused.items():
            headers = {"authorization": f"Bearer {value}"} if value else {}
            answer = client.post("/push/fines", json=envelope(fine), headers=headers)
            assert answer.status_code == 401, what
        assert store.rows("SELECT * FROM fines") == []
        headers = {"authorization": f"Bearer {token()}"}
        for _ in range(2):  # Pub/Sub redelivers: one row
            assert (
                client.post("/push/fines", json=envelope(fine), headers=headers).status_code == 204
            )
        junk = {"message": {"data": base64.b64encode(b"not json").decode()}}
        assert client.post("/push/fines", json=junk, headers=headers).status_code == 204
    assert [r["fine_id"] for r in store.rows("SELECT * FROM fines")] == [fine["fine_id"]]
