"""The desk over HTTP (FastAPI's TestClient, the PostgreSQL store, in-memory photos and
topic): login, CSRF, escaping, photos, headers, and the decision flow's status codes."""

import hashlib
import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from desk.login_link import mint
from desk.security import SESSION_COOKIE
from local_stack.processes import wait_until
from section_speed.domain.events import parse_rfc3339_ms
from section_speed.domain.evidence import photo_object_name
from section_speed.domain.verification import verify_notice
from tests.unit.desk_fakes import BUCKET, fine_row, make_app

TOKEN = "secret-token"


def jpeg(size=(640, 480), colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


def with_photo(row: dict, photos, data: bytes | None = None) -> dict:
    name = photo_object_name(row["radar_id"], parse_rfc3339_ms(row["entry_time"]), row["fine_id"])
    row["image_url"] = f"gs://{BUCKET}/{name}"
    photos.objects[name] = data or jpeg()
    row["image_sha256"] = hashlib.sha256(photos.objects[name]).hexdigest()
    return row


@pytest.fixture
def desk():
    app, store, photos, publisher, _clock = make_app(reviewer="alice")
    with TestClient(app, follow_redirects=False) as client:
        yield client, store, photos, publisher


def signed_in(client: TestClient, token: str | None = None) -> TestClient:
    """Signed in with a login link of its own (each link signs in once)."""
    token = token or mint(client.app.state.desk.desk.store, 3600)
    response = client.get(f"/login?token={token}")
    assert response.status_code == 303 and response.headers["location"] == "/queue"
    return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]


def hidden(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html)[1]


