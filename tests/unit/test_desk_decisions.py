"""What a decision must show the server (docs/desk.md, The minimum look): the photo the
officer saw, and that the fine was on their screen at least MIN_LOOK_MS. The browser's
own `shown_ms` is its word only."""

import re

import pytest
from fastapi.testclient import TestClient

from desk.workflow import MIN_LOOK_MS
from tests.unit.desk_fakes import fine_row, make_app, with_photo
from tests.unit.test_desk_app import csrf_of, hidden, signed_in


@pytest.fixture
def desk():
    app, store, photos, _publisher, clock = make_app(reviewer="alice")
    with TestClient(app, follow_redirects=False) as client:
        signed_in(client)
        yield client, store, photos, clock


def first_fine(client, store, photos, count: int = 1) -> tuple[list[dict], str]:
    fines = [with_photo(fine_row(f"v{n}", minute=n), photos) for n in range(count)]
    for fine in fines:
        store.fines.append(fine)
    answer = client.post("/next", data={"csrf": csrf_of(client.get("/queue").text)})
    return fines, client.get(answer.headers["location"]).text


def form_of(page: str, **changes: str) -> dict:
    form = {name: hidden(page, name) for name in ("csrf", "revision", "claim_id", "photo_sha256")}
    form |= {"action": "plate", "plate": "ABC1234", "shown_ms": "5000"}
    return form | changes


def test_a_decision_naming_another_photo_or_none_is_refused(desk):
    client, store, photos, clock = desk
    (fine,), page = first_fine(client, store, photos)
    clock.advance(2)
    url = f"/fines/{fine['fine_id']}/decision"
    for seen in ("0" * 64, ""):
        refused = client.post(url, data=form_of(page, photo_sha256=seen))
        assert refused.status_code == 409, seen
        assert "not this fine&#39;s photo" in refused.text
    assert client.post(url, data=form_of(page, photo_sha256="x")).status_code == 422
    assert store.reviews_ == []
    assert client.post(url, data=form_of(page)).status_code == 303
    assert [r["decision"] for r in store.reviews_] == ["confirmed"]


def test_a_decision_sooner_than_the_minimum_look_after_serving_is_refused(desk):
    client, store, photos, clock = desk
    (fine,), page = first_fine(client, store, photos)
    url = f"/fines/{fine['fine_id']}/decision"
    clock.advance((MIN_LOOK_MS - 1) / 1000)
    early = client.post(url, data=form_of(page))  # shown_ms says 5000: the browser's word
    assert early.status_code == 422
    assert re.search(rf"too soon: decided \d+ ms after .* at least {MIN_LOOK_MS} ms", early.text)
    assert store.reviews_ == []
    # The refusal served the page again: the look starts over from it.
    clock.advance(MIN_LOOK_MS / 1000)
    assert client.post(url, data=form_of(page)).status_code == 303


def test_held_enter_cannot_decide_the_next_fine_unseen(desk):
    client, store, photos, clock = desk
    fines, page = first_fine(client, store, photos, count=2)
    clock.advance(1)
    answer = client.post(f"/fines/{fines[0]['fine_id']}/decision", data=form_of(page))
    assert answer.headers["location"] == f"/fines/{fines[1]['fine_id']}"
    following = client.get(answer.headers["location"]).text
    clock.advance(0.03)  # a key repeat's interval
    repeat = client.post(f"/fines/{fines[1]['fine_id']}/decision", data=form_of(following))
    assert repeat.status_code == 422 and "too soon" in repeat.text
    assert [r["fine_id"] for r in store.reviews_] == [fines[0]["fine_id"]]
    served = store.rows("SELECT served_at FROM claims WHERE fine_id = :f", f=fines[1]["fine_id"])
    assert served[0]["served_at"] is not None
