"""Sessions the server can revoke (docs/desk.md, Sessions): a login link signs in once, on
any desk sharing the database; sign-out and a shift's end close the session server-side;
POST /login comes from the desk's own page; wrong tokens are throttled in the database;
behind IAP, Sign-out ends at IAP's sign-out URL."""

import re

from fastapi.testclient import TestClient

from desk.routes.auth import MAX_FAILURES_PER_CLIENT
from desk.security import IAP_HEADER, IAP_SIGN_OUT, SESSION_COOKIE
from tests.unit.desk_fakes import make_app, new_store
from tests.unit.test_desk_iap import AUDIENCE, KEYS, assertion

TOKEN = "secret-token"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]


def test_a_login_link_signs_in_once_also_across_two_desks():
    store = new_store()
    first = make_app(store=store, reviewer="alice", token="shared")[0]
    second = make_app(store=store, reviewer="alice", token="shared")[0]
    with (
        TestClient(first, follow_redirects=False) as one,
        TestClient(second, follow_redirects=False) as two,
    ):
        assert one.get("/login?token=shared").status_code == 303
        assert one.get("/queue").status_code == 200
        again = one.get("/login?token=shared")
        assert again.status_code == 401 and "used already" in again.text
        other = two.get("/login?token=shared")  # the other desk: the database remembers
        assert other.status_code == 401 and SESSION_COOKIE not in other.cookies
        assert two.get("/queue").status_code == 401
    uses = store.rows("SELECT reviewer FROM login_token_uses")
    assert uses == [{"reviewer": "alice"}]


def test_the_login_form_exchanges_its_token_once():
    app = make_app()[0]
    with TestClient(app, follow_redirects=False) as client:
        assert client.get(f"/login?token={TOKEN}").status_code == 200  # the form: not used yet
        signed = client.post("/login", data={"token": TOKEN, "reviewer": "bob"})
        assert signed.status_code == 303
        client.cookies.clear()
        again = client.post("/login", data={"token": TOKEN, "reviewer": "mallory"})
        assert again.status_code == 401 and SESSION_COOKIE not in again.cookies


def test_a_signed_out_cookie_no_longer_opens_the_queue():
    app = make_app(reviewer="alice")[0]
    with TestClient(app, follow_redirects=False) as client:
        client.get(f"/login?token={TOKEN}")
        cookie = client.cookies[SESSION_COOKIE]
        out = client.post("/logout", data={"csrf": csrf_of(client.get("/queue").text)})
        assert out.status_code == 200 and "alice signed out" in out.text
        client.cookies.set(SESSION_COOKIE, cookie)  # kept by the browser, or stolen
        refused = client.get("/queue")
        assert refused.status_code == 401 and "signed out" in refused.text


def test_a_session_ends_after_a_shift_server_side():
    app, store, _photos, _publisher, clock = make_app(reviewer="alice", shift_seconds=3600)
    with TestClient(app, follow_redirects=False) as client:
        client.get(f"/login?token={TOKEN}")
        clock.advance(3599)
        assert client.get("/queue").status_code == 200
        clock.advance(2)
        assert client.get("/queue").status_code == 401
    (row,) = store.rows("SELECT reviewer, revoked_at, last_seen > created_at AS seen FROM sessions")
    assert row == {"reviewer": "alice", "revoked_at": None, "seen": True}


def test_a_cross_origin_login_is_refused_and_uses_nothing():
    app, store, *_ = make_app()
    form = {"token": TOKEN, "reviewer": "mallory"}
    with TestClient(app, follow_redirects=False) as client:
        for headers in ({"origin": "https://evil.example"},
                        {"sec-fetch-site": "cross-site"},
                        {"origin": "null", "sec-fetch-site": "cross-site"}):  # fmt: skip
            refused = client.post("/login", data=form, headers=headers)
            assert refused.status_code == 403, headers
            assert SESSION_COOKIE not in refused.cookies
        assert store.rows("SELECT * FROM login_token_uses") == []
        own = client.post("/login", data=form, headers={"sec-fetch-site": "same-origin"})
        assert own.status_code == 303


def test_the_eleventh_wrong_token_in_a_minute_gets_429_on_every_desk():
    store = new_store()
    app, _, _, _, clock = make_app(store=store)
    other = make_app(store=store)[0]
    with (
        TestClient(app, follow_redirects=False) as client,
        TestClient(other, follow_redirects=False) as client2,
    ):
        for n in range(MAX_FAILURES_PER_CLIENT):
            assert client.get(f"/login?token=wrong{n}").status_code == 401
        throttled = client.post("/login", data={"token": TOKEN, "reviewer": "bob"})
        assert throttled.status_code == 429 and "wait a minute" in throttled.text
        assert client2.get(f"/login?token={TOKEN}").status_code == 429  # the same address
        clock.advance(61)
        assert client.post("/login", data={"token": TOKEN, "reviewer": "bob"}).status_code == 303


def test_sign_out_behind_iap_goes_to_iaps_sign_out():
    app = make_app(auth="iap", iap_audience=AUDIENCE, iap_keys=lambda: KEYS)[0]
    headers = {IAP_HEADER: assertion()}
    with TestClient(app, follow_redirects=False) as client:
        page = client.get("/queue", headers=headers)
        assert page.status_code == 200 and 'action="/logout"' in page.text
        out = client.post("/logout", data={"csrf": csrf_of(page.text)}, headers=headers)
        assert out.status_code == 303 and out.headers["location"] == IAP_SIGN_OUT
    assert IAP_SIGN_OUT == "/?gcp-iap-mode=CLEAR_LOGIN_COOKIE"