def test_no_token_or_a_wrong_one_gets_401_and_no_cookie(desk):
    client = desk[0]
    for url in ("/login", "/login?token=wrong", f"/login?token={TOKEN}x"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert SESSION_COOKIE not in response.cookies
        assert "the link the desk printed" in response.text
    for url in ("/queue", "/fines/" + "a" * 32, "/fines/" + "a" * 32 + "/photo"):
        assert client.get(url).status_code == 401, url


def test_the_token_becomes_a_strict_http_only_session_cookie(desk):
    client = desk[0]
    response = client.get(f"/login?token={TOKEN}")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie and TOKEN not in response.headers["location"]
    page = client.get("/queue")
    assert page.status_code == 200 and ">alice<" in page.text


def test_a_tampered_or_foreign_cookie_is_refused(desk):
    client = signed_in(desk[0])
    value = client.cookies[SESSION_COOKIE]
    payload, mac = value.split(".")
    client.cookies.set(SESSION_COOKIE, payload + "x." + mac)
    assert client.get("/queue").status_code == 401
    other_app = make_app(store=desk[1], reviewer="mallory", token="other")[0]  # its secret
    with TestClient(other_app, follow_redirects=False) as other:
        signed_in(other, "other")
        client.cookies.set(SESSION_COOKIE, other.cookies[SESSION_COOKIE])
    assert client.get("/queue").status_code == 401


def test_the_reviewer_name_is_asked_at_login_when_not_given():
    app = make_app()[0]
    with TestClient(app, follow_redirects=False) as client:
        _login_asks_the_name(client)


def _login_asks_the_name(client: TestClient) -> None:
    page = client.get(f"/login?token={TOKEN}")
    assert page.status_code == 200 and 'name="reviewer"' in page.text
    bad = client.post("/login", data={"token": TOKEN, "reviewer": "<b>x</b>"})
    assert bad.status_code == 422 and SESSION_COOKIE not in bad.cookies
    assert client.post("/login", data={"token": "nope", "reviewer": "bob"}).status_code == 401
    good = client.post("/login", data={"token": TOKEN, "reviewer": "Bob Smith"})
    assert good.status_code == 303
    assert ">Bob Smith<" in client.get("/queue").text


def test_every_page_carries_the_security_headers(desk):
    client = signed_in(desk[0])
    for response in (client.get("/queue"), client.get("/login"), client.get("/static/desk.js")):
        headers = response.headers
        assert headers["content-security-policy"].startswith("default-src 'self'")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
    page = client.get("/queue").text
    assert "<script>" not in page and " on" + "click=" not in page  # no inline script


def open_first(client, store, photos, fine: dict | None = None, **row) -> tuple[str, str]:
    fine = fine or with_photo(fine_row(**row), photos)
    store.fines.append(fine)
    csrf = csrf_of(client.get("/queue").text)
    response = client.post("/next", data={"csrf": csrf})
    assert response.headers["location"] == f"/fines/{fine['fine_id']}"
    page = client.get(response.headers["location"]).text
    client.app.state.desk.desk.clock.advance(1)  # the officer looks (the minimum look)
    return fine["fine_id"], page


def test_csrf_missing_or_wrong_is_403_and_records_nothing(desk):
    client, store, photos, publisher = desk
    signed_in(client)
    fine_id, page = open_first(client, store, photos)
    form = {
        "revision": "0",
        "claim_id": hidden(page, "claim_id"),
        "action": "plate",
        "plate": "ABC1234",
        "photo_sha256": hidden(page, "photo_sha256"),
    }
    url = f"/fines/{fine_id}/decision"
    assert client.post(url, data=form).status_code == 403
    assert client.post(url, data={**form, "csrf": "x" * 43}).status_code == 403
    assert client.post("/next", data={}).status_code == 403
    cross = client.post(
        url, data={**form, "csrf": csrf_of(page)}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert store.reviews_ == [] and publisher.published == []
    ok = client.post(
        url, data={**form, "csrf": csrf_of(page)}, headers={"origin": "http://testserver"}
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/queue"
    assert [r["decision"] for r in store.reviews_] == ["confirmed"]
    wait_until(lambda: publisher.published, timeout_s=10, what="the notice on the topic")
    ((record, notice_id),) = publisher.published
    assert verify_notice(record) and store.notices == [record]
    assert notice_id == record["notice_id"]


def test_a_decision_on_an_old_revision_is_409_and_a_bad_plate_422(desk):
    client, store, photos, _publisher = desk
    signed_in(client)
    row = with_photo(fine_row(), photos)
    fine_id, page = open_first(client, store, photos, row)
    form = {
        "csrf": csrf_of(page),
        "revision": "0",
        "claim_id": hidden(page, "claim_id"),
        "action": "plate",
        "plate": "NOT A PLATE",
    }
    bad = client.post(f"/fines/{fine_id}/decision", data=form)
    assert bad.status_code == 422 and "not a plate" in bad.text
    assert 'value="NOT A PLATE"' in bad.text  # what was typed stays in the field
    store.fines.append({**row, "revision": 1, "processed_at": "2026-11-18T12:00:00.000Z"})
    stale = client.post(f"/fines/{fine_id}/decision", data={**form, "plate": "ABC1234"})
    assert stale.status_code == 409 and "changed while you looked" in stale.text
    assert store.reviews_ == []
    unknown = client.post(f"/fines/{fine_id}/decision", data={**form, "action": "approve"})
    assert unknown.status_code == 422


def test_a_second_officer_sees_the_fine_taken(desk):
    client, store, photos, _ = desk
    signed_in(client)
    fine_id, _ = open_first(client, store, photos)
    app = make_app(store=store, photos=photos, reviewer="bob")[0]
    with TestClient(app, follow_redirects=False) as bob:
        signed_in(bob)
        page = bob.get(f"/fines/{fine_id}")
        assert "Taken by alice" in page.text and 'id="decision"' not in page.text
        nothing = bob.post("/next", data={"csrf": csrf_of(bob.get("/queue").text)})
        assert nothing.headers["location"] == "/queue"
        taken = bob.post(f"/fines/{fine_id}/claim", data={"csrf": csrf_of(page.text)})
        assert taken.status_code == 409 and "taken by alice" in taken.text


def test_html_in_a_vehicle_id_or_plate_renders_as_text(desk):
    client, store, photos, _ = desk
    signed_in(client)
    evil = "<script>alert('x')</script>"
    _fine_id, page = open_first(
        client,
        store,
        photos,
        vehicle='v"><img src=x onerror=alert(1)>',
        plate=evil,
        plate_candidates=[evil],
        evidence_error=evil,
    )
    for text in (page, client.get("/queue").text):
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_candidates_show_their_doubtful_characters_and_a_key_picks_one(desk):
    client, store, photos, _ = desk
    signed_in(client)
    _fine_id, page = open_first(
        client,
        store,
        photos,
        plate=None,
        plate_candidates=["OCT1890", "0CT1890"],
        # O at 0.97 is under the look-alike gate (0.989); C at 0.70 under the 0.8 gate.
        plate_candidate_confidences=["0.97,0.70,1.00,1.00,1.00,1.00,1.00", "0.40,0.70,1,1,1,1,1"],
    )
    shown = page.split('id="candidates"', 1)[1].split("</ol>", 1)[0]
    assert shown.count('<li data-candidate="') == 2
    first, second = shown.split("<li ")[1:]
    assert 'data-candidate="OCT1890"' in first and "Shift+1" in first
    assert '<mark title="doubtful">O</mark><mark title="doubtful">C</mark>T1890' in first
    assert '<mark title="doubtful">0</mark><mark title="doubtful">C</mark>T1890' in second


def test_photos_are_served_by_fine_id_from_the_configured_bucket_only(desk):
    client, store, photos, _ = desk
    signed_in(client)
    fine = with_photo(fine_row(plate_box="100,200,300,260"), photos, jpeg())
    store.fines.append(fine)
    response = client.get(f"/fines/{fine['fine_id']}/photo")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == photos.objects[fine["image_url"].removeprefix(f"gs://{BUCKET}/")]
    crop = client.get(f"/fines/{fine['fine_id']}/plate")
    with Image.open(io.BytesIO(crop.content)) as image:
        assert image.format == "JPEG" and image.width == 480
        assert image.height == round((60 * 1.5) * 480 / (200 * 1.5))
    # A row whose URL points elsewhere serves nothing and reads nothing.
    name = fine["image_url"].removeprefix(f"gs://{BUCKET}/")
    elsewhere = {
        "other bucket": f"gs://other/{name}",
        "traversal": f"gs://{BUCKET}/fines/../secrets/{fine['fine_id']}.jpg",
        "another fine's photo": f"gs://{BUCKET}/{name.replace(fine['fine_id'], 'b' * 32)}",
        "http": f"https://storage.googleapis.com/{BUCKET}/{name}",
    }
    for what, url in elsewhere.items():
        photos.reads.clear()
        other = fine_row()
        store.fines.append({**other, "image_url": url.replace(fine["fine_id"], other["fine_id"])})
        assert client.get(f"/fines/{other['fine_id']}/photo").status_code == 404, what
        assert photos.reads == [], what
    for fine_id in ("../../etc/passwd", "A" * 32, "a" * 31, "a" * 33):
        assert client.get(f"/fines/{fine_id}/photo").status_code in (404, 422), fine_id


def test_a_photo_other_than_the_one_the_record_names_is_never_shown(desk):
    client, store, photos, _ = desk
    signed_in(client)
    fine = with_photo(fine_row(plate_box="100,200,300,260"), photos, jpeg())
    store.fines.append(fine)
    name = fine["image_url"].removeprefix(f"gs://{BUCKET}/")
    photos.objects[name] = jpeg(size=(80, 60))  # the object's bytes changed since the fine
    page = client.get(f"/fines/{fine['fine_id']}").text
    assert 'id="photo-mismatch"' in page and 'id="photo"' not in page
    assert fine["image_sha256"] in page
    assert client.get(f"/fines/{fine['fine_id']}/photo").status_code == 409
    assert client.get(f"/fines/{fine['fine_id']}/plate").status_code == 409
    # Confirming is refused on the server, whatever the page offered.
    claim = client.post(f"/fines/{fine['fine_id']}/claim", data={"csrf": csrf_of(page)})
    assert claim.status_code == 303
    page = client.get(f"/fines/{fine['fine_id']}").text
    client.app.state.desk.desk.clock.advance(1)  # looked long enough: only the photo is wrong
    form = {
        "csrf": csrf_of(page),
        "revision": "0",
        "claim_id": hidden(page, "claim_id"),
        "action": "plate",
        "plate": fine["license_plate"],
    }
    refused = client.post(f"/fines/{fine['fine_id']}/decision", data=form)
    assert refused.status_code == 422 and "the record&#39;s own photo" in refused.text
    assert store.reviews_ == []


def test_a_missing_photo_shows_and_the_fine_can_still_be_rejected(desk):
    client, store, photos, publisher = desk
    signed_in(client)
    row = with_photo(fine_row(), photos)
    photos.objects.clear()  # the fine names a photo the bucket does not hold
    fine_id, page = open_first(client, store, photos, row)
    assert 'id="photo-missing"' in page and 'id="photo"' not in page
    assert client.get(f"/fines/{fine_id}/photo").status_code == 404
    form = {
        "csrf": csrf_of(page),
        "revision": "0",
        "claim_id": hidden(page, "claim_id"),
        "action": "plate_unreadable",
    }
    assert client.post(f"/fines/{fine_id}/decision", data=form).status_code == 303
    assert [(r["decision"], r["reason"]) for r in store.reviews_] == [
        ("rejected", "plate_unreadable")
    ]
    assert store.notices == [] and publisher.published == []


def test_the_queue_filters_by_section_day_and_confidence(desk):
    client, store, _photos, _ = desk
    signed_in(client)
    store.fines += [
        fine_row("v1", radar="radar-1", confidence=0.99),
        fine_row("v2", radar="radar-2", confidence=0.5),
        fine_row("v3", radar="radar-2", confidence=None, plate=None),
    ]

    def vehicles(query):
        return re.findall(r'class="vehicle">([^<]*)<', client.get("/queue" + query).text)

    assert vehicles("") == ["v1", "v2", "v3"]
    assert vehicles("?radar_id=radar-2") == ["v2", "v3"]
    assert vehicles("?max_confidence=0.6") == ["v2", "v3"]
    assert vehicles("?min_confidence=0.6") == ["v1"]
    assert vehicles("?day=2026-11-18") == ["v1", "v2", "v3"]
    assert vehicles("?day=2026-11-19") == []
    assert client.get("/queue?day=yesterday").status_code == 422
    assert client.get("/queue?radar_id=%3Cscript%3E").status_code == 422


def test_a_null_origin_passes_only_with_the_browsers_same_origin_word(desk):
    """Under Referrer-Policy no-referrer Chromium posts the page's forms with Origin: null."""
    client, store, _, _ = desk
    signed_in(client)
    store.fines.append(fine_row())
    csrf = csrf_of(client.get("/queue").text)
    refused = {
        "null alone": {"origin": "null"},
        "null, cross-site": {"origin": "null", "sec-fetch-site": "cross-site"},
        "same origin, cross-site fetch": {
            "origin": "http://testserver",
            "sec-fetch-site": "same-site",
        },
    }
    for what, headers in refused.items():
        assert client.post("/next", data={"csrf": csrf}, headers=headers).status_code == 403, what
    assert store.claims_ == []
    same = {"origin": "null", "sec-fetch-site": "same-origin"}
    assert client.post("/next", data={"csrf": csrf}, headers=same).status_code == 303
    assert len(store.claims_) == 1


def test_two_identical_posts_record_once_and_a_different_one_is_409_with_what_was(desk):
    client, store, photos, publisher = desk
    signed_in(client)
    fine_id, page = open_first(client, store, photos)
    form = {
        "csrf": csrf_of(page),
        "revision": "0",
        "claim_id": hidden(page, "claim_id"),
        "action": "plate",
        "plate": "ABC1234",
        "photo_sha256": hidden(page, "photo_sha256"),
    }
    url = f"/fines/{fine_id}/decision"
    first, again = client.post(url, data=form), client.post(url, data=form)
    assert first.status_code == again.status_code == 303
    conflict = client.post(url, data={**form, "action": "wrong_vehicle"})
    assert conflict.status_code == 409
    assert "already confirmed as ABC1234 by alice at 2026-11-18T09:00:01.000Z" in conflict.text
    wait_until(lambda: publisher.published, timeout_s=10, what="the notice on the topic")
    assert len(store.reviews_) == 1 and len(store.notices) == 1
    assert [kind for kind, _ in store_outbox(store)] == ["review", "notice"]
    assert len(publisher.published) == 1


def store_outbox(store) -> list[tuple[str, str]]:
    return [(r["kind"], r["key"]) for r in store.rows("SELECT kind, key FROM outbox ORDER BY id")]
