"""The desk's response headers that depend on the connection: HSTS only behind TLS, and
the cross-origin isolation every response carries (a page on another origin cannot show a
fine's photo in an <img>)."""

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from desk.app import SECURITY_HEADERS, TLS_HEADERS, security_headers_for
from tests.unit.desk_fakes import make_app

HSTS = "strict-transport-security"


def request(scheme: str, headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"Host": "desk", **(headers or {})}.items()]
    return Request({"type": "http", "scheme": scheme, "path": "/", "headers": raw})


@pytest.mark.parametrize(
    ("scheme", "headers", "hsts"),
    [
        ("http", {}, False),  # the local desk: plain http
        ("https", {}, True),  # TLS to the desk itself
        ("http", {"X-Forwarded-Proto": "https"}, True),  # Cloud Run's front end ended TLS
        ("http", {"X-Forwarded-Proto": "HTTPS, http"}, True),  # the first hop counts
        ("http", {"X-Forwarded-Proto": "http"}, False),
    ],
)
def test_hsts_is_sent_only_when_the_request_came_over_tls(scheme, headers, hsts):
    sent = security_headers_for(request(scheme, headers))
    assert ("Strict-Transport-Security" in sent) is hsts
    assert sent.items() >= SECURITY_HEADERS.items()  # the rest, always


def test_every_response_is_same_origin_only_and_hsts_follows_the_scheme():
    app = make_app(reviewer="alice")[0]
    # The desk's state is made in the app's lifespan, which TestClient runs inside `with`.
    with (
        TestClient(app, follow_redirects=False) as plain,
        TestClient(app, base_url="https://desk.example", follow_redirects=False) as behind_tls,
    ):
        # A photo's URL refused or not, a static file, a page: each response carries them.
        for path in ("/login", "/static/desk.js", "/fines/" + "0" * 32 + "/photo"):
            for client, hsts in (
                (plain, None),
                (behind_tls, TLS_HEADERS["Strict-Transport-Security"]),
            ):
                headers = client.get(path).headers
                assert headers["cross-origin-resource-policy"] == "same-origin", path
                assert headers["cross-origin-opener-policy"] == "same-origin", path
                assert headers.get(HSTS) == hsts, (path, client.base_url)
    assert TLS_HEADERS["Strict-Transport-Security"].startswith("max-age=")
    assert int(TLS_HEADERS["Strict-Transport-Security"].split("=")[1]) >= 31_536_000  # a year
